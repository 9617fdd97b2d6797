"""Train the bridge (only the bridge: both backbones frozen) on the paired subjects.

Objective: mean of 1 - cos(vec Y_hat, vec Y) between the source model's last-block output on the source
signal and the same output when source block j is fed the bridge. Best checkpoint by the val subjects'
label-free score (balanced agreement with the source model's decisions minus alignment loss; no labels),
or with --checkpoint-rule paper by their alignment loss alone. Positions come from RUN/selection.json
unless --i/--j are given, or from
--preset, one of the paper's six directions (wesad_ecg2ppg, wesad_ppg2ecg, isruc_eeg2ecg, isruc_ecg2eeg,
fog_eeg2emg, fog_emg2eeg): its positions (i, j), rank r and prototype count P, checked against the run's
backbones (which must be the preset's published models); --i/--j/--rank/--prototypes still override. --resume
continues from RUN/bridge/last. --kd also trains the knowledge-distillation baseline (same data, same
epochs) into RUN/kd_student.

Runs under torchrun for data-parallel training (gloo on CPUs, NCCL on GPUs):
  torchrun --standalone --nproc-per-node 2 -m edge_bridge.cli train --run runs/stress

A fused run (task stress+eda or stress-binary+eda) trains one fused prototype bridge fed by every target
backbone at its own block i_k (selection.json's list, or --i I1,I2 in the task's target order, main target
first); RUN/bridge/bridge_config.json then records i as that list and the targets' names. --preset and the
linear/lowrank ablation bridges are for one target; --kd trains the single-input KD student on the main
target (a K-input KD student is not built), which evaluate reports with that note.

Writes RUN/bridge/ (the best bridge, history.json, training_curve.png: loss and agreement per epoch). A
best checkpoint that decides one class on every val window is reported with a warning.

Examples:
  edge-bridge train --run runs/stress --epochs 30 --kd
  edge-bridge train --run runs/wesad --preset wesad_ecg2ppg --epochs 100 --lr 1e-6
  edge-bridge train --run runs/fused --epochs 30           # a stress-binary+eda run: PPG + EDA fused
  edge-bridge train --run runs/fused --i 3,2 --j 1         # its positions given: ppg block 3, eda block 2
"""

from __future__ import annotations

import argparse
import os

from edge_bridge.commands._method import add_fit_arguments, add_run_arguments
from edge_bridge.commands._options import non_negative_int, positive, positive_int

RANK, PROTOTYPES = 8, 16  # defaults without a preset (pipeline.BridgeSettings')


def block_positions(text: str) -> int | list[int]:
    """``--i``: one block index >= 0, or (a fused run) several comma-separated, e.g. ``3,2``."""
    parts = text.split(",")
    try:
        values = [non_negative_int(t.strip()) for t in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expects a block index >= 0, or one per target of a fused run "
                                         f"like 3,2; got {text!r}") from None
    return values[0] if len(parts) == 1 else values


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_fit_arguments(p, epochs=30, batch_size=64)
    p.add_argument("--i", type=block_positions, default=None, metavar="I[,I2,..]",
                   help="target block (default: from selection.json); a fused run: one per target, "
                        "comma-separated, main target first (e.g. --i 3,2)")
    p.add_argument("--j", type=non_negative_int, default=None,
                   help="source block (default: from selection.json)")
    p.add_argument("--bridge", default="prototype", choices=["prototype", "linear", "lowrank"],
                   help="bridge kind (linear and lowrank are ablation baselines)")
    p.add_argument("--rank", type=positive_int, default=None,
                   help=f"rank r of the prototype / low-rank bridge (default: the preset's, else {RANK})")
    p.add_argument("--prototypes", type=positive_int, default=None,
                   help=f"number of prototypes P (default: the preset's, else {PROTOTYPES})")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="the paper's direction NAME: its i, j, r and P (explicit --i/--j/--rank/--prototypes "
                        "win); e.g. --preset wesad_ecg2ppg")
    p.add_argument("--prototype-init", default="kmeans", choices=["kmeans", "sample", "random"],
                   help="how Pi starts: k-means of real source block-j tokens (default), sampled tokens, "
                        "or random with the tokens' scale")
    p.add_argument("--resume", action="store_true", help="continue from RUN/bridge/last")
    p.add_argument("--recompute", action=argparse.BooleanOptionalAction, default=True,
                   help="keep only the inputs of each source block (of each residual branch in the "
                        "reference transformer) for backward and recompute the rest "
                        "(torch.utils.checkpoint): the same bridge for ~0.6x the training memory and one "
                        "extra forward of source[j:] (default: on; --no-recompute for the fastest epochs)")
    p.add_argument("--checkpoint-rule", default="label-free", choices=["label-free", "paper"],
                   help="which epoch's bridge is kept: label-free (default: the val windows' balanced "
                        "agreement with the source model's decisions minus the alignment loss; an epoch that "
                        "decides one class everywhere is never kept over one that does not; the score "
                        "`select` ranks its trials by) or paper (the lowest val alignment loss)")
    p.add_argument("--kd", action="store_true", help="also train the KD student baseline")
    p.add_argument("--temperature", type=positive, default=2.0, help="KD temperature, > 0 (default 2)")


