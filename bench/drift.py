"""Benchmark of drift detection and automatic recalibration (issue 21) on simulated users; JSON out.

Every user is a new simulated stress subject (seeds disjoint from training and from the reference)
wearing a chest strap (ECG) and a wristband (PPG) on one board, streamed through BrainFlow's playback
board faster than real time (the file's time stamps are compressed by ``--speed``; its sidecar keeps the
true rate, so the windows are the ones a real-time stream gives). Each user runs three sessions of the same
``--minutes``, all through :class:`deploy.live.LivePipeline` with the bundle's drift reference:

1. *unshifted*: the sensor never changes (false alarms; the "before" accuracy);
2. *shifted*: from ``--change-minute`` on, the PPG comes from another sensor (``bench/calibrate.py``'s
   :func:`shift_ppg`: inverted, other gain, a 2.5 Hz low-pass, 80 ms more transit); drift only (the
   detection delay and the "after the change" accuracy);
3. *shifted + --auto-calibrate*: the same signal, the cycle on (record ``--record-minutes`` of paired
   data, ``edge-bridge calibrate`` in a niced child process, hot swap, keep or roll back on the paired
   agreement), at ``--autocal-speed`` (slower: the child's wall time is signal time for the stream).
   If no drift event has started the cycle ``--force-after-minutes`` after the change, the benchmark
   starts it (:meth:`deploy.watch.LiveWatch.start_cycle`), so the cycle's cost and effect are measured
   even where the drift score misses the change; the JSON says which started it.

Figures, each with its goal:

- detection delay after the change (signal seconds from the change to the ``drift`` event: median and
  90th percentile over the shifted users; a missed change counts as missing);
- false alarms per hour on the unshifted sessions, extrapolated to 24 h (goal <= 1 per 24 h). A few
  simulated hours cannot show a once-a-day rate: the JSON also gives the Poisson 95 % upper bound the
  observed hours allow and the largest unshifted score as a fraction of the threshold;
- balanced accuracy (the simulated labels) of the shifted users, pooled, on the same windows: unshifted /
  shifted / after automatic calibration, on the windows the kept bridge decided; recovery = (after -
  shifted) / (unshifted - shifted), goal >= 0.8;
- live-loop p99 window latency while the calibrate child runs vs idle (the same session, side by side;
  goal ratio <= 1.5);
- windows dropped (expected windows of the file minus windows cut, plus lost samples; goal 0).

The bundle: ``--bundle`` (default: the cached demo bundle, built first if missing). A copy is used; its
target spec is given a 250 Hz input rate (the model still sees its ``output_rate``) so that one playback
board carries both modalities at one rate, and calibrate, which reads a recording at each spec's input
rate, accepts what the device recorded. Its drift reference is computed as ``edge-bridge export`` does
(:func:`edge_bridge.export.reference.reference_arrays`, ONNX Runtime on the shipped graphs) on
``--reference-subjects`` held-out simulated subjects of ``--reference-minutes`` each, with their subject
ids (the within-session detector's null: each one's first minute vs its later minutes). The copy is
unsigned: this benchmark measures the live loop, not the trust path.

Run (about 6 minutes on 2 loaded cores with the defaults):
  .venv/bin/python bench/drift.py --out bench-out/drift.json
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # ``import calibrate``: the package
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

RATE = 250.0  # one board, both modalities
TARGETS = {"false_alarms_per_24h": 1.0, "recovery": 0.8, "p99_ratio_calibrating_vs_idle": 1.5,
           "windows_dropped": 0}


def _bench_calibrate() -> Any:
    """bench/calibrate.py as a module (its sensor shift and balanced accuracy: one definition of each)."""
    spec = importlib.util.spec_from_file_location("bench_calibrate", _HERE / "calibrate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BC = _bench_calibrate()


# --- signals ------------------------------------------------------------------------------------------------
def user_signals(subject: str, minutes: float, seed: int, change_s: float | None) -> tuple[Any, np.ndarray,
                                                                                         np.ndarray]:
    """(recording, ecg, ppg) at 250 Hz; the PPG from another sensor from ``change_s`` on."""
    from scipy.signal import resample_poly

    from edge_bridge.simulate import simulate_subject

    rec = simulate_subject("stress", subject, minutes=minutes, seed=seed)
    ecg_ch, ppg_ch = rec.channel("ECG"), rec.channel("PPG")
    ppg = np.asarray(ppg_ch.data, np.float64)
    if change_s is not None:
        shifted = np.asarray(BC.shift_ppg(rec).channel("PPG").data, np.float64)
        k = round(change_s * ppg_ch.rate)
        ppg = np.concatenate([ppg[:k], shifted[k:]])
    ecg = np.asarray(ecg_ch.data, np.float64)
    if ecg_ch.rate != RATE:
        raise SystemExit(f"the simulator's ECG is at {ecg_ch.rate:g} Hz; this benchmark streams 250 Hz")
    up = round(RATE), round(ppg_ch.rate)
    g = np.gcd(*up)
    ppg = resample_poly(ppg, up[0] // g, up[1] // g)[: ecg.size]
    return rec, ecg, ppg


def playback_file(path: Path, ecg: np.ndarray, ppg: np.ndarray, speed: float) -> Path:
    """A playback CSV that BrainFlow replays ``speed`` times faster than real time (sidecar: 250 Hz)."""
    from firmware_interface import write_playback_file

    csv = write_playback_file([("ECG", "ecg", "mV", ecg), ("PPG", "ppg", "au", ppg)], RATE * speed, path)
    side = Path(f"{csv}.json")
    data = json.loads(side.read_text())
    data["sampling_rate"] = RATE
    side.write_text(json.dumps(data))
    return csv


def processed_windows(ecg: np.ndarray, ppg: np.ndarray, source: Any, target: Any) -> tuple[np.ndarray,
                                                                                           np.ndarray]:
    """Gate-passing (source, target) model inputs, every hop, through edge_bridge.signals."""
    from edge_bridge.signals import assess_quality, process_windows

    n, hop = target.window_samples, round(target.hop_s * RATE)
    starts = range(0, ecg.size - n + 1, hop)
    rs = np.stack([ecg[None, s:s + n] for s in starts])
    rt = np.stack([ppg[None, s:s + n] for s in starts])
    ok = ~(assess_quality(rs, source).any(axis=1) | assess_quality(rt, target).any(axis=1))
    return process_windows(rs[ok], source, check_quality=False), process_windows(rt[ok], target,
                                                                                 check_quality=False)


# --- the bundle -----------------------------------------------------------------------------------------
def prepare_bundle(src: Path, out: Path, subjects: int, minutes: float, seed: int) -> tuple[Path, dict]:
    """A copy of ``src`` with a 250 Hz target input and a drift reference from held-out subjects."""
    from edge_bridge.bundle import REFERENCE, Bundle, sha256_file, write_manifest
    from edge_bridge.export.golden import write_golden
    from edge_bridge.export.onnx_export import ort_session, run_session
    from edge_bridge.export.reference import block_for, reference_arrays

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("signatures", ".*"))
    bundle = Bundle.load(out)
    m = bundle.manifest
    m.target = dataclasses.replace(m.target, input_rate=RATE)
    m.source = dataclasses.replace(m.source, input_rate=RATE) if m.source.input_rate != RATE else m.source
    from edge_bridge.signals.descriptors import signal_descriptors

    hs, logits, sigs = [], [], []
    files = {p: bundle.part_path(p) for p in ("target_front", "source_back")}
    files["bridge"] = bundle.bridge_path()
    sess = {p: ort_session(f, threads=1) for p, f in files.items()}
    for k in range(subjects):
        _rec, ecg, ppg = user_signals(f"REF{k:02d}", minutes, seed + 5000 + k, None)
        _xs, xt = processed_windows(ecg, ppg, m.source, m.target)
        h = run_session(sess["target_front"], "target_front", xt)
        hs.append(h)
        sigs.append(signal_descriptors(xt, m.target))
        logits.append(run_session(sess["source_back"], "source_back",
                                  run_session(sess["bridge"], "bridge", h)))
    groups = np.repeat(np.arange(len(hs)), [len(x) for x in hs])  # per subject: the within-session null
    arrays = reference_arrays(np.concatenate(hs), np.concatenate(logits), block=block_for(m.target.hop_s),
                              groups=groups, hop_s=m.target.hop_s, signal=np.concatenate(sigs))
    write_golden(out / REFERENCE, arrays)
    m.reference = {"file": REFERENCE, "sha256": sha256_file(out / REFERENCE)}
    write_manifest(out, m)
    Bundle.load(out)
    return out, {"held_out_subjects": subjects, "minutes_each": minutes, "windows": int(arrays["windows"]),
                 "block": int(arrays["block"]), "shrinkage": float(arrays["shrinkage"]),
                 "d_in": int(arrays["mean"].size), "target_spec": m.target.to_dict(),
                 "session_null_blocks": len(arrays.get("session_diffs", ())),
                 "session_shrinkage": float(arrays.get("session_shrinkage", np.nan))}


# --- long unshifted sessions, replayed -----------------------------------------------------------------
def replay_false_alarms(root: Path, users: int, minutes: float, seed: int, budget: float,
                        chunk: int = 256) -> dict[str, Any]:
    """Drift alarms of ``users`` unshifted users of ``minutes`` each, without the transport.

    A once-a-day rate needs days of unshifted signal, more than playback sessions can give here. The
    alarms depend only on the windows' features, so this replays exactly what the live loop computes on
    a stream: the same windows at the live hop (:func:`edge_bridge.signals.process_windows`), the same
    quality gate (the bundle spec's, physiology included), the bundle's ``target_front``, ``bridge`` and
    ``source_back`` through ONNX Runtime, and the same :class:`deploy.drift.DriftMonitor` with the
    thresholds :class:`deploy.watch.LiveWatch` sets from the budget. What it leaves out, the BrainFlow
    transport, cannot change a window (the playback sessions count dropped windows: 0).
    """
    from deploy.drift import DriftMonitor, DriftReference
    from edge_bridge.bundle import Bundle, read_reference
    from edge_bridge.export.onnx_export import ort_session, run_session
    from edge_bridge.signals import assess_quality, process_windows

    bundle = Bundle.load(root)
    m = bundle.manifest
    hop = float(m.target.hop_s)
    ref = DriftReference(read_reference(bundle)).at_hop(hop)
    thr = ref.threshold(budget, hop)
    sthr = ref.session_threshold(budget, hop) if ref.has_session else None
    gthr = ref.signal_thresholds(budget, hop)
    files = {p: bundle.part_path(p) for p in ("target_front", "source_back")}
    files["bridge"] = bundle.bridge_path()
    sess = {p: ort_session(f, threads=1) for p, f in files.items()}
    from edge_bridge.signals.descriptors import signal_descriptors

    n, step = m.target.window_samples, round(hop * RATE)
    rows, t0 = [], time.perf_counter()
    for u in range(users):
        _rec, _ecg, ppg = user_signals(f"FA{u:03d}", minutes, seed + 20000 + u, None)
        mon = DriftMonitor(ref, thr, sthr, gthr)
        starts = np.arange(0, ppg.size - n + 1, step)
        alarms: list[dict[str, Any]] = []
        skipped = 0
        for c in range(0, len(starts), chunk):
            raw = np.stack([ppg[None, s:s + n] for s in starts[c:c + chunk]])
            bad = assess_quality(raw, m.target).any(axis=1)
            skipped += int(bad.sum())
            if bad.all():
                continue
            x = process_windows(raw[~bad], m.target, check_quality=False)
            h = run_session(sess["target_front"], "target_front", x)
            z = run_session(sess["source_back"], "source_back", run_session(sess["bridge"], "bridge", h))
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            good = starts[c:c + chunk][~bad]
            sig = signal_descriptors(x, m.target)
            for k in range(len(h)):
                ev = mon.update(h[k], p[k], sig[k])
                if ev is not None and ev["event"] == "drift":
                    alarms.append({"at_s": round(float(good[k] + n) / RATE, 1), "detector": ev["detector"],
                                   "scores": ev["scores"], "thresholds": ev["thresholds"]})
        st = mon.status()
        ss = st.get("session")
        rows.append({"user": u, "hours": round(ppg.size / RATE / 3600.0, 4), "windows": len(starts),
                     "skipped_by_gate": skipped, "alarms": alarms,
                     "max_score_over_threshold": round(st["max_score"] / st["threshold"], 4),
                     "max_session_score_over_threshold": round(ss["max_score"] / ss["threshold"], 4)
                     if ss else None,
                     **({"max_signal_score_over_threshold":
                         round(st["signal"]["max_score"] / st["signal"]["threshold"], 4)}
                        if "signal" in st else {})})
        r = rows[-1]
        print(f"replay user {u}: {len(alarms)} alarm(s) in {r['hours']:.2f} h, max population "
              f"{r['max_score_over_threshold']:.2f}, session {r['max_session_score_over_threshold']} of "
              "threshold", file=sys.stderr, flush=True)
    hours = sum(r["hours"] for r in rows)
    count = sum(len(r["alarms"]) for r in rows)
    by: dict[str, int] = collections.Counter(a["detector"] for r in rows for a in r["alarms"])
    fracs = sorted(r["max_session_score_over_threshold"] or 0.0 for r in rows)
    return {"users": users, "minutes_each": minutes, "hours": round(hours, 2), "count": count,
            "per_24h": count / hours * 24 if hours else None,
            "per_24h_poisson_95_upper": (_poisson_upper(count) / hours * 24) if hours else None,
            "users_with_an_alarm": sum(bool(r["alarms"]) for r in rows), "by_detector": dict(by),
            "thresholds": {"population": thr.value, "session": sthr.value if sthr else None,
                           **({"signal": gthr[0].value,
                               "signal_session": gthr[1].value if gthr[1] is not None else None}
                              if gthr else {})},
            "max_signal_over_threshold": max((r.get("max_signal_score_over_threshold") or 0.0) for r in rows),
            "block_windows": ref.block, "hop_s": hop,
            "max_population_over_threshold": max(r["max_score_over_threshold"] for r in rows),
            "session_over_threshold_median_max_of_users": [fracs[len(fracs) // 2], fracs[-1]]
            if fracs else None,
            "wall_s": round(time.perf_counter() - t0, 1), "per_user": rows}


def _poisson_upper(k: int, conf: float = 0.95) -> float:
    """Exact upper confidence bound of a Poisson mean after ``k`` events (chi-square form)."""
    from scipy.stats import chi2

    return float(chi2.ppf(conf, 2 * (k + 1)) / 2)


# --- one session ------------------------------------------------------------------------------------------
class _Sink:
    """Keeps the records; with ``start_at_s``, starts the auto-calibrate cycle itself at that signal time if
    no drift event has started one (so the cycle's cost is measured even where drift is not detected; the
    JSON says which started it)."""

    def __init__(self, start_at_s: float | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.start_at_s = start_at_s
        self.pipe: Any = None

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        w = self.pipe.watch if self.pipe is not None else None
        if (self.start_at_s is not None and w is not None and w.autocal is not None and w.autocal.cycles == 0
                and w.autocal.state == "idle" and (record.get("end_s") or 0) >= self.start_at_s
                and "class" in record):
            self.start_at_s = None
            w.start_cycle("0", "benchmark: no drift event by this time")

    def close(self) -> None:
        pass


def session(root: Path, csv: Path, rec: Any, *, auto: Any = None, budget: float = 1.0,
            start_at_s: float | None = None, threads: int = 1) -> dict[str, Any]:
    from deploy.live import LabelTrack, LiveConfig, LivePipeline
    from deploy.runtime import CompositeRunner
    from edge_bridge.bundle import Bundle
    from firmware_interface import open_source

    bundle = Bundle.load(root)
    labels = LabelTrack([(float(a.onset), float(a.duration), str(a.label)) for a in rec.annotations
                         if a.duration and a.duration > 0])
    runner = CompositeRunner(bundle, "cpu", threads=threads)
    runner.warm_up()
    sink = _Sink(start_at_s if auto is not None else None)
    pipe = LivePipeline(runner, open_source(f"playback:{csv}"), [sink],
                        LiveConfig(watch_interval=0.25, auto_calibrate=auto, watch_bridge=auto is not None,
                                   drift_false_alarms_per_day=budget),
                        labels)
    sink.pipe = pipe
    t0 = time.perf_counter()
    try:
        summary = pipe.run()
    finally:
        runner.close()
    m = bundle.manifest
    n = (len(rec.channel("ECG").data) - m.target.window_samples) // round(m.target.hop_s * RATE) + 1
    return {"summary": summary, "records": sink.records, "wall_s": time.perf_counter() - t0,
            "expected_windows": int(n), "classes": list(m.classes)}


def _preds(run: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["window"]: r for r in run["records"] if "class" in r and r.get("valid")}


def _events(run: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in run["records"] if r.get("event") == name]


def _p(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# --- main ---------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/drift.json"))
    ap.add_argument("--bundle", type=Path, help="bundle to copy (default: the cached demo bundle)")
    ap.add_argument("--users", type=int, default=2, help="simulated users (default 2)")
    ap.add_argument("--minutes", type=float, default=10.0, help="session length (default 10)")
    ap.add_argument("--change-minute", type=float, default=2.5, help="when the PPG sensor changes")
    ap.add_argument("--record-minutes", type=float, default=2.0, help="--auto-calibrate-minutes")
    ap.add_argument("--eval-windows", type=int, default=60, help="paired windows judging a new bridge")
    ap.add_argument("--method", default="closed-form", choices=("auto", "closed-form", "gradient"),
                    help="calibrate's method in the child (closed-form: seconds)")
    ap.add_argument("--min-states", type=int, default=2,
                    help="calibrate's --min-states in the child (2, its default: refuse a refit judged on "
                         "windows of one state; 1 leaves that judgement to the paired-agreement rollback)")
    ap.add_argument("--speed", type=float, default=20.0, help="playback speed-up, sessions 1 and 2")
    ap.add_argument("--autocal-speed", type=float, default=5.0, help="playback speed-up, session 3")
    ap.add_argument("--reference-subjects", type=int, default=6)
    ap.add_argument("--reference-minutes", type=float,
                    help="each held-out subject's session (default: --minutes; export's held-out subjects "
                         "are whole recordings, and the within-session null needs the lags a session has)")
    ap.add_argument("--budget", type=float, default=1.0, help="--drift-false-alarms-per-day")
    ap.add_argument("--force-after-minutes", type=float, default=1.5,
                    help="session 3: start the cycle this long after the change if no drift event did")
    ap.add_argument("--replay-users", type=int, default=24,
                    help="unshifted users replayed without the transport for the false-alarm rate (0: off)")
    ap.add_argument("--replay-minutes", type=float, default=60.0, help="minutes per replayed user")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from deploy.autocal import AutoCalibrateConfig

    work = args.out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    src = args.bundle
    if src is None:
        sys.path.insert(0, str(_HERE))
        from live import _ensure_bundle  # bench/live.py's: builds the demo bundle in a subprocess if needed

        src = _ensure_bundle()
    t_all = time.perf_counter()
    root, ref_info = prepare_bundle(Path(src), work / "bundle", args.reference_subjects,
                                    args.reference_minutes or args.minutes, args.seed)
    print(f"bundle ready ({ref_info})", file=sys.stderr, flush=True)
    change = 60.0 * args.change_minute
    users: list[dict[str, Any]] = []
    pooled: dict[str, list[np.ndarray]] = {"truth": [], "unshifted": [], "shifted": [], "after": []}
    unshifted_hours, false_alarms, max_frac, delays = 0.0, 0, 0.0, []
    lat_idle, lat_cal, dropped = [], [], 0
    detectors: dict[str, int] = collections.Counter()
    fa_by: dict[str, int] = {}
    max_sess = 0.0
    for u in range(args.users):
        seed = args.seed + 7000 + u
        rec, ecg, ppg = user_signals(f"U{u:02d}", args.minutes, seed, None)
        _rec, _ecg, ppg_s = user_signals(f"U{u:02d}", args.minutes, seed, change)
        runs = {}
        for name, sig, speed in (("unshifted", ppg, args.speed), ("shifted", ppg_s, args.speed),
                                 ("autocal", ppg_s, args.autocal_speed)):
            fresh = work / f"u{u}-{name}.bundle"  # every session starts from the exported bridge
            if fresh.exists():
                shutil.rmtree(fresh)
            shutil.copytree(root, fresh)
            auto = AutoCalibrateConfig(minutes=args.record_minutes, eval_windows=args.eval_windows,
                                       min_states=args.min_states,
                                       record_dir=work / f"u{u}-autocal", calibrate_args=(
                                           "--method", args.method, "--min-states", str(args.min_states)),
                                       ) if name == "autocal" else None
            csv = playback_file(work / f"u{u}-{name}.csv", ecg, sig, speed)
            runs[name] = session(fresh, csv, rec, auto=auto, budget=args.budget,
                                 start_at_s=change + 60.0 * args.force_after_minutes)
            s = runs[name]["summary"]
            d = runs[name]["expected_windows"] - s.windows + s.lost_samples
            dropped += max(d, 0)
            print(f"user {u} {name}: {s.windows} windows in {runs[name]['wall_s']:.0f} s, "
                  f"{len(_events(runs[name], 'drift'))} drift event(s), steps "
                  f"{[e['step'] for e in _events(runs[name], 'autocal')]}", file=sys.stderr, flush=True)
        un, sh, ac = runs["unshifted"], runs["shifted"], runs["autocal"]
        unshifted_hours += un["summary"].signal_seconds / 3600.0
        false_alarms += len(_events(un, "drift"))
        dr = un["summary"].watch["streams"]["0"]["drift"]
        max_frac = max(max_frac, dr["max_score"] / dr["threshold"])
        if "session" in dr:
            max_sess = max(max_sess, dr["session"]["max_score"] / dr["session"]["threshold"])
        after_change = [e for e in _events(sh, "drift") if e["end_s"] > change]
        before_change = [e for e in _events(sh, "drift") if e["end_s"] <= change]
        delay = after_change[0]["end_s"] - change if after_change else None
        detectors[after_change[0]["detector"] if after_change else "missed"] += 1
        for e in _events(un, "drift"):
            fa_by[e["detector"]] = fa_by.get(e["detector"], 0) + 1
        if delay is not None:
            delays.append(delay)
        # accuracy on the windows the kept bridge decided (same windows in all three sessions)
        steps = {e["step"]: e for e in _events(ac, "autocal")}
        kept = steps.get("kept")
        new_v = kept["bridge"] if kept else None
        pa, pu, ps = _preds(ac), _preds(un), _preds(sh)
        eval_w = sorted(w for w, r in pa.items() if new_v is not None and r["bridge"] == new_v
                        and r.get("label") is not None and w in pu and w in ps)
        classes = ac["classes"]
        acc: dict[str, Any] = {"windows": len(eval_w)}
        if eval_w:
            truth = np.array([classes.index(pa[w]["label"]) for w in eval_w])
            for key, src_run in (("unshifted", pu), ("shifted", ps), ("after", pa)):
                pred = np.array([classes.index(src_run[w]["class"]) for w in eval_w])
                acc[key] = round(BC.balanced(truth, pred, len(classes)), 4)
                pooled[key].append(pred)
            pooled["truth"].append(truth)
        # latency while the calibrate child runs vs idle, in the same session
        t_cal = steps.get("calibrating", {}).get("time")
        t_end = next((steps[k]["time"] for k in ("published", "not_published", "failed") if k in steps), None)
        t_rec = steps.get("recording", {}).get("time", float("inf"))
        warm = ac["summary"].latency.get("warmup", 3)
        for r in list(_preds(ac).values())[warm:]:
            if t_cal is not None and t_end is not None and t_cal <= r["time"] <= t_end:
                lat_cal.append(r["latency_ms"])
            elif r["time"] < t_rec:
                lat_idle.append(r["latency_ms"])
        users.append({
            "user": u, "seed": seed,
            "unshifted": {"drift_events": len(_events(un, "drift")), "max_score": dr["max_score"],
                          "threshold": dr["threshold"], "signal_s": un["summary"].signal_seconds,
                          "wall_s": round(un["wall_s"], 1)},
            "shifted": {"detection_delay_s": delay, "alarms_before_change": len(before_change),
                        "drift": sh["summary"].watch["streams"]["0"]["drift"],
                        "paired": sh["summary"].watch["streams"]["0"].get("paired"),
                        "wall_s": round(sh["wall_s"], 1)},
            "autocal": {"started_by": "benchmark (no drift event)" if _events(ac, "autocal_requested")
                        else ("drift event" if _events(ac, "autocal") else "nothing"),
                        "steps": [e["step"] for e in _events(ac, "autocal")],
                        "events": [{k: v for k, v in e.items() if k not in ("detail",)}
                                   for e in _events(ac, "autocal")],
                        "details": {e["step"]: str(e.get("detail", ""))[:300] for e in _events(ac, "autocal")
                                    if e.get("detail")},
                        "paired": ac["summary"].watch["streams"]["0"].get("paired"),
                        "bridge_versions": ac["summary"].bridge_versions, "wall_s": round(ac["wall_s"], 1)},
            "balanced_accuracy": acc,
        })

    replay = replay_false_alarms(root, args.replay_users, args.replay_minutes, args.seed, args.budget) \
        if args.replay_users > 0 else None
    fa_24 = false_alarms / unshifted_hours * 24 if unshifted_hours else None
    figures: dict[str, Any] = {
        "detection_delay_s": {"median": _p(delays, 50), "p90": _p(delays, 90), "detected": len(delays),
                              "shifted_users": args.users, "first_alarm_by": dict(detectors)},
        "false_alarms": {"count": false_alarms, "unshifted_hours": round(unshifted_hours, 3),
                         "per_hour": false_alarms / unshifted_hours if unshifted_hours else None,
                         "per_24h_extrapolated": fa_24,
                         "per_24h_poisson_95_upper": 3.0 / unshifted_hours * 24 if unshifted_hours else None,
                         "max_unshifted_score_over_threshold": round(max_frac, 3),
                         "max_unshifted_session_score_over_threshold": round(max_sess, 3),
                         "by_detector": fa_by},
        "windows_dropped": dropped,
        "false_alarms_replayed": {k: v for k, v in replay.items() if k != "per_user"} if replay else None,
    }
    if pooled["truth"]:
        truth = np.concatenate(pooled["truth"])
        acc = {k: round(BC.balanced(truth, np.concatenate(pooled[k]), len(classes)), 4)
               for k in ("unshifted", "shifted", "after")}
        acc["recovery"] = BC.recovery_of(acc["unshifted"], acc["shifted"], acc["after"])
        acc["windows"] = int(truth.size)
        figures["balanced_accuracy_pooled"] = acc
    else:
        figures["balanced_accuracy_pooled"] = {"windows": 0, "why": "no automatic calibration kept a bridge"}
    p_idle, p_cal = _p(lat_idle, 99), _p(lat_cal, 99)
    figures["latency_p99_ms"] = {"idle": p_idle, "calibrating": p_cal, "n_idle": len(lat_idle),
                                 "n_calibrating": len(lat_cal),
                                 "ratio": round(p_cal / p_idle, 3) if p_idle and p_cal else None}
    rec_acc = figures["balanced_accuracy_pooled"].get("recovery")
    # the rate is judged on every unshifted hour there is: the playback sessions' and the replayed ones
    all_hours = unshifted_hours + (replay["hours"] if replay else 0.0)
    all_alarms = false_alarms + (replay["count"] if replay else 0)
    fa_all = all_alarms / all_hours * 24 if all_hours else None
    figures["false_alarms_all"] = {"count": all_alarms, "hours": round(all_hours, 2), "per_24h": fa_all,
                                   "per_24h_poisson_95_upper": _poisson_upper(all_alarms) / all_hours * 24
                                   if all_hours else None}
    met = {"false_alarms_per_24h": fa_all is not None and fa_all <= TARGETS["false_alarms_per_24h"],
           "recovery": rec_acc is not None and rec_acc >= TARGETS["recovery"],
           "p99_ratio_calibrating_vs_idle": figures["latency_p99_ms"]["ratio"] is not None
           and figures["latency_p99_ms"]["ratio"] <= TARGETS["p99_ratio_calibrating_vs_idle"],
           "windows_dropped": dropped == 0}
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": len(os.sched_getaffinity(0)), "load_avg_at_end": os.getloadavg()},
        "settings": vars(args) | {"out": str(args.out), "bundle": str(src)},
        "bundle": ref_info,
        "figures": figures, "targets": TARGETS, "targets_met": met,
        "users": users,
        "wall_s": round(time.perf_counter() - t_all, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({"figures": figures, "targets_met": met, "wall_s": result["wall_s"]}, indent=1,
                     default=str))


if __name__ == "__main__":
    main()
