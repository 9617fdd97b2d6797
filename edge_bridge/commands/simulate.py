"""Simulate labelled paired recordings (one EDF+ file per subject) and a dataset.json with the ground truth.

Tasks:
  stress  ECG 250 Hz, wrist PPG 64 Hz, RESP 32 Hz, EDA 4 Hz; baseline/stress/amusement blocks (WESAD-like)
  sleep   six EEG channels and ECG at 200 Hz; wake/sleep per 30 s epoch (ISRUC-like)

One beat train drives ECG and PPG, so both give the same heart rate beat by beat. The same seed gives the
same files; dataset.json lists every subject's hidden parameters (resting heart rate, pulse-transit time,
...) and its blocks or hypnogram.

Example:
  edge-bridge simulate data/ --task stress --subjects 10 --minutes 10 --seed 0
  edge-bridge inspect data/S01.edf
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_bridge.commands._options import non_negative_int, output_dir, positive, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    # no simulator import here: `edge-bridge --help` builds every parser and must stay fast (scipy is slow)
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR",
                   help="folder for S01.edf, S02.edf, ... and dataset.json")
    p.add_argument("--task", default="stress", help="task preset: stress or sleep (default: stress)")
    p.add_argument("--subjects", type=positive_int, default=10, help="number of subjects (default: 10)")
    p.add_argument("--minutes", type=positive, default=10.0, help="minutes per subject (default: 10)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed, >= 0 (default: 0)")


def preflight(args: argparse.Namespace) -> None:
    output_dir(args.out_dir, "OUT_DIR")


def run(args: argparse.Namespace) -> int:
    from edge_bridge.simulate import simulate_dataset
    from edge_bridge.tasks import TASKS

    paths = simulate_dataset(args.out_dir, task=args.task, subjects=args.subjects, minutes=args.minutes,
                             seed=args.seed, progress=not args.quiet and sys.stderr.isatty())
    task = TASKS[args.task]
    print(f"wrote {len(paths)} {args.task} recording(s) of {args.minutes:g} min (seed {args.seed}) to "
          f"{args.out_dir}/{paths[0].name}..{paths[-1].name} and {args.out_dir}/dataset.json; "
          f"classes: {', '.join(task.classes)}")
    return 0
