"""Benchmark of the live loop: the demo bundle on the CPU, fed by BrainFlow's playback board; JSON out.

What it measures, on a 2-minute simulated recording of a subject the demo bundle never saw, replayed in
real time (so it takes about 2 minutes of wall time):

- lost samples (target: zero) and gaps, as counted by the source from BrainFlow's package numbers;
- window latency after warm-up, p50/p95/p99/max (target: p99 <= 10 ms on a 2-core machine): quality
  gate + preprocessing + the three ONNX Runtime parts + softmax, per window;
- real-time factor, compute time over signal time (target: <= 0.01);
- peak resident memory of this process (target: <= 400 MB). The demo bundle is built, if it is not cached
  yet, in a separate process, so torch never inflates this figure; the device path does not import torch
  and the result says so.

Run:
  .venv/bin/python bench/live.py --out bench-out/live.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TARGETS = {"lost_samples": 0, "p99_ms": 10.0, "real_time_factor": 0.01, "peak_rss_mb": 400.0}


def _ensure_bundle() -> Path:
    from deploy.demo_bundle import find_demo_bundle

    found = find_demo_bundle()
    if found is not None:
        return found
    print("no cached demo bundle: building it in a subprocess (a few minutes)", file=sys.stderr, flush=True)
    code = ("from edge_bridge.commands._demo_bundle import ensure_demo_bundle; "
            "print(ensure_demo_bundle(report=print))")
    subprocess.run([sys.executable, "-c", code], check=True)
    found = find_demo_bundle()
    if found is None:
        raise SystemExit("the demo bundle did not build; run the command above by hand to see why")
    return found


class _Counter:
    """A sink that keeps only what the benchmark reports (no I/O in the timed path)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/live.json"))
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the simulated recording")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per part")
    args = ap.parse_args()

    from deploy.live import LabelTrack, LiveConfig, LivePipeline
    from deploy.runtime import CompositeRunner
    from edge_bridge.bundle import Bundle
    from edge_bridge.commands._demo_bundle import demo_recording
    from firmware_interface import open_source

    root = _ensure_bundle()
    bundle = Bundle.load(root)
    csv, labels = demo_recording(bundle, minutes=args.minutes)
    runner = CompositeRunner(bundle, "cpu", threads=args.threads)
    warm = runner.warm_up()
    selftest = runner.self_test()
    sink = _Counter()
    t0 = time.perf_counter()
    pipe = LivePipeline(runner, open_source(f"playback:{csv}"), [sink], LiveConfig(watch_bridge=False),
                        LabelTrack.load(labels))
    summary = pipe.run()
    wall = time.perf_counter() - t0
    runner.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    lat = summary.latency
    figures = {"lost_samples": summary.lost_samples, "p99_ms": lat.get("p99_ms"),
               "real_time_factor": summary.real_time_factor, "peak_rss_mb": round(rss_mb, 1)}
    met = {k: (figures[k] is not None and figures[k] <= v) for k, v in TARGETS.items()}
    m = bundle.manifest
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": _cpus(), "onnxruntime_threads_per_part": args.threads},
        "bundle": {"path": str(root), "task": m.task, "window_s": m.target.window_s, "hop_s": m.target.hop_s,
                   "precisions": {p: bundle.part(p).precision
                                  for p in ("target_front", "bridge", "source_back")},
                   "self_test_passed": selftest.passed},
        "recording": {"file": str(csv), "minutes": args.minutes, "rate_hz": m.target.input_rate},
        "warm_up_ms": round(1e3 * warm, 1),
        "wall_seconds": round(wall, 1),
        "summary": summary.to_dict(),
        "figures": figures,
        "targets": TARGETS,
        "targets_met": met,
        "torch_imported": any(name.split(".")[0] == "torch" for name in sys.modules),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    brief = {"figures": figures, "targets_met": met, "windows": summary.windows,
             "match_rate": summary.match_rate, "torch_imported": result["torch_imported"]}
    print(json.dumps(brief, indent=1))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


if __name__ == "__main__":
    main()
