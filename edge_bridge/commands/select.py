"""Choose where to cut the target model (i) and where to enter the source model (j), without labels.

Stage 1: a logistic-regression probe per target block on the source model's pseudo-labels (5-fold
macro-F1, folds grouped by subject because overlapping windows would leak across folds). Stage 2: linear
CKA between the chosen target block and every source block's input. Writes
RUN/selection.json (every candidate's score) and RUN/selection.png.

Example:
  edge-bridge select --run runs/stress
"""

from __future__ import annotations

import argparse

from edge_bridge.commands._method import add_run_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)


def preflight(args: argparse.Namespace) -> None:
    from edge_bridge.commands._method import preflight as method_preflight

    method_preflight(args)


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import open_run

    r = open_run(args)
    sel = pipeline.select(r, progress=not args.no_progress)
    print(f"target block  probe macro-F1 ({sel.folds})")
    for k, f in enumerate(sel.f1):
        print(f"  {k:>3}{'*' if k == sel.i else ' '}       {f:.3f}")
    print("source block  linear CKA")
    for k, c in enumerate(sel.cka):
        print(f"  {k:>3}{'*' if k == sel.j else ' '}       {c:.3f}")
    print(f"chosen i={sel.i}, j={sel.j} from {sel.n_windows} paired windows in {sel.seconds['total']:.1f} s "
          f"-> {r.selection}, {r.path / 'selection.png'}")
    print(f"next: edge-bridge train --run {r.path}")
    return 0
