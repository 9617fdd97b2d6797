"""Arguments shared by the method verbs (pretrain, fit-source, select, train, evaluate)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="RUN", help="run directory (created on first use)")
    p.add_argument("--data", metavar="DIR", help="folder of EDF recordings; needed when RUN is new")
    p.add_argument("--task", default=None, help="task preset (stress or sleep); needed when RUN is new")
    p.add_argument("--seed", type=int, default=0, help="seed of the subject split and of training")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_fit_arguments(p: argparse.ArgumentParser, epochs: int, batch_size: int = 32,
                      lr: float = 1e-3) -> None:
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    p.add_argument("--batch-size", type=int, default=batch_size, help="windows per step (default "
                                                                      f"{batch_size})")
    p.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default {lr:g})")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def add_backbone_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default=None,
                   help="registered backbone name (default: resnet1d for PPG, transformer otherwise)")
    p.add_argument("--backbone-config", default=None, metavar="JSON",
                   help='architecture overrides as JSON, e.g. \'{"d_model": 32, "n_blocks": 6}\'')


def open_run(args: argparse.Namespace) -> Any:
    from edge_bridge.runs import Run

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    return Run.open(args.run, data=args.data, task=args.task, seed=args.seed)


def backbone_config(args: argparse.Namespace) -> dict[str, Any] | None:
    from edge_bridge.runs import RunError

    if not args.backbone_config:
        return None
    try:
        cfg = json.loads(args.backbone_config)
    except json.JSONDecodeError as exc:
        raise RunError(f"--backbone-config is not valid JSON ({exc}): {args.backbone_config!r}") from None
    if not isinstance(cfg, dict):
        raise RunError(f"--backbone-config must be a JSON object, got {args.backbone_config!r}")
    return cfg


def fit_config(args: argparse.Namespace) -> Any:
    from edge_bridge.fitting import FitConfig

    return FitConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
