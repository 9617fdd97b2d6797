"""Benchmark of the physiological quality gate: pass rates on clean vs motion-corrupted simulated windows.

Simulated stress-task subjects (``edge_bridge.simulate``), each once still (``motion=0``: the wrist
accelerometer present, no movement) and with sustained stair-climbing movement of several intensities
(``motion=0.25 ... 1``; the artefact is added to the same beats). The task's own specs cut the windows
(wrist PPG 64 Hz and chest ECG 250 Hz, 60 s windows). Reported, as JSON on stdout:

- ``indices``: percentiles of each index (PPG and ECG beat-template SQI, PPG skewness SQI, wrist motion
  energy in g) per intensity;
- ``threshold_grid``: pass rate per intensity for candidate thresholds of each index (how the defaults in
  ``edge_bridge/signals/spec.py`` ``DEFAULT_QUALITY`` were chosen);
- ``gate``: pass rate per intensity of the whole gate with the default limits (``assess_quality`` with the
  accelerometer), per modality, and the skip reasons;
- ``cost``: the gate's time per window (median of ``--repeats`` runs), basic checks alone vs with the
  physiological indices.

Run:  PYTHONPATH=. OMP_NUM_THREADS=1 python bench/quality.py --subjects 8 --minutes 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from edge_bridge.signals import Preprocessing, Quality, assess_quality, cut_windows, describe_flags
from edge_bridge.signals.physio import beat_template_sqi, motion_energy, skewness_sqi
from edge_bridge.simulate import simulate_subject
from edge_bridge.tasks import TASKS

ACC = ("ACC_X", "ACC_Y", "ACC_Z")
GRID = {"ppg_beat_sqi": [0.5, 0.7, 0.8, 0.85, 0.9, 0.95], "ecg_beat_sqi": [0.5, 0.7, 0.8, 0.9, 0.95],
        "ppg_skewness": [0.0, 0.1, 0.2, 0.3], "motion_g": [0.01, 0.015, 0.02, 0.03, 0.05]}


def _windows(rec: Any, spec: Preprocessing) -> tuple[np.ndarray, float]:
    data, rate = rec.data(list(spec.channels))
    raw, _ = cut_windows(data, spec)
    return raw, rate


def _acc_windows(rec: Any, spec: Preprocessing) -> tuple[np.ndarray, float]:
    rate = rec.channel(ACC[0]).rate
    acc_spec = dataclasses.replace(spec, modality="acc", channels=ACC, input_rate=rate, output_rate=rate,
                                   bandpass=None, notch=None, quality=None)
    return _windows(rec, acc_spec)


def _pct(v: np.ndarray) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(v, q)), 4) for q in (5, 25, 50, 75, 95)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--hop", type=float, default=10.0, help="window hop in seconds (default 10)")
    ap.add_argument("--intensities", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    task = TASKS["stress"]
    specs = {"ppg": dataclasses.replace(task.target, hop_s=args.hop),
             "ecg": dataclasses.replace(task.source, hop_s=args.hop)}
    indices: dict[str, dict[str, list[np.ndarray]]] = {}
    gate: dict[str, Any] = {}
    sample: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    t_all = time.perf_counter()
    for inten in args.intensities:
        key = f"{inten:g}"
        got: dict[str, list[np.ndarray]] = {k: [] for k in GRID}
        counts: dict[str, dict[str, Any]] = {m: {"windows": 0, "passed": 0, "reasons": {}} for m in specs}
        for k in range(1, args.subjects + 1):
            rec = simulate_subject("stress", f"S{k:02d}", args.minutes, args.seed, motion=inten)
            acc, acc_rate = _acc_windows(rec, specs["ppg"])
            got["motion_g"].append(motion_energy(acc, acc_rate))
            for m, spec in specs.items():
                raw, rate = _windows(rec, spec)
                got[f"{m}_beat_sqi"].append(beat_template_sqi(raw[:, 0], rate, m))
                if m == "ppg":
                    got["ppg_skewness"].append(skewness_sqi(raw[:, 0], rate))
                    sample.setdefault(key, (raw, acc, acc_rate))
                flags = assess_quality(raw, spec, acc=acc[: len(raw)], acc_rate=acc_rate)
                c = counts[m]
                c["windows"] += len(raw)
                c["passed"] += int((flags == 0).all(axis=1).sum())
                for f in flags:
                    if f.any():
                        r = describe_flags(f, spec.channels)
                        c["reasons"][r] = c["reasons"].get(r, 0) + 1
        indices[key] = got
        gate[key] = {m: {**c, "pass_rate": round(c["passed"] / max(c["windows"], 1), 4)}
                     for m, c in counts.items()}
    grid: dict[str, dict[str, dict[str, float]]] = {}
    for name, thresholds in GRID.items():
        grid[name] = {}
        for th in thresholds:
            row = {}
            for key, got in indices.items():
                v = np.concatenate(got[name])
                row[key] = round(float(np.mean(v <= th if name == "motion_g" else v >= th)), 4)
            grid[name][f"{th:g}"] = row
    # cost per window: the basic checks vs the whole gate, on the same windows (PPG with the accelerometer)
    raw, acc, acc_rate = sample[f"{args.intensities[0]:g}"]
    rec = simulate_subject("stress", "S01", args.minutes, args.seed, motion=args.intensities[0])
    ecg_raw, _ = _windows(rec, specs["ecg"])
    cost: dict[str, Any] = {}
    cases = {"ppg": (raw, specs["ppg"], {"acc": acc, "acc_rate": acc_rate}),
             "ecg": (ecg_raw, specs["ecg"], {})}
    for m, (w, spec, extra) in cases.items():
        per: dict[str, Any] = {}
        basic = lambda w=w, spec=spec: assess_quality(w, spec.quality)  # noqa: E731
        full = lambda w=w, spec=spec, extra=extra: assess_quality(w, spec, **extra)  # noqa: E731
        for what, fn in (("basic_ms", basic), ("with_physiology_ms", full)):
            runs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn()
                runs.append((time.perf_counter() - t0) / len(w) * 1e3)
            per[what] = round(statistics.median(runs), 3)
        per["windows_per_run"] = len(w)
        per["window"] = f"{spec.window_s:g} s of {spec.modality} at {spec.input_rate:g} Hz" + (
            ", 3-axis accelerometer" if extra else "")
        cost[m] = per
    out = {
        "setup": {"subjects": args.subjects, "minutes": args.minutes, "hop_s": args.hop, "seed": args.seed,
                  "intensities": args.intensities, "specs": {m: s.to_dict() for m, s in specs.items()},
                  "load": os.getloadavg(), "seconds": round(time.perf_counter() - t_all, 1)},
        "indices": {k: {n: _pct(np.concatenate(v)) for n, v in got.items()} for k, got in indices.items()},
        "threshold_grid": grid,
        "gate": gate,
        "cost": cost,
        "flags": {q.name: int(q) for q in Quality if q},
    }
    json.dump(out, sys.stdout, indent=1)
    print()
    return out


if __name__ == "__main__":
    main()
