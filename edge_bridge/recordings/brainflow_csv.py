"""BrainFlow CSV files with a JSON sidecar, read into (and written from) a :class:`Recording`.

The CSV is exactly what ``brainflow.data_filter.DataFilter.write_file(data, path, "w")`` writes: the board's
float64 array (rows x samples) transposed, one sample per line, tab-separated. It is read and written with
BrainFlow's own ``DataFilter`` so the two never disagree about the layout. The file itself does not say which
row is which, nor the rate, so a sidecar ``<csv path>.json`` (``rec.csv`` -> ``rec.csv.json``) does; the
device side (``firmware_interface``) writes the same sidecar when it records::

    {"format": "edge-bridge/brainflow-csv", "version": 1, "board_id": -1, "board_name": "SYNTHETIC_BOARD",
     "sampling_rate": 250.0, "subject": "", "start_time": null,
     "timestamp_row": 30, "package_num_row": 0, "marker_row": null,
     "channels": [{"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"}]}

Checks on read, because these files come from live streams: a last line cut mid-row (BrainFlow silently drops
it), rows named in the sidecar that the file lacks, and timestamps that go backwards are errors. Lost packages
(BrainFlow's ring buffer overwrites silently) are found from the package-number row, which counts modulo 256
on most boards: the samples are kept as they are, each gap gets a zero-length ``BAD_gap`` annotation at the
first sample after it (so windowing never lets a window straddle it), and ``meta["gaps"]`` and
``meta["lost_samples"]`` count them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.errors import RecordingError
from edge_bridge.fileio import atomic_path, atomic_write_text
from edge_bridge.recordings.recording import Annotation, Channel, Recording
from edge_bridge.signals.spec import MODALITIES

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "edge-bridge/brainflow-csv"
SIDECAR_VERSION = 1
#: BrainFlow package numbers wrap at 256 on most boards (one byte in the packet).
PACKAGE_MODULUS = 256
GAP_LABEL = "BAD_gap"
_OPTIONAL = {"board_id": None, "board_name": "", "subject": "", "start_time": None, "timestamp_row": None,
             "package_num_row": None, "marker_row": None}
_EXAMPLE = (
    '{"format": "edge-bridge/brainflow-csv", "version": 1, "board_id": -1, "board_name": "SYNTHETIC_BOARD", '
    '"sampling_rate": 250.0, "subject": "", "start_time": null, "timestamp_row": 30, "package_num_row": 0, '
    '"marker_row": null, "channels": [{"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"}]}'
)


@contextlib.contextmanager
def _data_filter() -> Iterator[Any]:
    """BrainFlow's DataFilter, imported on first use (brainflow loads native libraries).

    BrainFlow 5.x may import the deprecated ``pkg_resources`` when it first loads its library; that warning is
    BrainFlow's, not the caller's, so it is silenced while BrainFlow runs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from brainflow.data_filter import DataFilter

        yield DataFilter


def sidecar_path(csv_path: str | os.PathLike[str]) -> Path:
    """The sidecar of a CSV: the CSV's full name plus ``.json`` (``rec.csv`` -> ``rec.csv.json``)."""
    return Path(f"{os.fspath(csv_path)}.json")


