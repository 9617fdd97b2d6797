"""Benchmark of one live loop serving N wearables: cost per stream as N grows; JSON and a PNG out.

Two parts, one deploy process, the demo bundle on the CPU (ONNX Runtime, one intra-op thread per part):

1. **Filtering decision** (no real time, seconds): on simulated recordings of subjects the demo bundle never
   saw, every window is preprocessed both ways, zero-phase per window (:func:`process_windows`, what the
   bundle was trained with) and causal with state carried (:func:`process_recording`, the streaming form),
   and run through the composite: decision agreement between the two and the balanced accuracy of each
   against the simulated labels (windows across a label change left out).
2. **Growth with N**, for two kinds of wearable (``--run SOURCE:FILTERING:N,N,...``):

   - ``emulator``: each wearable is a :class:`~firmware_interface.FrameEmulator` (what ``edge-bridge
     emulate`` runs) in a child process, sending 10-sample frames in real time over TCP on 127.0.0.1 to a
     ``tcp:`` source of the loop, so the deploy process pays what a hub pays for a real wearable: receiving
     and parsing its frames. One child per wearable up to 64, then several wearables (each its own
     emulator, socket and thread) per child. The children's CPU is reported apart.
   - ``playback``: N BrainFlow playback boards inside the deploy process (one copy of the recording each),
     so BrainFlow's playback threads are the deploy process's cost too.

   Each hop, every stream's due window goes through the composite in one batched engine call. Reported per
   N: windows, p50/p99 window latency (from the moment a stream's samples are read to its record being
   emitted), lost samples, CPU time per stream-second of signal of the whole deploy process (source reader
   threads included) and of the live loop's thread alone (windowing, quality gate, preprocessing, engines,
   sinks), the sources' share (CPU before the first window), RSS, and the load average after each run
   (the machine is shared: say so with the figures). ``--profile DIR`` writes a cProfile of the loop
   thread per run.

Real time bounds the run: each N needs one window of signal (30 s) before its first window, then
``--measure`` seconds of windows; the default plan takes about eight minutes of wall time, mostly waiting.

Run:
  OMP_NUM_THREADS=1 .venv/bin/python bench/streams.py --out bench-out/streams.json
  OMP_NUM_THREADS=1 .venv/bin/python bench/streams.py --subjects 0 --run emulator:zerophase:1,64 \\
      --profile bench-out/profiles
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


EMULATOR_CHILD = "--emulator-child"
#: more child processes than this and their start-up (a Python with numpy each) swamps a 2-core machine;
#: above it, each child serves several wearables (each still its own emulator, socket and thread)
MAX_EMULATOR_PROCESSES = 64


def emulator_child(npy: str, count: int, rate: float, modality: str, samples_per_frame: int) -> None:
    """Child process: serve ``count`` wearables (one :class:`FrameEmulator` each) until stdin closes.

    Each emulator waits for its client and then sends frames in real time, looping the recording; the
    line ``ports P1 P2 ...`` on stdout tells the parent where to connect. Only numpy and
    firmware_interface are imported, as on a small device.
    """
    from firmware_interface.emulator import FrameEmulator

    data = np.load(npy)
    emus = [FrameEmulator(data, rate, modalities=[modality] * data.shape[0],
                          samples_per_frame=samples_per_frame, loop=True, wait_for_client=True).start()
            for _ in range(count)]
    print("ports " + " ".join(str(e.port) for e in emus), flush=True)
    cpu0 = time.process_time()  # what the emulators cost, without Python's and numpy's start-up
    try:
        sys.stdin.read()  # the parent closes stdin (or dies): time to go
    finally:
        for e in emus:
            e.stop()
    print(f"cpu {time.process_time() - cpu0:.6f}", flush=True)


class Emulators:
    """N frame emulators in child processes on 127.0.0.1, ``per_process`` wearables per child.

    The deploy process then pays only for what a hub pays for a real wearable: receiving and parsing its
    frames. Emulator CPU is what each child spent serving, after its start-up (it reports it on exit).
    """

    def __init__(self, data: np.ndarray, rate: float, modality: str, n: int, work: Path, *,
                 per_process: int = 1, samples_per_frame: int = 10) -> None:
        import subprocess

        npy = work / "emulated.npy"
        np.save(npy, data)
        counts = [min(per_process, n - k) for k in range(0, n, per_process)]
        here = Path(__file__).resolve()
        path = [str(here.parents[1]), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
        self.procs = [subprocess.Popen([sys.executable, str(here), EMULATOR_CHILD, str(npy), str(c),
                                        repr(float(rate)), modality, str(samples_per_frame)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                      for c in counts]
        self.ports: list[int] = []
        for proc in self.procs:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line.startswith("ports "):
                self.close()
                raise SystemExit(f"an emulator child did not start (said {line!r}); run it by hand: "
                                 f"{sys.executable} {__file__} {EMULATOR_CHILD} {npy} 1 {rate} {modality} 10")
            self.ports += [int(v) for v in line.split()[1:]]
        self.processes = len(self.procs)

    def close(self) -> float:
        """Stop every child; returns their CPU seconds while serving (start-up left out)."""
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
        cpu = 0.0
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
                out = proc.stdout.read() if proc.stdout else ""
                cpu += sum(float(line.split()[1]) for line in out.splitlines() if line.startswith("cpu "))
            except Exception as exc:  # a stuck child must not outlive the bench
                print(f"emulator child {proc.pid}: {exc}; killed", file=sys.stderr)
                proc.kill()
                proc.wait()
        return cpu


def run_n(runner: Any, csv: Path, n: int, filtering: str | None, measure_s: float, work: Path, *,
          kind: str = "playback", per_process: int | None = None,
          profile: Path | None = None) -> dict[str, Any]:
    from live import _Counter  # bench/live.py (main puts bench/ on sys.path)

    from deploy.live import LiveConfig, LivePipeline, StreamInput
    from firmware_interface import open_source

    spec = runner.bundle.manifest.target
    streams, emulators = [], None
    if kind == "emulator":
        from edge_bridge.recordings.brainflow_csv import read_brainflow_csv

        rec = read_brainflow_csv(csv)
        data = np.stack([rec.channel(c).data for c in spec.channels])
        per = per_process or -(-n // MAX_EMULATOR_PROCESSES)
        emulators = Emulators(data, spec.input_rate, spec.modality, n, work, per_process=per)
        streams = [StreamInput(f"s{k}", open_source(f"tcp:127.0.0.1:{port}"))
                   for k, port in enumerate(emulators.ports)]
    else:
        for k in range(n):  # BrainFlow keys a board by its parameters: one file per playback board
            copy = work / f"s{k}.csv"
            if not copy.exists():
                shutil.copyfile(csv, copy)
                shutil.copyfile(f"{csv}.json", f"{copy}.json")
            streams.append(StreamInput(f"s{k}", open_source(f"playback:{copy}")))
    sink = _Counter()
    cfg = LiveConfig(watch_bridge=False, warmup_windows=1, filtering=filtering,
                     duration=spec.window_s + measure_s + 3.0)
    pipe = LivePipeline(runner, streams, [sink], cfg)
    fill: list[tuple[float, float]] = []  # (cpu, time) late in the first window's fill: sources only

    def sample_fill() -> None:
        time.sleep(0.9 * spec.window_s)
        fill.append((_cpu(), time.perf_counter()))

    threading.Thread(target=sample_fill, daemon=True).start()
    prof = None
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
    cpu0, t0, loop0 = _cpu(), time.perf_counter(), time.thread_time()
    try:
        s = pipe.run() if prof is None else prof.runcall(pipe.run)
    finally:
        emulator_cpu = emulators.close() if emulators is not None else None
    wall, cpu, loop_cpu = time.perf_counter() - t0, _cpu() - cpu0, time.thread_time() - loop0
    if prof is not None and profile is not None:
        prof.dump_stats(str(profile))
    source_ms = (1e3 * (fill[0][0] - cpu0) / (fill[0][1] - t0) / n) if fill else None
    stream_seconds = s.signal_seconds
    per = s.to_dict()["streams"]
    p99s = [v["latency"]["p99_ms"] for v in per.values() if v["latency"]["n"]]
    return {"n": n, "source": kind, "filtering": filtering or spec.filtering, "wall_s": round(wall, 1),
            "emulator_processes": emulators.processes if emulators is not None else None,
            "windows": s.windows,
            "predicted": s.predicted, "skipped": s.skipped, "lost_samples": s.lost_samples, "gaps": s.gaps,
            "latency": s.latency, "worst_stream_p99_ms": max(p99s) if p99s else None,
            "cpu_s": round(cpu, 2), "stream_seconds": round(stream_seconds, 1),
            "cpu_ms_per_stream_second": round(1e3 * cpu / stream_seconds, 3) if stream_seconds else None,
            "loop_cpu_ms_per_stream_second": round(1e3 * loop_cpu / stream_seconds, 3)
            if stream_seconds else None,
            "loop_cpu_ms_per_window": round(1e3 * loop_cpu / s.windows, 3) if s.windows else None,
            "source_cpu_ms_per_stream_second": round(source_ms, 3) if source_ms is not None else None,
            "emulator_cpu_ms_per_stream_second": round(1e3 * emulator_cpu / stream_seconds, 3)
            if emulator_cpu is not None and stream_seconds else None,
            "rss_mb": round(_rss_mb(), 1), "per_stream": {k: {"windows": v["windows"],
                                                              "lost_samples": v["lost_samples"],
                                                              "p50_ms": v["latency"]["p50_ms"],
                                                              "p99_ms": v["latency"]["p99_ms"]}
                                                          for k, v in per.items()}}


def _ratio(big: dict[str, Any] | None, one: dict[str, Any] | None, key: str) -> float | None:
    if not big or not one or not one.get(key) or big.get(key) is None:
        return None
    return round(big[key] / one[key], 3)


DEFAULT_RUNS = ("emulator:zerophase:1,4,16,64,256", "playback:zerophase:1,4,16,64", "emulator:causal:1,64")
SOURCES = ("emulator", "playback")
FILTERINGS = ("zerophase", "causal")


def parse_run(text: str) -> tuple[str, str, list[int]]:
    """``"emulator:zerophase:1,4,16"`` -> ("emulator", "zerophase", [1, 4, 16])."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in SOURCES or parts[1] not in FILTERINGS:
        raise argparse.ArgumentTypeError(f"a run is SOURCE:FILTERING:N[,N...] with SOURCE one of {SOURCES} "
                                         f"and FILTERING one of {FILTERINGS}, got {text!r}")
    try:
        ns = [int(v) for v in parts[2].split(",") if v.strip()]
    except ValueError:
        ns = []
    if not ns or min(ns) < 1:
        raise argparse.ArgumentTypeError(f"stream counts must be positive integers, got {parts[2]!r}")
    return parts[0], parts[1], ns


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for mode in sorted({(r["source"], r["filtering"]) for r in results}):
        rs = [r for r in results if (r["source"], r["filtering"]) == mode and r["latency"].get("n")]
        ns = [r["n"] for r in rs]
        label = "/".join(mode)
        a.plot(ns, [r["latency"]["p50_ms"] for r in rs], "o-", label=f"{label} p50")
        a.plot(ns, [r["latency"]["p99_ms"] for r in rs], "s--", label=f"{label} p99")
        b.plot(ns, [r["cpu_ms_per_stream_second"] for r in rs], "o-", label=f"{label}: process")
        b.plot(ns, [r["loop_cpu_ms_per_stream_second"] for r in rs], "s--", label=f"{label}: live loop")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("streams in one process")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    a.set_yscale("log")
    a.set_ylabel("window latency (ms)")
    a.axhline(50, color="grey", lw=0.8)
    b.set_ylabel("deploy-process CPU ms per stream-second")
    b.set_yscale("log")
    fig.suptitle("edge-bridge deploy: one loop, N wearables (frame emulators over TCP or BrainFlow "
                 "playback); demo bundle, CPU", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == EMULATOR_CHILD:
        npy, count, rate, modality, spf = sys.argv[2:7]
        emulator_child(npy, int(count), float(rate), modality, int(spf))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/streams.json"))
    ap.add_argument("--run", dest="runs", type=parse_run, action="append",
                    help="SOURCE:FILTERING:N[,N...], repeatable; SOURCE emulator (frame emulators in child "
                         "processes, over TCP) or playback (BrainFlow playback boards in this process); "
                         f"default: {' '.join(DEFAULT_RUNS)}")
    ap.add_argument("--per-process", type=int, default=None,
                    help="emulated wearables per child process (default: 1 up to "
                         f"{MAX_EMULATOR_PROCESSES} streams, then as many as keep {MAX_EMULATOR_PROCESSES} "
                         "processes)")
    ap.add_argument("--measure", type=float, default=4.0, help="seconds of windows per N after the first")
    ap.add_argument("--subjects", type=int, default=3,
                    help="simulated subjects for the filtering decision (0 skips it)")
    ap.add_argument("--minutes", type=float, default=5.0, help="minutes per subject for the decision")
    ap.add_argument("--profile", type=Path, help="folder for a cProfile of the live loop per run (.pstats)")
    args = ap.parse_args()
    runs = args.runs or [parse_run(r) for r in DEFAULT_RUNS]

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
    decision: dict[str, Any] | None = None
    if args.subjects > 0:
        t0 = time.perf_counter()
        decision = filtering_agreement(bundle, runner, args.subjects, args.minutes)
        decision["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({"filtering_decision": {k: v for k, v in decision.items() if k != "subjects"}}),
              flush=True)

    spec = bundle.manifest.target
    csv, _ = demo_recording(bundle, minutes=(spec.window_s + args.measure + 8) / 60.0, seed=2000,
                            subject="B01")
    plan = [(source, mode, n) for source, mode, ns in runs for n in ns]
    results = []
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="edge-bridge-streams-") as work:
        for source, mode, n in plan:
            prof = None
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                prof = args.profile / f"{source}-{mode}-{n}.pstats"
            r = run_n(runner, csv, n, mode, args.measure, Path(work), kind=source,
                      per_process=args.per_process, profile=prof)
            r["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
            results.append(r)
            keys = ("n", "source", "filtering", "windows", "lost_samples", "cpu_ms_per_stream_second",
                    "source_cpu_ms_per_stream_second", "loop_cpu_ms_per_stream_second",
                    "emulator_cpu_ms_per_stream_second", "rss_mb", "worst_stream_p99_ms",
                    "load_average_after")
            brief = {k: r[k] for k in keys}
            brief.update({"p50_ms": r["latency"].get("p50_ms"), "p99_ms": r["latency"].get("p99_ms")})
            print(json.dumps(brief), flush=True)
    runner.close()

    summary: dict[str, Any] = {}
    for source, mode in dict.fromkeys((s_, m_) for s_, m_, _ in plan):
        rs = [r for r in results if (r["source"], r["filtering"]) == (source, mode)]
        one = next((r for r in rs if r["n"] == 1), None)
        big = max(rs, key=lambda r: r["n"])
        at64 = next((r for r in rs if r["n"] == 64), None)
        held = [r["n"] for r in rs if r["latency"].get("p99_ms") is not None
                and r["latency"]["p99_ms"] <= 100.0 and r["lost_samples"] == 0]
        summary[f"{source}/{mode}"] = {
            "largest_n_p99_le_100ms_no_loss": max(held) if held else None,
            "p99_ms_at_64": at64["latency"].get("p99_ms") if at64 else None,
            "cpu_per_stream_ratio_64_vs_1": _ratio(at64, one, "cpu_ms_per_stream_second"),
            "loop_cpu_per_stream_ratio_64_vs_1": _ratio(at64, one, "loop_cpu_ms_per_stream_second"),
            "cpu_per_stream_ratio_largest_vs_1": _ratio(big, one, "cpu_ms_per_stream_second"),
            "lost_samples_total": sum(r["lost_samples"] for r in rs)}
    load = os.getloadavg()
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": len(os.sched_getaffinity(0)), "load_average_before": load_before,
                    "load_average_at_end": [round(v, 2) for v in load],
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
