"""Windows of one or two modalities cut from the same recordings, aligned in time, ready for a model.

Each modality keeps its own rate (WESAD: ECG 100 Hz and PPG 125 Hz; ISRUC: EEG 200 Hz and ECG 100 Hz); a
pair is the same span of seconds seen by both. Windows failing either modality's quality gate are left out
and counted, never repaired. So are windows that overlap an annotation whose label starts with ``BAD``
(MNE's convention; readers mark lost samples ``BAD_gap``), so a window never straddles a gap in the data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.errors import RecordingError, SignalError
from edge_bridge.recordings.recording import Recording
from edge_bridge.signals import Preprocessing, assess_quality, cut_windows, process_windows

logger = logging.getLogger(__name__)


@dataclass
class Windows:
    """Processed windows of one modality (or a pair), with labels and provenance.

    Attributes
    ----------
    x : dict of str -> ndarray of float32, shape (n, n_channels, n_samples)
        One entry per role (``"source"``, ``"target"``) or per modality.
    labels : ndarray of int64, shape (n,)
        Index into ``classes``; -1 where the window is not covered by one labelled segment.
    starts : ndarray of float64, shape (n,)
        Window start in seconds from the recording start.
    subjects : ndarray of str, shape (n,)
    classes : tuple of str
    skipped : int
        Windows left out, by the quality gate or for overlapping a ``BAD`` annotation.
    skipped_reasons : dict of str -> int
        The same count by reason: ``"quality"``, ``"bad_span"``.
    """

    x: dict[str, np.ndarray]
    labels: np.ndarray
    starts: np.ndarray
    subjects: np.ndarray
    classes: tuple[str, ...] = ()
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> Windows:
        """Windows where ``mask`` (bool or indices) selects; e.g. one subject's."""
        return Windows({k: v[mask] for k, v in self.x.items()}, self.labels[mask], self.starts[mask],
                       self.subjects[mask], self.classes, 0, {})

    def by_subjects(self, subjects: Iterable[str]) -> Windows:
        return self.subset(np.isin(self.subjects, list(subjects)))

    @staticmethod
    def concatenate(parts: Sequence[Windows]) -> Windows:
        if not parts:
            raise SignalError("nothing to concatenate: no windows were produced")
        keys = set(parts[0].x)
        if any(set(p.x) != keys or p.classes != parts[0].classes for p in parts):
            raise SignalError("cannot concatenate windows with different roles or classes")
        reasons: dict[str, int] = {}
        for p in parts:
            for k, v in p.skipped_reasons.items():
                reasons[k] = reasons.get(k, 0) + v
        return Windows(
            {k: np.concatenate([p.x[k] for p in parts]) for k in sorted(keys)},
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.starts for p in parts]),
            np.concatenate([p.subjects for p in parts]),
            parts[0].classes,
            sum(p.skipped for p in parts),
            reasons,
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save as ``.npz`` (plain arrays only, so loading never unpickles)."""
        from edge_bridge.fileio import atomic_path

        arrays = {f"x_{k}": v for k, v in self.x.items()}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, labels=self.labels, starts=self.starts, subjects=self.subjects.astype(str),
                     classes=np.array(self.classes, dtype=str), skipped=np.array(self.skipped), **arrays)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Windows:
        try:
            with np.load(path, allow_pickle=False) as z:
                x = {k[2:]: z[k] for k in z.files if k.startswith("x_")}
                return Windows(x, z["labels"], z["starts"], z["subjects"], tuple(z["classes"].tolist()),
                               int(z["skipped"]))
        except (OSError, KeyError, ValueError) as exc:
            raise RecordingError(f"{path}: not a windows file written by edge-bridge: {exc}") from None


def _raw_windows(rec: Recording, spec: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows of ``spec.channels`` and their start times in seconds; checks names and rate."""
    missing = [c for c in spec.channels if c not in rec.channel_names]
    if missing:
        raise RecordingError(
            f"{rec.meta.get('source_file', 'recording')}: no channel(s) {missing} for the "
            f"{spec.modality} spec; it has {rec.channel_names}"
        )
    data, rate = rec.data(spec.channels)
    if abs(rate - spec.input_rate) > 1e-6:
        raise SignalError(
            f"{rec.meta.get('source_file', 'recording')}: {list(spec.channels)} are sampled at {rate:g} Hz "
            f"but the {spec.modality} spec expects {spec.input_rate:g} Hz; pass spec.at_rate({rate:g}) (the "
            "same model input, resampled from that rate)"
        )
    raw, starts = cut_windows(data, spec)
    return raw, starts / rate


