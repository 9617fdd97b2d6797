"""A user's own recordings for the method verbs: find them, map their channels and labels, fit them to a task.

Why this exists: the presets name channels ``ECG``/``PPG`` and classes ``baseline``/``stress``, but real files
say ``ECG II``, ``BVP`` or ``Pleth`` and ``TSST`` or ``Rest``. Three small, explicit pieces bridge that gap,
used by every verb that takes data (``--data``, ``export --calibration-data``, ``calibrate --paired``):

* :func:`recording_files` lists every supported file in a folder (EDF+, BDF, BrainFlow CSV with its sidecar,
  WESAD ``S*/S*.pkl``, ISRUC ``.rec``, FOG ``<patient>/task_<n>.txt``) and refuses a folder with none, or
  two files with the same bytes.
* a **channel map** (``--channels ecg="ECG II",ppg=BVP`` or a JSON/TOML file) names, per modality or per
  preset channel, the recording's channel. Without one, channels are found as ``inspect`` tags them: by
  name, else the only channel(s) of the spec's modality; more than one candidate is refused, never guessed.
* a **label map** (``--label-map "TSST=stress,Rest=baseline"`` or a file) renames annotations to the task's
  classes; a target that is not a class is refused up front.

A channel at another rate than the preset's is not refused: the spec is re-based on the recording's rate
(:func:`spec_at_rate`) and :func:`edge_bridge.signals.process_windows` resamples it to the model's output
rate, the one resampling path host and device share.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_bridge.errors import EdgeBridgeError, RecordingError
from edge_bridge.recordings.fog import check_mapped, is_fog_file
from edge_bridge.recordings.recording import Annotation, Recording
from edge_bridge.signals.spec import MODALITIES, Preprocessing

logger = logging.getLogger(__name__)

#: suffixes the method verbs read from a data folder (WESAD/ISRUC/FOG may sit one folder down, as published);
#: a .txt is read only when named like a FOG task file (ISRUC's scorer files N_1.txt are not recordings)
SUFFIXES = (".edf", ".bdf", ".csv", ".pkl", ".rec", ".txt")
_NESTED = (".pkl", ".rec", ".txt")
KINDS = ("EDF+ (.edf/.bdf), BrainFlow CSV (.csv + .csv.json sidecar), WESAD (S*/S*.pkl), ISRUC (.rec), "
         "FOG FilteredData (<patient>/task_<n>.txt)")
LABELS_SIDECAR = ".labels.json"  # deploy's sidecar: {"annotations": [{"onset", "duration", "label"}]}


# --- maps ---------------------------------------------------------------------------------------------------
def _toml_loads(text: str, where: str) -> Any:
    """TOML via the standard library (3.11+) or ``tomli``; the Jetson's Python 3.10 has neither built in."""
    try:
        import tomllib
    except ModuleNotFoundError:
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise RecordingError(f"{where}: reading TOML needs Python 3.11+ or the tomli package "
                                 "(pip install tomli); or give the map as JSON or KEY=VALUE pairs") from None
    return tomllib.loads(text)


def parse_map(text: str | os.PathLike[str] | Mapping[str, Any] | None, flag: str) -> dict[str, Any]:
    """``k=v,k=v`` text, a JSON/TOML file of such pairs, or a mapping, as a plain dict.

    Values stay strings, except that a file may give a list of channel names for a multi-channel modality.

    Raises
    ------
    RecordingError
        Naming ``flag``, for a pair without ``=``, an empty key or value, a key given twice, or a file that
        is not a JSON/TOML table of strings.
    """
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        raw: Any = dict(text)
        where = flag
    else:
        path = Path(text)
        if path.suffix.lower() in (".json", ".toml") or path.is_file():
            if not path.is_file():
                raise RecordingError(f"{flag}: {path} is not a file; pass k=v pairs or a JSON/TOML file")
            where = f"{flag} {path}"
            try:
                if path.suffix.lower() == ".toml":
                    raw = _toml_loads(path.read_text(encoding="utf-8"), where)
                else:
                    raw = json.loads(path.read_text(encoding="utf-8"))
            except RecordingError:
                raise
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                kind = path.suffix[1:].upper() or "JSON"
                raise RecordingError(f"{where}: not valid {kind} ({exc})") from None
        else:
            where = flag
            raw = {}
            for pair in str(text).split(","):
                key, sep, value = pair.partition("=")
                key, value = key.strip().strip("\"'"), value.strip().strip("\"'")
                if not sep or not key or not value:
                    raise RecordingError(f"{flag}: expected KEY=VALUE pairs separated by commas (e.g. "
                                         f"{_EXAMPLES[flag]}), got {pair.strip()!r}")
                if key in raw:
                    raise RecordingError(f"{flag}: {key!r} is given twice")
                raw[key] = value
    if not isinstance(raw, dict):
        raise RecordingError(f"{where}: expected a table of KEY = VALUE, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        ok = (isinstance(value, str) and value) or (
            isinstance(value, list) and value and all(isinstance(v, str) and v for v in value))
        if not isinstance(key, str) or not key or not ok:
            raise RecordingError(f"{where}: {key!r} = {value!r}: keys and values must be non-empty strings "
                                 f"(e.g. {_EXAMPLES.get(flag, 'a=b')})")
        out[key] = list(value) if isinstance(value, list) else value
    return out


