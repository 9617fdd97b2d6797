"""Convert a recording (EDF+, BrainFlow CSV, WESAD, ISRUC) to a BrainFlow CSV that `deploy` plays back.

BrainFlow's playback board replays only its own CSV, laid out as a master board's rows with a timestamp row
that paces it. This writes that file (with firmware_interface.write_playback_file, as the demo does), its
sidecar FILE.csv.json (channels, true rate) and, when the recording has labelled spans (EDF+ annotations with
a duration), FILE.csv.labels.json, which `deploy --source playback:FILE.csv` finds by itself. A playback file
holds one rate: pick channels with --channels or --modality (default: those at the first channel's rate).

The same module checks recorded input before `deploy` streams it (`check_playback_csv`): the project's own
reader (edge_bridge.recordings) with strict row width, numeric fields and time order, plus what the playback
board needs (the master board's rows, a sane pace, one window's worth of samples). A bad file is refused
with one line naming it and the line at fault, instead of streaming nothing until --duration.

Examples:
  edge-bridge convert S01.edf -o S01.csv
  edge-bridge convert S01.edf -o S01_ppg.csv --modality ppg
  edge-bridge deploy --bundle stress.bundle --source playback:S01_ppg.csv
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.errors import EdgeBridgeError, RecordingError

logger = logging.getLogger(__name__)

#: the longest step between two timestamps a playback file may have: the playback board sleeps it out
MAX_STEP_S = 60.0
#: how far the timestamps' pace may be from the sidecar's rate before the file is refused
PACE_TOLERANCE = 0.2
#: suffixes read as EDF/EDF+ (anything else with an EDF header is detected from its first bytes)
EDF_SUFFIXES = (".edf", ".bdf", ".rec")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, metavar="IN", help="recording: .edf/.bdf (EDF+), .csv (BrainFlow CSV "
                   "with sidecar), .pkl (WESAD), .rec (ISRUC)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="OUT.csv",
                   help="BrainFlow CSV to write (its sidecar and labels go beside it)")
    p.add_argument("--channels",
                   help="which channels to write: a channel map as the other verbs take (ppg=Wrist, "
                        'ecg="ECG II"; a channel whose label names no modality is read as the mapped one), '
                        "or comma-separated channel names (default: all at the first channel's rate)")
    p.add_argument("--modality", help="only channels of this modality (ecg, ppg, eeg, ...)")
    p.add_argument("--board", default="SYNTHETIC_BOARD",
                   help="master board whose row layout the file uses (default SYNTHETIC_BOARD)")
    p.add_argument("--force", action="store_true", help="overwrite OUT.csv if it exists")


# --- recorded input ---------------------------------------------------------------------------------------
@dataclass
class CheckedCsv:
    """What the check of a playback CSV found (all of it fine to stream)."""

    path: Path
    rate: float
    samples: int
    duplicate_timestamps: int = 0
    max_step_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def is_edf(path: Path) -> bool:
    """EDF by suffix, or by its header: EDF and EDF+ files start with ``"0"`` and seven spaces."""
    from edge_bridge.recordings.edf import has_edf_header

    return path.suffix.lower() in EDF_SUFFIXES or has_edf_header(path)


def check_path(path: Path, what: str = "recording") -> None:
    """A recording the user named exists, is a regular file, is readable and not empty (one clear line)."""
    if not path.exists():
        raise RecordingError(f"{path}: no such {what}; check the path")
    if path.is_dir():
        raise RecordingError(f"{path}: is a directory; give a {what} file (BrainFlow CSV or EDF+)")
    if not path.is_file():
        raise RecordingError(f"{path}: not a regular file (a device or pipe); give a {what} file")
    try:
        with open(path, "rb") as fh:
            empty = fh.read(1) == b""
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read it ({exc.strerror}); check its permissions") from None
    if empty:
        raise RecordingError(f"{path}: the file is empty (0 bytes); record or convert it again")


def _strict_numbers(path: Path) -> np.ndarray:
    """Every field parsed strictly as a number; the error names the line and column.

    BrainFlow's own parser takes the longest numeric prefix ("1e5x" reads as 1e5) or fails without saying
    where, so the fields are checked here with numpy's C parser, which is strict and says where.
    """
    try:
        return np.loadtxt(path, delimiter="\t", dtype=np.float64, ndmin=2, comments=None, encoding="utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        text = str(exc).replace("\n", " ").rstrip(".")
        where = re.search(r"at row (\d+), column (\d+)", text)
        if where:  # numpy counts rows from 0 and columns from 1; people count lines from 1
            line, column = int(where.group(1)) + 1, int(where.group(2))
            text = text[: where.start()].rstrip() + f" (field {column})"
            raise RecordingError(f"{path}, line {line}: not a number: {text}; fix that line or convert the "
                                 "recording again with `edge-bridge convert`") from None
        raise RecordingError(f"{path}: not a BrainFlow CSV of numbers: {text}; fix the file or convert the "
                             "recording again with `edge-bridge convert`") from None


def read_csv_checked(path: Path) -> Any:
    """:func:`~edge_bridge.recordings.read_brainflow_csv`, with errors that name the file's line.

    The reader counts samples from 0 and leaves BrainFlow's parse errors without a place; a person opening
    the file counts lines from 1, so both are said that way here.
    """
    from edge_bridge.recordings import read_brainflow_csv

    try:
        rec = read_brainflow_csv(path)
    except RecordingError as exc:
        if "BrainFlow cannot read it" in str(exc):
            _strict_numbers(path)  # says which line and column BrainFlow choked on
        text = str(exc)
        sample = re.search(r"\bsample (\d+)\b", text)
        if sample is None:
            raise
        line = int(sample.group(1)) + 1
        raise RecordingError(f"{path}, line {line}: " + text.removeprefix(f"{path}: ")) from None
    return rec


def check_text(path: Path) -> None:
    """A BrainFlow CSV is tab-separated ASCII: say so plainly for a binary file or another kind of CSV.

    Without this, random bytes read as "truncated: the last line ends without a newline" and a
    comma-separated file as a one-row array, which send the user looking in the wrong place.
    """
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    text: str | None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the 64 KiB sample is fine
        text = None if exc.start < len(head) - 4 else head[: exc.start].decode("utf-8")
    if text is None or "\x00" in text:
        raise RecordingError(f"{path}: binary data, not a BrainFlow CSV (tab-separated text, one sample per "
                             "line); for EDF+ or other recordings use `edge-bridge convert`")
    first = text.split("\n", 1)[0]
    if text.startswith("\ufeff"):
        raise RecordingError(f"{path}, line 1: starts with a byte-order mark, which BrainFlow cannot parse; "
                             "save the file as plain UTF-8/ASCII or convert the recording again")
    if "\t" not in first and ("," in first or ";" in first):
        raise RecordingError(f"{path}, line 1: comma- or semicolon-separated, but a BrainFlow CSV is "
                             "tab-separated; convert the recording with `edge-bridge convert`")


def check_playback_csv(path: str | os.PathLike[str], *, window_s: float | None = None,
                       master_board: str | int | None = None) -> CheckedCsv:
    """Check a BrainFlow CSV before BrainFlow's playback board streams it; raise one clear line if it is bad.

    Checks, in order: the path (exists, a readable non-empty regular file); the project's reader
    (:func:`~edge_bridge.recordings.read_brainflow_csv`: sidecar, equal row widths, a last line that is
    whole, rows the sidecar names, finite timestamps that never go backwards); every field a number; the
    master board's row count and timestamp row (the playback board reads the file with that board's
    layout); a pace that matches the sidecar's rate and no step longer than :data:`MAX_STEP_S` (the board
    sleeps out every step); at least one window of samples.

    Why before streaming: the playback board skips what it cannot parse and then goes quiet, which looked
    like a lost device (reconnect, replay from the start, lost samples counted) until --duration ended it.

    Raises
    ------
    RecordingError
        Naming the file and, where it applies, the line (1-based) at fault.
    """
    from firmware_interface import _brainflow as bf

    bf.ensure_quiet()  # BrainFlow's own logger would add its lines to the one-line error
    path = Path(path)
    check_path(path)
    if is_edf(path):
        raise RecordingError(f"{path}: is EDF, not a BrainFlow CSV; convert it with `edge-bridge convert "
                             f"{path} -o FILE.csv` (deploy --source playback: converts EDF+ by itself)")
    check_text(path)
    rec = read_csv_checked(path)
    side = rec.meta.get("sidecar")
    sidecar = json.loads(Path(side).read_text(encoding="utf-8")) if side else {}
    data = _strict_numbers(path).T  # (rows, samples), like the board's array
    n_rows, n = data.shape
    rate = float(rec.channels[0].rate)
    board = master_board if master_board is not None else sidecar.get("board_id")
    board = -1 if board is None else board
    try:
        descr = bf.board_descr(bf.resolve_board(board))
    except Exception as exc:  # unknown board id in the sidecar
        raise RecordingError(f"{path}: the sidecar's board_id {board!r} is not a BrainFlow board ({exc}); "
                             "fix the sidecar or convert the recording again") from None
    name = descr.get("name", board)
    if n_rows != int(descr["num_rows"]):
        raise RecordingError(f"{path}: {n_rows} values per line, but its master board {name} has "
                             f"{descr['num_rows']} rows; the playback board would misread it. Convert the "
                             "recording with `edge-bridge convert` (it writes the master board's layout)")
    ts_row = int(descr["timestamp_channel"])
    if sidecar.get("timestamp_row") not in (None, ts_row):
        raise RecordingError(f"{path}: the sidecar puts timestamps in row {sidecar['timestamp_row']}, but "
                             f"the playback board paces by row {ts_row} of {name}; convert the recording "
                             "again")
    ts = data[ts_row]
    bad = np.flatnonzero(~np.isfinite(ts))
    if bad.size:
        i = int(bad[0])
        raise RecordingError(f"{path}, line {i + 1}: timestamp (row {ts_row}) is {ts[i]}; the playback board "
                             "paces by it, so every timestamp must be finite unix seconds")
    steps = np.diff(ts)
    back = np.flatnonzero(steps < 0)
    if back.size:
        i = int(back[0]) + 1
        raise RecordingError(f"{path}, line {i + 1}: timestamp goes backwards ({ts[i - 1]:.6f} -> "
                             f"{ts[i]:.6f}); split the file there or convert the recording again")
    if n == 0 or not ts[0] > 0:
        raise RecordingError(f"{path}, line 1: timestamp {ts[0] if n else 'missing'} is not a positive unix "
                             "time; the playback board only paces between positive timestamps")
    checked = CheckedCsv(path, rate, n)
    if steps.size:
        big = np.flatnonzero(steps > MAX_STEP_S)
        if big.size:
            i = int(big[0]) + 1
            raise RecordingError(f"{path}, line {i + 1}: the timestamp jumps {steps[i - 1]:.1f} s; the "
                                 f"playback board would sit silent that long (at most {MAX_STEP_S:g} s); "
                                 "split the file")
        checked.max_step_s = float(steps.max())
        checked.duplicate_timestamps = int((steps == 0).sum())
        moving = steps[steps > 0]
        pace = 1.0 / float(np.median(moving)) if moving.size else math.inf
        if abs(pace - rate) > PACE_TOLERANCE * rate:
            raise RecordingError(f"{path}: the timestamps step at {pace:g} Hz but the sidecar states "
                                 f"{rate:g} Hz; the playback board paces by the timestamps, so fix the "
                                 "sidecar's sampling_rate or convert the recording again")
        if checked.duplicate_timestamps:
            checked.notes.append(f"{checked.duplicate_timestamps} duplicate timestamp(s)")
    if window_s is not None:
        need = math.ceil(window_s * rate)
        if n < need:
            raise RecordingError(f"{path}: {n} sample(s) ({n / rate:.1f} s at {rate:g} Hz) is shorter than "
                                 f"one {window_s:g} s window ({need} samples); nothing would be predicted")
    return checked


# --- conversion -------------------------------------------------------------------------------------------
def pick_channels(rec: Any, where: str, *, names: str | None = None, modality: str | None = None,
                  into: str = "a playback file", verb: str = "write") -> list[Any]:
    """The recording's channels to ``verb`` into ``into`` (a playback file here, a frame stream for
    ``emulate``): named ones, one modality, or all at the first channel's rate; all of one rate."""
    chans = list(rec.channels)
    if modality:
        chans = [c for c in chans if c.modality == modality]
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        missing = [n for n in wanted if n not in rec.channel_names]
        if missing:
            raise RecordingError(f"{where} has no channel(s) {missing}; it has {rec.channel_names}")
        chans = [rec.channel(n) for n in wanted]
    elif chans:
        chans = [c for c in chans if c.rate == chans[0].rate]
    if not chans:
        have = ", ".join(f"{c.name} ({c.modality})" for c in rec.channels) or "no channel of a known modality"
        raise RecordingError(f"{where}: no channel to {verb} (modality {modality!r}); it has {have}")
    rates = {c.rate for c in chans}
    if len(rates) != 1:
        detail = ", ".join(f"{c.name}={c.rate:g} Hz" for c in chans)
        raise RecordingError(f"{where}: {into} has one rate, but {detail}; pick channels of one rate with "
                             "--channels or --modality")
    return chans


