"""Simulate labelled paired recordings (one EDF+ file per subject) and a dataset.json with the ground truth.

Tasks:
  stress  ECG 250 Hz, wrist PPG 64 Hz, RESP 32 Hz, EDA 4 Hz; baseline/stress/amusement blocks (WESAD-like)
  sleep   six EEG channels and ECG at 200 Hz; wake/sleep per 30 s epoch (ISRUC-like)

One beat train drives ECG and PPG, so both give the same heart rate beat by beat. The same seed gives the
same files; dataset.json lists every subject's hidden parameters (resting heart rate, pulse-transit time,
...) and its blocks or hypnogram.

With --motion INTENSITY every subject also moves (0 = sits still, 1 = brisk stair climbing) and gets a
wrist accelerometer (ACC_X/Y/Z, g): the quality gate's physiological checks are measured on such data.

Example:
  edge-bridge simulate data/ --task stress --subjects 10 --minutes 10 --seed 0
  edge-bridge simulate stairs/ --subjects 4 --minutes 5 --motion 1
  edge-bridge inspect data/S01.edf
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_bridge.commands._options import non_negative_int, number, output_dir, positive, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    # no simulator import here: `edge-bridge --help` builds every parser and must stay fast (scipy is slow)
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR",
                   help="folder for S01.edf, S02.edf, ... and dataset.json")
    p.add_argument("--task", default="stress", help="task preset: stress or sleep (default: stress)")
    p.add_argument("--subjects", type=positive_int, default=10, help="number of subjects (default: 10)")
    p.add_argument("--minutes", type=positive, default=10.0, help="minutes per subject (default: 10)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed, >= 0 (default: 0)")
    p.add_argument("--motion", type=number(float, min=0), metavar="INTENSITY",
                   help="add sustained movement and a wrist accelerometer: 0 still, 1 stair climbing "
                        "(e.g. --motion 1; default: none, no accelerometer)")


def preflight(args: argparse.Namespace) -> None:
    output_dir(args.out_dir, "OUT_DIR")


def run(args: argparse.Namespace) -> int:
    from edge_bridge.simulate import simulate_dataset
    from edge_bridge.tasks import TASKS

    paths = simulate_dataset(args.out_dir, task=args.task, subjects=args.subjects, minutes=args.minutes,
                             seed=args.seed, progress=not args.quiet and sys.stderr.isatty(),
                             motion=args.motion)
    task = TASKS[args.task]
    print(f"wrote {len(paths)} {args.task} recording(s) of {args.minutes:g} min (seed {args.seed}) to "
          f"{args.out_dir}/{paths[0].name}..{paths[-1].name} and {args.out_dir}/dataset.json; "
          f"classes: {', '.join(task.classes)}")
    return 0
