"""Pretrain the target backbone without labels (contrastive), or take a published foundation model instead.

Trains on the target-modality windows of every non-test subject and writes RUN/target_backbone/
(model.safetensors + config.json). With --target-model NAME:CHECKPOINT it trains nothing: it loads the
published model (hubert_ecg, labram, papagei, normwear), checks that it reads windows of the run's target
preprocessing shape, and saves it as the target backbone (recipe "published:NAME").

A fused run (task stress+eda or stress-binary+eda: wrist PPG and EDA into one bridge) has one backbone per
target: pretrain trains each with the same recipe (PPG -> RUN/target_backbone/, EDA ->
RUN/target_backbone_eda/), or only the one named by --key (ppg or eda). --backbone/--backbone-config
configure one backbone, so on a fused run they need --key; --target-model replaces the main target's
(ppg) backbone only.

Examples:
  edge-bridge pretrain --run runs/stress --data demo-out/data --task stress --epochs 10
  edge-bridge pretrain --run runs/stress --data demo-out/data --task stress \\
      --target-model papagei:checkpoints/papagei_s.pt
  edge-bridge pretrain --run runs/small --target-model papagei:small.safetensors \\
      --model-config '{"n_block": 8}'
  edge-bridge pretrain --run runs/fused --data demo-out/data --task stress-binary+eda --epochs 10
  edge-bridge pretrain --run runs/fused --key eda --backbone-config '{"d_model": 32}'
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
    p.add_argument("--key", default=None, metavar="MODALITY",
                   help="a fused run's target to pretrain (e.g. ppg or eda; default: every target)")


def preflight(args: argparse.Namespace) -> None:
    from edge_bridge.commands._method import preflight as method_preflight

    method_preflight(args)


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import backbone_config, fit_config, open_run, published_model
    from edge_bridge.runs import RunError

    published = published_model(args, "target")
    r = open_run(args)
    names = dict(zip(r.task.target_keys, pipeline.target_names(r), strict=True))
    keys = list(r.task.target_keys) if args.key is None else [pipeline.resolve_key(r, args.key)]
    configured = args.backbone is not None or args.backbone_config is not None
    if pipeline.is_fused(r) and args.key is None and configured:
        raise RunError(f"--backbone/--backbone-config configure one backbone, and run {r.path} has one per "
                       f"target ({', '.join(names.values())}); pretrain each with --key, e.g. "
                       f"`edge-bridge pretrain --run {r.path} --key {names[keys[-1]]} --backbone-config ...`")
    if published is not None:
        if args.key is not None and keys != ["target"]:
            raise RunError(f"--target-model replaces the main target's ({r.task.target.modality}) backbone; "
                           f"the {args.key} backbone is pretrained: drop --target-model or --key")
        name, checkpoint, config = published
        out = pipeline.use_published_target(r, name, checkpoint, config)
        print(f"published target backbone {name} ({out['parameters']} parameters, {out['n_blocks']} blocks) "
              f"from {checkpoint} -> {r.target_backbone}")
        for key in keys[1:]:
            if not pipeline.target_backbone_path(r, key).exists():
                print(f"next: edge-bridge pretrain --run {r.path} --key {key} (the {key} backbone)")
    else:
        for key in keys:
            out = pipeline.pretrain(r, fit_config(args), backbone=args.backbone, config=backbone_config(args),
                                    progress=not args.no_progress, key=key)
            label = names[key] if pipeline.is_fused(r) else "target"
            print(f"pretrained {label} backbone ({out['parameters']} parameters) on {out['windows']} "
                  f"windows, best epoch {out['best_epoch']}, val contrastive loss {out['val_loss']:.4f} "
                  f"-> {pipeline.target_backbone_path(r, key)}")
    print(f"next: edge-bridge fit-source --run {r.path}")
    return 0
