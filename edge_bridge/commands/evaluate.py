"""Score the bridged model on held-out subjects' target signal, beside the reference models.

Balanced accuracy, macro-F1 and Cohen's kappa on the test subjects' labelled windows, for: the composite
(target front -> bridge -> source back) on the target signal, the source model on the source signal
(reference), the KD student (if trained) and a supervised target model (upper bound; trained here with
the train subjects' labels unless --no-upper-bound). Writes RUN/metrics.json and RUN/confusion.png (one
row-normalised confusion matrix per model); warns about a model below chance or deciding one class.

A fused run (task stress+eda or stress-binary+eda) reports its fused composite, which reads every target
(input "target+eda"); the KD student and the supervised upper bound read the main target alone (their
K-input forms are not built; metrics.json says so in a note).

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


def preflight(args: argparse.Namespace) -> None:
    from edge_bridge.commands._method import preflight as method_preflight

    method_preflight(args)


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import fit_config, open_run
    from edge_bridge.evaluate import check_metrics, format_table, plot_confusion

    r = open_run(args)
    out = pipeline.evaluate(r, upper_bound_cfg=None if args.no_upper_bound else fit_config(args),
                            progress=not args.no_progress)
    print(f"test subjects {', '.join(out['test_subjects'])}")
    print(format_table(out["models"]))
    png = plot_confusion(out["models"], out["classes"], r.path / "confusion.png")
    check_metrics(out["models"])  # logs the one warning per useless model
    print(f"-> {r.metrics}, {png}")
    return 0