def label_spans(rec: Any) -> list[dict[str, Any]]:
    """Annotations that label a span (a duration > 0); zero-length ones are events (gaps, markers)."""
    return [{"onset": float(a.onset), "duration": float(a.duration), "label": str(a.label)}
            for a in rec.annotations if a.duration and a.duration > 0 and not str(a.label).startswith("BAD")]


def labels_path(csv: str | os.PathLike[str]) -> Path:
    """Where a playback file's labels go: ``FILE.csv.labels.json`` (what deploy looks for)."""
    return Path(f"{os.fspath(csv)}.labels.json")


def convert_recording(src: str | os.PathLike[str], out: str | os.PathLike[str], *, names: str | None = None,
                      modality: str | None = None,
                      board: str | int = "SYNTHETIC_BOARD") -> tuple[Path, Path | None]:
    """Write ``src`` as a BrainFlow playback CSV at ``out`` with its sidecar and (if any) labels.

    Returns
    -------
    (csv, labels) : the CSV written and its labels file, or None when the recording labels no span.
    """
    from edge_bridge.fileio import atomic_write_text
    from edge_bridge.recordings import read_edf, read_recording
    from edge_bridge.recordings.dataset import read_with_channels
    from firmware_interface import write_playback_file
    from firmware_interface.errors import FirmwareError

    src, out = Path(src), Path(out)
    check_path(src)
    if names is not None and "=" in names:  # a channel map, as every verb's --channels takes
        rec, names = read_with_channels(src, names)
    elif is_edf(src) and src.suffix.lower() != ".rec":
        rec = read_edf(src)
    elif src.suffix.lower() == ".csv" or src.suffix.lower() not in (".pkl", ".rec"):
        rec = read_csv_checked(src)
    else:
        rec = read_recording(src)
    chans = pick_channels(rec, str(src), names=names, modality=modality)
    n = min(len(c.data) for c in chans)
    start = None
    if rec.start_time is not None:  # EDF has no time zone: a naive start is UTC, as the CSV reader takes it
        t = rec.start_time
        start = (t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t).timestamp()
    if start is not None and not start > 0:
        start = None  # the playback board paces only between positive timestamps
    try:
        write_playback_file([(c.name, c.modality, c.unit, np.asarray(c.data[:n], dtype=np.float64))
                             for c in chans], float(chans[0].rate), out, board=board, start_timestamp=start,
                            subject=rec.subject)
    except FirmwareError as exc:
        raise RecordingError(f"{src}: cannot write it as a playback file {out}: {exc}") from None
    spans = label_spans(rec)
    lab = None
    if spans:
        lab = labels_path(out)
        atomic_write_text(lab, json.dumps({"source": str(src), "subject": rec.subject,
                                           "annotations": spans}, indent=1) + "\n")
    return out, lab


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not args.force:
        raise EdgeBridgeError(f"{out}: exists; pass --force to overwrite it, or choose another -o")
    if out.suffix.lower() != ".csv":
        raise EdgeBridgeError(f"{out}: -o must name a .csv file (BrainFlow CSV)")
    if not out.parent.is_dir():
        raise EdgeBridgeError(f"{out}: the folder {out.parent} does not exist; create it first")
    if Path(os.path.abspath(out)) == Path(os.path.abspath(args.input)):
        raise EdgeBridgeError(f"{out}: -o is the input file; choose another -o")
    csv, lab = convert_recording(args.input, out, names=args.channels, modality=args.modality,
                                 board=args.board)
    checked = check_playback_csv(csv)
    print(f"wrote {csv} ({checked.samples} samples at {checked.rate:g} Hz) and its sidecar {csv}.json"
          + (f"; labels {lab}" if lab else "; no labelled spans in the recording"), file=sys.stderr)
    print(f"play it back with: edge-bridge deploy --bundle BUNDLE --source playback:{csv}", file=sys.stderr)
    return 0