def _gate(raw: np.ndarray, spec: Preprocessing, physiology: bool = False) -> np.ndarray:
    """Windows that pass the gate: broken-signal checks, plus the physiological ones (LOW_SQI) when asked."""
    return (assess_quality(raw, spec if physiology else spec.quality) == 0).all(axis=1)


def modality_windows(rec: Recording, spec: Preprocessing, classes: Sequence[str] = (),
                     label_map: Mapping[str, str] | None = None, *,
                     min_label_fraction: float = 1.0) -> Windows:
    """Processed windows of one modality, keyed by ``spec.modality``.

    ``min_label_fraction`` is :attr:`edge_bridge.tasks.Task.min_label_fraction` (see
    :meth:`Recording.label_at`); 1.0 labels only windows inside one labelled segment.
    """
    raw, starts = _raw_windows(rec, spec)
    good = _gate(raw, spec)
    return _finish(rec, {spec.modality: (raw, spec)}, starts, good, classes, spec.window_s, label_map,
                   min_label_fraction)


def paired_windows(rec: Recording, source: Preprocessing, target: Preprocessing,
                   classes: Sequence[str] = (), label_map: Mapping[str, str] | None = None, *,
                   physiology: bool = False, extra_targets: Sequence[Preprocessing] = (),
                   min_label_fraction: float = 1.0) -> Windows:
    """Time-aligned windows of the source and target modality of one recording.

    Both specs must use the same window and hop in seconds, so that window *k* covers the same span of
    time in both modalities. Windows where either modality fails the quality gate are left out. Labels are
    indices into ``classes`` after renaming annotations with ``label_map`` (see ``Task.label_map``).
    ``physiology=True`` (what calibration uses, like the live loop) also leaves out windows whose ECG/PPG
    beats fail the beat-template index (LOW_SQI); host training keeps them, as it always has.

    ``extra_targets`` (a fused bridge's further target modalities, ``Task.extra_targets``) are windowed
    in lockstep with the others: the same window start times, each through the same preprocessing path,
    and a window is kept only when every modality passes the gate.

    ``min_label_fraction`` (``Task.min_label_fraction``) labels a window with the class that covers at
    least that fraction of it (:meth:`Recording.label_at`); 1.0, the default, only pure windows.

    Returns
    -------
    Windows
        With ``x["source"]`` and ``x["target"]``, and ``x[spec.modality]`` for each extra target.
    """
    if not extra_targets:  # the single-target path, exactly as it has always read
        if abs(source.window_s - target.window_s) > 1e-9 or abs(source.hop_s - target.hop_s) > 1e-9:
            raise SignalError(
                f"paired windows need the same window and hop in both modalities, got source "
                f"{source.window_s:g}/{source.hop_s:g} s and target {target.window_s:g}/{target.hop_s:g} s"
            )
        raw_s, t_s = _raw_windows(rec, source)
        raw_t, t_t = _raw_windows(rec, target)
        n = min(len(raw_s), len(raw_t))
        raw_s, raw_t, t_s, t_t = raw_s[:n], raw_t[:n], t_s[:n], t_t[:n]
        if not np.allclose(t_s, t_t, atol=0.5 / min(source.input_rate, target.input_rate)):
            raise SignalError("source and target windows do not start at the same times; check the rates")
        good = _gate(raw_s, source, physiology) & _gate(raw_t, target, physiology)
        return _finish(rec, {"source": (raw_s, source), "target": (raw_t, target)}, t_s, good, classes,
                       source.window_s, label_map, min_label_fraction)
    roles = {"source": source, "target": target}
    for spec in extra_targets:
        if spec.modality in roles:
            raise SignalError(f"extra target {spec.modality!r} clashes with another window key "
                              f"({', '.join(roles)}); give each extra target its own modality")
        roles[spec.modality] = spec
    for role, spec in roles.items():
        if abs(spec.window_s - source.window_s) > 1e-9 or abs(spec.hop_s - source.hop_s) > 1e-9:
            raise SignalError(
                f"paired windows need the same window and hop in every modality, got source "
                f"{source.window_s:g}/{source.hop_s:g} s and {role} {spec.window_s:g}/{spec.hop_s:g} s")
    cut = {role: _raw_windows(rec, spec) for role, spec in roles.items()}
    n = min(len(raw) for raw, _ in cut.values())
    t_s = cut["source"][1][:n]
    slowest = min(spec.input_rate for spec in roles.values())
    for role, (_, t) in cut.items():
        if not np.allclose(t_s, t[:n], atol=0.5 / slowest):
            raise SignalError(f"source and {role} windows do not start at the same times; check the rates")
    good = np.ones(n, dtype=bool)
    for role, spec in roles.items():
        good &= _gate(cut[role][0][:n], spec, physiology)
    return _finish(rec, {role: (cut[role][0][:n], spec) for role, spec in roles.items()}, t_s, good, classes,
                   source.window_s, label_map, min_label_fraction)


