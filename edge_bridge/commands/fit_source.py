"""Train the source task model: source backbone + linear head, with labels, on the source modality.

Uses the train subjects (best epoch by balanced accuracy on the val subjects) and writes
RUN/source_model/ (model.safetensors + config.json with the class names). With --source-model
NAME:CHECKPOINT the backbone starts from a published foundation model's weights (checked to read windows of
the run's source preprocessing shape); a fresh head with one output per class is then fine-tuned the same
way.

Examples:
  edge-bridge fit-source --run runs/stress --epochs 30
  edge-bridge fit-source --run runs/stress --epochs 30 \\
      --source-model hubert_ecg:checkpoints/hubert_ecg_base.pt
"""

from __future__ import annotations

import argparse

from edge_bridge.commands._method import (
    add_backbone_arguments,
    add_fit_arguments,
    add_published_model_arguments,
    add_run_arguments,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_fit_arguments(p, epochs=30)
    add_backbone_arguments(p)
    add_published_model_arguments(p, "source", "fine-tune it with a new task head instead of a backbone "
                                              "trained from scratch")


def preflight(args: argparse.Namespace) -> None:
    from edge_bridge.commands._method import preflight as method_preflight

    method_preflight(args)


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import backbone_config, fit_config, open_run, published_model

    published = published_model(args, "source")
    r = open_run(args)
    out = pipeline.fit_source(r, fit_config(args), backbone=args.backbone, config=backbone_config(args),
                              progress=not args.no_progress, published=published)
    v = out["val"]
    start = f"from published {published[0]} " if published is not None else ""
    print(f"source model {start}({out['parameters']} parameters) on {out['windows']} windows: val balanced "
          f"accuracy {v['balanced_accuracy']:.3f}, macro-F1 {v['macro_f1']:.3f} -> {r.source_model}")
    print(f"next: edge-bridge select --run {r.path}")
    return 0