def _row(value: Any, key: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordingError(f"{where}: {key} must be a row index (an integer >= 0) or null, got {value!r}")
    return value


def validate_sidecar(sidecar: Mapping[str, Any], where: str = "sidecar") -> dict[str, Any]:
    """Check a sidecar against the schema and return it with defaults filled in.

    Required keys are ``format``, ``version``, ``sampling_rate`` and ``channels``; the others default to
    null or ``""``. Unknown keys (from a newer writer) are kept with a warning.

    Raises
    ------
    RecordingError
        Naming the key that is missing or wrong, the value found and what is expected.
    """
    if not isinstance(sidecar, Mapping):
        raise RecordingError(f"{where}: expected a JSON object like {_EXAMPLE}, got {type(sidecar).__name__}")
    missing = [k for k in ("format", "version", "sampling_rate", "channels") if k not in sidecar]
    if missing:
        raise RecordingError(f"{where}: missing required key(s) {missing}; a sidecar looks like {_EXAMPLE}")
    if sidecar["format"] != SIDECAR_FORMAT:
        raise RecordingError(f"{where}: format must be {SIDECAR_FORMAT!r}, got {sidecar['format']!r}")
    version = sidecar["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RecordingError(f"{where}: version must be a positive integer, got {version!r}")
    if version > SIDECAR_VERSION:
        raise RecordingError(f"{where}: sidecar version {version} is newer than this reader understands "
                             f"({SIDECAR_VERSION}); upgrade edge-bridge")
    known = {"format", "version", "sampling_rate", "channels", *_OPTIONAL}
    unknown = sorted(set(sidecar) - known)
    if unknown:
        logger.warning("%s: ignoring unknown sidecar key(s) %s; a newer edge-bridge may use them (upgrade)",
                       where, unknown)
    out = {**_OPTIONAL, **dict(sidecar)}
    rate = out["sampling_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not (math.isfinite(rate) and rate > 0):
        raise RecordingError(f"{where}: sampling_rate must be a positive number of Hz, got {rate!r}")
    out["sampling_rate"] = float(rate)
    for key in ("timestamp_row", "package_num_row", "marker_row"):
        out[key] = _row(out[key], key, where)
    board = out["board_id"]
    if board is not None and (isinstance(board, bool) or not isinstance(board, int)):
        raise RecordingError(f"{where}: board_id must be a BrainFlow board id (integer) or null, "
                             f"got {out['board_id']!r}")
    chans = out["channels"]
    if not isinstance(chans, list) or not chans:
        raise RecordingError(f"{where}: channels must be a non-empty list like "
                             f'[{{"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"}}], got {chans!r}')
    checked = []
    for k, ch in enumerate(chans):
        if not isinstance(ch, Mapping) or not isinstance(ch.get("name"), str) or not ch.get("name"):
            raise RecordingError(f"{where}: channels[{k}] needs a non-empty string 'name', got {ch!r}")
        if ch.get("modality") not in MODALITIES:
            raise RecordingError(f"{where}: channels[{k}] ({ch['name']!r}) modality must be one of "
                                 f"{', '.join(MODALITIES)}, got {ch.get('modality')!r}")
        row = _row(ch.get("row"), f"channels[{k}].row", where)
        if row is None:
            raise RecordingError(f"{where}: channels[{k}] ({ch['name']!r}) needs a 'row'")
        checked.append({"name": ch["name"], "row": row, "modality": ch["modality"],
                        "unit": str(ch.get("unit", ""))})
    out["channels"] = checked
    return out


def read_sidecar(csv_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate the sidecar of ``csv_path``.

    Raises
    ------
    RecordingError
        If the sidecar is missing (the message shows one to write), not JSON, or not in the schema.
    """
    side = sidecar_path(csv_path)
    if not side.is_file():
        raise RecordingError(
            f"{csv_path}: no sidecar {side.name} beside it. A BrainFlow CSV does not say which row holds "
            f"which signal or at what rate, so write {side} with, for example: {_EXAMPLE} (rows as in "
            "BoardShim.get_board_descr(board_id)), or record with firmware_interface, which writes it"
        )
    try:
        sidecar = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordingError(f"{side}: not valid JSON ({exc}); fix or rewrite the sidecar") from None
    return validate_sidecar(sidecar, str(side))


def _check_lines(path: Path, raw: bytes) -> int:
    """Check every line of a BrainFlow CSV has the same number of fields; return that number.

    BrainFlow's reader silently drops a last line that was cut mid-row, so a truncated stream would pass
    unnoticed without this check.
    """
    if not raw.strip():
        raise RecordingError(f"{path}: the file is empty; expected BrainFlow samples, one line per sample")
    n_lines = raw.count(b"\n")
    if not raw.endswith(b"\n"):
        raise RecordingError(
            f"{path}: truncated: the last line (line {n_lines + 1}) ends without a newline, i.e. the file "
            "was cut mid-row while it was written; delete the last line (losing one sample) to read it"
        )
    fields = raw[: raw.index(b"\n")].count(b"\t") + 1
    if raw.count(b"\t") != n_lines * (fields - 1):
        for lineno, line in enumerate(raw.split(b"\n")[:-1], start=1):
            found = line.count(b"\t") + 1
            if found != fields:
                raise RecordingError(
                    f"{path}, line {lineno}: expected {fields} tab-separated values (as on line 1), found "
                    f"{found}; the file is truncated or was edited, or is not a BrainFlow CSV"
                )
    return fields


def _named_rows(side: Mapping[str, Any]) -> dict[str, int]:
    """Every row a validated sidecar names, keyed by what it holds (for range checks and messages)."""
    rows = {f"channel {c['name']!r}": c["row"] for c in side["channels"]}
    for key in ("timestamp_row", "package_num_row", "marker_row"):
        if side[key] is not None:
            rows[key] = side[key]
    return rows


def _gaps(package_num: np.ndarray, timestamps: np.ndarray | None, rate: float,
          modulus: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices just after each gap in the package numbers, and the packages lost in each.

    A step other than +1 (mod ``modulus``) is a gap of ``(step - 1) mod modulus`` packages. When timestamps
    exist and say the gap is longer than a whole wrap of the counter, whole wraps are added.
    """
    pn = np.rint(package_num).astype(np.int64)
    step = np.diff(pn) % modulus
    after = np.flatnonzero(step != 1) + 1
    lost = (step[after - 1] - 1) % modulus
    if timestamps is not None and len(after):
        by_time = np.rint((timestamps[after] - timestamps[after - 1]) * rate).astype(np.int64) - 1
        wraps = np.maximum(np.rint((by_time - lost) / modulus).astype(np.int64), 0)
        lost = lost + wraps * modulus
    return after, lost


def _start_time(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
        if isinstance(value, str):
            return dt.datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        pass
    raise RecordingError(
        f"{where}: start_time must be null, unix seconds or an ISO 8601 string, got {value!r}"
    )


def read_brainflow_csv(path: str | os.PathLike[str], *, package_modulus: int = PACKAGE_MODULUS) -> Recording:
    """Read a BrainFlow CSV and its sidecar.

    Parameters
    ----------
    path : path-like
        The CSV written by ``DataFilter.write_file``; its sidecar is ``<path>.json``.
    package_modulus : int
        Where the board's package counter wraps (256 for most BrainFlow boards).

    Returns
    -------
    Recording
        One channel per sidecar entry, at ``sampling_rate``. ``start_time`` is the first timestamp (UTC) when
        ``timestamp_row`` is set, else the sidecar's ``start_time``. Annotations: ``BAD_gap`` (zero length)
        at each gap in the package numbers, and ``marker_<value>`` at each non-zero marker.
        ``meta`` holds ``board_id``, ``board_name``, ``sidecar``, and when ``package_num_row`` is set,
        ``gaps`` and ``lost_samples``.

    Raises
    ------
    RecordingError
        If the CSV or sidecar is missing or malformed, the CSV is truncated, the sidecar names rows the file
        does not have, or the timestamps go backwards (the message names the first such sample).

    Examples
    --------
    >>> rec = read_brainflow_csv("session.csv")  # reads session.csv.json too  # doctest: +SKIP
    >>> rec.meta["gaps"], rec.meta["lost_samples"]
    (0, 0)
    """
    path = Path(path)
    if isinstance(package_modulus, bool) or not isinstance(package_modulus, int) or package_modulus < 2:
        raise RecordingError(f"package_modulus must be an integer >= 2 (256 for most boards), "
                             f"got {package_modulus!r}")
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    side = read_sidecar(path)
    fields = _check_lines(path, path.read_bytes())
    try:
        with _data_filter() as data_filter:
            data = np.asarray(data_filter.read_file(str(path)), dtype=np.float64)
    except Exception as exc:  # BrainFlowError and ValueError from malformed numbers
        raise RecordingError(f"{path}: BrainFlow cannot read it as a BrainFlow CSV: {exc}") from None
    if data.ndim != 2 or data.shape[0] != fields:
        raise RecordingError(f"{path}: BrainFlow read an array of shape {data.shape}, expected {fields} rows")
    n_rows, n = data.shape
    beyond = {k: r for k, r in _named_rows(side).items() if r >= n_rows}
    if beyond:
        raise RecordingError(
            f"{path}: the sidecar names row(s) {beyond}, but the file has only {n_rows} rows "
            f"(0..{n_rows - 1}); fix {sidecar_path(path).name} to match the board (BoardShim.get_board_descr)"
        )
    rate = side["sampling_rate"]
    channels = [Channel(c["name"], data[c["row"]], rate, c["modality"], c["unit"]) for c in side["channels"]]

    timestamps = None
    start = _start_time(side["start_time"], str(sidecar_path(path)))
    if side["timestamp_row"] is not None and n:
        timestamps = data[side["timestamp_row"]]
        if not np.isfinite(timestamps).all():
            i = int(np.flatnonzero(~np.isfinite(timestamps))[0])
            raise RecordingError(f"{path}: timestamp of sample {i} (row {side['timestamp_row']}) is "
                                 f"{timestamps[i]}; expected unix seconds")
        back = np.flatnonzero(np.diff(timestamps) < 0)
        if len(back):
            i = int(back[0]) + 1
            raise RecordingError(
                f"{path}: timestamps go backwards at sample {i} (row {side['timestamp_row']}: "
                f"{timestamps[i - 1]:.6f} -> {timestamps[i]:.6f}); BrainFlow timestamps only increase, so "
                "the file was concatenated or the clock jumped: split the file at that sample"
            )
        start = dt.datetime.fromtimestamp(float(timestamps[0]), tz=dt.UTC)

    annotations: list[Annotation] = []
    meta: dict[str, Any] = {"source_file": str(path), "sidecar": str(sidecar_path(path)),
                            "board_id": side["board_id"], "board_name": side["board_name"]}
    if side["package_num_row"] is not None:
        after, lost = _gaps(data[side["package_num_row"]], timestamps, rate, package_modulus)
        annotations += [Annotation(float(i) / rate, 0.0, GAP_LABEL) for i in after]
        meta.update(gaps=len(after), lost_samples=int(lost.sum()))
        if len(after):
            logger.warning("%s: %d gap(s) in the package numbers, about %d samples lost; marked %s",
                           path, len(after), meta["lost_samples"], GAP_LABEL)
    else:
        logger.info("%s: no package_num_row in the sidecar, so lost samples cannot be detected", path)
    if side["marker_row"] is not None:
        markers = data[side["marker_row"]]
        annotations += [Annotation(float(i) / rate, 0.0, f"marker_{markers[i]:g}")
                        for i in np.flatnonzero(markers)]
    return Recording(channels, annotations, start_time=start, subject=str(side["subject"] or ""), meta=meta)


def _utc(t: dt.datetime) -> dt.datetime:
    """BrainFlow timestamps are unix seconds; a naive start time (EDF has no zone) is taken as UTC."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


def _layout(rec: Recording) -> dict[str, Any]:
    """A compact sidecar for a recording: package numbers, the channels, then timestamps when known."""
    k = len(rec.channels)
    return {
        "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION,
        "board_id": rec.meta.get("board_id"), "board_name": rec.meta.get("board_name", ""),
        "sampling_rate": rec.channels[0].rate, "subject": rec.subject,
        "start_time": _utc(rec.start_time).isoformat() if rec.start_time else None,
        "timestamp_row": k + 1 if rec.start_time else None, "package_num_row": 0, "marker_row": None,
        "channels": [{"name": c.name, "row": i + 1, "modality": c.modality, "unit": c.unit}
                     for i, c in enumerate(rec.channels)],
    }


def _recording_array(rec: Recording, side: dict[str, Any], path: Path) -> np.ndarray:
    """Lay a recording out as BrainFlow rows, as ``side`` says; package numbers and timestamps are filled."""
    chans = [rec.channel(c["name"]) for c in side["channels"]]
    rates = {c.rate for c in chans}
    lengths = {len(c.data) for c in chans}
    if len(rates) != 1 or abs(rates.pop() - side["sampling_rate"]) > 1e-9 or len(lengths) != 1:
        detail = ", ".join(f"{c.name}={c.rate:g} Hz x {len(c.data)}" for c in chans)
        raise RecordingError(
            f"{path}: a BrainFlow CSV has one sampling rate ({side['sampling_rate']:g} Hz) and rows of equal "
            f"length, got {detail}; pick() channels of one rate and crop() them first"
        )
    n = lengths.pop()
    data = np.zeros((max(_named_rows(side).values()) + 1, n))
    for spec, c in zip(side["channels"], chans, strict=True):
        data[spec["row"]] = c.data
    if side["package_num_row"] is not None:
        data[side["package_num_row"]] = np.arange(n) % PACKAGE_MODULUS
    if side["timestamp_row"] is not None:
        t0 = _utc(rec.start_time).timestamp() if rec.start_time else 0.0
        data[side["timestamp_row"]] = t0 + np.arange(n) / side["sampling_rate"]
    return data


def write_brainflow_csv(recording_or_array: Recording | np.ndarray, path: str | os.PathLike[str],
                        sidecar: Mapping[str, Any] | None = None) -> Path:
    """Write a BrainFlow CSV with ``DataFilter.write_file`` and then its sidecar, each atomically.

    Parameters
    ----------
    recording_or_array : Recording or ndarray, shape (n_rows, n_samples)
        A board array as ``BoardShim.get_board_data()`` returns it (``sidecar`` required), or a recording
        whose channels share one rate and length. A recording is laid out as ``sidecar`` says (its
        package-number and timestamp rows are filled in), or, without one, as package numbers in row 0,
        the channels in rows 1..k and timestamps in row k+1 when ``start_time`` is known.
    path : path-like
        The CSV; the sidecar goes to ``<path>.json``.
    sidecar : mapping, optional
        The sidecar (see the module docstring); validated before anything is written.

    Returns
    -------
    Path
        The CSV path.

    Notes
    -----
    BrainFlow writes six decimals, so values are rounded to 1e-6 of their unit; annotations are not stored
    (the format has no place for them).

    Raises
    ------
    RecordingError
        If the sidecar is invalid or names rows the array does not have, or the recording's channels differ
        in rate or length.
    """
    path = Path(path)
    if isinstance(recording_or_array, Recording):
        if sidecar is None:
            if not recording_or_array.channels:
                raise RecordingError(f"{path}: refusing to write a recording without channels")
            sidecar = _layout(recording_or_array)
        side = validate_sidecar(sidecar, f"sidecar for {path}")
        data = _recording_array(recording_or_array, side, path)
    else:
        if sidecar is None:
            raise RecordingError(f"{path}: writing a bare array needs a sidecar saying which row is which, "
                                 f"like {_EXAMPLE}")
        side = validate_sidecar(sidecar, f"sidecar for {path}")
        data = np.asarray(recording_or_array, dtype=np.float64)
        if data.ndim != 2:
            raise RecordingError(f"{path}: expected a (n_rows, n_samples) array, got shape {data.shape}")
        beyond = {k: r for k, r in _named_rows(side).items() if r >= data.shape[0]}
        if beyond:
            raise RecordingError(f"{path}: the sidecar names row(s) {beyond}, but the array has only "
                                 f"{data.shape[0]} rows")
    with atomic_path(path) as tmp, _data_filter() as data_filter:
        data_filter.write_file(np.ascontiguousarray(data), str(tmp), "w")
    atomic_write_text(sidecar_path(path), json.dumps(side, indent=2) + "\n")
    logger.debug("wrote %s (%d rows x %d samples) and its sidecar", path, *data.shape)
    return path
