"""The one data object of the host pipeline: a multi-channel, possibly multi-rate recording with labels.

Every reader (EDF+, BrainFlow CSV, WESAD, ISRUC) and the simulator return a :class:`Recording`; the paired
windowing (:mod:`edge_bridge.recordings.paired`) and training read from it. Channels keep their own sampling
rate because real wearables mix them (WESAD: chest ECG 700 Hz, wrist PPG 64 Hz).
"""

from __future__ import annotations

import copy as _copy
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_bridge.errors import RecordingError, SignalError
from edge_bridge.signals.spec import MODALITIES


@dataclass
class Channel:
    """One signal: samples in physical units at a fixed rate.

    Attributes
    ----------
    name : str
        Unique within the recording (e.g. ``"ECG"``, ``"PPG"``, ``"C3-A2"``).
    data : ndarray of float64, shape (n_samples,)
    rate : float
        Sampling rate in Hz.
    modality : str
        One of :data:`edge_bridge.signals.MODALITIES`.
    unit : str
        Physical unit (``"mV"``, ``"uV"``, ``"a.u."``).
    """

    name: str
    data: np.ndarray
    rate: float
    modality: str
    unit: str = ""

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float64)
        if self.data.ndim != 1:
            raise SignalError(f"channel {self.name!r}: data must be 1-D, got shape {self.data.shape}")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise SignalError(
                f"channel {self.name!r}: rate must be a positive number of Hz, got {self.rate!r}"
            )
        if self.modality not in MODALITIES:
            raise SignalError(
                f"channel {self.name!r}: modality must be one of {', '.join(MODALITIES)}, "
                f"got {self.modality!r}"
            )

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.data) / self.rate


@dataclass(frozen=True)
class Annotation:
    """A labelled time span in seconds from the recording start (EDF+ TAL semantics)."""

    onset: float
    duration: float
    label: str


