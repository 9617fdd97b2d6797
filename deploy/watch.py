"""What the live loop watches beside its predictions: drift, paired agreement, and the auto-calibrate cycle.

:class:`LiveWatch` is owned by :class:`deploy.live.LivePipeline` and called at three points: every chunk
(:meth:`LiveWatch.ingest`, before it is cut into windows), every hop after the batched engine call and
before the records go out (:meth:`LiveWatch.after_batch`), and at the end (:meth:`LiveWatch.close`,
:meth:`LiveWatch.finish`). Everything here runs on the loop's thread except the recorder's writes and the
calibrate child, so nothing waits and no window is dropped.

Drift (:mod:`deploy.drift`): one :class:`~deploy.drift.DriftMonitor` per stream, fed the ``h``, class
probabilities and signal descriptors (:mod:`edge_bridge.signals.descriptors`) of the windows the model ran
on, i.e. only windows that passed the quality gate (whatever reasons the gate has), so a bad sensor never
moves the score. A bundle without ``reference.npz`` (exported before drift detection) runs with drift off,
and the start line and the summary say so.

Paired watch: a stream whose source also delivers the bundle's *source* modality (a chest strap worn with
the wristband) keeps those rows in a buffer indexed like the target windower, so each target window has
its source window over the same samples. Source windows pass the source spec's quality gate, the source
spec's preprocessing (:func:`edge_bridge.signals.process_windows`), ``source_front`` and ``source_back``;
the source model's class is compared with the composite's unsmoothed class. Records get ``source_class``
and ``agrees``; every :data:`PAIRED_EVERY` paired windows a ``paired_agreement`` event gives the running
figures; the summary gives the agreement per bridge version. This is the label-free measure of the bridge
that ``--auto-calibrate`` judges a new bridge by.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deploy.drift import DriftMonitor, DriftReference, DriftThreshold
from deploy.runtime import engine_options, softmax
from edge_bridge.bundle import BundleError, read_reference
from edge_bridge.signals import Preprocessing, assess_quality, describe_flags, process_windows
from edge_bridge.signals.descriptors import signal_descriptors

logger = logging.getLogger(__name__)

PAIRED_EVERY = 12  # paired windows between two paired_agreement events


@dataclasses.dataclass
class _Paired:
    """One stream's source-modality rows, kept over the samples its pending windows may still need."""

    rows: list[int]
    spec: Preprocessing
    buf: np.ndarray
    start: int = 0  # windower index of buf[:, 0]
    windows: int = 0
    agreed: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    by_version: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    recent: collections.deque[int] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=PAIRED_EVERY))


