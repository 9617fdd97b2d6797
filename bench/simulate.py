"""Benchmark the simulator: wall seconds to simulate and write 10 subjects x 10 minutes of the stress task.

The acceptance bound is one minute on two CPU cores. Prints one JSON object (median of 3 runs) so CI or a
person can compare figures across machines.

Usage:
  .venv/bin/python bench/simulate.py [--subjects 10] [--minutes 10] [--runs 3] [--task stress]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

from edge_bridge.simulate import simulate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="stress")
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="edge-bridge-bench-") as tmp:
            t0 = time.perf_counter()
            simulate_dataset(tmp, task=args.task, subjects=args.subjects, minutes=args.minutes, seed=run)
            times.append(time.perf_counter() - t0)
    print(json.dumps({
        "benchmark": "simulate_dataset",
        "task": args.task,
        "subjects": args.subjects,
        "minutes": args.minutes,
        "runs_s": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 3),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
