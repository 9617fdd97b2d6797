"""Train the bridge (only the bridge: both backbones frozen) on the paired subjects.

Objective: mean of 1 - cos(vec Y_hat, vec Y) between the source model's last-block output on the source
signal and the same output when source block j is fed the bridge. Best checkpoint by the val subjects'
alignment loss (no labels). Positions come from RUN/selection.json unless --i/--j are given. --resume
continues from RUN/bridge/last. --kd also trains the knowledge-distillation baseline (same data, same
epochs) into RUN/kd_student.

Runs under torchrun for data-parallel training (gloo on CPUs, NCCL on GPUs):
  torchrun --standalone --nproc-per-node 2 -m edge_bridge.cli train --run runs/stress

Example:
  edge-bridge train --run runs/stress --epochs 30 --kd
"""

from __future__ import annotations

import argparse

from edge_bridge.commands._method import add_fit_arguments, add_run_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_fit_arguments(p, epochs=30, batch_size=64)
    p.add_argument("--i", type=int, default=None, help="target block (default: from selection.json)")
    p.add_argument("--j", type=int, default=None, help="source block (default: from selection.json)")
    p.add_argument("--bridge", default="prototype", choices=["prototype", "linear", "lowrank"],
                   help="bridge kind (linear and lowrank are ablation baselines)")
    p.add_argument("--rank", type=int, default=8, help="rank r of the prototype / low-rank bridge")
    p.add_argument("--prototypes", type=int, default=16, help="number of prototypes P")
    p.add_argument("--prototype-init", default="kmeans", choices=["kmeans", "sample", "random"],
                   help="how Pi starts: k-means of real source block-j tokens (default), sampled tokens, "
                        "or random with the tokens' scale")
    p.add_argument("--resume", action="store_true", help="continue from RUN/bridge/last")
    p.add_argument("--kd", action="store_true", help="also train the KD student baseline")
    p.add_argument("--temperature", type=float, default=2.0, help="KD temperature")


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import fit_config, open_run
    from edge_bridge.train import TrainConfig, world_info

    r = open_run(args)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    settings = pipeline.BridgeSettings(args.bridge, args.rank, args.prototypes, args.prototype_init)
    out = pipeline.train(r, cfg, settings, i=args.i, j=args.j, resume=args.resume,
                         progress=not args.no_progress)
    rank, world = world_info()
    if rank != 0:
        return 0
    print(f"bridge {out['bridge']} (i={out['i']}, j={out['j']}): {out['trainable_parameters']} trainable "
          f"parameters, best epoch {out['best_epoch']}, val alignment loss {out['best_val_loss']:.4f}, "
          f"{out['seconds_per_epoch']:.2f} s/epoch on {world} process(es) -> {r.bridge}")
    if args.kd:
        if world > 1:
            print("skipping --kd under torchrun: run it in a single process")
        else:
            kd = pipeline.train_kd(r, fit_config(args), temperature=args.temperature,
                                   progress=not args.no_progress)
            print(f"kd student: {kd['trainable_parameters']} trainable parameters, "
                  f"{kd['seconds_per_epoch']:.2f} s/epoch -> {r.kd_student}")
    print(f"next: edge-bridge evaluate --run {r.path}")
    return 0
