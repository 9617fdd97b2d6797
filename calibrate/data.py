"""Paired calibration windows from on-site recordings, cut with the bundle's own preprocessing spec.

Both modalities must cover the same seconds. They come either from one recording that carries both (a
BrainFlow CSV from a board with ECG and PPG rows, an EDF+ with both channels), or from two recordings, one
per modality, aligned by their start time stamps and cropped to the span they share. Windows failing
either modality's quality gate (or overlapping a ``BAD`` annotation) are left out and counted, exactly as
on the host (:func:`edge_bridge.recordings.paired.paired_windows`).

A fused bundle (K target modalities, e.g. wrist PPG + EDA beside chest ECG) needs every modality at the
same time: one recording with all of them, or several (a chest EDF and a wrist CSV carrying PPG and EDA, or
one file per modality) aligned by start time and cropped to the span all share. They are windowed in
lockstep, each through its own spec, and a window is kept only when every modality's window passes the gate
(:func:`~edge_bridge.recordings.paired.paired_windows` with ``extra_targets``); the windows of an extra
target are keyed by its bundle key (``x["eda"]``).

Every problem is found here, before a model runs or a byte is written: a modality missing or flat, a
sampling rate too low for the spec's band, recordings that do not overlap in time, too few windows. Any
higher rate is resampled to the model's rate by the one preprocessing path (chest ECG at 256 Hz and a
wrist PPG at 128 Hz feed a 250 Hz / 64 Hz bundle), and the rates seen go into the report.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibrate.errors import CalibrationError
from edge_bridge.errors import EdgeBridgeError
from edge_bridge.recordings.paired import Windows, diagnose_quality, paired_windows
from edge_bridge.recordings.recording import Recording
from edge_bridge.signals import Preprocessing, assess_quality, cut_windows, describe_flags

logger = logging.getLogger(__name__)

MIN_FIT_WINDOWS = 8
MIN_VALIDATION_WINDOWS = 3


@dataclass
class PairedData:
    """Paired windows of all recordings, with where each came from.

    Attributes
    ----------
    windows : Windows
        ``x["source"]`` (n, C_s, L_s) and ``x["target"]`` (n, C_t, L_t), processed, float32; for a fused
        bundle also ``x[key]`` per extra target, in lockstep.
    recording : ndarray of int, shape (n,)
        Index of the recording (pair) each window comes from, into ``sources``.
    sources : list of str
        One description per recording or aligned pair.
    skipped : dict of str -> int
        Windows left out, by reason (``quality``, ``bad_span``).
    seconds : float
        Paired seconds covered by all recordings.
    rates : dict of str -> list of float
        The raw rates seen per role (``"source"``, ``"target"``, each extra target's key), in Hz, each
        resampled to the model's.
    quality_flags : dict of str -> int
        Windows by the quality flags they carry, e.g. ``{"target: PPG: low_sqi": 12}`` (a window can carry
        flags of both roles); computed when the gate left windows out.
    """

    windows: Windows
    recording: np.ndarray
    sources: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rates: dict[str, list[float]] = field(default_factory=dict)
    quality_flags: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.windows)


def _name(rec: Recording) -> str:
    return str(rec.meta.get("source_file") or rec.subject or "recording")


def _match_channels(rec: Recording, spec: Preprocessing) -> list[str] | None:
    """The recording's channels for ``spec``: by name, else the only ones of the spec's modality."""
    names = rec.channel_names
    if all(c in names for c in spec.channels):
        return list(spec.channels)
    same = [c.name for c in rec.modality_channels(spec.modality)]
    if len(same) == spec.n_channels:
        logger.info("%s: no channel(s) %s; using the %s channel(s) %s instead", _name(rec),
                    list(spec.channels), spec.modality, same)
        return same
    return None


def _has(rec: Recording, spec: Preprocessing) -> bool:
    return _match_channels(rec, spec) is not None


def _conform(rec: Recording, spec: Preprocessing, role: str) -> tuple[Recording, Preprocessing]:
    """Rename matched channels to the spec's names; return the recording and the spec at their rate.

    Any rate above twice the band's edge is fine: the spec is re-based on it
    (:meth:`~edge_bridge.signals.Preprocessing.at_rate`), so the one preprocessing path resamples it to
    the model's rate. Raises, with the fix, for a missing channel or a rate too low for the band.
    """
    names = _match_channels(rec, spec)
    if names is None:
        raise CalibrationError(
            f"{_name(rec)}: no {role} signal: the bundle's {role} spec needs {spec.modality} channel(s) "
            f"{list(spec.channels)}, the recording has {rec.channel_names}; record both modalities, or give "
            f"a second recording with the {role} signal (aligned by start time)")
    rates = {float(rec.channel(have).rate) for have in names}
    if len(rates) != 1:
        raise CalibrationError(f"{_name(rec)}: the {role} channels {names} have different rates "
                               f"{sorted(rates)} Hz; record them with one device")
    rate = rates.pop()
    try:
        at_rate = spec.at_rate(rate)
    except EdgeBridgeError as exc:
        raise CalibrationError(f"{_name(rec)}: {role} channel(s) {names}: {exc}. Nothing was written"
                               ) from None
    for want, have in zip(spec.channels, names, strict=True):
        if have != want:
            rec.channel(have).name = want
    return rec, at_rate


def utc(t: dt.datetime) -> dt.datetime:
    """``t`` as an aware UTC time: EDF+ start times are naive local clock time, BrainFlow's unix (UTC).

    A naive time is read in this machine's time zone (the device that recorded both files), so an EDF
    written at 10:00 local beside a CSV whose first timestamp is 10:00 local in unix seconds align at 0 s.
    """
    return t.astimezone(dt.UTC)


def align(source_rec: Recording, target_rec: Recording, window_s: float) -> Recording:
    """One recording with the channels of both, cropped to the seconds both cover (by start time stamps).

    Raises
    ------
    CalibrationError
        A recording without a start time, or an overlap shorter than one window.
    """
    for rec in (source_rec, target_rec):
        if rec.start_time is None:
            raise CalibrationError(f"{_name(rec)}: no start time, so it cannot be aligned with another "
                                   "recording; record both modalities in one file, or use files with time "
                                   "stamps (BrainFlow CSV, EDF+)")
    s0, t0 = utc(source_rec.start_time), utc(target_rec.start_time)
    offset = (t0 - s0).total_seconds()  # target start relative to source start
    lo = max(0.0, offset)
    hi = min(source_rec.duration, offset + target_rec.duration)
    if hi - lo < window_s:
        what = "do not overlap in time" if hi <= lo else f"overlap by only {hi - lo:.1f} s"
        raise CalibrationError(
            f"{_name(source_rec)} (from {s0}, {source_rec.duration:.0f} s) and {_name(target_rec)} (from "
            f"{t0}, {target_rec.duration:.0f} s) {what}; calibration needs at least one {window_s:g} s "
            "window recorded by both at the same time")
    src = source_rec.copy().crop(lo, hi)
    tgt = target_rec.copy().crop(lo - offset, hi - offset)
    clash = set(src.channel_names) & set(tgt.channel_names)
    channels = src.channels + [c for c in tgt.channels if c.name not in clash]
    meta = {"source_file": f"{_name(source_rec)} + {_name(target_rec)}", "aligned_offset_s": offset}
    logger.info("aligned %s: %.1f s shared (target starts %+.3f s after source)", meta["source_file"],
                hi - lo, offset)
    subject = source_rec.subject or target_rec.subject
    return Recording(channels, src.annotations, src.start_time, subject, meta)


def pair_recordings(recs: Sequence[Recording], source: Preprocessing, target: Preprocessing,
                    extras: Mapping[str, Preprocessing] | None = None) -> list[Recording]:
    """Recordings that carry both modalities; single-modality ones are paired by overlap in time.

    ``extras`` (a fused bundle's further targets, key -> spec): every modality is needed, see
    :func:`_pair_all`.
    """
    if extras:
        return _pair_all(recs, {"source": source, "target": target, **extras})
    both, only_s, only_t = [], [], []
    for rec in recs:
        has_s, has_t = _has(rec, source), _has(rec, target)
        if has_s and has_t:
            both.append(rec)
        elif has_s:
            only_s.append(rec)
        elif has_t:
            only_t.append(rec)
        else:
            raise CalibrationError(
                f"{_name(rec)}: carries neither the source signal ({source.modality} "
                f"{list(source.channels)}) "
                f"nor the target signal ({target.modality} {list(target.channels)}); it has "
                f"{rec.channel_names}")
    if len(only_s) != len(only_t):
        lonely = only_s if len(only_s) > len(only_t) else only_t
        role = "source" if lonely is only_s else "target"
        other = "target" if role == "source" else "source"
        raise CalibrationError(
            f"one modality missing: {', '.join(_name(r) for r in lonely)} carr"
            f"{'ies' if len(lonely) == 1 else 'y'} only the {role} signal and "
            f"{len(only_t) if role == 'source' else len(only_s)} recording(s) carry only the {other} signal; "
            f"calibration needs the {other} signal "
            f"({(target if role == 'source' else source).modality}) recorded at the same time")
    # pair each source-only recording with the target-only one that starts closest to it
    pairs = list(both)
    remaining = list(only_t)
    def _when(r: Recording) -> float:
        return utc(r.start_time).timestamp() if r.start_time is not None else 0.0

    for s in sorted(only_s, key=lambda r: (r.start_time is None, _when(r))):
        if s.start_time is None or any(t.start_time is None for t in remaining):
            best = remaining[0]
        else:
            best = min(remaining, key=lambda t: abs(_when(t) - _when(s)))
        remaining.remove(best)
        pairs.append(align(_conform(s, source, "source")[0], _conform(best, target, "target")[0],
                           source.window_s))
    return pairs


def _signal(role: str, spec: Preprocessing) -> str:
    return f"{role} {spec.modality} {list(spec.channels)}" if role != spec.modality else \
        f"{spec.modality} {list(spec.channels)}"


def _pair_all(recs: Sequence[Recording], roles: Mapping[str, Preprocessing]) -> list[Recording]:
    """Fused bundle: recordings that carry every modality, plus groups of partial ones aligned by time.

    Each recording with the source signal but not every target is joined, for each signal it lacks, by the
    remaining recording with that signal that starts closest to it (a chest EDF and a wrist CSV with PPG
    and EDA; or one file per modality), and the group is cropped to the span all of them cover.

    Raises
    ------
    CalibrationError
        A recording with none of the signals; a signal no recording supplies beside a source recording
        (the message names it and the channels found); a recording left over with no source beside it.
    """
    full: list[Recording] = []
    anchors: list[tuple[Recording, list[str]]] = []
    others: list[tuple[Recording, list[str]]] = []
    for rec in recs:
        has = [role for role, sp in roles.items() if _has(rec, sp)]
        if len(has) == len(roles):
            full.append(rec)
        elif not has:
            raise CalibrationError(
                f"{_name(rec)}: carries none of the fused bundle's signals "
                f"({'; '.join(_signal(r, sp) for r, sp in roles.items())}); it has {rec.channel_names}")
        else:
            (anchors if "source" in has else others).append((rec, has))

    def _when(r: Recording) -> float:
        return utc(r.start_time).timestamp() if r.start_time is not None else 0.0

    pairs = list(full)
    for rec, has in sorted(anchors, key=lambda a: (a[0].start_time is None, _when(a[0]))):
        group = [(rec, has)]
        missing = [r for r in roles if r not in has]
        while missing:
            role = missing[0]
            cands = [o for o in others if role in o[1]]
            if not cands:
                sp = roles[role]
                found = "; ".join(f"{_name(r)}: {r.channel_names}" for r, _ in group)
                raise CalibrationError(
                    f"{_name(rec)}: no {role} signal for the fused bridge: it needs {sp.modality} channel(s) "
                    f"{list(sp.channels)} recorded with the others, and no recording given carries them "
                    f"(found {found}); record every modality of the bundle "
                    f"({', '.join(s.modality for s in roles.values())}) at the same time, or add the file "
                    f"with the {sp.modality} signal (aligned by start time)")
            if rec.start_time is None or any(o[0].start_time is None for o in cands):
                best = cands[0]
            else:
                best = min(cands, key=lambda o: abs(_when(o[0]) - _when(rec)))
            others.remove(best)
            group.append((best[0], [r for r in best[1] if r in missing]))
            missing = [r for r in missing if r not in best[1]]
        conformed = []
        for r, used in group:
            for role in used:
                r = _conform(r, roles[role], role)[0]
            conformed.append(r)
        merged = conformed[0]
        for r in conformed[1:]:  # the source recording's clock; each next one cropped to the shared span
            merged = align(merged, r, roles["source"].window_s)
        pairs.append(merged)
    if others:
        lonely = ", ".join(f"{_name(r)} ({', '.join(has)})" for r, has in others)
        raise CalibrationError(
            f"one modality missing: {lonely} carr{'ies' if len(others) == 1 else 'y'} no source signal and "
            f"no recording with the source signal ({_signal('source', roles['source'])}) is left to align "
            "with; calibration needs the source recorded at the same time")
    return pairs


def quality_reasons(rec: Recording, specs: dict[str, Preprocessing]) -> dict[str, int]:
    """How many of ``rec``'s windows carry each combination of quality flags, per role.

    The same gate as the windowing (:func:`edge_bridge.signals.assess_quality` with the spec), run again
    only when it left windows out, so the report can say why: ``{"target: PPG: low_sqi": 12, ...}``.
    """
    raws = {role: cut_windows(rec.data(list(sp.channels))[0], sp)[0] for role, sp in specs.items()}
    n = min(len(r) for r in raws.values())
    counts: dict[str, int] = {}
    for role, sp in specs.items():
        for f in assess_quality(raws[role][:n], sp):
            if f.any():
                key = f"{role}: {describe_flags(f, sp.channels)}"
                counts[key] = counts.get(key, 0) + 1
    return counts


def load_paired(recordings: Sequence[Recording | str | os.PathLike[str]], source: Preprocessing,
                target: Preprocessing, *, holdout: float = 0.2,
                extras: Mapping[str, Preprocessing] | None = None) -> PairedData:
    """Paired, processed windows from on-site recordings (files or :class:`Recording` objects).

    Parameters
    ----------
    recordings : sequence of Recording or path
        Files are read with :func:`edge_bridge.recordings.read_recording` (EDF+, BrainFlow CSV, ...).
    source, target : Preprocessing
        The bundle's specs (``manifest.source``, ``manifest.target``).
    holdout : float
        Fraction kept for validation; used here only to say how much data is enough.
    extras : mapping of str -> Preprocessing, optional
        A fused bundle's further targets by key (``manifest.extra_targets``), in the bridge's input order;
        each is windowed in lockstep and must pass its own gate.

    Raises
    ------
    CalibrationError
        A modality missing or flat, a rate too low for the band, recordings that do not overlap, too few
        windows.
    """
    from edge_bridge.recordings import read_recording

    if not recordings:
        raise CalibrationError("no paired recordings given; pass --paired FILE [FILE ...] or --record")
    from edge_bridge.recordings.dataset import check_distinct

    try:
        check_distinct([r for r in recordings if not isinstance(r, Recording)], "--paired recordings")
    except EdgeBridgeError as exc:
        raise CalibrationError(str(exc)) from None
    recs: list[Recording] = []
    for item in recordings:
        if isinstance(item, Recording):
            recs.append(item.copy())
            continue
        path = Path(item)
        try:
            rec = read_recording(path)
        except EdgeBridgeError as exc:
            text = str(exc).removeprefix(f"{path}: ").removeprefix(f"{path}, ")  # said once, first
            raise CalibrationError(f"cannot read {path}: {text}") from None
        rec.meta.setdefault("source_file", str(path))
        recs.append(rec)
    extras = dict(extras or {})
    pairs = pair_recordings(recs, source, target, extras)
    parts, index, names, seconds = [], [], [], 0.0
    bases = {"source": source, "target": target, **extras}
    rates: dict[str, list[float]] = {role: [] for role in bases}
    flagged: dict[str, int] = {}
    for k, rec in enumerate(pairs):
        specs: dict[str, Preprocessing] = {}
        for role, base in bases.items():
            rec, specs[role] = _conform(rec, base, role)
        for role, base in bases.items():
            sp = specs[role]
            if sp.input_rate not in rates[role]:
                rates[role].append(sp.input_rate)
                logger.info("%s: %s %s at %g Hz%s", _name(rec), role, sp.modality, sp.input_rate,
                            f" (the bundle's spec says {base.input_rate:g} Hz; resampled to the model's "
                            f"{sp.output_rate:g} Hz)" if sp is not base else "")
        s, t = specs["source"], specs["target"]
        try:  # the live loop's gate, physiology included; a fused bundle's targets in lockstep
            if extras:
                w = paired_windows(rec, s, t, physiology=True, extra_targets=[specs[e] for e in extras])
                w.x = {**{r: w.x[r] for r in ("source", "target")},
                       **{e: w.x[specs[e].modality] for e in extras}}  # keyed as the bundle keys them
            else:
                w = paired_windows(rec, s, t, physiology=True)
        except EdgeBridgeError as exc:
            raise CalibrationError(f"{_name(rec)}: {exc}") from None
        if w.skipped_reasons.get("quality"):
            for key, v in quality_reasons(rec, specs).items():
                flagged[key] = flagged.get(key, 0) + v
        if len(w) == 0 and w.skipped:
            raise CalibrationError(
                f"{_name(rec)}: all {w.skipped} windows fail the quality gate "
                f"({diagnose_quality(rec, specs, physiology=True)})"
                "; check that both sensors are attached and recording (a flat line means lead off or a dead "
                "sensor)")
        parts.append(w)
        index.append(np.full(len(w), k, dtype=np.int64))
        names.append(_name(rec))
        seconds += rec.duration
    windows = Windows.concatenate(parts)
    reasons = dict(windows.skipped_reasons)
    data = PairedData(windows, np.concatenate(index), names, reasons, seconds, rates, flagged)
    need = minimum_windows(source, holdout)
    if len(data) < need:
        lost = f" ({sum(reasons.values())} more left out: {reasons})" if reasons else ""
        per_s = source.hop_s
        raise CalibrationError(
            f"too little paired data: {len(data)} good {source.window_s:g} s windows from {seconds:.0f} s of "
            f"recording{lost}; calibration needs at least {need} (>= {MIN_FIT_WINDOWS} to fit and "
            f">= {MIN_VALIDATION_WINDOWS} to validate, with no overlap between them). Record at least "
            f"{math.ceil((need - len(data)) * per_s)} s more")
    logger.info("%d paired windows from %d recording(s), %.0f s; left out: %s%s", len(data), len(pairs),
                seconds, reasons or "none", f" (quality flags: {flagged})" if flagged else "")
    return data


def overlap_windows(spec: Preprocessing) -> int:
    """How many hops a window spans: neighbours closer than this share samples."""
    return max(1, math.ceil(spec.window_s / spec.hop_s - 1e-9))


def minimum_windows(spec: Preprocessing, holdout: float) -> int:
    """Fewest windows (one recording) that leave enough to fit and validate after the purge gap."""
    if not 0 < holdout < 1:
        raise CalibrationError(f"--holdout must be a fraction in (0, 1), got {holdout!r}")
    gap = overlap_windows(spec) - 1
    n_val = max(MIN_VALIDATION_WINDOWS, 1)
    n = MIN_FIT_WINDOWS + gap + n_val
    while n_val < math.ceil(holdout * n):
        n_val += 1
        n = MIN_FIT_WINDOWS + gap + n_val
    return n


@dataclass(frozen=True)
class Split:
    """Indices of the windows to fit on and to validate on; ``purged`` were dropped between them."""

    fit: np.ndarray
    validate: np.ndarray
    purged: int


def holdout_split(data: PairedData, spec: Preprocessing, holdout: float) -> Split:
    """Hold out the last ``holdout`` of each recording (by time) and drop fit windows that overlap it.

    Why by time and with a gap: windows overlap (60 s windows on a 5 s hop share up to 55 s), so a random
    split would validate on data the fit has seen and accept a bridge that merely memorised.
    """
    if not 0 < holdout < 1:
        raise CalibrationError(f"--holdout must be a fraction in (0, 1), got {holdout!r}")
    fit, val, purged = [], [], 0
    starts = data.windows.starts
    for k in np.unique(data.recording):
        idx = np.flatnonzero(data.recording == k)
        idx = idx[np.argsort(starts[idx], kind="stable")]
        n_val = max(MIN_VALIDATION_WINDOWS, math.ceil(holdout * len(idx))) if len(idx) > 1 else 0
        if len(idx) - n_val < 1:
            n_val = 0
        v = idx[len(idx) - n_val:]
        cand = idx[: len(idx) - n_val]
        if len(v):
            first = starts[v].min()
            keep = starts[cand] + spec.window_s <= first + 1e-9
            purged += int((~keep).sum())
            cand = cand[keep]
        fit.append(cand)
        val.append(v)
    split = Split(np.concatenate(fit), np.concatenate(val), purged)
    if len(split.fit) < MIN_FIT_WINDOWS or len(split.validate) < MIN_VALIDATION_WINDOWS:
        raise CalibrationError(
            f"too little paired data: after holding out {len(split.validate)} windows for validation and "
            f"dropping {purged} that overlap them, {len(split.fit)} remain to fit; calibration needs at "
            "least "
            f"{MIN_FIT_WINDOWS} to fit and {MIN_VALIDATION_WINDOWS} to validate. Record longer")
    return split


def _near(starts: np.ndarray, groups: np.ndarray, block: np.ndarray, reach: float) -> np.ndarray:
    """Windows of the same group (recording) starting under ``reach`` s from a window of ``block``."""
    near = np.zeros(len(starts), dtype=bool)
    for g in np.unique(groups[block]):
        vs = starts[block][groups[block] == g]
        near |= (groups == g) & (np.abs(starts[:, None] - vs[None, :]) < reach).any(axis=1)
    return near


def purged_folds(data: PairedData, spec: Preprocessing, k: int) -> list[Split] | None:
    """``k`` contiguous validation blocks over all windows (by recording, then time), each with its fit set.

    Every window is validated exactly once, so the validation covers every state the recordings hold; a
    tail holdout of a few minutes often covers one (``bench/drift.py``: 73 held-out windows, 1.2 minutes,
    of one state, and the refit was judged on that state alone). A fit window is dropped when it shares
    any sample with a validation window of its fold (the same purge as :func:`holdout_split`).

    Returns None when a fold would have fewer than ``MIN_FIT_WINDOWS`` fit or ``MIN_VALIDATION_WINDOWS``
    validation windows: the caller falls back to the holdout.
    """
    if k < 2:
        raise CalibrationError(f"--folds must be at least 2, got {k}")
    starts, rec = data.windows.starts, data.recording
    order = np.lexsort((starts, rec))
    splits = []
    for block in np.array_split(order, k):
        val = np.zeros(len(starts), dtype=bool)
        val[block] = True
        near = _near(starts, rec, block, spec.window_s - 1e-9)
        fit = np.flatnonzero(~val & ~near)
        if len(fit) < MIN_FIT_WINDOWS or len(block) < MIN_VALIDATION_WINDOWS:
            return None
        splits.append(Split(fit, np.sort(block), int((near & ~val).sum())))
    return splits


def blocked_folds(starts: np.ndarray, groups: np.ndarray, window_s: float, k: int = 4
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` contiguous validation blocks (per group, by time) with overlapping fit windows removed.

    Used to choose the ridge penalty on the fit windows alone, so the held-out windows stay unseen.
    A fit window is dropped when it overlaps any window of the block by more than half a window.
    """
    folds = []
    order = np.lexsort((starts, groups))
    blocks = np.array_split(order, k)
    for block in blocks:
        if not len(block):
            continue
        val = np.zeros(len(starts), dtype=bool)
        val[block] = True
        near = _near(starts, groups, block, window_s / 2)
        fit = np.flatnonzero(~val & ~near)
        if len(fit) >= 2:
            folds.append((fit, np.flatnonzero(val)))
    return folds