def _in_bad_span(rec: Recording, starts: np.ndarray, window_s: float) -> np.ndarray:
    """True for windows ``[t, t + window_s)`` that overlap an annotation labelled ``BAD...``.

    A zero-length ``BAD`` annotation marks a point between two samples (e.g. where samples were lost): a
    window that starts or ends exactly there does not straddle it and is kept.
    """
    bad = np.zeros(len(starts), dtype=bool)
    eps = 1e-9
    for a in rec.annotations:
        if not a.label.startswith("BAD"):
            continue
        if a.duration > 0:
            bad |= (starts < a.onset + a.duration - eps) & (starts + window_s > a.onset + eps)
        else:
            bad |= (starts < a.onset - eps) & (starts + window_s > a.onset + eps)
    return bad


def _finish(rec: Recording, parts: dict[str, tuple[np.ndarray, Preprocessing]], starts: np.ndarray,
            good: np.ndarray, classes: Sequence[str], window_s: float,
            label_map: Mapping[str, str] | None = None, min_label_fraction: float = 1.0) -> Windows:
    in_bad = _in_bad_span(rec, starts, window_s)
    reasons = {"bad_span": int(in_bad.sum()), "quality": int((~good & ~in_bad).sum())}
    reasons = {k: v for k, v in reasons.items() if v}
    keep = good & ~in_bad
    skipped = int((~keep).sum())
    if skipped:
        logger.info("%s: %d of %d windows left out (%s)",
                    rec.subject or rec.meta.get("source_file", "recording"), skipped, len(keep),
                    ", ".join(f"{k}: {v}" for k, v in reasons.items()))
    x = {role: process_windows(raw[keep], spec) for role, (raw, spec) in parts.items()}
    starts = starts[keep]
    if min_label_fraction == 1.0:  # the pure-window rule, called exactly as it always was
        labels = np.array([rec.label_at(t, t + window_s, classes, label_map) for t in starts], dtype=np.int64)
    else:
        labels = np.array([rec.label_at(t, t + window_s, classes, label_map, min_label_fraction)
                           for t in starts], dtype=np.int64)
    if not classes:
        labels = np.full(len(starts), -1, dtype=np.int64)
    subjects = np.full(len(starts), rec.subject or "", dtype=object).astype(str)
    return Windows(x, labels, starts.astype(np.float64), subjects, tuple(classes), skipped, reasons)


def diagnose_quality(rec: Recording, specs: Mapping[str, Preprocessing], *, physiology: bool = False) -> str:
    """Why windows fail the gate, per role: e.g. ``"target ppg flat in 35 of 35 windows"``."""
    from edge_bridge.signals.quality import Quality

    notes = []
    for role, spec in specs.items():
        data, _ = rec.data(list(spec.channels))
        raw, _ = cut_windows(data, spec)
        if not len(raw):
            continue
        flags = np.bitwise_or.reduce(assess_quality(raw, spec if physiology else spec.quality), axis=1)
        for flag, word in ((Quality.FLAT, "flat"), (Quality.NONFINITE, "non-finite"),
                           (Quality.CLIPPED, "clipped"), (Quality.AMPLITUDE, "out of range"),
                           (Quality.LOW_SQI, "without a regular heartbeat (low_sqi)")):
            k = int(((flags & int(flag)) != 0).sum())
            if k:
                name = role if role == spec.modality else f"{role} {spec.modality}"
                notes.append(f"{name} {word} in {k} of {len(flags)} windows")
    return "; ".join(notes) or "no flag set"