def preflight(args: argparse.Namespace) -> None:
    from edge_bridge.commands._method import preflight as method_preflight

    method_preflight(args)


def run(args: argparse.Namespace) -> int:
    from edge_bridge import pipeline
    from edge_bridge.commands._method import fit_config, open_run
    from edge_bridge.train import TrainConfig, world_info

    r = open_run(args)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      recompute=args.recompute, checkpoint_rule=args.checkpoint_rule)
    i, j, r_rank, n_proto = args.i, args.j, args.rank, args.prototypes
    preset_line = ""
    if args.preset is not None:
        preset, pi, pj = pipeline.preset_positions(r, args.preset)
        i, j = (pi if i is None else i), (pj if j is None else j)
        r_rank = preset.rank if r_rank is None else r_rank
        n_proto = preset.prototypes if n_proto is None else n_proto
        given = [f for f, v in (("--i", args.i), ("--j", args.j), ("--rank", args.rank),
                                ("--prototypes", args.prototypes)) if v is not None]
        preset_line = (f"preset {preset.name}: i={i}, j={j}, rank r={r_rank}, prototypes P={n_proto} "
                       f"(paper: i={preset.i} {preset.biox_input_location}, j={preset.j} "
                       f"{preset.biox_output_location}, r={preset.rank}, P={preset.prototypes}, "
                       f"lr {preset.lr:g}, {preset.epochs} epochs)"
                       + (f"; overridden by {', '.join(given)}" if given else ""))
    settings = pipeline.BridgeSettings(args.bridge, RANK if r_rank is None else r_rank,
                                       PROTOTYPES if n_proto is None else n_proto, args.prototype_init)
    if preset_line and os.environ.get("RANK", "0") == "0":  # before training; torchrun: its first process
        print(preset_line, flush=True)
    out = pipeline.train(r, cfg, settings, i=i, j=j, resume=args.resume, progress=not args.no_progress)
    rank, world = world_info()
    if rank != 0:
        return 0
    sizes = "".join(
        [f", rank {settings.rank}" if settings.kind in ("prototype", "lowrank") else "",
         f", {settings.prototypes} prototypes" if settings.kind == "prototype" else ""])
    print(f"bridge {out['bridge']} (i={out['i']}, j={out['j']}{sizes}): {out['trainable_parameters']} "
          f"trainable parameters, best epoch {out['best_epoch']}, val alignment loss "
          f"{out['best_val_loss']:.4f}, {out['seconds_per_epoch']:.2f} s/epoch on {world} process(es) "
          f"-> {r.bridge}")
    if out["best_val_agreement"] is not None:
        print(f"  decisions on the val windows agree with the source model's on "
              f"{out['best_val_agreement']:.1%} (balanced over its classes: "
              f"{out['best_val_balanced_agreement']:.1%})")
    curve = r.bridge / "training_curve.png"
    if curve.is_file():
        print(f"  training curve -> {curve}")
    if args.kd:
        if world > 1:
            print("skipping --kd under torchrun: run it in a single process")
        else:
            kd = pipeline.train_kd(r, fit_config(args), temperature=args.temperature,
                                   progress=not args.no_progress)
            alone = (f" (reads the main target, {r.task.target.modality}, alone: a K-input KD student is not "
                     "built)" if pipeline.is_fused(r) else "")
            print(f"kd student{alone}: {kd['trainable_parameters']} trainable parameters, "
                  f"{kd['seconds_per_epoch']:.2f} s/epoch -> {r.kd_student}")
    print(f"next: edge-bridge evaluate --run {r.path}")
    return 0
