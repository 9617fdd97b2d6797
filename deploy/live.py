"""The live loop: N sources -> windows every hop -> quality gate -> preprocessing -> composite -> sinks.

One process serves one or many wearables with one set of engines. Each turn of the loop reads every
stream whose source holds the samples that complete its next window (``Source.ready``; a source that
cannot tell is read every turn), cuts the windows now complete, and sends all of them, from all streams,
through the composite in one batched engine call (the graphs have a dynamic batch axis); results go back
to their stream's smoother and scoring, and every record names its stream. Each stream keeps its own windower,
filter state, smoother, gap and reconnect handling, latency statistics and summary, so a stream that stalls,
disconnects, fails for good or fails the quality gate changes only its own windows.

Time is driven by the data, not the wall clock: a window is cut whenever a source has delivered a hop's
worth of new samples (:class:`~edge_bridge.signals.StreamWindower`), so a source that stalls simply delays
its windows, and a playback file gives the same windows at any speed. A window is never allowed to
straddle a gap or a reconnect: the windower (and the smoother and filter state) is reset at the gap, and
the lost samples are added to the signal clock so later windows keep their true position (which the label
comparison of the demo relies on).

Windows that fail the quality gate (:func:`~edge_bridge.signals.assess_quality`: NaN, flat, clipped or
implausible channels, and ECG/PPG beats that do not repeat their shape) are reported and counted by reason,
never fed to the model. Everything else runs through the
one preprocessing the bundle's spec names: zero-phase per window (:func:`~edge_bridge.signals.
process_windows`, batched over the streams) or causal with the filter state carried between hops
(:class:`~edge_bridge.signals.StreamPreprocessor`, which filters only each hop's new samples). A window
whose logits are not finite is an invalid row, never a class.

The loop stops on SIGINT/SIGTERM, after ``duration`` seconds, at the end of the playback files or when
every stream has ended, and always releases every source in ``finally``. A :class:`BridgeWatcher` thread
notices a new bridge published into the bundle (by calibration), tests it (finite logits on the golden
inputs) and swaps it in between two hops; a bridge that fails its test is not used, and the loop says so.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from deploy.autocal import AutoCalibrateConfig, AutoCalibrator
from deploy.drift import DEFAULT_FALSE_ALARMS_PER_DAY
from deploy.report import WindowScores
from deploy.runtime import CompositeRunner, softmax
from deploy.sinks import Sink
from deploy.stats import LatencyStats, real_time_factor
from deploy.watch import LiveWatch
from edge_bridge.bundle import MANIFEST, Bundle
from edge_bridge.errors import EdgeBridgeError
from edge_bridge.signals import (
    Preprocessing,
    StreamPreprocessor,
    StreamWindower,
    accelerometer_spec,
    assess_quality,
    describe_flags,
    motion_flags,
    process_windows,
)
from firmware_interface.errors import FirmwareError

logger = logging.getLogger(__name__)

SMOOTHING = ("none", "ema", "majority")


class LiveError(EdgeBridgeError, RuntimeError):
    """The live loop cannot start: the source does not deliver what the bundle's model needs."""


# --- smoothing --------------------------------------------------------------------------------------------
class Smoother:
    """Smooth class probabilities over consecutive windows.

    ``"none"`` passes them through; ``"ema"`` keeps an exponential moving average with weight ``alpha`` on
    the newest window; ``"majority"`` votes over the argmax of the last ``n`` windows (the probabilities are
    then the mean over those windows). Smoothing trades a few hops of delay for fewer flickering classes.
    """

    def __init__(self, kind: str = "none", *, alpha: float = 0.5, n: int = 5) -> None:
        if kind not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {', '.join(SMOOTHING)}, got {kind!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"smoothing alpha must lie in (0, 1], got {alpha!r}")
        if n < 1:
            raise ValueError(f"majority window count must be >= 1, got {n!r}")
        self.kind, self.alpha, self.n = kind, alpha, n
        self._ema: np.ndarray | None = None
        self._recent: collections.deque[np.ndarray] = collections.deque(maxlen=n)

    def update(self, probs: np.ndarray) -> tuple[np.ndarray, int]:
        """Return ``(probabilities, class index)`` after this window."""
        if self.kind == "ema":
            self._ema = probs if self._ema is None else self.alpha * probs + (1 - self.alpha) * self._ema
            return self._ema, int(np.argmax(self._ema))
        if self.kind == "majority":
            self._recent.append(probs)
            votes = np.bincount([int(np.argmax(p)) for p in self._recent], minlength=len(probs))
            mean = np.mean(self._recent, axis=0)
            best = np.flatnonzero(votes == votes.max())
            return mean, int(best[np.argmax(mean[best])])  # ties: the higher mean probability
        return probs, int(np.argmax(probs))

    def reset(self) -> None:
        """Forget history (after a gap: the windows before it say nothing about now)."""
        self._ema = None
        self._recent.clear()


# --- ground truth ----------------------------------------------------------------------------------------
#: suffixes whose labels are EDF+ annotations
EDF_SUFFIXES = (".edf", ".bdf")