def windows_from_files(paths: Iterable[str | os.PathLike[str]], source: Preprocessing,
                       target: Preprocessing | None = None, classes: Sequence[str] = (),
                       *, label_map: Mapping[str, str] | None = None,
                       channel_map: Mapping[str, Any] | None = None, progress: bool = False,
                       report: list[dict[str, Any]] | None = None,
                       extra_targets: Sequence[Preprocessing] = (),
                       min_label_fraction: float = 1.0) -> Windows:
    """Read recordings of any supported format and cut windows (paired when ``target`` is given).

    Each file is read with :func:`edge_bridge.recordings.dataset.read_labelled`; its channels are found
    with ``channel_map`` or by name/modality (:func:`~edge_bridge.recordings.dataset.conform`), and a
    channel at another raw rate than the spec's is resampled by the one preprocessing path. The subject is
    the file's own subject code, else its stem. ``report``, when given, gets one entry per file: its
    subject, the channel used for each spec channel, the raw rates, windows kept and labels found.
    ``min_label_fraction`` is passed to the windowing (``Task.min_label_fraction``; 1.0 = pure windows).

    Raises
    ------
    RecordingError
        Naming the file: unreadable, a channel missing or ambiguous, a rate that cannot carry the band, or
        every window failing the quality gate (a flat or non-finite channel); also when no window at all
        comes out of the files.
    """
    from edge_bridge.recordings.dataset import conform, read_labelled, resolve_channels

    paths = sorted(Path(p) for p in paths)
    if not paths:
        raise RecordingError("no recordings given")
    if extra_targets and target is None:
        raise RecordingError("extra target modalities need a main target spec too (paired windows)")
    specs = [source] if target is None else [source, target, *extra_targets]
    it: Iterable[Path] = paths
    if progress:
        from tqdm import tqdm

        it = tqdm(paths, desc="windows", unit="rec")
    parts = []
    unknown: dict[str, int] = {}
    short: list[Path] = []
    for p in it:
        rec = read_labelled(p, channel_map, specs)
        used: dict[str, str] = {}
        try:
            for spec, role in zip(specs, ("source", "target"), strict=False):  # all found before any rename
                names = resolve_channels(rec, spec, channel_map, role if target is not None else "")
                used.update(zip(spec.channels, names, strict=True))
            s = conform(rec, source, channel_map, "source" if target is not None else "")
            for spec in extra_targets:
                names = resolve_channels(rec, spec, channel_map, spec.modality)
                used.update(zip(spec.channels, names, strict=True))
            t = conform(rec, target, channel_map, "target") if target is not None else None
            extras = [conform(rec, spec, channel_map, spec.modality) for spec in extra_targets]
            if extras:
                w = paired_windows(rec, s, t, classes, label_map, extra_targets=extras,
                                   min_label_fraction=min_label_fraction)
            else:
                w = (paired_windows(rec, s, t, classes, label_map, min_label_fraction=min_label_fraction)
                     if t is not None else
                     modality_windows(rec, s, classes, label_map, min_label_fraction=min_label_fraction))
        except SignalError as exc:
            raise RecordingError(f"{p}: {exc}") from None
        if len(w) == 0:
            if w.skipped:
                roles = {"source": s, "target": t} if t is not None else {s.modality: s}
                raise RecordingError(
                    f"{p}: all {w.skipped} windows fail the quality gate ({diagnose_quality(rec, roles)}); "
                    "a flat, clipped or non-finite channel means a lead off or a dead sensor: fix or remove "
                    "the file")
            short.append(p)
            continue
        for a in rec.annotations:
            name = label_map.get(a.label, a.label) if label_map else a.label
            if classes and name not in classes and not a.label.startswith(("BAD", "marker_")):
                unknown[a.label] = unknown.get(a.label, 0) + 1
        parts.append(w)
        if report is not None:
            report.append({"file": str(p), "subject": rec.subject, "channels": used,
                           "rates": {sp.modality: sp.input_rate for sp in (s, t, *extras) if sp is not None},
                           "windows": len(w), "left_out": w.skipped_reasons,
                           "labels": sorted({a.label for a in rec.annotations})})
    if not parts:
        raise RecordingError(f"no windows: every recording ({', '.join(map(str, short))}) is shorter than "
                             f"one {source.window_s:g} s window")
    if short:
        logger.warning("left out %d recording(s) shorter than one %g s window: %s", len(short),
                       source.window_s, ", ".join(map(str, short)))
    if unknown:
        logger.warning("annotation(s) %s are not classes of the task (%s) and were left unlabelled; map them "
                       "with --label-map LABEL=CLASS", sorted(unknown), ", ".join(classes))
    return Windows.concatenate(parts)
