"""Train the source task model: source backbone + linear head, with labels, on the source modality.

Uses the train subjects (best epoch by balanced accuracy on the val subjects) and writes
RUN/source_model/ (model.safetensors + config.json with the class names).

Example:
  edge-bridge fit-source --run runs/stress --epochs 30
"""

from __future__ import annotations

import argparse

from edge_bridge.commands._method import add_backbone_arguments, add_fit_arguments, add_run_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_fit_arguments(p, epochs=30)
    add_backbone_arguments(p)


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import backbone_config, fit_config, open_run

    r = open_run(args)
    out = pipeline.fit_source(r, fit_config(args), backbone=args.backbone, config=backbone_config(args),
                              progress=not args.no_progress)
    v = out["val"]
    print(f"source model ({out['parameters']} parameters) on {out['windows']} windows: val balanced accuracy "
          f"{v['balanced_accuracy']:.3f}, macro-F1 {v['macro_f1']:.3f} -> {r.source_model}")
    print(f"next: edge-bridge select --run {r.path}")
    return 0
