"""Benchmark of one live loop serving N wearables: cost per stream as N grows; JSON and a PNG out.

Two parts, one process, the demo bundle on the CPU (ONNX Runtime, one intra-op thread per part):

1. **Filtering decision** (no real time, seconds): on simulated recordings of subjects the demo bundle never
   saw, every window is preprocessed both ways, zero-phase per window (:func:`process_windows`, what the
   bundle was trained with) and causal with state carried (:func:`process_recording`, the streaming form),
   and run through the composite: decision agreement between the two and the balanced accuracy of each
   against the simulated labels (windows across a label change left out).
2. **Growth with N**: for each N, N BrainFlow playback boards (one copy of a demo recording each, replayed
   in real time) feed one :class:`~deploy.live.LivePipeline`; each hop, every stream's window goes through
   the composite in one batched engine call. Reported per N: windows, p50/p99 window latency (from the
   moment a stream's samples are read to its record being emitted), lost samples, CPU time per
   stream-second of signal of the whole process (BrainFlow's playback threads and the source reader threads
   included) and of the live loop's thread alone (windowing, quality gate, preprocessing, engines, sinks),
   the sources' own share (CPU before the first window), RSS. Per stream figures are in the JSON too.

Real time bounds the run: each N needs one window of signal (30 s) before its first window, then
``--measure`` seconds of windows; the default sweep takes about six minutes of wall time, mostly waiting.

Run:
  OMP_NUM_THREADS=1 .venv/bin/python bench/streams.py --out bench-out/streams.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

GOALS = {"p99_ms_at_64": 50.0, "lost_samples": 0, "cpu_per_stream_ratio_64_vs_1": 0.2,
         "p99_ms_largest_n": 100.0}


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _balanced_accuracy(truth: list[str], pred: list[str]) -> float | None:
    classes = sorted(set(truth))
    if not classes:
        return None
    recalls = [np.mean([p == c for t, p in zip(truth, pred, strict=True) if t == c]) for c in classes]
    return float(np.mean(recalls))


def filtering_agreement(bundle: Any, runner: Any, subjects: int, minutes: float) -> dict[str, Any]:
    """Zero-phase per window vs causal with carried state, on the same windows of unseen subjects."""
    from deploy.live import LabelTrack
    from deploy.runtime import softmax
    from edge_bridge.commands._demo_bundle import demo_recording
    from edge_bridge.recordings.brainflow_csv import read_brainflow_csv
    from edge_bridge.signals import assess_quality, cut_windows, process_recording, process_windows

    m = bundle.manifest
    spec = m.target
    causal_spec = dataclasses.replace(spec, filtering="causal")
    per_subject, all_agree = [], []
    truth_all: list[str] = []
    pred = {"zerophase": [], "causal": []}  # type: dict[str, list[str]]
    for k in range(subjects):
        csv, labels_path = demo_recording(bundle, minutes=minutes, seed=1000 + k, subject=f"D{k + 1:02d}")
        rec = read_brainflow_csv(csv)
        data = np.stack([rec.channel(c).data for c in spec.channels])
        raw, starts = cut_windows(data, spec)
        good = ~assess_quality(raw, spec.quality).any(axis=1)
        xz = process_windows(raw[good], spec, check_quality=False)
        xc = process_recording(data, causal_spec)[0][good]
        cz = np.argmax(softmax(runner(xz).astype(np.float64)), axis=1)
        cc = np.argmax(softmax(runner(xc).astype(np.float64)), axis=1)
        track = LabelTrack.load(labels_path)
        truth, keep = [], []
        for i, s in enumerate(starts[good]):
            lab, straddles = track.classify(s / spec.input_rate, s / spec.input_rate + spec.window_s)
            lab = m.label_map.get(lab, lab) if lab is not None else None
            if lab is not None and not straddles and lab in m.classes:
                truth.append(lab)
                keep.append(i)
        names = np.asarray(m.classes)
        pz, pc = list(names[cz[keep]]), list(names[cc[keep]])
        agree = float(np.mean(cz == cc))
        all_agree += list(cz == cc)
        truth_all += truth
        pred["zerophase"] += pz
        pred["causal"] += pc
        per_subject.append({"subject": f"D{k + 1:02d}", "windows": int(good.sum()),
                            "agreement": round(agree, 4),
                            "balanced_accuracy_zerophase": _balanced_accuracy(truth, pz),
                            "balanced_accuracy_causal": _balanced_accuracy(truth, pc)})
    return {"subjects": per_subject, "windows": len(all_agree),
            "decision_agreement": round(float(np.mean(all_agree)), 4),
            "balanced_accuracy_zerophase": _balanced_accuracy(truth_all, pred["zerophase"]),
            "balanced_accuracy_causal": _balanced_accuracy(truth_all, pred["causal"]),
            "scored_windows": len(truth_all)}


def run_n(runner: Any, csv: Path, n: int, filtering: str | None, measure_s: float,
          work: Path) -> dict[str, Any]:
    from live import _Counter  # bench/live.py (main puts bench/ on sys.path)

    from deploy.live import LiveConfig, LivePipeline, StreamInput
    from firmware_interface import open_source

    streams = []
    for k in range(n):  # BrainFlow keys a board by its parameters: one file per playback board
        copy = work / f"s{k}.csv"
        if not copy.exists():
            shutil.copyfile(csv, copy)
            shutil.copyfile(f"{csv}.json", f"{copy}.json")
        streams.append(StreamInput(f"s{k}", open_source(f"playback:{copy}")))
    spec = runner.bundle.manifest.target
    sink = _Counter()
    cfg = LiveConfig(watch_bridge=False, warmup_windows=1, filtering=filtering,
                     duration=spec.window_s + measure_s + 3.0)
    pipe = LivePipeline(runner, streams, [sink], cfg)
    fill: list[tuple[float, float]] = []  # (cpu, time) late in the first window's fill: sources only

    def sample_fill() -> None:
        time.sleep(0.9 * spec.window_s)
        fill.append((_cpu(), time.perf_counter()))

    threading.Thread(target=sample_fill, daemon=True).start()
    cpu0, t0, loop0 = _cpu(), time.perf_counter(), time.thread_time()
    s = pipe.run()
    wall, cpu, loop_cpu = time.perf_counter() - t0, _cpu() - cpu0, time.thread_time() - loop0
    source_ms = (1e3 * (fill[0][0] - cpu0) / (fill[0][1] - t0) / n) if fill else None
    stream_seconds = s.signal_seconds
    per = s.to_dict()["streams"]
    p99s = [v["latency"]["p99_ms"] for v in per.values() if v["latency"]["n"]]
    return {"n": n, "filtering": filtering or spec.filtering, "wall_s": round(wall, 1), "windows": s.windows,
            "predicted": s.predicted, "skipped": s.skipped, "lost_samples": s.lost_samples, "gaps": s.gaps,
            "latency": s.latency, "worst_stream_p99_ms": max(p99s) if p99s else None,
            "cpu_s": round(cpu, 2), "stream_seconds": round(stream_seconds, 1),
            "cpu_ms_per_stream_second": round(1e3 * cpu / stream_seconds, 3) if stream_seconds else None,
            "loop_cpu_ms_per_stream_second": round(1e3 * loop_cpu / stream_seconds, 3)
            if stream_seconds else None,
            "loop_cpu_ms_per_window": round(1e3 * loop_cpu / s.windows, 3) if s.windows else None,
            "source_cpu_ms_per_stream_second": round(source_ms, 3) if source_ms is not None else None,
            "rss_mb": round(_rss_mb(), 1), "per_stream": {k: {"windows": v["windows"],
                                                              "lost_samples": v["lost_samples"],
                                                              "p50_ms": v["latency"]["p50_ms"],
                                                              "p99_ms": v["latency"]["p99_ms"]}
                                                          for k, v in per.items()}}


def _ratio(big: dict[str, Any] | None, one: dict[str, Any] | None, key: str) -> float | None:
    if not big or not one or not one.get(key) or big.get(key) is None:
        return None
    return round(big[key] / one[key], 3)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in sorted({r["filtering"] for r in results}):
        rs = [r for r in results if r["filtering"] == mode and r["latency"].get("n")]
        ns = [r["n"] for r in rs]
        a.plot(ns, [r["latency"]["p50_ms"] for r in rs], "o-", label=f"{mode} p50")
        a.plot(ns, [r["latency"]["p99_ms"] for r in rs], "s--", label=f"{mode} p99")
        b.plot(ns, [r["cpu_ms_per_stream_second"] for r in rs], "o-", label=f"{mode}: process")
        b.plot(ns, [r["loop_cpu_ms_per_stream_second"] for r in rs], "s--", label=f"{mode}: live loop")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("streams in one process")
        ax.grid(True, alpha=0.3)
        ax.legend()
    a.set_yscale("log")
    a.set_ylabel("window latency (ms)")
    a.axhline(50, color="grey", lw=0.8)
    b.set_ylabel("CPU ms per stream-second")
    b.set_yscale("log")
    fig.suptitle("edge-bridge deploy: one loop, N BrainFlow playback streams (demo bundle, CPU)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/streams.json"))
    ap.add_argument("--causal", default="1,2,4,8,16,32,64",
                    help="N values with causal filtering, state carried (comma-separated; '' for none)")
    ap.add_argument("--zerophase", default="1,8,64",
                    help="N values with zero-phase filtering per window, batched (what the demo bundle "
                         "was trained with)")
    ap.add_argument("--measure", type=float, default=4.0, help="seconds of windows per N after the first")
    ap.add_argument("--subjects", type=int, default=3, help="simulated subjects for the filtering decision")
    ap.add_argument("--minutes", type=float, default=5.0, help="minutes per subject for the decision")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from live import _ensure_bundle  # bench/live.py: builds the demo bundle in a subprocess if needed

    from deploy.runtime import CompositeRunner
    from edge_bridge.bundle import Bundle
    from edge_bridge.commands._demo_bundle import demo_recording

    root = _ensure_bundle()
    bundle = Bundle.load(root)
    runner = CompositeRunner(bundle, "cpu", threads=1)
    runner.warm_up()
    runner.self_test()
    t0 = time.perf_counter()
    decision = filtering_agreement(bundle, runner, args.subjects, args.minutes)
    decision["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({"filtering_decision": {k: v for k, v in decision.items() if k != "subjects"}}),
          flush=True)

    spec = bundle.manifest.target
    csv, _ = demo_recording(bundle, minutes=(spec.window_s + args.measure + 8) / 60.0, seed=2000,
                            subject="B01")
    modes = {mode: [int(v) for v in text.split(",") if v.strip()]
             for mode, text in (("causal", args.causal), ("zerophase", args.zerophase))}
    modes = {k: v for k, v in modes.items() if v}
    plan = [(mode, n) for mode, ns in modes.items() for n in ns]
    results = []
    with tempfile.TemporaryDirectory(prefix="edge-bridge-streams-") as work:
        for mode, n in plan:
            r = run_n(runner, csv, n, mode, args.measure, Path(work))
            results.append(r)
            keys = ("n", "filtering", "windows", "lost_samples", "cpu_ms_per_stream_second",
                    "source_cpu_ms_per_stream_second", "loop_cpu_ms_per_stream_second", "rss_mb",
                    "worst_stream_p99_ms")
            brief = {k: r[k] for k in keys}
            brief.update({"p50_ms": r["latency"]["p50_ms"], "p99_ms": r["latency"]["p99_ms"]})
            print(json.dumps(brief), flush=True)
    runner.close()

    def of(mode: str, n: int) -> dict[str, Any] | None:
        return next((r for r in results if r["filtering"] == mode and r["n"] == n), None)

    summary: dict[str, Any] = {}
    for mode in modes:
        one, big = of(mode, 1), of(mode, max(modes[mode]))
        held = [r["n"] for r in results if r["filtering"] == mode and r["latency"].get("p99_ms") is not None
                and r["latency"]["p99_ms"] <= 100.0]
        summary[mode] = {
            "largest_n_p99_le_100ms": max(held) if held else None,
            "cpu_per_stream_ratio_largest_vs_1": _ratio(big, one, "cpu_ms_per_stream_second"),
            "loop_cpu_per_stream_ratio_largest_vs_1": _ratio(big, one, "loop_cpu_ms_per_stream_second"),
            "lost_samples_total": sum(r["lost_samples"] for r in results if r["filtering"] == mode)}
    load = os.getloadavg()
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": len(os.sched_getaffinity(0)), "load_average_at_end": [round(v, 2) for v in load],
                    "onnxruntime_threads_per_part": 1, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "bundle": {"path": str(root), "window_s": spec.window_s, "hop_s": spec.hop_s,
                   "input_rate": spec.input_rate, "output_rate": spec.output_rate,
                   "trained_filtering": spec.filtering},
        "filtering_decision": decision,
        "runs": results,
        "summary": summary,
        "goals": GOALS,
        "torch_imported": any(name.split(".")[0] == "torch" for name in sys.modules),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(json.dumps({"summary": summary, "png": str(args.out.with_suffix(".png"))}, indent=1))


if __name__ == "__main__":
    main()