_EXAMPLES = {"--channels": 'ecg="ECG II",ppg=BVP', "--label-map": "TSST=stress,Rest=baseline"}


def check_channel_map(cmap: Mapping[str, Any], specs: Sequence[Preprocessing]) -> dict[str, Any]:
    """``cmap`` with every key checked to be a modality or a channel name of ``specs``."""
    valid = {s.modality for s in specs} | {c for s in specs for c in s.channels}
    for key, value in cmap.items():
        if key not in valid:
            raise RecordingError(f"--channels: {key!r} is neither a modality nor a channel of this task; "
                                 f"use one of {sorted(valid)} (e.g. {_EXAMPLES['--channels']})")
        n = next((s.n_channels for s in specs if s.modality == key), 1)
        if isinstance(value, list) and len(value) != n:
            raise RecordingError(f"--channels: {key} needs {n} channel name(s), got {value}")
        if isinstance(value, str) and key in MODALITIES and n != 1:
            raise RecordingError(f"--channels: {key} has {n} channels in this task; map each by its preset "
                                 "name (e.g. C3-A2=\"EEG C3\"), or give a list in a JSON/TOML file")
    return dict(cmap)


def compose_label_map(user: Mapping[str, Any], classes: Sequence[str],
                      preset: Mapping[str, str] | None = None) -> dict[str, str]:
    """Annotation -> class: ``user`` first, then the preset's own map; every target must be a class.

    Raises
    ------
    RecordingError
        For a target that is not one of ``classes`` (nor a name the preset's map turns into one).
    """
    preset = dict(preset or {})
    out = dict(preset)
    for label, target in user.items():
        if not isinstance(target, str):
            raise RecordingError(f"--label-map: {label!r} must map to one class name, got {target!r}")
        final = preset.get(target, target)
        if final not in classes:
            raise RecordingError(f"--label-map maps {label!r} to {target!r}, which is not a class of this "
                                 f"task; the classes are {', '.join(classes)}")
        out[label] = final
    return out


# --- files --------------------------------------------------------------------------------------------------
def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_distinct(paths: Iterable[str | os.PathLike[str]], what: str = "recordings") -> None:
    """Refuse the same file (by path or by identical bytes) given twice: it would pair or count one twice."""
    seen_path: dict[Path, Path] = {}
    by_size: dict[int, list[Path]] = {}
    for p in map(Path, paths):
        if not p.is_file():
            continue
        real = p.resolve()
        if real in seen_path:
            raise RecordingError(f"{p}: given twice in the {what} (also as {seen_path[real]}); pass each "
                                 "recording once")
        seen_path[real] = p
        by_size.setdefault(p.stat().st_size, []).append(p)
    for group in by_size.values():
        if len(group) < 2:
            continue
        digests: dict[str, Path] = {}
        for p in group:
            d = _digest(p)
            if d in digests:
                raise RecordingError(f"{p} and {digests[d]} are the same recording (identical bytes); "
                                     f"remove one from the {what}")
            digests[d] = p


