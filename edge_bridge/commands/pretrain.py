"""Pretrain the target backbone without labels (contrastive), standing in for a published foundation model.

Trains on the target-modality windows of every non-test subject and writes RUN/target_backbone/
(model.safetensors + config.json).

Example:
  edge-bridge pretrain --run runs/stress --data demo-out/data --task stress --epochs 10
"""

from __future__ import annotations

import argparse

from edge_bridge.commands._method import add_backbone_arguments, add_fit_arguments, add_run_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_fit_arguments(p, epochs=10, batch_size=64)
    add_backbone_arguments(p)


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import backbone_config, fit_config, open_run

    r = open_run(args)
    out = pipeline.pretrain(r, fit_config(args), backbone=args.backbone, config=backbone_config(args),
                            progress=not args.no_progress)
    print(f"pretrained target backbone ({out['parameters']} parameters) on {out['windows']} windows, "
          f"best epoch {out['best_epoch']}, val contrastive loss {out['val_loss']:.4f} "
          f"-> {r.target_backbone}")
    print(f"next: edge-bridge fit-source --run {r.path}")
    return 0
