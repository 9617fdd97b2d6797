"""The live loop: source -> windows every hop -> quality gate -> preprocessing -> composite -> sinks.

Time is driven by the data, not the wall clock: a window is cut whenever the source has delivered a hop's
worth of new samples (:class:`~edge_bridge.signals.StreamWindower`), so a source that stalls simply delays
windows, and a playback file gives the same windows at any speed. A window is never allowed to straddle a
gap or a reconnect: the windower is reset at the gap, and the lost samples are added to the signal clock so
later windows keep their true position (which the label comparison of the demo relies on).

Windows that fail the quality gate (:func:`~edge_bridge.signals.assess_quality`: NaN, flat, clipped or
implausible channels) are reported and counted, never fed to the model. Everything else runs through the
one preprocessing (:func:`~edge_bridge.signals.process_window`) with the bundle's spec.

The loop stops on SIGINT/SIGTERM, after ``duration`` seconds or at the end of a playback file, and always
releases the source in ``finally``. A :class:`BridgeWatcher` thread notices a new bridge published into the
bundle (by calibration), tests it and swaps it in between two windows; a bridge that fails its test is not
used, and the loop says so.
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

from deploy.runtime import CompositeRunner, softmax
from deploy.sinks import Sink
from deploy.stats import LatencyStats, real_time_factor
from edge_bridge.bundle import MANIFEST, Bundle
from edge_bridge.errors import EdgeBridgeError
from edge_bridge.signals import Preprocessing, StreamWindower, assess_quality, describe_flags, process_window
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
        path = Path(path)
        if path.is_dir():
            raise LiveError(f"{path}: is a directory; --labels takes a label sidecar (JSON) or an EDF+ file")
        if path.suffix.lower() in EDF_SUFFIXES or _edf_header(path):
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


def _edf_header(path: Path) -> bool:
    if not path.is_file():  # a FIFO or device would block the read
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"0       "
    except OSError:
        return False


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
        Accept a source whose rate differs from the spec's ``input_rate`` by resampling from the source's
        rate (the model still sees ``output_rate``). Off by default: a wrong rate is usually a wrong device.
    bundle_check : callable or None
        Called with the bundle root before a newly published bridge is tried (deploy passes the signature
        check); an exception keeps the current bridge.
    """

    smoothing: str = "none"
    alpha: float = 0.5
    majority: int = 5
    warmup_windows: int = 3
    poll_interval: float = 0.02
    duration: float | None = None
    watch_bridge: bool = True
    watch_interval: float = 0.5
    adapt_rate: bool = False
    bundle_check: Callable[[Path], None] | None = None