def recording_files(folder: str | os.PathLike[str], flag: str = "--data") -> list[Path]:
    """Every supported recording in ``folder`` (WESAD/ISRUC/FOG files also one folder down), sorted.

    Raises
    ------
    RecordingError
        If ``folder`` is missing or not a folder, holds no supported recording, or holds one twice.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RecordingError(f"{flag} {folder}: {'not a folder' if folder.exists() else 'no such folder'}; "
                             f"pass a folder of recordings: {KINDS}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    files += [p for p in folder.glob("*/*") if p.is_file() and p.suffix.lower() in _NESTED]
    files = sorted(p for p in files if p.suffix.lower() != ".txt" or is_fog_file(p))
    if not files:
        raise RecordingError(f"{flag} {folder} holds no recordings; expected {KINDS} (e.g. from "
                             "`edge-bridge simulate`)")
    check_distinct(files, f"folder {folder}")
    return files


def read_labelled(path: str | os.PathLike[str], cmap: Mapping[str, Any] | None = None,
                  specs: Sequence[Preprocessing] = ()) -> Recording:
    """Read one recording; a CSV's labels come from its ``<file>.labels.json`` sidecar when there is one.

    EDF channels that a channel map names are read with the map's modality, so a channel whose label says
    nothing (``Wrist``, ``Chest``) is kept instead of skipped as unknown. A FOG task file gets the map's
    ``col:NN`` columns the same way (its columns beyond the EEG are read only when named), and when
    ``specs`` need a modality it then still lacks, the error says how to name its column.
    """
    from edge_bridge.recordings.io import read_recording

    path = Path(path)
    kwargs: dict[str, Any] = {}
    fog = path.suffix.lower() == ".txt" and is_fog_file(path)
    if cmap and (path.suffix.lower() in (".edf", ".bdf") or fog):
        kwargs["modalities"] = _map_modalities(cmap, specs)
    rec = read_recording(path, **kwargs)
    rec.meta.setdefault("source_file", str(path))
    if fog and specs:
        check_mapped(rec, specs)
    side = Path(f"{path}{LABELS_SIDECAR}")
    if side.is_file():
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
            rec.annotations = sorted(
                [*rec.annotations, *(Annotation(float(a["onset"]), float(a["duration"]), str(a["label"]))
                                     for a in data["annotations"])], key=lambda a: (a.onset, a.label))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise RecordingError(f"{side}: not a label sidecar ({exc}); expected JSON "
                                 '{"annotations": [{"onset": s, "duration": s, "label": "..."}]}') from None
    if not rec.subject:
        rec.subject = path.stem
    return rec


def _map_modalities(cmap: Mapping[str, Any], specs: Sequence[Preprocessing]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in cmap.items():
        modality = key if key in MODALITIES else next((s.modality for s in specs if key in s.channels), None)
        if modality is None:
            continue
        for name in value if isinstance(value, list) else [value]:
            out[name] = modality
    return out


def apply_modality_map(rec: Recording, cmap: Mapping[str, Any]) -> Recording:
    """Make each mapped channel the only one of its modality (for readers that match by modality).

    ``cmap`` keys are modalities. Used by calibrate, which matches a bundle's spec by modality.
    """
    for modality, value in cmap.items():
        if modality not in MODALITIES:
            raise RecordingError(f"--channels: {modality!r} is not a modality; use one of "
                                 f"{', '.join(MODALITIES)}")
        names = value if isinstance(value, list) else [value]
        missing = [n for n in names if n not in rec.channel_names]
        if missing:
            where = rec.meta.get("source_file", "recording")
            raise RecordingError(f"{where}: --channels names {missing} for {modality}, but the recording has "
                                 f"{rec.channel_names}")
        for c in rec.channels:
            if c.name in names:
                c.modality = modality
        rec.channels = [c for c in rec.channels if c.name in names or c.modality != modality]
    return rec


# --- fitting a recording to a spec ------------------------------------------------------------------------
def resolve_channels(rec: Recording, spec: Preprocessing, cmap: Mapping[str, Any] | None = None,
                     role: str = "") -> list[str]:
    """The recording's channel for each of ``spec.channels``: the map, the name, else the modality.

    Raises
    ------
    RecordingError
        A mapped channel the recording lacks, no channel of the modality, or several candidates (the
        message lists them and shows the ``--channels`` that picks one).
    """
    cmap = cmap or {}
    where = rec.meta.get("source_file") or rec.subject or "recording"
    names = rec.channel_names
    lower = {n.lower(): n for n in names}
    by_modality = cmap.get(spec.modality)
    if isinstance(by_modality, str):
        by_modality = [by_modality]
    chosen: list[str | None] = []
    for k, want in enumerate(spec.channels):
        mapped = cmap.get(want) or (by_modality[k] if by_modality else None)
        if mapped is not None:
            if mapped not in names:
                raise RecordingError(f"{where}: --channels maps {spec.modality if by_modality else want} to "
                                     f"{mapped!r}, but the recording has no such channel; it has {names}")
            chosen.append(mapped)
        elif want in names or want.lower() in lower:
            chosen.append(want if want in names else lower[want.lower()])
        else:
            chosen.append(None)
    if None in chosen:
        taken = {c for c in chosen if c is not None}
        same = [c.name for c in rec.modality_channels(spec.modality) if c.name not in taken]
        need = chosen.count(None)
        label = f"{role} " if role else ""
        if len(same) != need:
            found = (f"no {spec.modality} channel" if not same else
                     f"{len(same)} {spec.modality} channels {same} for {need} place(s), so which is meant is "
                     "ambiguous")
            example = f'{spec.modality}="{same[0]}"' if same and spec.n_channels == 1 else \
                f'{spec.modality}="NAME"' if spec.n_channels == 1 else f'{spec.channels[0]}="NAME"'
            raise RecordingError(
                f"{where}: the {label}signal needs {spec.n_channels} {spec.modality} channel(s) "
                f"{list(spec.channels)}; found {found} among {names} (modalities "
                f"{[c.modality for c in rec.channels]}); name it with --channels {example}")
        it = iter(same)
        chosen = [c if c is not None else next(it) for c in chosen]
    return [c for c in chosen if c is not None]


def spec_at_rate(spec: Preprocessing, rate: float, where: str) -> Preprocessing:
    """``spec`` re-based on a recording's raw ``rate`` (same output rate, so the same model input).

    Raises
    ------
    RecordingError
        When ``rate`` cannot carry the spec: below twice the band's upper edge or the notch, windows or hop
        not a whole number of samples, or no small rational ratio to the output rate.
    """
    try:
        return spec.at_rate(rate)  # the one re-basing (edge_bridge.signals), minimum rate named there
    except EdgeBridgeError as exc:
        band = f" above twice the band's {spec.bandpass[1]:g} Hz edge" if spec.bandpass else ""
        raise RecordingError(f"{where}: {exc}; record at {spec.input_rate:g} Hz, or at a rate{band} that "
                             f"gives whole samples per {spec.hop_s:g} s hop") from None


def conform(rec: Recording, spec: Preprocessing, cmap: Mapping[str, Any] | None = None,
            role: str = "") -> Preprocessing:
    """Rename ``rec``'s channels for ``spec`` to the spec's names (in place); return the spec at their rate.

    A channel already called like a spec channel but not chosen is renamed out of the way
    (``"ECG (unused)"``) so the chosen one can take its name.
    """
    where = str(rec.meta.get("source_file") or rec.subject or "recording")
    chosen = resolve_channels(rec, spec, cmap, role)
    chans = [rec.channel(n) for n in chosen]
    rates = {c.rate for c in chans}
    if len(rates) != 1:
        detail = ", ".join(f"{c.name}={c.rate:g} Hz" for c in chans)
        raise RecordingError(f"{where}: the {spec.modality} channels have different rates ({detail})")
    for want, ch in zip(spec.channels, chans, strict=True):
        if ch.name == want:
            continue
        for other in rec.channels:
            if other.name == want and other not in chans:
                other.name = f"{want} (unused)"
        ch.name = want
    return spec_at_rate(spec, rates.pop(), where)


def read_with_channels(path: str | os.PathLike[str], value: str | None) -> tuple[Recording, str | None]:
    """A recording and the channel names a ``--channels`` value picks, for the verbs that send channels
    (convert, emulate).

    ``--channels`` means one thing in every verb: a channel map (``ppg=Wrist``, ``ecg="ECG II"``, or a
    JSON/TOML file of them), so a channel whose label tells nothing (``Wrist``) is read as the mapped modality
    instead of skipped. A plain comma list of names (``PPG,ECG``) still picks channels by name. Returns the
    recording (read with the map, labels sidecar included) and the picked names as a comma list, or None.
    """
    text = None if value is None else str(value)
    if not text or ("=" not in text and Path(text).suffix.lower() not in (".json", ".toml")):
        return read_labelled(path), text
    cmap = parse_map(text, "--channels")
    rec = apply_modality_map(read_labelled(path, cmap), cmap)
    names = [n for v in cmap.values() for n in (v if isinstance(v, list) else [v])]
    return rec, ",".join(names)
