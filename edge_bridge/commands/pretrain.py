"""Pretrain the target backbone without labels (contrastive), or take a published foundation model instead.

Trains on the target-modality windows of every non-test subject and writes RUN/target_backbone/
(model.safetensors + config.json). With --target-model NAME:CHECKPOINT it trains nothing: it loads the
published model (hubert_ecg, labram, papagei, normwear), checks that it reads windows of the run's target
preprocessing shape, and saves it as the target backbone (recipe "published:NAME").

Examples:
  edge-bridge pretrain --run runs/stress --data demo-out/data --task stress --epochs 10
  edge-bridge pretrain --run runs/stress --data demo-out/data --task stress \\
      --target-model papagei:checkpoints/papagei_s.pt
  edge-bridge pretrain --run runs/small --target-model papagei:small.safetensors \\
      --model-config '{"n_block": 8}'
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
    add_fit_arguments(p, epochs=10, batch_size=64)
    add_backbone_arguments(p)
    add_published_model_arguments(p, "target", "use it as the target backbone instead of pretraining one")


def preflight(args: argparse.Namespace) -> None:
    from edge_bridge.commands._method import preflight as method_preflight

    method_preflight(args)


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import backbone_config, fit_config, open_run, published_model

    published = published_model(args, "target")
    r = open_run(args)
    if published is not None:
        name, checkpoint, config = published
        out = pipeline.use_published_target(r, name, checkpoint, config)
        print(f"published target backbone {name} ({out['parameters']} parameters, {out['n_blocks']} blocks) "
              f"from {checkpoint} -> {r.target_backbone}")
    else:
        out = pipeline.pretrain(r, fit_config(args), backbone=args.backbone, config=backbone_config(args),
                                progress=not args.no_progress)
        print(f"pretrained target backbone ({out['parameters']} parameters) on {out['windows']} windows, "
              f"best epoch {out['best_epoch']}, val contrastive loss {out['val_loss']:.4f} "
              f"-> {r.target_backbone}")
    print(f"next: edge-bridge fit-source --run {r.path}")
    return 0