class LiveWatch:
    """Drift monitors, paired watch and the auto-calibrate cycle of one live pipeline.

    Parameters
    ----------
    runner : CompositeRunner
    streams : list of the pipeline's streams
    false_alarms_per_day : float or None
        Drift alarm budget; None turns drift detection off.
    paired : bool
        Run the paired watch where a stream carries the source modality.
    autocal : AutoCalibrator or None
    emit : callable
        Sends an event record to the sinks.
    pairing : callable
        ``pairing(stream, source_spec)`` -> ``(rows, spec)`` of the source modality on that stream, or the
        reason it has none (the live loop's own channel and rate rules).
    """

    def __init__(self, runner: Any, streams: Sequence[Any], *, false_alarms_per_day: float | None,
                 paired: bool, autocal: Any, emit: Callable[[dict[str, Any]], None],
                 pairing: Callable[[Any, Preprocessing], tuple[list[int], Preprocessing] | str]) -> None:
        self.runner = runner
        self.pairing = pairing
        self.streams = list(streams)
        self.emit = emit
        self.autocal = autocal
        bundle = runner.bundle
        self.source_spec: Preprocessing = bundle.manifest.source
        self.lines: list[str] = []
        self.reference: DriftReference | None = None
        self.threshold: DriftThreshold | None = None
        self.session_threshold: DriftThreshold | None = None
        self.signal_thresholds: tuple[DriftThreshold, DriftThreshold | None] | None = None
        self.monitors: dict[str, DriftMonitor] = {}
        self.events: list[dict[str, Any]] = []
        if false_alarms_per_day is None:
            self.lines.append("drift: off (--drift-false-alarms-per-day not set)")
        else:
            self._load_reference(bundle, false_alarms_per_day)
        self.want_paired = paired and "source_front" in bundle.manifest.parts
        if paired and not self.want_paired:
            self.lines.append("paired watch: off (the bundle has no source_front)")
        self.paired: dict[str, _Paired] = {}
        self._checked: set[str] = set()
        self._source_front: Any = None

    def _load_reference(self, bundle: Any, budget: float) -> None:
        try:
            arrays = read_reference(bundle)
            if arrays is None:
                self.lines.append("drift: off (this bundle has no drift reference: it was exported before "
                                  "drift detection; re-export it to have one)")
                return
            hop = float(bundle.manifest.target.hop_s)
            ref = DriftReference(arrays).at_hop(hop)
            self.threshold = ref.threshold(budget, hop)
            self.session_threshold = ref.session_threshold(budget, hop) if ref.has_session else None
            self.signal_thresholds = ref.signal_thresholds(budget, hop)
            self.target_spec: Preprocessing = bundle.manifest.target  # the descriptors' rate and band
        except (BundleError, ValueError) as exc:
            self.lines.append(f"drift: off ({exc})")
            return
        self.reference = ref
        self.monitors = {st.id: DriftMonitor(ref, self.threshold, self.session_threshold,
                                             self.signal_thresholds)
                         for st in self.streams}
        self.lines.append(f"drift: on, mean h of the last {ref.block} gate-passing windows "
                          f"({ref.block * hop:g} s at this hop) vs the bundle's reference; "
                          f"{self.threshold.describe()}")
        if self.session_threshold is not None:
            self.lines.append(f"drift (within session): the same mean vs the stream's own first "
                              f"{ref.session_baseline} gate-passing windows (again after a bridge swap); "
                              f"{self.session_threshold.describe()}")
        else:
            self.lines.append("drift (within session): off (the bundle's reference has no per-subject "
                              "statistics; re-export it to have them)")
        if self.signal_thresholds is not None:
            pop, ses = self.signal_thresholds
            self.lines.append("drift (signal): the same two scores on the windows' shape and spectrum "
                              f"descriptors (what the sensor draws, not what the front makes of it); "
                              f"{pop.describe()}" + (f"; {ses.describe()}" if ses is not None else ""))
        else:
            self.lines.append("drift (signal): off (the bundle's reference has no signal descriptors; "
                              "re-export it to have them)")

    # --- per chunk ------------------------------------------------------------------------------------
    def ingest(self, st: Any, chunk: Any) -> None:
        """Keep the chunk's source-modality rows (paired streams) and hand its raw rows to the recorder."""
        if self.autocal is not None:
            self.autocal.feed(st.id, getattr(chunk, "raw", None))
        if not self.want_paired or st.windower is None:
            return
        if st.id not in self._checked:
            self._bind(st)
        p = self.paired.get(st.id)
        if p is not None and chunk.n_samples:
            if p.buf.shape[1] == 0:
                p.start = st.windower.samples_seen
            p.buf = np.concatenate([p.buf, chunk.data[p.rows]], axis=1)

    def _bind(self, st: Any) -> None:
        """Does this stream carry the source modality, at a rate and window that pair with the target's?"""
        self._checked.add(st.id)
        target = st.spec
        found = self.pairing(st, self.source_spec)
        if isinstance(found, str):
            logger.info("stream %s: paired watch off: %s", st.id, found)
            return
        rows, spec = found
        if set(rows) & set(st.rows) or spec.window_samples != target.window_samples \
                or spec.hop_s != target.hop_s or spec.filtering != "zerophase":
            logger.info("stream %s: paired watch off: the source modality's windows do not pair with the "
                        "target's (same samples, window and hop needed, zero-phase filtering)", st.id)
            return
        if self._source_front is None:
            from deploy.engines import load_engine

            self._source_front = load_engine(self.runner.bundle.part_path("source_front"), self.runner.device,
                                             **engine_options(self.runner.device, self.runner.threads))
        self.paired[st.id] = _Paired(rows, spec, np.empty((len(rows), 0)))
        names = [st.source.channels[r].name for r in rows]
        line = (f"paired watch: stream {st.id} also carries {self.source_spec.modality} "
                f"({', '.join(names)}); "
                "source_front + source_back run on it and the agreement with the composite is reported")
        self.lines.append(line)
        logger.info("%s", line)

    # --- per hop --------------------------------------------------------------------------------------
    def after_batch(self, cuts: Sequence[Any], logits: np.ndarray) -> None:
        """The hop's model rows (``cuts[k]`` gave ``logits[k]``): drift, paired decisions, the cycle."""
        h = getattr(self.runner, "last_h", None)
        if self.monitors and h is not None and len(h) == len(cuts):
            x = getattr(self.runner, "last_x", None)
            sig: Sequence[Any] = [None] * len(cuts)
            if self.signal_thresholds is not None and x is not None and len(x) == len(cuts):
                sig = signal_descriptors(x, self.target_spec)
            for c, hk, lk, sk in zip(cuts, h, logits, sig, strict=True):
                ev = self.monitors[c.stream.id].update(hk, softmax(lk.astype(np.float64)), sk)
                if ev is not None:
                    self._drift_event(c, ev)
        if self.paired:
            self._paired_batch(cuts, logits)
        if self.autocal is not None:
            self._cycle(self.autocal.tick())
        for st_id, p in self.paired.items():  # what no later window needs
            st = next(s for s in self.streams if s.id == st_id)
            keep = st.windower.samples_seen - st.spec.window_samples if st.windower is not None else 0
            if keep > p.start:
                p.buf = p.buf[:, keep - p.start:]
                p.start = keep

    def _drift_event(self, c: Any, ev: dict[str, Any]) -> None:
        st = c.stream
        ev = {"event": ev.pop("event"), "stream": st.id, "time": round(time.time(), 3),
              "window": c.record.get("window"), "end_s": c.record.get("end_s"), **ev}
        self._send(ev)
        logger.warning("stream %s: %s (%s) at %.0f s: score %.3g vs threshold %.3g", st.id, ev["event"],
                       ev.get("detector", "all below half"), c.end_s, ev["score"], ev["threshold"])
        if ev["event"] == "drift" and self.autocal is not None:
            self._cycle(self.autocal.on_drift(st.id, st.source, st.id in self.paired,
                                              float(st.source.sampling_rate)))

    def _paired_batch(self, cuts: Sequence[Any], logits: np.ndarray) -> None:
        rows, raws = [], []
        for k, c in enumerate(cuts):
            p = self.paired.get(c.stream.id)
            if p is None or not np.all(np.isfinite(logits[k])):
                continue
            i = c.start - p.start
            n = p.spec.window_samples
            if i < 0 or i + n > p.buf.shape[1]:
                continue  # not buffered (the pairing began after this window started)
            raw = p.buf[:, i:i + n]
            flags = assess_quality(raw[None], p.spec)[0]
            if flags.any():
                reason = describe_flags(flags, p.spec.channels)
                p.skipped[reason] = p.skipped.get(reason, 0) + 1
                c.record["source_quality"] = reason
                continue
            rows.append(k)
            raws.append(raw)
        if not rows:
            return
        by_spec: dict[Preprocessing, list[int]] = {}
        for j, k in enumerate(rows):
            by_spec.setdefault(self.paired[cuts[k].stream.id].spec, []).append(j)
        xs = np.empty((len(rows), *self.source_spec.input_shape), np.float32)
        for spec, js in by_spec.items():
            xs[js] = process_windows(np.stack([raws[j] for j in js]), spec, check_quality=False)
        z = self._source_front.run({"x_source": xs})["z"]
        src_logits = self.runner.engines["source_back"].run({"z": z})["logits"]
        version = int(self.runner.bridge_version)
        for k, sl in zip(rows, src_logits, strict=True):
            c = cuts[k]
            p = self.paired[c.stream.id]
            if not np.all(np.isfinite(sl)):
                p.skipped["source model: non-finite logits"] = p.skipped.get("source model: non-finite "
                                                                             "logits", 0) + 1
                continue
            src, comp = int(np.argmax(sl)), int(np.argmax(logits[k]))
            agrees = src == comp
            c.record["source_class"] = self.runner.bundle.manifest.classes[src]
            c.record["agrees"] = agrees
            p.windows += 1
            p.agreed += int(agrees)
            p.recent.append(int(agrees))
            tally = p.by_version.setdefault(version, [0, 0])
            tally[0] += 1
            tally[1] += int(agrees)
            if self.autocal is not None:
                self.autocal.paired(c.stream.id, version, agrees, src)
            if p.windows % PAIRED_EVERY == 0:
                self._send({"event": "paired_agreement", "stream": c.stream.id, "time": round(time.time(), 3),
                            "window": c.record.get("window"), "bridge": version, "windows": p.windows,
                            "agreement": round(p.agreed / p.windows, 4),
                            "agreement_recent": round(sum(p.recent) / len(p.recent), 4)})

    def start_cycle(self, st_id: str, why: str) -> None:
        """Start an auto-calibrate cycle on stream ``st_id`` now, as a drift event would (an operator's or a
        benchmark's request; ``why`` goes in the event). Call it from the loop's thread (a sink)."""
        if self.autocal is None:
            raise ValueError("auto-calibrate is off")
        st = next(s for s in self.streams if s.id == st_id)
        self._send({"event": "autocal_requested", "stream": st_id, "time": round(time.time(), 3),
                    "why": why})
        self._cycle(self.autocal.on_drift(st_id, st.source, st_id in self.paired,
                                          float(st.source.sampling_rate)))

    def _cycle(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            self._send(ev)
            if ev.get("step") == "kept" and ev.get("stream") in self.monitors:
                self.monitors[ev["stream"]].rebase()  # the refit bridge serves these features now

    def _send(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        self.emit(ev)

    # --- end --------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.autocal is not None:
            self._cycle(self.autocal.close())
        if self._source_front is not None:
            self._source_front.close()
            self._source_front = None

    def stream_status(self, st_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if st_id in self.monitors:
            out["drift"] = self.monitors[st_id].status()
        p = self.paired.get(st_id)
        if p is not None:
            out["paired"] = {"windows": p.windows, "agreed": p.agreed,
                             "agreement": round(p.agreed / p.windows, 4) if p.windows else None,
                             "by_bridge": {f"v{v:04d}": {"windows": n, "agreement": round(a / n, 4)}
                                           for v, (n, a) in sorted(p.by_version.items())},
                             "skipped": dict(p.skipped)}
        return out

    def summary(self) -> dict[str, Any]:
        """The figures for :class:`deploy.live.LiveSummary` (``watch``)."""
        d: dict[str, Any] = {"notes": list(self.lines),
                             "streams": {st.id: self.stream_status(st.id) for st in self.streams},
                             "events": [e for e in self.events if e.get("event") != "paired_agreement"]}
        if self.threshold is not None:
            d["drift_threshold"] = dataclasses.asdict(self.threshold)
        if self.session_threshold is not None:
            d["drift_session_threshold"] = dataclasses.asdict(self.session_threshold)
        if self.autocal is not None:
            d["autocal"] = self.autocal.status()
        return d

    def summary_lines(self) -> list[str]:
        out = list(self.lines)
        for st in self.streams:
            s = self.stream_status(st.id)
            tag = f"stream {st.id}: " if len(self.streams) > 1 else ""
            if "drift" in s:
                dr = s["drift"]
                out.append(f"{tag}drift: {dr['alarms']} alarm(s), last score {dr['score']}, max "
                           f"{dr['max_score']} (threshold {dr['threshold']}), prior shift {dr['prior_shift']}"
                           f", on {dr['windows']} gate-passing windows")
                if "session" in dr:
                    ss = dr["session"]
                    out.append(f"{tag}drift within session: last score {ss['score']}, max {ss['max_score']} "
                               f"(threshold {ss['threshold']}); alarms by detector "
                               f"{dr['alarms_by_detector'] or 'none'}")
                if "signal" in dr:
                    sg = dr["signal"]
                    within = (f"; within session max {sg['session']['max_score']} (threshold "
                              f"{sg['session']['threshold']})" if "session" in sg else "")
                    out.append(f"{tag}drift of the signal's descriptors: last score {sg['score']}, max "
                               f"{sg['max_score']} (threshold {sg['threshold']}){within}")
            if "paired" in s:
                pr = s["paired"]
                per = ", ".join(f"{v} {x['agreement']:.3f} on {x['windows']}"
                                for v, x in pr["by_bridge"].items())
                out.append(f"{tag}paired watch: composite agrees with the source model on {pr['agreed']}/"
                           f"{pr['windows']} windows" + (f" ({per})" if per else ""))
        if self.autocal is not None:
            steps = [e["step"] for e in self.autocal.events]
            out.append(f"auto-calibrate: {self.autocal.cycles} cycle(s); steps: "
                       f"{' -> '.join(steps) or 'none'}")
        return out
