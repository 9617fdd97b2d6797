"""Which row of a board's data is which signal: channel info, device profiles and the recording sidecar.

BrainFlow returns one float64 array (rows x samples) per read; the board description says which rows hold
EEG, PPG, accelerometer and so on, but many wearables reuse their biopotential rows for ECG or EMG, and
custom firmware has no BrainFlow description at all. A *device profile* (a small JSON file the user writes)
says it explicitly::

    {"board": "SYNTHETIC_BOARD",
     "channels": [{"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"},
                  {"name": "PPG", "row": 24, "modality": "ppg", "unit": "a.u."}]}

For frame-protocol devices (:mod:`firmware_interface.frames`) ``"board"`` is ``"frames"`` and ``"row"`` is
the channel's index inside a frame. Without a profile, channels come from BrainFlow's description
(:func:`channels_from_descr`).

The *sidecar* (``<file>.csv.json``) describes a BrainFlow CSV written by the recorder or by
:func:`~firmware_interface.playback.write_playback_file`, so the file opens later as a recording.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_interface.errors import ProfileError

# The modalities edge-bridge models know (kept equal to edge_bridge.signals.MODALITIES; this package is a leaf
# and cannot import it, so a test compares the two).
MODALITIES: tuple[str, ...] = ("ecg", "ppg", "eeg", "emg", "resp", "eda", "acc")

# Units assumed when neither the profile nor the device says; BrainFlow scales biopotentials to microvolts.
DEFAULT_UNITS: dict[str, str] = {"ecg": "uV", "ppg": "a.u.", "eeg": "uV", "emg": "uV", "resp": "a.u.",
                                 "eda": "uS", "acc": "g"}

# BrainFlow description keys, in the order that decides a row listed under several (a Cyton lists its eight
# inputs as EEG, EMG, ECG and EOG at once: without a profile they count as EEG).
_DESCR_KEYS: tuple[tuple[str, str], ...] = (
    ("eeg_channels", "eeg"), ("ecg_channels", "ecg"), ("emg_channels", "emg"), ("ppg_channels", "ppg"),
    ("resp_channels", "resp"), ("eda_channels", "eda"), ("accel_channels", "acc"),
)

SIDECAR_FORMAT = "edge-bridge/brainflow-csv"
SIDECAR_VERSION = 1


@dataclass(frozen=True)
class ChannelInfo:
    """One channel of a source.

    Attributes
    ----------
    name : str
        Unique within the source (``"ECG"``, ``"Fz"``).
    modality : str
        One of :data:`MODALITIES`, or ``""`` when unknown (a frame device that declared none).
    unit : str
        Physical unit of the values (``"mV"``, ``"uV"``, ``"a.u."``).
    row : int
        Row in the BrainFlow data array, or channel index inside a frame.
    """

    name: str
    modality: str
    unit: str
    row: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "row": self.row, "modality": self.modality, "unit": self.unit}


def _check_modality(modality: object, where: str, allow_unknown: bool = False) -> str:
    if modality in MODALITIES or (allow_unknown and modality == ""):
        return str(modality)
    raise ProfileError(f"{where}: modality must be one of {', '.join(MODALITIES)}, got {modality!r}")


def parse_channels(items: object, where: str, *, num_rows: int | None = None,
                   reserved_rows: Iterable[int] = ()) -> list[ChannelInfo]:
    """Validate a JSON ``"channels"`` list into :class:`ChannelInfo` objects.

    Parameters
    ----------
    items : list of dict
        Each with ``name``, ``row``, ``modality`` and optionally ``unit``.
    where : str
        File or context named in error messages.
    num_rows : int, optional
        Rows the board delivers; rows must be below it.
    reserved_rows : iterable of int
        Rows that are not signals (timestamp, package number, marker).

    Raises
    ------
    ProfileError
        Naming the entry and the field that is wrong.
    """
    if not isinstance(items, list) or not items:
        raise ProfileError(f"{where}: 'channels' must be a non-empty list of "
                           f'{{"name", "row", "modality", "unit"}} objects, got {items!r}')
    reserved = set(reserved_rows)
    out: list[ChannelInfo] = []
    for k, item in enumerate(items):
        at = f"{where}: channels[{k}]"
        if not isinstance(item, Mapping):
            raise ProfileError(f"{at} must be an object with name, row, modality, unit; got {item!r}")
        missing = [key for key in ("name", "row", "modality") if key not in item]
        if missing:
            raise ProfileError(f"{at} lacks {', '.join(missing)}; each channel needs name, row and modality")
        name, row = item["name"], item["row"]
        if not isinstance(name, str) or not name:
            raise ProfileError(f"{at}: name must be a non-empty string, got {name!r}")
        if isinstance(row, bool) or not isinstance(row, int) or row < 0:
            raise ProfileError(f"{at} ({name}): row must be a non-negative integer, got {row!r}")
        if num_rows is not None and row >= num_rows:
            raise ProfileError(f"{at} ({name}): row {row} is out of range; the board has rows "
                               f"0..{num_rows - 1}")
        if row in reserved:
            raise ProfileError(f"{at} ({name}): row {row} is the board's timestamp, package-number or marker "
                               "row, not a signal; pick a data row")
        modality = _check_modality(item["modality"], f"{at} ({name})")
        unit = item.get("unit", DEFAULT_UNITS[modality])
        if not isinstance(unit, str):
            raise ProfileError(f"{at} ({name}): unit must be a string, got {unit!r}")
        out.append(ChannelInfo(name, modality, unit, row))
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ProfileError(f"{where}: channel names must be unique, got duplicates {dupes}")
    rows = [c.row for c in out]
    dupes_r = sorted({r for r in rows if rows.count(r) > 1})
    if dupes_r:
        raise ProfileError(f"{where}: each row may be used by one channel only, rows {dupes_r} appear twice")
    return out


@dataclass(frozen=True)
class DeviceProfile:
    """What a user wrote about their wearable: which board, and which rows are which channels.

    Attributes
    ----------
    board : str
        BrainFlow board name (``"SYNTHETIC_BOARD"``) or ``"frames"`` for the frame protocol.
    channels : tuple of ChannelInfo
    sampling_rate : float or None
        Overrides the rate BrainFlow states (playback files recorded at another rate).
    package_modulus : int or None
        Where the board's package counter wraps (256 for most boards); ``None`` guesses it.
    """

    board: str
    channels: tuple[ChannelInfo, ...]
    sampling_rate: float | None = None
    package_modulus: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "device profile") -> DeviceProfile:
        if not isinstance(data, Mapping):
            raise ProfileError(f"{where}: expected a JSON object with 'board' and 'channels', got {data!r}")
        board = data.get("board")
        if not isinstance(board, str) or not board:
            raise ProfileError(f"{where}: 'board' must name a BrainFlow board (e.g. \"SYNTHETIC_BOARD\") or "
                               f"be \"frames\", got {board!r}")
        rate = data.get("sampling_rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0):
            raise ProfileError(f"{where}: sampling_rate must be a positive number of Hz, got {rate!r}")
        modulus = data.get("package_modulus")
        if modulus is not None and (isinstance(modulus, bool) or not isinstance(modulus, int) or modulus < 2):
            raise ProfileError(f"{where}: package_modulus must be an integer >= 2, got {modulus!r}")
        return cls(board, tuple(parse_channels(data.get("channels"), where)),
                   None if rate is None else float(rate), modulus)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"board": self.board, "channels": [c.to_json() for c in self.channels]}
        if self.sampling_rate is not None:
            out["sampling_rate"] = self.sampling_rate
        if self.package_modulus is not None:
            out["package_modulus"] = self.package_modulus
        return out


def load_profile(path: str | os.PathLike[str]) -> DeviceProfile:
    """Read a device profile JSON file.

    Raises
    ------
    ProfileError
        If the file is missing, not JSON, or a field is wrong (the message names it).
    """
    return DeviceProfile.from_dict(_read_json(path, "device profile"), f"device profile {os.fspath(path)}")


def _read_json(path: str | os.PathLike[str], what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ProfileError(f"{what} {os.fspath(path)} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"could not read {what} {os.fspath(path)}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{what} {os.fspath(path)} is not valid JSON ({exc}); fix the file") from exc


def _names(descr: Mapping[str, Any], key: str) -> list[str]:
    raw = descr.get(key.replace("_channels", "_names"), "")
    return [n.strip() for n in raw.split(",")] if isinstance(raw, str) and raw else []


def channels_from_descr(descr: Mapping[str, Any]) -> list[ChannelInfo]:
    """Channels of a BrainFlow board description (``BoardShim.get_board_descr``), no profile needed.

    Each row goes to the first modality that lists it, in the order EEG, ECG, EMG, PPG, respiration, EDA,
    accelerometer: boards list their generic biopotential inputs under several types at once, and without a
    profile we cannot know which one the user wired. Names come from the description (``eeg_names``) where it
    has them, else ``"PPG1"``, ``"ACC2"`` and so on. Rows of other kinds (gyroscope, temperature, battery) are
    left out.
    """
    seen: set[int] = set()
    used_names: set[str] = set()
    out: list[ChannelInfo] = []
    for key, modality in _DESCR_KEYS:
        rows = descr.get(key) or []
        names = _names(descr, key)
        for k, row in enumerate(rows):
            if row in seen:
                continue
            seen.add(row)
            name = names[k] if k < len(names) and names[k] else f"{modality.upper()}{k + 1}"
            if name in used_names:
                name = f"{name}_{row}"
            used_names.add(name)
            out.append(ChannelInfo(name, modality, DEFAULT_UNITS[modality], int(row)))
    return out


# --- sidecar ----------------------------------------------------------------------------------------------
def sidecar_path(csv_path: str | os.PathLike[str]) -> Path:
    """``rec.csv`` -> ``rec.csv.json``."""
    p = Path(csv_path)
    return p.with_name(p.name + ".json")


def make_sidecar(*, board_id: int, board_name: str, sampling_rate: float, channels: Sequence[ChannelInfo],
                 timestamp_row: int | None, package_num_row: int | None, marker_row: int | None,
                 subject: str = "", start_time: str | None = None) -> dict[str, Any]:
    """The sidecar dictionary, in the schema ``edge_bridge.recordings.read_brainflow_csv`` reads."""
    for c in channels:
        _check_modality(c.modality, f"sidecar channel {c.name!r}")
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "board_id": int(board_id),
        "board_name": board_name,
        "sampling_rate": float(sampling_rate),
        "subject": subject,
        "start_time": start_time,
        "timestamp_row": timestamp_row,
        "package_num_row": package_num_row,
        "marker_row": marker_row,
        "channels": [c.to_json() for c in channels],
    }


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON so that readers see the old file or the new one, never half of it.

    Temp file in the same folder, flush and fsync, ``os.replace``, then fsync the folder so the rename itself
    survives a power loss.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a directory so new or renamed entries in it are durable (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_sidecar(csv_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the sidecar of a BrainFlow CSV.

    Raises
    ------
    ProfileError
        If the sidecar is missing, of another format, or malformed.
    """
    path = sidecar_path(csv_path)
    data = _read_json(path, "sidecar")
    where = f"sidecar {path}"
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ProfileError(f"{where}: expected format {SIDECAR_FORMAT!r}, got "
                           f"{data.get('format') if isinstance(data, dict) else data!r}")
    if data.get("version") != SIDECAR_VERSION:
        raise ProfileError(f"{where}: version {data.get('version')!r} is not supported (this tool reads "
                           f"version {SIDECAR_VERSION}); upgrade edge-bridge")
    for key in ("board_id", "sampling_rate", "channels"):
        if key not in data:
            raise ProfileError(f"{where}: required key {key!r} is missing")
    reserved = [data.get(k) for k in ("timestamp_row", "package_num_row", "marker_row")]
    data["channels"] = parse_channels(data["channels"], where,
                                      reserved_rows=[r for r in reserved if isinstance(r, int)])
    return data
