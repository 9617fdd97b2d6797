"""Score the bridged model on held-out subjects' target signal, beside the reference models.

Balanced accuracy, macro-F1 and Cohen's kappa on the test subjects' labelled windows, for: the composite
(target front -> bridge -> source back) on the target signal, the source model on the source signal
(reference), the KD student (if trained) and a supervised target model (upper bound; trained here with
the train subjects' labels unless --no-upper-bound). Writes RUN/metrics.json.

Example:
  edge-bridge evaluate --run runs/stress
"""

from __future__ import annotations

import argparse

from edge_bridge.commands._method import add_fit_arguments, add_run_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_fit_arguments(p, epochs=30)
    p.add_argument("--no-upper-bound", action="store_true",
                   help="do not train the supervised target model (upper bound)")


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import fit_config, open_run
    from edge_bridge.evaluate import format_table

    r = open_run(args)
    out = pipeline.evaluate(r, upper_bound_cfg=None if args.no_upper_bound else fit_config(args),
                            progress=not args.no_progress)
    print(f"test subjects {', '.join(out['test_subjects'])}")
    print(format_table(out["models"]))
    print(f"-> {r.metrics}")
    return 0