@dataclass
class LiveSummary:
    """What the loop did, for the closing summary (``to_dict`` is what ``bench/live.py`` writes)."""

    windows: int = 0
    predicted: int = 0
    invalid: int = 0  # windows whose logits were NaN or inf: marked invalid, never given a class
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
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

    @property
    def match_rate(self) -> float | None:
        return self.matched / self.labelled if self.labelled else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["match_rate"] = self.match_rate
        return d

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
        out += [
            f"samples: {self.samples} ({self.signal_seconds:.1f} s of signal in {self.wall_seconds:.1f} s); "
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


def check_rate(source_rate: float, spec: Preprocessing, adapt: bool) -> Preprocessing:
    """The spec to use with a source at ``source_rate``; refuses a mismatch unless ``adapt``."""
    if abs(source_rate - spec.input_rate) <= 1e-6 * spec.input_rate:
        return spec
    if not adapt:
        raise LiveError(f"the bundle's model needs {spec.modality} at {spec.input_rate:g} Hz but the source "
                        f"delivers {source_rate:g} Hz; use a source at {spec.input_rate:g} Hz, or pass "
                        "--adapt-rate to filter and resample from the source's rate (the model still sees "
                        f"{spec.output_rate:g} Hz)")
    adapted = dataclasses.replace(spec, input_rate=float(source_rate))
    logger.warning("source at %g Hz, model spec at %g Hz: resampling %g -> %g Hz", source_rate,
                   spec.input_rate, source_rate, spec.output_rate)
    return adapted


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
class LivePipeline:
    """Run a bundle's composite on a live source until stopped.

    Parameters
    ----------
    runner : CompositeRunner
        Loaded, warmed-up and self-tested parts.
    source : firmware_interface.Source
        Not started yet; the pipeline starts it and always stops it (releasing the board).
    sinks : list of Sink
        Where prediction records go; closed when the loop ends.
    config : LiveConfig, optional
    labels : LabelTrack, optional
        Ground truth, to report how often predictions matched (demo recordings).

    Examples
    --------
    >>> pipe = LivePipeline(runner, open_source("playback:demo.csv"), [JsonlSink()])   # doctest: +SKIP
    >>> summary = pipe.run()
    """

    def __init__(self, runner: CompositeRunner, source: Any, sinks: Sequence[Sink],
                 config: LiveConfig | None = None, labels: LabelTrack | None = None) -> None:
        self.runner = runner
        self.source = source
        self.sinks = list(sinks)
        self.config = config or LiveConfig()
        self.labels = labels
        m = runner.bundle.manifest
        self.classes = list(m.classes)
        self.label_map = dict(m.label_map)  # annotations -> classes, for tasks that merge conditions
        self.spec: Preprocessing = m.target
        self.rows: list[int] = []
        self.windower: StreamWindower | None = None
        try:  # BrainFlow boards know their rate and channels now; frame devices after their first frame
            self._bind()
        except FirmwareError as exc:
            logger.debug("source not bound before start: %s", exc)
        self.smoother = Smoother(self.config.smoothing, alpha=self.config.alpha, n=self.config.majority)
        self.stats = LatencyStats(self.config.warmup_windows)
        self.summary = LiveSummary(bridge_versions=[runner.bridge_version])
        self._stop = threading.Event()
        self._stop_reason = ""
        self._offset = 0  # samples lost before the windower's current stream (keeps the signal clock true)
        self._chunk_first = 0  # windower index of the current chunk's first sample
        self._chunk_ts = np.empty(0)
        self._skip_logged_at = -1e9

    def _bind(self) -> None:
        """Check the source's rate and channels against the bundle's target spec (once)."""
        if self.windower is not None:
            return
        spec = check_rate(float(self.source.sampling_rate), self.runner.bundle.manifest.target,
                          self.config.adapt_rate)
        self.rows = match_channels(self.source.channels, spec)
        self.spec = spec
        self.windower = StreamWindower(spec)

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
        try:
            with self._signals():
                self.source.start()
                self._bind()
                if watcher is not None:
                    watcher.start()
                logger.info("live: %s at %g Hz, %g s windows every %g s, classes %s", self.spec.modality,
                            self.spec.input_rate, self.spec.window_s, self.spec.hop_s, self.classes)
                while not self._stop.is_set():
                    if cfg.duration is not None and time.monotonic() - t_start >= cfg.duration:
                        self.stop(f"--duration {cfg.duration:g} s reached")
                        break
                    chunk = self.source.read()
                    if chunk.n_samples:
                        self._ingest(chunk)
                    if chunk.finished:
                        self.stop("end of the recording")
                        break
                    if not chunk.n_samples:
                        self._stop.wait(cfg.poll_interval)
        finally:
            if watcher is not None:
                watcher.stop()
            try:
                self.source.stop()
            finally:
                for sink in self.sinks:
                    with contextlib.suppress(Exception):
                        sink.close()
            self._finish(time.monotonic() - t_start, watcher)
        return self.summary

    def _finish(self, wall: float, watcher: BridgeWatcher | None) -> None:
        s = self.summary
        try:  # the source's totals include what arrived after the loop's last read
            stats = self.source.stats
            s.gaps, s.lost_samples, s.reconnects = stats.gaps, stats.lost_samples, stats.reconnects
            for name in ("out_of_order", "duplicate_timestamps", "nonfinite_timestamps",
                         "package_out_of_order", "package_nonfinite"):
                setattr(s, name, int(getattr(stats, name, 0)))
        except Exception as exc:  # the summary must not fail because a dead source cannot report
            logger.debug("source stats unavailable: %s", exc)
        s.wall_seconds = wall
        s.signal_seconds = (s.samples + s.lost_samples) / self.spec.input_rate
        s.latency = self.stats.summary()
        s.real_time_factor = real_time_factor(s.compute_seconds, s.signal_seconds)
        s.stop_reason = self._stop_reason or "source failed"
        if watcher is not None:
            s.bridge_versions = list(watcher.versions)
            s.bridge_events = list(watcher.events)

    # --- per chunk ------------------------------------------------------------------------------------
    def _ingest(self, chunk: Any) -> None:
        data = chunk.data[self.rows]
        ts = np.asarray(chunk.timestamps, dtype=np.float64)
        s = self.summary
        s.samples += chunk.n_samples
        s.gaps += chunk.gaps
        s.lost_samples += chunk.lost_samples
        s.reconnects += int(chunk.reconnected)
        if chunk.gaps or chunk.reconnected:
            split = 0 if chunk.reconnected else _gap_index(ts, self._chunk_ts[-1:] if self._chunk_ts.size
                                                           else None)
            if split > 0:
                self._push(data[:, :split], ts[:split])
            self._windower.reset()
            self.smoother.reset()
            s.windower_resets += 1
            self._offset += chunk.lost_samples
            logger.warning("gap in the stream (%d sample(s) lost%s): the next window starts after it",
                           chunk.lost_samples, ", device reconnected" if chunk.reconnected else "")
            self._push(data[:, split:], ts[split:])
        else:
            self._push(data, ts)

    def _push(self, data: np.ndarray, ts: np.ndarray) -> None:
        if data.shape[1] == 0:
            return
        windower = self._windower
        self._chunk_first = windower.samples_seen
        self._chunk_ts = ts
        for start, window in windower.push(data):
            self._window(start, window)
            if self._stop.is_set():
                break

    # --- per window -----------------------------------------------------------------------------------
    @property
    def _windower(self) -> StreamWindower:
        if self.windower is None:
            raise LiveError("the live loop is not bound to its source yet (start the source first)")
        return self.windower

    def _window(self, start: int, window: np.ndarray) -> None:
        t0 = time.perf_counter()
        spec, s = self.spec, self.summary
        s.windows += 1
        rate = spec.input_rate
        start_s = (start + self._offset) / rate
        end_s = start_s + spec.window_s
        end_idx = start + spec.window_samples - 1 - self._chunk_first
        source_time = float(self._chunk_ts[end_idx]) if 0 <= end_idx < self._chunk_ts.size else None
        record: dict[str, Any] = {"time": round(time.time(), 3), "window": s.windows - 1,
                                  "start_s": round(start_s, 3), "end_s": round(end_s, 3),
                                  "source_time": source_time}
        flags = assess_quality(window[None], spec.quality)[0]
        if flags.any():
            reason = describe_flags(flags, spec.channels)
            s.skipped += 1
            s.skipped_reasons[reason] = s.skipped_reasons.get(reason, 0) + 1
            s.compute_seconds += time.perf_counter() - t0
            record.update({"class": None, "probabilities": None, "quality": reason, "skipped": True,
                           "valid": False})
            now = time.monotonic()
            if now - self._skip_logged_at >= 5.0:
                logger.warning("window at %.1f s skipped by the quality gate: %s (%d skipped so far)",
                               start_s, reason, s.skipped)
                self._skip_logged_at = now
            self._emit(record)
            return
        x = process_window(window, spec, check_quality=False)
        logits = self.runner(x[None])[0]
        if not np.all(np.isfinite(logits)):  # no NaN decides anything: an invalid row, never a class
            latency = time.perf_counter() - t0
            s.compute_seconds += latency
            s.invalid += 1
            record.update({"class": None, "probabilities": None, "quality": "ok", "valid": False,
                           "invalid": "non-finite logits", "latency_ms": round(1e3 * latency, 3),
                           "bridge": self.runner.bridge_version})
            now = time.monotonic()
            if now - self._skip_logged_at >= 5.0:
                logger.warning("window at %.1f s: the model gave non-finite logits; marked invalid, no class "
                               "(%d so far)", start_s, s.invalid)
                self._skip_logged_at = now
            self._emit(record)
            return
        probs = softmax(logits.astype(np.float64))
        smooth, k = self.smoother.update(probs)
        latency = time.perf_counter() - t0
        s.compute_seconds += latency
        s.predicted += 1
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
        if self.labels is not None:
            self._score(record, start_s, end_s, k)
        self._emit(record)

    def _score(self, record: dict[str, Any], start_s: float, end_s: float, k: int) -> None:
        """Compare the window's class with the labels; a window across a label change is not scored."""
        assert self.labels is not None
        s = self.summary
        truth, straddles = self.labels.classify(start_s, end_s)
        truth = self.label_map.get(truth, truth) if truth is not None else None
        record["label"] = truth
        if straddles:
            record["straddling"] = True
            s.straddling += 1
        elif truth is not None:
            s.labelled += 1
            s.matched += int(truth == self.classes[k])

    def _emit(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)


def _gap_index(ts: np.ndarray, previous: np.ndarray | None) -> int:
    """Where in a chunk the gap is: the index after the largest timestamp step (0: before the chunk)."""
    full = np.concatenate([previous, ts]) if previous is not None else ts
    if full.size < 2:
        return 0
    steps = np.diff(full)
    k = int(np.argmax(steps)) + 1  # index in ``full`` of the first sample after the gap
    k -= 0 if previous is None else previous.size
    return max(k, 0) if math.isfinite(float(steps.max())) else 0
