"""Show what a recording file holds: channels, rates, modalities, duration and labels.

Reads EDF/EDF+ (also ISRUC .rec), BrainFlow CSV with its sidecar, WESAD pickles and FOG FilteredData
task files (their EEG and FOG labels; other columns are named with --channels col:NN in the method verbs).

Examples:
  edge-bridge inspect demo-out/data/S01.edf
  edge-bridge inspect FilteredData/001/task_1.txt
"""

from __future__ import annotations

import argparse
import collections

from edge_bridge.commands._options import input_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="recording files")


def preflight(args: argparse.Namespace) -> None:
    for path in args.paths:
        input_file(path, "")


def run(args: argparse.Namespace) -> int:
    from edge_bridge.recordings import read_recording

    for path in args.paths:
        rec = read_recording(path)
        print(f"{path}: subject {rec.subject or '?'}, {rec.duration:.1f} s, start {rec.start_time}")
        for c in rec.channels:
            print(f"  {c.name:<12} {c.modality:<5} {c.rate:>8g} Hz  {len(c.data):>9} samples  {c.unit}")
        counts = collections.Counter(a.label for a in rec.annotations)
        secs = collections.defaultdict(float)
        for a in rec.annotations:
            secs[a.label] += a.duration
        for label, n in sorted(counts.items()):
            print(f"  label {label!r}: {n} segment(s), {secs[label]:.0f} s")
    return 0