@dataclass
class Recording:
    """Channels of one session of one subject, with a label track as annotations.

    Methods that change the recording return ``self`` so calls chain; use :meth:`copy` to keep the input.
    """

    channels: list[Channel]
    annotations: list[Annotation] = field(default_factory=list)
    start_time: dt.datetime | None = None
    subject: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [c.name for c in self.channels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RecordingError(f"channel names must be unique, got duplicates {dupes}")
        self.annotations = sorted(self.annotations, key=lambda a: (a.onset, a.label))

    # --- lookup ---------------------------------------------------------------------------------------
    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    @property
    def duration(self) -> float:
        """Length in seconds of the shortest channel (the span every channel covers)."""
        return min((c.duration for c in self.channels), default=0.0)

    def channel(self, name: str) -> Channel:
        for c in self.channels:
            if c.name == name:
                return c
        raise RecordingError(f"no channel named {name!r}; this recording has {self.channel_names}")

    def modality_channels(self, modality: str) -> list[Channel]:
        """Channels of one modality, in recording order."""
        return [c for c in self.channels if c.modality == modality]

    def data(self, names: Sequence[str]) -> tuple[np.ndarray, float]:
        """Stack channels into ``(n_channels, n_samples)``; they must share one rate.

        Channels of slightly different length (a trailing partial sample) are cut to the shortest.
        """
        chans = [self.channel(n) for n in names]
        if not chans:
            raise RecordingError("no channels requested")
        rates = {c.rate for c in chans}
        if len(rates) != 1:
            detail = ", ".join(f"{c.name}={c.rate:g} Hz" for c in chans)
            raise SignalError(f"channels {list(names)} have different rates ({detail}); read them separately")
        n = min(len(c.data) for c in chans)
        return np.stack([c.data[:n] for c in chans]), chans[0].rate

    @property
    def labels(self) -> list[str]:
        """Distinct annotation labels, sorted."""
        return sorted({a.label for a in self.annotations})

    # --- editing --------------------------------------------------------------------------------------
    def copy(self) -> Recording:
        return _copy.deepcopy(self)

    def pick(self, names: Iterable[str]) -> Recording:
        """Keep only the named channels, in the given order."""
        self.channels = [self.channel(n) for n in names]
        return self

    def crop(self, tmin: float = 0.0, tmax: float | None = None) -> Recording:
        """Keep ``[tmin, tmax)`` seconds; annotations are clipped and shifted to the new start."""
        tmax = self.duration if tmax is None else tmax
        if not 0 <= tmin < tmax:
            raise RecordingError(f"crop needs 0 <= tmin < tmax, got tmin={tmin}, tmax={tmax}")
        for c in self.channels:
            c.data = c.data[round(tmin * c.rate) : round(tmax * c.rate)]
        kept = []
        for a in self.annotations:
            lo, hi = max(a.onset, tmin), min(a.onset + a.duration, tmax)
            if hi > lo or (a.duration == 0 and tmin <= a.onset < tmax):
                kept.append(Annotation(lo - tmin, max(hi - lo, 0.0), a.label))
        self.annotations = kept
        if self.start_time is not None:
            self.start_time = self.start_time + dt.timedelta(seconds=tmin)
        return self

    def label_at(self, tmin: float, tmax: float, classes: Sequence[str],
                 label_map: Mapping[str, str] | None = None, min_fraction: float = 1.0) -> int:
        """Index in ``classes`` of the label that covers all of ``[tmin, tmax)``, else -1.

        Windows that straddle two labelled segments or an unlabelled stretch get -1 rather than a
        guess, so supervised code never trains on a mixed window. ``label_map`` renames annotations to
        classes first (a task that merges conditions, e.g. baseline + amusement -> non-stress).

        ``min_fraction`` below 1 keeps the majority label of a window that it covers for at least that
        fraction of ``[tmin, tmax)`` (``Task.min_label_fraction``): short events such as a freeze of gait
        rarely fill a whole window, and pure windows alone would throw most of them away. It must exceed
        0.5, so that at most one class can qualify. 1.0 (the default) is the pure-window rule, unchanged.

        Raises
        ------
        RecordingError
            For ``min_fraction`` outside (0.5, 1].
        """
        if min_fraction != 1.0:
            return self._majority_label(tmin, tmax, classes, label_map, min_fraction)
        for a in self.annotations:
            label = label_map.get(a.label, a.label) if label_map else a.label
            if label in classes and a.onset <= tmin + 1e-9 and a.onset + a.duration >= tmax - 1e-9:
                return list(classes).index(label)
        return -1

    def _majority_label(self, tmin: float, tmax: float, classes: Sequence[str],
                        label_map: Mapping[str, str] | None, min_fraction: float) -> int:
        """:meth:`label_at` for ``min_fraction < 1``: the class covering >= that share of the window."""
        if not (isinstance(min_fraction, int | float) and 0.5 < min_fraction <= 1.0):
            raise RecordingError(f"min_fraction must be in (0.5, 1] (a majority of the window), got "
                                 f"{min_fraction!r}")
        span = tmax - tmin
        if span <= 0:
            return -1
        pieces: dict[str, list[tuple[float, float]]] = {}
        for a in self.annotations:
            label = label_map.get(a.label, a.label) if label_map else a.label
            lo, hi = max(a.onset, tmin), min(a.onset + a.duration, tmax)
            if label in classes and hi > lo:
                pieces.setdefault(label, []).append((lo, hi))
        for label, spans in pieces.items():  # union per class: overlapping annotations count once
            covered, end = 0.0, tmin
            for lo, hi in sorted(spans):
                lo = max(lo, end)
                if hi > lo:
                    covered += hi - lo
                    end = hi
            if covered >= min_fraction * span - 1e-9:
                return list(classes).index(label)
        return -1

    def __repr__(self) -> str:
        chans = ", ".join(f"{c.name}({c.modality}, {c.rate:g} Hz)" for c in self.channels)
        return (
            f"<Recording subject={self.subject!r} {self.duration:.1f} s [{chans}] "
            f"{len(self.annotations)} annotations>"
        )
