"""A quick look at simulated data: windows, the quality gate, ECG-vs-PPG heart rate (no training).

This is not what `make demo` runs: `make demo` runs `edge-bridge deploy` with no options (a demo bundle
trained on simulated data, then a live stream of an unseen subject). This verb takes a minute and shows the
data the method starts from. Steps: simulate paired ECG + wrist PPG recordings of the stress task (3
classes, several subjects), cut them into time-aligned windows with the one preprocessing pipeline, and
report what a newcomer should see: windows per subject, the quality gate's verdict, the class balance, and
how well heart rate read from the PPG agrees with heart rate read from the ECG (the physiology that model
bridging relies on).

Examples:
  edge-bridge demo -o demo-out
  edge-bridge demo -o demo-out --subjects 3 --minutes 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edge_bridge.commands._options import non_negative_int, output_dir, positive, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", type=Path, default=Path("demo-out"),
                   help="working folder (default: demo-out)")
    p.add_argument("--subjects", type=positive_int, default=6, help="simulated subjects (default: 6)")
    p.add_argument("--minutes", type=positive, default=6.0, help="minutes per subject (default: 6)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")


def preflight(args: argparse.Namespace) -> None:
    output_dir(args.out, "--out")


def _heart_rate(x, rate: float) -> float:
    """Median heart rate (bpm) from peak intervals of one processed window."""
    import numpy as np
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(x, distance=int(0.33 * rate), prominence=0.5)
    if len(peaks) < 3:
        return float("nan")
    return float(60.0 / np.median(np.diff(peaks) / rate))


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from edge_bridge.recordings.paired import windows_from_files
    from edge_bridge.simulate import simulate_dataset
    from edge_bridge.tasks import get_task

    task = get_task("stress")
    t0 = time.perf_counter()
    data_dir = args.out / "data"
    print(f"[1/2] simulating {args.subjects} subjects x {args.minutes:g} min of paired ECG + PPG "
          f"-> {data_dir}")
    paths = simulate_dataset(data_dir, task="stress", subjects=args.subjects, minutes=args.minutes,
                             seed=args.seed, progress=True)
    t_sim = time.perf_counter() - t0

    print(f"[2/2] cutting {task.source.window_s:g} s windows every {task.source.hop_s:g} s with the "
          "shared preprocessing")
    w = windows_from_files(paths, task.source, task.target, task.classes, progress=True)
    hr_ecg = np.array([_heart_rate(x[0], task.source.output_rate) for x in w.x["source"]])
    hr_ppg = np.array([_heart_rate(x[0], task.target.output_rate) for x in w.x["target"]])
    ok = np.isfinite(hr_ecg) & np.isfinite(hr_ppg)
    corr = float(np.corrcoef(hr_ecg[ok], hr_ppg[ok])[0, 1]) if ok.sum() > 2 else float("nan")
    by_class = {c: int((w.labels == k).sum()) for k, c in enumerate(task.classes)}
    hr_by_class = {c: round(float(np.nanmedian(hr_ecg[w.labels == k])), 1)
                   for k, c in enumerate(task.classes) if (w.labels == k).any()}
    summary = {
        "recordings": len(paths),
        "windows": len(w),
        "windows_skipped_by_quality_gate": w.skipped,
        "windows_per_class": by_class,
        "unlabelled_windows": int((w.labels < 0).sum()),
        "median_ecg_heart_rate_bpm_per_class": hr_by_class,
        "ecg_vs_ppg_heart_rate_correlation": round(corr, 3),
        "simulate_seconds": round(t_sim, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    w.save(args.out / "paired_windows.npz")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nsummary")
    for k, v in summary.items():
        print(f"  {k:<40} {v}")
    print(f"\nwritten: {data_dir}/S*.edf (open with `edge-bridge inspect`), {args.out}/paired_windows.npz, "
          f"{args.out}/summary.json")
    return 0