@dataclass
class LabelTrack:
    """Labelled spans of a recording (seconds from its first sample), to score predictions live.

    Windows that straddle a label change (they overlap spans of two or more labels) are counted apart and
    left out of the match rate: such a window holds two conditions, so no single class is the truth for it,
    and whether the model's decision "matches" would depend only on where the boundary falls inside the
    window. With 60 s windows every 5 s, each label change makes 11 such windows; the summary reports how
    many there were so the match rate's base is clear.
    """

    spans: list[tuple[float, float, str]]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LabelTrack:
        """Read a label sidecar ``{"annotations": [{"onset", "duration", "label"}, ...]}`` or an EDF+ file.

        In an EDF+ file the annotations with a duration are the labels; zero-length ones (events, markers)
        and ``BAD...`` spans are not.
        """
        from edge_bridge.recordings.edf import has_edf_header

        path = Path(path)
        if path.is_dir():
            raise LiveError(f"{path}: is a directory; --labels takes a label sidecar (JSON) or an EDF+ file")
        if path.suffix.lower() in EDF_SUFFIXES or has_edf_header(path):
            return cls._from_edf(path)
        try:
            data = json.loads(path.read_text())
            spans = [(float(a["onset"]), float(a["duration"]), str(a["label"])) for a in data["annotations"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LiveError(f"{path}: cannot read the label sidecar ({exc}); expected JSON with "
                            "'annotations': [{onset, duration, label}, ...], or an EDF+ file") from None
        bad = [s for s in spans if not (math.isfinite(s[0]) and math.isfinite(s[1]) and s[1] >= 0)]
        if bad:
            raise LiveError(f"{path}: label span {bad[0]} needs a finite onset and a duration >= 0")
        return cls(spans)

    @classmethod
    def _from_edf(cls, path: Path) -> LabelTrack:
        from edge_bridge.recordings import read_edf

        rec = read_edf(path)
        spans = [(float(a.onset), float(a.duration), str(a.label)) for a in rec.annotations
                 if a.duration and a.duration > 0 and not str(a.label).startswith("BAD")]
        if not spans:
            logger.warning("%s: no annotation with a duration, so no window can be scored", path)
        return cls(spans)

    def classify(self, tmin: float, tmax: float) -> tuple[str | None, bool]:
        """``(label, straddles)`` for the window ``[tmin, tmax)``.

        ``label`` is the one label covering all of it, else ``None``; ``straddles`` is True when the window
        overlaps spans of two or more different labels (a label change inside it).
        """
        inside = {label for onset, dur, label in self.spans
                  if onset < tmax - 1e-9 and onset + dur > tmin + 1e-9}
        if len(inside) > 1:
            return None, True
        return self.label_at(tmin, tmax), False

    def label_at(self, tmin: float, tmax: float) -> str | None:
        """The label covering all of ``[tmin, tmax)``, else ``None`` (mixed or unlabelled windows)."""
        for onset, dur, label in self.spans:
            if onset <= tmin + 1e-9 and onset + dur >= tmax - 1e-9:
                return label
        return None


# --- configuration and summary ----------------------------------------------------------------------------
@dataclass
class LiveConfig:
    """Settings of the live loop.

    Attributes
    ----------
    smoothing : {"none", "ema", "majority"}
    alpha : float
        EMA weight of the newest window.
    majority : int
        Windows in the majority vote.
    warmup_windows : int
        First predicted windows left out of the latency percentiles.
    poll_interval : float
        Seconds to wait when the source had nothing new (the source's own reader thread drains the device
        on its hop; this only sets how soon the loop notices new samples).
    duration : float or None
        Stop after this many seconds of running (wall clock).
    watch_bridge : bool
        Watch the bundle for a newly published bridge and swap it in.
    watch_interval : float
        Seconds between two looks at the manifest's modification time.
    adapt_rate : bool
        Ignored (kept so old callers still construct): a source at any rate above the band's minimum is
        resampled to the model's rate (:func:`check_rate`).
    bundle_check : callable or None
        Called with the bundle root before a newly published bridge is tried (deploy passes the signature
        check); an exception keeps the current bridge.
    filtering : {"zerophase", "causal"} or None
        How to filter, overriding the bundle spec's ``filtering`` (None, the default: the spec's, i.e. what
        the model was trained with). ``"causal"`` on a zero-phase bundle is for measuring, not serving:
        the model then sees inputs unlike its training windows (the loop warns).
    drift_false_alarms_per_day : float or None
        Drift alarm budget (:mod:`deploy.drift`); None: no drift detection. Needs the bundle's reference.
    paired_watch : bool
        Run the source model on streams that also carry the source modality (:mod:`deploy.watch`).
    auto_calibrate : AutoCalibrateConfig or None
        Recalibrate on drift (:mod:`deploy.autocal`); needs the bridge watcher and a single stream.
    quality : {"physiology", "basic"}
        The gate: ``"physiology"`` (default) adds the bundle spec's beat-template index and motion checks to
        the broken-signal ones; ``"basic"`` keeps only NaN, flat, clipped and out-of-range (for sources
        whose signal is not physiological, such as BrainFlow's synthetic board, or to see every decision).
    missing_modality : {"skip", "fallback"}
        A fused bundle's window whose span lacks a gate-passing window of some modality: ``"skip"`` it
        (counted by reason, the modality named), or ``"fallback"`` to the modalities present where the
        bundle has a bridge for them. Bundles carry one fused bridge today, so ``"fallback"`` says so at
        start and skips; it never invents a bridge. Ignored for single-target bundles.
    """

    smoothing: str = "none"
    alpha: float = 0.5
    majority: int = 5
    warmup_windows: int = 3
    poll_interval: float = 0.02
    duration: float | None = None
    watch_bridge: bool = True
    watch_interval: float = 0.5
    adapt_rate: bool = True
    bundle_check: Callable[[Path], None] | None = None
    filtering: str | None = None
    drift_false_alarms_per_day: float | None = DEFAULT_FALSE_ALARMS_PER_DAY
    paired_watch: bool = True
    auto_calibrate: AutoCalibrateConfig | None = None
    quality: str = "physiology"
    missing_modality: str = "skip"


MISSING_MODALITY = ("skip", "fallback")


@dataclass
class LiveSummary:
    """What the loop did, for the closing summary (``to_dict`` is what ``bench/live.py`` writes)."""

    windows: int = 0
    predicted: int = 0
    invalid: int = 0  # windows whose logits were NaN or inf: marked invalid, never given a class
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    source_rate_hz: float | None = None  # the rate the source delivered (None: streams differ, see streams)
    samples: int = 0
    gaps: int = 0
    lost_samples: int = 0
    reconnects: int = 0
    windower_resets: int = 0
    signal_seconds: float = 0.0
    wall_seconds: float = 0.0
    compute_seconds: float = 0.0
    latency: dict[str, Any] = field(default_factory=dict)
    real_time_factor: float | None = None
    bridge_versions: list[int] = field(default_factory=list)
    bridge_events: list[str] = field(default_factory=list)
    labelled: int = 0
    matched: int = 0
    straddling: int = 0
    out_of_order: int = 0
    duplicate_timestamps: int = 0
    nonfinite_timestamps: int = 0
    package_out_of_order: int = 0
    package_nonfinite: int = 0
    stop_reason: str = ""
    #: drift, paired watch and auto-calibrate figures (deploy.watch.LiveWatch.summary)
    watch: dict[str, Any] = field(default_factory=dict)
    #: every predicted window of a labelled recording (deploy.report: balanced accuracy, recall, confusion)
    scores: WindowScores | None = None
    #: per stream id, the same figures for that stream alone (the fields above are the totals)
    streams: dict[str, LiveSummary] = field(default_factory=dict)

    @property
    def match_rate(self) -> float | None:
        return self.matched / self.labelled if self.labelled else None

    def to_dict(self) -> dict[str, Any]:
        streams, self.streams, scores, self.scores = self.streams, {}, self.scores, None
        try:
            d = dataclasses.asdict(self)
        finally:
            self.streams, self.scores = streams, scores
        d["match_rate"] = self.match_rate
        d.pop("scores")
        d["labels_report"] = scores.report() if scores is not None else None
        d["streams"] = {k: v.to_dict() for k, v in self.streams.items()}
        return d

    def stream_lines(self) -> list[str]:
        """One line per stream (only worth printing when there are several)."""
        out = []
        for key, st in self.streams.items():
            lat = st.latency
            p = f"p50 {lat['p50_ms']:.1f} / p99 {lat['p99_ms']:.1f} ms" if lat.get("n") else "no latency yet"
            match = f", matched {st.matched}/{st.labelled}" if st.labelled else ""
            out.append(f"stream {key}: {st.windows} windows ({st.predicted} predicted, {st.skipped} skipped"
                       f"{f', {st.invalid} invalid' if st.invalid else ''}), lost samples {st.lost_samples}, "
                       f"reconnects {st.reconnects}, {p}{match}; {st.stop_reason}")
        return out

    def lines(self) -> list[str]:
        lat = self.latency
        out = [
            f"stopped: {self.stop_reason}",
            f"windows: {self.windows} ({self.predicted} predicted, {self.skipped} skipped by the quality "
            "gate" + (f", {self.invalid} invalid: non-finite logits, no class" if self.invalid else "") + ")",
        ]
        if self.skipped_reasons:
            reasons = sorted(self.skipped_reasons.items())
            out.append("  skipped: " + "; ".join(f"{k} x{v}" for k, v in reasons))
        rate = f" at {self.source_rate_hz:g} Hz" if self.source_rate_hz else ""
        out += [
            f"samples: {self.samples}{rate} ({self.signal_seconds:.1f} s of signal in "
            f"{self.wall_seconds:.1f} s); "
            f"gaps {self.gaps}, lost samples {self.lost_samples}, reconnects {self.reconnects}",
        ]
        if lat.get("n"):
            out.append(f"latency after {lat['warmup']} warm-up window(s), n={lat['n']}: "
                       f"p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, "
                       f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms")
        else:
            out.append("latency: no window after warm-up")
        if self.real_time_factor is not None:
            out.append(f"real-time factor: {self.real_time_factor:.5f} (compute time / signal time)")
        out.append("bridge: " + " -> ".join(f"v{v:04d}" for v in self.bridge_versions))
        out += [f"  {e}" for e in self.bridge_events]
        odd = {"out-of-order timestamps": self.out_of_order,
               "duplicate timestamps": self.duplicate_timestamps,
               "non-finite timestamps": self.nonfinite_timestamps,
               "out-of-order package numbers": self.package_out_of_order,
               "non-finite package numbers": self.package_nonfinite}
        if any(odd.values()):
            out.append("timing: " + ", ".join(f"{k} {v}" for k, v in odd.items()))
        if self.labelled:
            out.append(f"matched the simulated labels: {self.matched}/{self.labelled} labelled windows "
                       f"({100 * self.matched / self.labelled:.0f}%)")
        if self.straddling:
            out.append(f"straddling a label change: {self.straddling} window(s), left out of the match rate")
        out += self.watch.get("lines", [])
        if self.scores is not None:
            out += self.scores.lines()
        if len(self.streams) > 1:
            out.insert(0, f"streams: {len(self.streams)} in one process, windows batched per hop "
                          "(figures below are totals; per stream after them)")
            out += self.stream_lines()
        return out


# --- channel and rate checks ------------------------------------------------------------------------------
def match_channels(source_channels: Sequence[Any], spec: Preprocessing) -> list[int]:
    """Indices of the spec's channels among the source's, by name, else by modality for one-channel specs.

    Raises
    ------
    LiveError
        A channel the model needs is not delivered (the message lists what the source has).
    """
    names = [c.name for c in source_channels]
    lower = {n.lower(): k for k, n in enumerate(names)}
    idx: list[int] = []
    for want in spec.channels:
        if want.lower() in lower:
            idx.append(lower[want.lower()])
            continue
        same = [k for k, c in enumerate(source_channels) if getattr(c, "modality", None) == spec.modality]
        if spec.n_channels == 1 and same:
            logger.info("the model wants channel %r; using the source's first %s channel %r", want,
                        spec.modality, names[same[0]])
            idx.append(same[0])
            continue
        have = ", ".join(f"{c.name} ({getattr(c, 'modality', '?')})" for c in source_channels)
        raise LiveError(f"the model needs channel {want!r} ({spec.modality}) but the source delivers {have}; "
                        "pick a source that has it, or name the rows in a device profile (profile=FILE)")
    return idx


def check_rate(source_rate: float, spec: Preprocessing, adapt: bool = True) -> Preprocessing:
    """The spec for a source at ``source_rate``: the bundle's, re-based on that rate
    (:meth:`~edge_bridge.signals.Preprocessing.at_rate`; the model still sees ``output_rate``).

    Any rate above twice the band's upper edge works; a slower one is refused, naming the minimum.
    ``adapt`` is ignored (it used to have to be True for any rate but the spec's own).
    """
    try:
        return spec.at_rate(float(source_rate))
    except EdgeBridgeError as exc:
        raise LiveError(f"the bundle's model needs {spec.modality} above {spec.min_input_rate:g} Hz; the "
                        f"source delivers {source_rate:g} Hz: {exc}") from None


# --- bridge watcher ---------------------------------------------------------------------------------------
class BridgeWatcher:
    """Background thread: when ``manifest.json`` changes, test the new current bridge and swap it in.

    The check is one ``stat`` per ``interval``. Loading and testing happen in this thread, so the loop
    never waits for them; the swap itself takes the runner's lock, which a window holds only while it runs
    through the three parts, so the new bridge takes effect between two windows and no window is dropped.
    """

    def __init__(self, runner: CompositeRunner, interval: float = 0.5,
                 check: Callable[[Path], None] | None = None) -> None:
        self.runner = runner
        self.interval = interval
        self.check = check
        self.path = runner.bundle.root / MANIFEST
        self.events: list[str] = []
        self.versions: list[int] = [runner.bridge_version]
        self._stamp = self._stat()
        self._tried: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-bridge bridge watcher", daemon=True)

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            stamp = self._stat()
            if stamp is None or stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                self.check_now()
            except Exception as exc:  # keep watching: a half-copied bundle may be fine a moment later
                self._event(f"could not read the updated bundle ({exc}); keeping bridge "
                            f"v{self.runner.bridge_version:04d}", logging.WARNING)

    def check_now(self) -> None:
        """Look at the manifest now and swap if it names another, untried bridge version."""
        bundle = Bundle.load(self.runner.bundle.root)  # verifies hashes of what the manifest lists
        version = bundle.manifest.current_bridge
        if version == self.runner.bridge_version or version in self._tried:
            return
        if self.check is not None:  # e.g. the signatures: raises, and the watcher keeps the current bridge
            self.check(bundle.root)
        self._tried.add(version)
        engine, check = self.runner.prepare_bridge(bundle)
        if not check.passed:
            engine.close()
            self._event(f"bridge v{version:04d} failed its self-test ({check.detail}); keeping bridge "
                        f"v{self.runner.bridge_version:04d}", logging.WARNING)
            return
        old = self.runner.bridge_version
        self.runner.swap_bridge(engine, version)
        self.runner.bundle = bundle
        self.versions.append(version)
        self._event(f"switched bridge v{old:04d} -> v{version:04d} without restarting ({check.detail})",
                    logging.INFO)
        self._tried.discard(version)

    def _event(self, text: str, level: int) -> None:
        self.events.append(text)
        logger.log(level, "%s", text)


# --- the loop ---------------------------------------------------------------------------------------------
@dataclass
class StreamInput:
    """One wearable served by the loop: the id every record carries, its source (not started) and labels.

    ``extra_sources`` serves a fused bundle whose modalities arrive at different rates: a fused target's key
    (``Bundle.extra_keys``, e.g. ``"eda"``) -> the source (not started) that delivers it, such as a second
    board or preset at its own rate. A key not listed is looked for among ``source``'s channels (one board
    carrying PPG and EDA at one rate). The pipeline starts and stops these with the stream.
    """

    id: str
    source: Any
    labels: LabelTrack | None = None
    extra_sources: dict[str, Any] = field(default_factory=dict)


@dataclass
class _ExtraWindow:
    """One further modality's raw window over a main target window's span."""

    raw: np.ndarray
    t0: float  # when its last samples were in hand


class _Extra:
    """A fused bundle's further target modality on one stream: its rows and its recent samples.

    The main target's windower decides the spans (as for the paired watch); this modality keeps its
    samples in a buffer indexed by its own signal clock (samples since the start, lost ones counted) and
    cuts its window over each span on demand: sample ``round(start_s * rate)`` on, one window long, at its
    own rate (the one preprocessing of :mod:`edge_bridge.signals` resamples it to the model's). So a
    modality on another source at another rate stays in lockstep, to half a sample of the coarser rate,
    and a gap in it leaves only the spans that cover the gap without a window.
    """

    def __init__(self, key: str, spec: Preprocessing, source: Any | None) -> None:
        self.key = key
        self.base_spec = spec
        self.spec = spec
        self.source = source  # None: the stream's own source carries this modality
        self.rows: list[int] = []
        self.bound = False
        self.buf = np.empty((spec.n_channels, 0))
        self.buf_start = 0  # signal-clock index of buf[:, 0]
        self.ended = ""  # its own source stopped ("" while it runs, or when it is the stream's source)
        self.last_ts = np.empty(0)  # its own source's last time stamp read (where a gap falls)
        self.last_t0 = 0.0  # when its latest samples were read
        self._ready: Callable[[int], bool] | None = getattr(source, "ready", None)

    @property
    def own(self) -> bool:
        """Whether the modality has its own source (else it rides on the stream's)."""
        return self.source is not None

    @property
    def seen(self) -> int:
        """Signal-clock index one past the last sample that arrived."""
        return self.buf_start + self.buf.shape[1]

    @property
    def seen_s(self) -> float:
        return self.seen / float(self.spec.input_rate)

    def due(self, behind: bool) -> bool:
        """Read its source now: a hop's worth is there, or any sample while main windows wait for it."""
        if self._ready is None or not self.bound:
            return True
        return self._ready(1 if behind else self.spec.hop_samples)

    def push(self, data: np.ndarray, t0: float) -> None:
        if data.shape[1]:
            self.buf = np.concatenate([self.buf, data], axis=1)
            self.last_t0 = t0

    def gap(self, lost: int) -> None:
        """After a gap on this modality's samples: forget them, and count the lost ones on the clock."""
        self.buf_start = self.seen + int(lost)
        self.buf = self.buf[:, :0]

    def window(self, start_s: float) -> np.ndarray | str | None:
        """The raw window over the span starting at ``start_s``; None while it may still come, else (a
        string) why it will not."""
        i0 = round(start_s * float(self.spec.input_rate))
        n = self.spec.window_samples
        if i0 < self.buf_start:
            return "no window over this span: a gap"
        if i0 + n <= self.seen:
            return self.buf[:, i0 - self.buf_start:i0 - self.buf_start + n].copy()
        if not self.own:  # the same source: its samples of this span came with the main target's
            return "no window over this span"
        return f"no window over this span: {self.ended}" if self.ended else None

    def trim(self, keep_s: float) -> None:
        """Drop samples before ``keep_s`` (no pending or future window starts earlier)."""
        k = int(np.floor(keep_s * float(self.spec.input_rate))) - 1 - self.buf_start
        if k > 0:
            self.buf = self.buf[:, k:]
            self.buf_start += k


class _Stream:
    """Everything one stream keeps between hops: binding, windower, filter state, smoother, counters.

    Nothing here is shared with another stream, so a stream that stalls, reconnects or fails the quality
    gate changes only its own windows and figures.
    """

    def __init__(self, inp: StreamInput, config: LiveConfig, base_spec: Preprocessing,
                 said: set[str] | None = None, extras: Sequence[Any] = ()) -> None:
        self.id, self.source, self.labels = str(inp.id), inp.source, inp.labels
        unknown = sorted(set(inp.extra_sources) - {e.key for e in extras})
        if unknown:
            raise LiveError(f"stream {inp.id}: a source was given for modality(ies) {unknown}, but the "
                            f"bundle's further targets are {[e.key for e in extras] or 'none'}")
        # a fused bundle's further targets (ExtraTarget), each on its own source or on this stream's
        self.extras = [_Extra(e.key, e.spec, inp.extra_sources.get(e.key)) for e in extras]
        self.said = said if said is not None else set()  # warnings already given, shared by all streams
        self.config = config
        self.base_spec = base_spec
        self.spec: Preprocessing = base_spec
        self.rows: list[int] = []
        self.shared_rows: list[int] = []  # fused: the further modalities' rows on this same source
        self.acc_rows: list[int] = []  # the source's accelerometer rows, for the gate's MOTION check
        self.acc: StreamWindower | None = None
        self.windower: StreamWindower | None = None
        self.pre: StreamPreprocessor | None = None
        self.pre_base = 0  # windower index of the preprocessor's first sample (since its last reset)
        self.pre_buf: list[np.ndarray] = []  # samples read since the last window, filtered at the next
        self.smoother = Smoother(config.smoothing, alpha=config.alpha, n=config.majority)
        self.stats = LatencyStats(config.warmup_windows)
        self.summary = LiveSummary()
        self.offset = 0  # samples lost before the windower's current stream (keeps the signal clock true)
        self.chunk_first = 0  # windower index of the current chunk's first sample
        self.chunk_ts = np.empty(0)
        self.skip_logged_at = -1e9
        self.ended = ""  # why this stream stopped ("" while it runs)
        self._ready: Callable[[int], bool] | None = getattr(inp.source, "ready", None)
        self.t0 = 0.0  # when the chunk being windowed was read (a window's latency starts there)
        try:  # BrainFlow boards know their rate and channels now; frame devices after their first frame
            self.bind()
        except FirmwareError as exc:
            logger.debug("source not bound before start: %s", exc)

    def bind(self) -> None:
        """Check the source's rate and channels against the bundle's target spec (once), and those of a
        fused bundle's further targets (each once its source can tell)."""
        if self.windower is None:
            self._bind_target()
        for ex in self.extras:
            if not ex.bound and not ex.ended:
                self._bind_extra(ex)
        self.shared_rows = [r for ex in self.extras if not ex.own for r in ex.rows]

    def _adjust(self, spec: Preprocessing) -> Preprocessing:
        """The config's filtering and quality overrides on a rate-checked spec (main target's rules)."""
        if self.config.filtering is not None and self.config.filtering != spec.filtering:
            spec = dataclasses.replace(spec, filtering=self.config.filtering)
        if self.config.quality == "basic":
            spec = dataclasses.replace(spec, quality=dataclasses.replace(spec.quality, min_beat_sqi=0.0,
                                                                         max_motion=None))
        return spec

    def _bind_extra(self, ex: _Extra) -> None:
        """One further target: its rate and channels, on its own source or on this stream's."""
        src = ex.source if ex.own else self.source
        rate = float(src.sampling_rate)
        spec = self._adjust(check_rate(rate, ex.base_spec))
        main = self.spec
        if (spec.window_s, spec.hop_s) != (main.window_s, main.hop_s):
            raise LiveError(f"the bundle's {ex.key} windows ({spec.window_s:g} s every {spec.hop_s:g} s) "
                            f"differ from its {main.modality} windows ({main.window_s:g} s every "
                            f"{main.hop_s:g} s); a fused bridge needs them in lockstep: re-export the bundle")
        ex.rows = match_channels(src.channels, spec)
        if not ex.own and set(ex.rows) & set(self.rows):
            raise LiveError(f"the source's channel {src.channels[ex.rows[0]].name!r} would feed both "
                            f"{main.modality} and {ex.key}; name each modality's rows in a device profile "
                            "(profile=FILE)")
        if spec.filtering == "causal" or main.filtering == "causal":
            raise LiveError(f"causal filtering is not built for a fused bundle ({main.modality} + {ex.key}); "
                            "serve it as its spec says (zero-phase), without --filtering causal")
        ex.spec = spec
        ex.buf = np.empty((spec.n_channels, 0))
        ex.bound = True
        where = "its own source" if ex.own else "the same source"
        logger.info("stream %s: %s at %g Hz on %s%s", self.id, ex.key, rate, where,
                    f", resampled to the model's {spec.output_rate:g} Hz" if rate != spec.output_rate else "")

    def _bind_target(self) -> None:
        rate = float(self.source.sampling_rate)
        spec = check_rate(rate, self.base_spec)
        self.summary.source_rate_hz = rate
        logger.info("stream %s: %s at %g Hz%s", self.id, spec.modality, rate,
                    f", resampled to the model's {spec.output_rate:g} Hz" if rate != spec.output_rate else "")
        if self.config.filtering is not None and self.config.filtering != spec.filtering:
            level = logging.DEBUG if "filtering" in self.said else logging.WARNING  # once, not per stream
            self.said.add("filtering")
            logger.log(level, "stream %s: filtering %s although the bundle was trained with %s filtering; "
                       "the model sees other inputs than in training", self.id, self.config.filtering,
                       spec.filtering)
            spec = dataclasses.replace(spec, filtering=self.config.filtering)
        if self.config.quality == "basic":  # broken-signal checks only: no beat index, no motion
            spec = dataclasses.replace(spec, quality=dataclasses.replace(spec.quality, min_beat_sqi=0.0,
                                                                         max_motion=None))
        self.rows = match_channels(self.source.channels, spec)
        chans = self.source.channels
        self.acc_rows = [i for i, c in enumerate(chans) if getattr(c, "modality", "") == "acc"
                         and i not in self.rows] if spec.quality.max_motion is not None else []
        if self.acc_rows:
            self.acc = StreamWindower(accelerometer_spec(spec, [chans[i].name for i in self.acc_rows]))
            logger.info("stream %s: accelerometer %s gates windows that move more than %g g", self.id,
                        [chans[i].name for i in self.acc_rows], spec.quality.max_motion)
        self.spec = spec
        self.windower = StreamWindower(spec)
        self.hop_samples = spec.hop_samples
        self.pre = StreamPreprocessor(spec) if spec.filtering == "causal" else None

    def due(self) -> bool:
        """Whether to read this stream in this turn: its source holds the samples that complete the next
        window (at most a hop's worth), or news (a reconnect, a failure, the end).

        Reading sooner only moves samples from the source's buffer into the windower's, one frame at a
        time: with hundreds of wearables that per-chunk work was most of the loop's cost. A source that
        cannot tell (no ``ready``) is read every turn.
        """
        if self._ready is None or self.windower is None:
            return True
        return self._ready(min(self.windower.samples_to_next_window, self.hop_samples))

    def reset(self) -> None:
        """After a gap or reconnect: no window straddles it, no smoothing or filter state crosses it."""
        assert self.windower is not None
        self.windower.reset()
        if self.acc is not None:
            self.acc.reset()
        self.smoother.reset()
        if self.pre is not None:
            self.pre.reset()
            self.pre_buf.clear()
            self.pre_base = self.windower.samples_seen


@dataclass
class _Cut:
    """A window cut this hop, waiting for the hop's one batched engine call."""

    stream: _Stream
    start: int
    raw: np.ndarray
    x: np.ndarray | None  # model input already (causal streams), else computed in the batch
    t0: float
    record: dict[str, Any]
    start_s: float
    end_s: float
    acc: np.ndarray | None = None  # the accelerometer's window over the same samples, when the source has one
    extras: dict[str, _ExtraWindow] = field(default_factory=dict)  # fused: each further modality's window
    missing: dict[str, str] = field(default_factory=dict)  # fused: modality -> why it has no window here


class LivePipeline:
    """Run a bundle's composite on one or many live sources until stopped.

    Every hop the loop reads each stream's new samples, cuts the windows now complete, and runs all of
    them, from every stream, through the three parts in one batched engine call (the graphs have a dynamic
    batch axis); the results go back to their streams' smoothers and to the sinks, each record naming its
    stream. One process, one set of engines, whatever the number of wearables.

    Parameters
    ----------
    runner : CompositeRunner
        Loaded, warmed-up and self-tested parts, shared by all streams.
    source : firmware_interface.Source or sequence of StreamInput
        One source (stream id ``"0"``), or several streams. Not started yet; the pipeline starts each and
        always stops each (releasing the boards).
    sinks : list of Sink
        Where prediction records go; closed when the loop ends.
    config : LiveConfig, optional
    labels : LabelTrack, optional
        Ground truth of a single source, to report how often predictions matched (demo recordings); with
        several streams each StreamInput carries its own.

    Examples
    --------
    >>> pipe = LivePipeline(runner, open_source("playback:demo.csv"), [JsonlSink()])   # doctest: +SKIP
    >>> summary = pipe.run()
    """

    def __init__(self, runner: CompositeRunner, source: Any, sinks: Sequence[Sink],
                 config: LiveConfig | None = None, labels: LabelTrack | None = None) -> None:
        self.runner = runner
        self.sinks = list(sinks)
        self.config = config or LiveConfig()
        m = runner.bundle.manifest
        self.classes = list(m.classes)
        self.label_map = dict(m.label_map)  # annotations -> classes, for tasks that merge conditions
        inputs = list(source) if _is_stream_list(source) else [StreamInput("0", source, labels)]
        ids = [str(i.id) for i in inputs]
        if not inputs or len(set(ids)) != len(ids):
            raise LiveError(f"streams need distinct ids, got {ids}")
        self.extra_keys = tuple(m.extra_keys)  # a fused bundle's further targets (empty: one target)
        self.notes: list[str] = []  # start lines about the fused modalities (none for a single target)
        if self.config.missing_modality not in MISSING_MODALITY:
            raise LiveError(f"missing_modality must be one of {', '.join(MISSING_MODALITY)}, got "
                            f"{self.config.missing_modality!r}")
        if self.extra_keys:
            self._fused_notes(m)
        elif any(i.extra_sources for i in inputs):
            raise LiveError("sources were given for further modalities, but this bundle has one target "
                            f"({m.target.modality}); they serve fused bundles only")
        self._waiting: list[_Cut] = []  # fused windows whose partner modality has not arrived yet
        self.streams = []
        said: set[str] = set()
        for i in inputs:
            try:
                self.streams.append(_Stream(i, self.config, m.target, said, m.extra_targets))
            except LiveError as exc:
                exc.stream = str(i.id)  # type: ignore[attr-defined]  # which stream, for the caller's message
                raise
        self.summary = LiveSummary(bridge_versions=[runner.bridge_version],
                                   streams={st.id: st.summary for st in self.streams})
        self.stats = LatencyStats(0)  # all streams, each after its own warm-up
        self._pending: list[_Cut] = []
        self._cutting = self.streams[0]  # the stream whose chunk is being cut into windows
        self._stop = threading.Event()
        self._stop_reason = ""
        self.watch = self._make_watch()

    def _fused_notes(self, m: Any) -> None:
        """What a fused bundle's loop does with its modalities, said once at start."""
        names = [m.target.modality, *self.extra_keys]
        self.notes.append(f"fused bundle: {' + '.join(names)} windowed in lockstep (the same span of each, "
                          "each through its own preprocessing); a window is predicted only when every "
                          "modality's window passes the quality gate")
        if self.config.missing_modality == "fallback":
            self.notes.append(f"missing modality: fallback asked, but this bundle carries one fused bridge "
                              f"over {' + '.join(names)} and no bridge for fewer modalities, so a window "
                              "missing one is skipped (as --missing-modality skip)")
        if self.config.drift_false_alarms_per_day is not None:
            self.notes.append(f"drift: scored on the main target's ({m.target.modality}) features, as the "
                              "bundle's reference is")
        for line in self.notes:
            logger.info("%s", line)

    def _make_watch(self) -> LiveWatch:
        """Drift monitors, paired watch and auto-calibrate (:mod:`deploy.watch`), as the config asks.

        On a fused bundle the drift monitors see the main target's ``h`` and window (what
        :meth:`~deploy.runtime.CompositeRunner.run_targets` keeps, and what the bundle's reference was
        computed on); the paired watch compares the source model with the fused composite's class.
        Auto-calibrate refits a single-input bridge, so it is refused for a fused bundle.
        """
        cfg = self.config
        autocal = None
        if cfg.auto_calibrate is not None and self.extra_keys:
            raise LiveError("auto-calibrate cannot refit a fused bridge yet (calibrate refits one input "
                            "map); run a fused bundle without --auto-calibrate")
        if cfg.auto_calibrate is not None:
            if not cfg.watch_bridge:
                raise LiveError("auto-calibrate swaps the refit bridge in through the bridge watcher; leave "
                                "out --no-watch")
            if len(self.streams) > 1:
                raise LiveError("auto-calibrate refits the one bridge all streams share, so it serves a "
                                "single stream; run it with one --source")
            autocal = AutoCalibrator(self.runner.bundle.root, cfg.auto_calibrate,
                                     lambda: self.runner.bridge_version)
        watch = LiveWatch(self.runner, self.streams, false_alarms_per_day=cfg.drift_false_alarms_per_day,
                          paired=cfg.paired_watch, autocal=autocal, emit=self._emit, pairing=_pairing)
        for line in watch.lines:
            logger.info("%s", line)
        return watch

    # --- the first stream, for single-source callers --------------------------------------------------
    @property
    def source(self) -> Any:
        return self.streams[0].source

    @property
    def spec(self) -> Preprocessing:
        return self.streams[0].spec

    @property
    def rows(self) -> list[int]:
        return self.streams[0].rows

    @property
    def windower(self) -> StreamWindower | None:
        return self.streams[0].windower

    @property
    def labels(self) -> LabelTrack | None:
        return self.streams[0].labels

    # --- control --------------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to finish after the current window (thread-safe)."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stop.is_set():  # a second signal: the user insists
                signal.signal(signum, previous.get(signum, signal.SIG_DFL))
                raise KeyboardInterrupt
            logger.warning("%s received: finishing the current window and releasing the source", name)
            self.stop(name)

        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # --- main loop --------------------------------------------------------------------------------------
    def run(self) -> LiveSummary:
        """Stream until stopped; returns the summary (also in :attr:`summary`)."""
        cfg = self.config
        watcher = (BridgeWatcher(self.runner, cfg.watch_interval, cfg.bundle_check) if cfg.watch_bridge
                   else None)
        t_start = time.monotonic()
        single = len(self.streams) == 1
        try:
            with self._signals():
                for st in self.streams:
                    try:
                        st.source.start()
                    except FirmwareError as exc:
                        if single:
                            raise
                        st.ended = f"source failed to start: {exc}"
                        logger.error("stream %s: %s; the other streams go on", st.id, exc)
                        continue
                    if st.extras:
                        self._start_extras(st, single)
                    st.bind()
                if all(st.ended for st in self.streams):
                    raise LiveError("no stream could start: " + "; ".join(f"{st.id}: {st.ended}"
                                                                          for st in self.streams))
                if watcher is not None:
                    watcher.start()
                spec = self.spec
                logger.info("live: %d stream(s) of %s at %g Hz, %g s windows every %g s (%s filtering), "
                            "classes %s", len(self.streams), spec.modality, spec.input_rate, spec.window_s,
                            spec.hop_s, spec.filtering, self.classes)
                if self.extra_keys:
                    logger.info("live: fused with %s", ", ".join(
                        f"{ex.key} at {ex.spec.input_rate:g} Hz" for ex in self.streams[0].extras))
                while not self._stop.is_set():
                    if cfg.duration is not None and time.monotonic() - t_start >= cfg.duration:
                        self.stop(f"--duration {cfg.duration:g} s reached")
                        break
                    got, t_turn = 0, time.monotonic()
                    for st in self.streams:
                        if st.extras and not st.ended:
                            got += self._read_extras(st, single)
                        if st.ended or self._stop.is_set() or not st.due():
                            continue
                        try:
                            chunk = st.source.read()
                        except FirmwareError as exc:
                            if single:  # the caller names the source it opened
                                raise
                            st.ended = f"source failed: {exc}"
                            logger.error("stream %s: %s; the other streams go on", st.id, exc)
                            continue
                        if chunk.n_samples:
                            got += chunk.n_samples
                            self._ingest(st, chunk)
                        if chunk.finished:
                            st.ended = "end of the recording"
                    cut = len(self._pending)
                    self._flush()
                    ended = {st.ended for st in self.streams}
                    if "" not in ended:
                        self.stop(ended.pop() if len(ended) == 1 else "every stream ended")
                        break
                    # pace the reads unless windows are coming (a backlog): with many streams some
                    # sample is nearly always there, and reading them one by one would spin a core
                    if not got or not cut:
                        self._stop.wait(max(0.0, cfg.poll_interval - (time.monotonic() - t_turn)))
                if self.extra_keys and self._stop_reason in ("end of the recording", "every stream ended"):
                    self._drain_extras(timeout=2.0 + float(self.spec.hop_s))
                self._flush(final=True)
        finally:
            self.watch.close()
            if watcher is not None:
                watcher.stop()
            try:
                for st in self.streams:  # all reader threads wind down together, then each is released
                    for src in (st.source, *(ex.source for ex in st.extras if ex.own)):
                        with contextlib.suppress(Exception):
                            getattr(src, "request_stop", lambda: None)()
                for st in self.streams:
                    for ex in st.extras:
                        if ex.own:
                            try:
                                ex.source.stop()
                            except Exception as exc:
                                logger.warning("stream %s: stopping the %s source failed: %s", st.id, ex.key,
                                               exc)
                    try:
                        st.source.stop()
                    except Exception as exc:
                        if single:
                            raise
                        logger.warning("stream %s: stopping the source failed: %s", st.id, exc)
            finally:
                for sink in self.sinks:
                    with contextlib.suppress(Exception):
                        sink.close()
                self._finish(time.monotonic() - t_start, watcher)
        return self.summary

    def _finish(self, wall: float, watcher: BridgeWatcher | None) -> None:
        total = self.summary
        reason = self._stop_reason or "source failed"
        for name in ("gaps", "lost_samples", "reconnects", *_TIMING):
            setattr(total, name, 0)
        total.signal_seconds = 0.0
        for st in self.streams:
            s = st.summary
            try:  # the source's totals include what arrived after the loop's last read
                stats = st.source.stats
                s.gaps, s.lost_samples, s.reconnects = stats.gaps, stats.lost_samples, stats.reconnects
                for name in _TIMING:
                    setattr(s, name, int(getattr(stats, name, 0)))
            except Exception as exc:  # the summary must not fail because a dead source cannot report
                logger.debug("source stats unavailable: %s", exc)
            s.wall_seconds = wall
            s.signal_seconds = (s.samples + s.lost_samples) / st.spec.input_rate
            s.latency = st.stats.summary()
            s.real_time_factor = real_time_factor(s.compute_seconds, s.signal_seconds)
            s.stop_reason = st.ended or reason
            for name in ("gaps", "lost_samples", "reconnects", *_TIMING):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.signal_seconds += s.signal_seconds
        total.wall_seconds = wall
        total.latency = self.stats.summary()
        total.latency["warmup"] = sum(st.stats.summary()["warmup"] for st in self.streams)
        total.real_time_factor = real_time_factor(total.compute_seconds, total.signal_seconds)
        total.stop_reason = reason
        rates = {st.summary.source_rate_hz for st in self.streams}
        total.source_rate_hz = rates.pop() if len(rates) == 1 else None
        if watcher is not None:
            total.bridge_versions = list(watcher.versions)
            total.bridge_events = list(watcher.events)
        for st in self.streams:
            st.summary.bridge_versions = list(total.bridge_versions)
        total.watch = {**self.watch.summary(), "lines": self.watch.summary_lines()}

    def _count(self, st: _Stream, name: str, k: int = 1) -> None:
        setattr(st.summary, name, getattr(st.summary, name) + k)
        setattr(self.summary, name, getattr(self.summary, name) + k)

    # --- per chunk ------------------------------------------------------------------------------------
    def _ingest(self, st: _Stream, chunk: Any) -> None:
        t0 = time.perf_counter()  # a window's latency runs from here: its samples are in hand
        self.watch.ingest(st, chunk)
        # accelerometer rows (and a fused bundle's further modalities on this source) ride along, split
        # off in _push
        data = chunk.data[st.rows + st.acc_rows + st.shared_rows]
        ts = np.asarray(chunk.timestamps, dtype=np.float64)
        self._count(st, "samples", chunk.n_samples)
        if chunk.gaps or chunk.reconnected:
            split = 0 if chunk.reconnected else _gap_index(ts, st.chunk_ts[-1:] if st.chunk_ts.size else None)
            if split > 0:
                self._push(st, data[:, :split], ts[:split], t0)
            self._flush()  # the windows before the gap go through the smoother before it forgets them
            st.reset()
            self._count(st, "windower_resets")
            st.offset += chunk.lost_samples
            for ex in st.extras:  # the modalities on this same source had the same gap
                if not ex.own:
                    ex.gap(chunk.lost_samples)
            logger.warning("stream %s: gap (%d sample(s) lost%s): the next window starts after it", st.id,
                           chunk.lost_samples, ", device reconnected" if chunk.reconnected else "")
            self._push(st, data[:, split:], ts[split:], t0)
        else:
            self._push(st, data, ts, t0)

    def _push(self, st: _Stream, data: np.ndarray, ts: np.ndarray, t0: float) -> None:
        if data.shape[1] == 0:
            return
        assert st.windower is not None, "the live loop binds every stream when it starts"
        if st.shared_rows:  # fused: the further modalities on this source cut their windows first
            n = len(st.shared_rows)
            shared, data = data[-n:], data[:-n]
            k = 0
            for ex in st.extras:
                if not ex.own:
                    ex.push(shared[k:k + len(ex.rows)], t0)
                    k += len(ex.rows)
        acc_windows: dict[int, np.ndarray] = {}
        if st.acc is not None:
            acc_windows = dict(st.acc.push(data[len(st.rows):]))
            data = data[:len(st.rows)]
        st.chunk_first = st.windower.samples_seen
        st.chunk_ts = ts
        st.t0 = t0
        self._cutting = st
        windows = st.windower.push(data)
        if st.pre is not None:  # causal: filter only the samples new since the last hop, state carried;
            st.pre_buf.append(data)  # once per hop, not per read (a read may hold a single sample)
            if windows:
                st.pre.push(np.concatenate(st.pre_buf, axis=1) if len(st.pre_buf) > 1 else st.pre_buf[0])
                st.pre_buf.clear()
        for start, window in windows:
            self._window(start, window)
            if acc_windows:
                self._pending[-1].acc = acc_windows.get(start)
            if self._stop.is_set():
                break

    # --- per window -----------------------------------------------------------------------------------
    def _window(self, start: int, window: np.ndarray) -> None:
        """Cut one window of the stream being windowed: its record is made now, its class after the hop's
        batched engine call."""
        st = self._cutting
        spec, s = st.spec, st.summary
        index = s.windows
        self._count(st, "windows")
        rate = spec.input_rate
        start_s = (start + st.offset) / rate
        end_s = start_s + spec.window_s
        end_idx = start + spec.window_samples - 1 - st.chunk_first
        source_time = float(st.chunk_ts[end_idx]) if 0 <= end_idx < st.chunk_ts.size else None
        record: dict[str, Any] = {"stream": st.id, "time": round(time.time(), 3), "window": index,
                                  "start_s": round(start_s, 3), "end_s": round(end_s, 3),
                                  "source_time": source_time}
        x = st.pre.window(start - st.pre_base) if st.pre is not None else None
        self._pending.append(_Cut(st, start, window, x, st.t0, record,
                                  start_s, end_s))

    def _flush(self, final: bool = False) -> None:
        """The hop's windows from every stream: one quality gate, one preprocessing, one engine call each.

        ``final``: the loop is ending; a fused window still waiting for a modality is decided now.
        """
        if self.extra_keys:
            self._flush_fused(final)
            return
        cuts, self._pending = self._pending, []
        if not cuts:
            return
        by_spec: dict[Preprocessing, list[int]] = {}
        for k, c in enumerate(cuts):
            by_spec.setdefault(c.stream.spec, []).append(k)
        flags: list[np.ndarray] = [np.empty(0)] * len(cuts)
        xs: dict[int, np.ndarray] = {}
        for spec, ks in by_spec.items():
            f = assess_quality(np.stack([cuts[k].raw for k in ks]), spec)  # physiology too (LOW_SQI)
            moved = [i for i, k in enumerate(ks) if cuts[k].acc is not None]
            if moved:  # MOTION: every channel of a window whose accelerometer moved too much
                f[moved] |= motion_flags(np.stack([cuts[ks[i]].acc for i in moved]), spec.input_rate,
                                         spec)[:, None]
            good = []
            for k, fk in zip(ks, f, strict=True):
                flags[k] = fk
                if not fk.any():
                    good.append(k)
            if not good:
                continue
            if spec.filtering == "causal":
                for k in good:
                    xs[k] = cuts[k].x  # type: ignore[assignment]
            else:  # zero-phase per window: what training saw, batched over the streams
                batch = process_windows(np.stack([cuts[k].raw for k in good]), spec, check_quality=False)
                xs.update(zip(good, batch, strict=True))
        order = sorted(xs)
        logits = self.runner(np.stack([xs[k] for k in order])) if order else np.empty((0, len(self.classes)))
        row = {k: i for i, k in enumerate(order)}
        if order:
            self.watch.after_batch([cuts[k] for k in order], logits)
        for k, c in enumerate(cuts):
            if k in row:
                self._result(c, logits[row[k]])
            else:
                self._skipped(c, flags[k])

    # --- fused bundles: K modalities in lockstep -------------------------------------------------------
    def _start_extras(self, st: _Stream, single: bool) -> None:
        """Start the further modalities' own sources (a failed one leaves its spans unpaired: skipped)."""
        for ex in st.extras:
            if not ex.own:
                continue
            try:
                ex.source.start()
            except FirmwareError as exc:
                if single:
                    raise
                ex.ended = f"source failed to start: {exc}"
                logger.error("stream %s: the %s source: %s; its windows are skipped", st.id, ex.key, exc)

    def _read_extras(self, st: _Stream, single: bool, draining: bool = False) -> int:
        """Read the further modalities that have their own source; returns the samples read."""
        got = 0
        behind = draining or any(c.stream is st for c in self._waiting)
        for ex in st.extras:
            if not ex.own or ex.ended or not ex.bound or (self._stop.is_set() and not draining) \
                    or not ex.due(behind):
                continue
            try:
                chunk = ex.source.read()
            except FirmwareError as exc:
                if single:
                    raise
                ex.ended = f"source failed: {exc}"
                logger.error("stream %s: the %s source: %s; its windows are skipped", st.id, ex.key, exc)
                continue
            if chunk.n_samples:
                got += chunk.n_samples
                t0 = time.perf_counter()
                data = chunk.data[ex.rows]
                ts = np.asarray(chunk.timestamps, dtype=np.float64)
                previous, ex.last_ts = ex.last_ts, ts[-1:]
                if chunk.gaps or chunk.reconnected:  # as the main target: no window straddles the gap
                    split = 0 if chunk.reconnected else _gap_index(ts, previous if previous.size else None)
                    ex.push(data[:, :split], t0)
                    ex.gap(chunk.lost_samples)
                    logger.warning("stream %s: %s gap (%d sample(s) lost)", st.id, ex.key, chunk.lost_samples)
                    ex.push(data[:, split:], t0)
                else:
                    ex.push(data, t0)
            if chunk.finished:
                ex.ended = "end of its recording"
        return got

    def _drain_extras(self, timeout: float) -> None:
        """At the end of the recordings: let the further modalities' own sources deliver the spans the main
        target already has (two playback boards end a moment apart), for at most ``timeout`` seconds."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            behind = [st for st in self.streams if st.windower is not None and any(
                ex.own and not ex.ended and ex.bound
                and ex.seen_s < (st.windower.samples_seen + st.offset) / float(st.spec.input_rate)
                for ex in st.extras)]
            if not behind:
                return
            if not sum(self._read_extras(st, False, draining=True) for st in behind):
                time.sleep(self.config.poll_interval)

    def _pair(self, c: _Cut, final: bool, waited: bool) -> bool:
        """Cut every further modality's window over ``c``'s span; False while one may still come.

        A modality whose buffer starts after the span (a gap), whose source ended or failed, or that was
        never bound, is missing for this window (named in its skip reason).
        """
        st = c.stream
        done = True
        for ex in st.extras:
            if ex.key in c.extras or ex.key in c.missing:
                continue
            if not ex.bound:
                c.missing[ex.key] = f"no window: {ex.ended or 'its source delivers nothing'}"
                continue
            found = ex.window(c.start_s)
            if waited and ex.own:  # its latency runs from the samples it waited for
                c.t0 = max(c.t0, ex.last_t0)
            if isinstance(found, np.ndarray):
                c.extras[ex.key] = _ExtraWindow(found, c.t0)
            elif isinstance(found, str):
                c.missing[ex.key] = found
            elif final:
                c.missing[ex.key] = "no window over this span: the loop ended first"
            else:
                done = False
        return done

    def _flush_fused(self, final: bool) -> None:
        """A fused bundle's hop: pair each main window with its further modalities' windows over the same
        span, gate every modality's window with its own spec, preprocess each with its own spec, and run
        the windows where all passed through :meth:`~deploy.runtime.CompositeRunner.run_targets` at once."""
        cuts, self._pending, waiting = self._pending, [], self._waiting
        self._waiting = []
        ready = []
        for c, waited in [*((c, True) for c in waiting), *((c, False) for c in cuts)]:
            (ready if self._pair(c, final, waited) else self._waiting).append(c)
        self._trim_extras()
        if not ready:
            return
        fails: list[list[str]] = [[] for _ in ready]
        by_spec: dict[Preprocessing, list[int]] = {}
        for k, c in enumerate(ready):
            by_spec.setdefault(c.stream.spec, []).append(k)
        for spec, ks in by_spec.items():
            f = assess_quality(np.stack([ready[k].raw for k in ks]), spec)
            moved = [i for i, k in enumerate(ks) if ready[k].acc is not None]
            if moved:
                f[moved] |= motion_flags(np.stack([ready[ks[i]].acc for i in moved]), spec.input_rate,
                                         spec)[:, None]
            for k, fk in zip(ks, f, strict=True):
                if fk.any():
                    fails[k].append(f"{spec.modality} ({describe_flags(fk, spec.channels)})")
        extra_specs: dict[str, dict[Preprocessing, list[int]]] = {key: {} for key in self.extra_keys}
        for k, c in enumerate(ready):
            for ex in c.stream.extras:
                if ex.key in c.missing:
                    fails[k].append(f"{ex.key} ({c.missing[ex.key]})")
                else:
                    extra_specs[ex.key].setdefault(ex.spec, []).append(k)
        for key, groups in extra_specs.items():
            for spec, ks in groups.items():
                f = assess_quality(np.stack([ready[k].extras[key].raw for k in ks]), spec)
                for k, fk in zip(ks, f, strict=True):
                    if fk.any():
                        fails[k].append(f"{key} ({describe_flags(fk, spec.channels)})")
        good = [k for k in range(len(ready)) if not fails[k]]
        logits = np.empty((0, len(self.classes)))
        if good:
            feeds = {"target": self._inputs([(ready[k].stream.spec, ready[k].raw, ready[k].x)
                                                   for k in good])}
            for key in self.extra_keys:
                feeds[key] = self._inputs([(ex.spec, ready[k].extras[key].raw, None)
                                                 for k in good for ex in ready[k].stream.extras
                                                 if ex.key == key])
            logits = self.runner.run_targets(feeds)
            self.watch.after_batch([ready[k] for k in good], logits)
        row = {k: i for i, k in enumerate(good)}
        for k, c in enumerate(ready):
            names = [c.stream.spec.modality, *self.extra_keys]
            if k in row:
                c.record["modalities"] = names
                self._result(c, logits[row[k]])
            else:
                c.record["failed_modalities"] = [r.split(" (", 1)[0] for r in fails[k]]
                self._skipped(c, np.empty(0), reason="; ".join(fails[k]))

    def _trim_extras(self) -> None:
        """Drop the further modalities' samples that no waiting or future window of their stream needs."""
        for st in self.streams:
            if not st.extras or st.windower is None:
                continue
            rate = float(st.spec.input_rate)
            nxt = st.windower.samples_seen + st.windower.samples_to_next_window - st.spec.window_samples
            keep = min([(nxt + st.offset) / rate, *(c.start_s for c in self._waiting if c.stream is st)])
            for ex in st.extras:
                ex.trim(keep)

    @staticmethod
    def _inputs(items: list[tuple[Preprocessing, np.ndarray, np.ndarray | None]]) -> np.ndarray:
        """Model inputs of one modality's gate-passing windows: the causal ones as filtered on arrival, the
        rest zero-phase per window, batched per spec (what training saw)."""
        out: list[np.ndarray | None] = [x for _spec, _raw, x in items]
        groups: dict[Preprocessing, list[int]] = {}
        for i, (spec, _raw, x) in enumerate(items):
            if x is None:
                groups.setdefault(spec, []).append(i)
        for spec, idx in groups.items():
            batch = process_windows(np.stack([items[i][1] for i in idx]), spec, check_quality=False)
            for i, xi in zip(idx, batch, strict=True):
                out[i] = xi
        return np.stack(out)  # type: ignore[arg-type]

    def _skipped(self, c: _Cut, flags: np.ndarray, reason: str | None = None) -> None:
        st = c.stream
        reason = describe_flags(flags, st.spec.channels) if reason is None else reason
        self._count(st, "skipped")
        for s in (st.summary, self.summary):
            s.skipped_reasons[reason] = s.skipped_reasons.get(reason, 0) + 1
        self._count(st, "compute_seconds", time.perf_counter() - c.t0)
        c.record.update({"class": None, "probabilities": None, "quality": reason, "skipped": True,
                         "valid": False})
        now = time.monotonic()
        if now - st.skip_logged_at >= 5.0:
            logger.warning("stream %s: window at %.1f s skipped by the quality gate: %s (%d skipped so far)",
                           st.id, c.start_s, reason, st.summary.skipped)
            st.skip_logged_at = now
        self._emit(c.record)

    def _result(self, c: _Cut, logits: np.ndarray) -> None:
        st, record = c.stream, c.record
        if not np.all(np.isfinite(logits)):  # no NaN decides anything: an invalid row, never a class
            latency = time.perf_counter() - c.t0
            self._count(st, "compute_seconds", latency)
            self._count(st, "invalid")
            record.update({"class": None, "probabilities": None, "quality": "ok", "valid": False,
                           "invalid": "non-finite logits", "latency_ms": round(1e3 * latency, 3),
                           "bridge": self.runner.bridge_version})
            now = time.monotonic()
            if now - st.skip_logged_at >= 5.0:
                logger.warning("stream %s: window at %.1f s: the model gave non-finite logits; marked "
                               "invalid, no class (%d so far)", st.id, c.start_s, st.summary.invalid)
                st.skip_logged_at = now
            self._emit(record)
            return
        probs = softmax(logits.astype(np.float64))
        smooth, k = st.smoother.update(probs)
        latency = time.perf_counter() - c.t0
        self._count(st, "compute_seconds", latency)
        self._count(st, "predicted")
        if st.stats.add(latency):
            self.stats.add(latency)
        record.update({
            "valid": True,
            "class": self.classes[k],
            "probabilities": {c: round(float(p), 5) for c, p in zip(self.classes, smooth, strict=True)},
            "quality": "ok",
            "latency_ms": round(1e3 * latency, 3),
            "bridge": self.runner.bridge_version,
        })
        if self.config.smoothing != "none":
            record["raw_class"] = self.classes[int(np.argmax(probs))]
        if st.labels is not None:
            self._score(st, record, c.start_s, c.end_s, k)
        self._emit(record)

    def _score(self, st: _Stream, record: dict[str, Any], start_s: float, end_s: float, k: int) -> None:
        """Compare the window's class with the labels; a window across a label change is not scored."""
        assert st.labels is not None
        truth, straddles = st.labels.classify(start_s, end_s)
        truth = self.label_map.get(truth, truth) if truth is not None else None
        record["label"] = truth
        if straddles:
            record["straddling"] = True
            self._count(st, "straddling")
        elif truth is not None:
            self._count(st, "labelled")
            self._count(st, "matched", int(truth == self.classes[k]))
        for s in (st.summary, self.summary):  # per stream and pooled, like the counts
            if s.scores is None:
                s.scores = WindowScores(list(self.classes))
            s.scores.add(start_s, end_s, truth, straddles, self.classes[k], record["probabilities"])

    def _emit(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)


_TIMING = ("out_of_order", "duplicate_timestamps", "nonfinite_timestamps", "package_out_of_order",
           "package_nonfinite")


def _pairing(st: _Stream, spec: Preprocessing) -> tuple[list[int], Preprocessing] | str:
    """The rows and rate-checked spec of ``spec``'s modality on a stream, or why it has none (the paired
    watch's question, answered by the same channel and rate rules as the target's)."""
    try:
        found = check_rate(float(st.source.sampling_rate), spec, st.config.adapt_rate)
        return match_channels(st.source.channels, found), found
    except LiveError as exc:
        return str(exc)


def _is_stream_list(source: Any) -> bool:
    return isinstance(source, list | tuple) and all(isinstance(s, StreamInput) for s in source)


def _gap_index(ts: np.ndarray, previous: np.ndarray | None) -> int:
    """Where in a chunk the gap is: the index after the largest timestamp step (0: before the chunk)."""
    full = np.concatenate([previous, ts]) if previous is not None else ts
    if full.size < 2:
        return 0
    steps = np.diff(full)
    k = int(np.argmax(steps)) + 1  # index in ``full`` of the first sample after the gap
    k -= 0 if previous is None else previous.size
    return max(k, 0) if math.isfinite(float(steps.max())) else 0
