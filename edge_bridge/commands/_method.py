"""Arguments shared by the method verbs (pretrain, fit-source, select, train, evaluate) and the data maps."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from edge_bridge.commands._options import input_path, non_negative_int, positive, positive_int, run_folder


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(_writes_run=True)  # the CLI removes what a failed step added to RUN
    p.add_argument("--run", required=True, metavar="DIR", help="run directory (created on first use)")
    p.add_argument("--data", metavar="DIR",
                   help="folder of recordings: EDF+ (.edf), BrainFlow CSV (.csv + .csv.json sidecar, labels "
                        "from .csv.labels.json), WESAD (S*/S*.pkl), ISRUC (.rec), FOG FilteredData "
                        "(PATIENT/task_N.txt); needed when RUN is new")
    p.add_argument("--task", default=None,
                   help="task preset: stress (3 classes), stress-binary (stress vs non-stress, read from the "
                        "same recordings), sleep, or fog (EEG -> 3 EMG, no-fog/fog; needs --channels "
                        "EMG-A=col:NN,EMG-B=col:NN,EMG-C=col:NN), or stress+eda / stress-binary+eda (wrist "
                        "PPG and EDA into one fused bridge); needed when RUN is new")
    add_map_arguments(p)
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the subject split and of training, >= 0")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_map_arguments(p: argparse.ArgumentParser, labels: bool = True) -> None:
    """``--channels`` (and ``--label-map``): how one's own recordings name their channels and labels."""
    p.add_argument("--channels", metavar="MAP",
                   help="which channel of the recordings is which: MODALITY=NAME or PRESET_CHANNEL=NAME "
                        'pairs, e.g. --channels ecg="ECG II",ppg=BVP, or a JSON/TOML file of them. Without '
                        "it, channels are found by name, else as the only channel of their modality (as "
                        "`edge-bridge inspect` tags them). FOG task files name the columns beyond their EEG "
                        "by number (counted from 0), e.g. --channels EMG-A=col:27. Recorded in the run and "
                        "reused by later verbs")
    if labels:
        p.add_argument("--label-map", metavar="MAP",
                       help="annotation label -> task class, e.g. --label-map \"TSST=stress,Rest=baseline\", "
                            "or a JSON/TOML file; unmapped labels that are not classes stay unlabelled. "
                            "Recorded in the run and reused by later verbs")


def add_fit_arguments(p: argparse.ArgumentParser, epochs: int, batch_size: int = 32,
                      lr: float = 1e-3) -> None:
    p.add_argument("--epochs", type=positive_int, default=epochs, help=f"training epochs (default {epochs})")
    p.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help=f"windows per step (default {batch_size})")
    p.add_argument("--lr", type=positive, default=lr, help=f"Adam learning rate, > 0 (default {lr:g})")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice)")


def add_backbone_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default=None,
                   help="registered backbone name (default: resnet1d for PPG, transformer otherwise)")
    p.add_argument("--backbone-config", default=None, metavar="JSON",
                   help='architecture overrides as JSON, e.g. \'{"d_model": 32, "n_blocks": 6}\'')


def preflight(args: argparse.Namespace) -> None:
    """Before any model loads: the run folder can be written and ``--data`` exists."""
    run_folder(args.run, "--run")
    input_path(getattr(args, "data", None), "--data")  # checkpoints: published_model() says what to do


def open_run(args: argparse.Namespace) -> Any:
    from edge_bridge.runs import Run

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    run_dir = Path(args.run)
    existed, had_meta = run_dir.exists(), (run_dir / "run.json").is_file()
    run = Run.open(args.run, data=args.data, task=args.task, seed=args.seed,
                   channels=getattr(args, "channels", None), label_map=getattr(args, "label_map", None))
    if not had_meta:
        # a new run: read the recordings now, so that a bad file leaves no run.json that blocks the retry
        try:
            run.windows(progress=not getattr(args, "no_progress", False))
        except BaseException:
            (run_dir / "run.json").unlink(missing_ok=True)
            if not existed:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    return run


def _json_object(text: str | None, flag: str) -> dict[str, Any] | None:
    from edge_bridge.runs import RunError

    if not text:
        return None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(f"{flag} is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(cfg, dict):
        raise RunError(f"{flag} must be a JSON object, e.g. '{{\"input_samples\": 7500}}', got {text!r}")
    return cfg


def backbone_config(args: argparse.Namespace) -> dict[str, Any] | None:
    return _json_object(args.backbone_config, "--backbone-config")


# --- published foundation models (--source-model / --target-model NAME:CHECKPOINT) -------------------------
PUBLISHED_EXAMPLES = {"target": "papagei:checkpoints/papagei_s.pt",
                      "source": "hubert_ecg:checkpoints/hubert_ecg_base.pt"}


def add_published_model_arguments(p: argparse.ArgumentParser, role: str, does: str) -> None:
    """``--{role}-model NAME:CHECKPOINT`` and ``--model-config JSON`` (``role`` is "source" or "target")."""
    example = PUBLISHED_EXAMPLES[role]
    p.add_argument(f"--{role}-model", default=None, metavar="NAME:CHECKPOINT",
                   help=f"published {role} foundation model: registry NAME (hubert_ecg, labram, papagei, "
                        f"normwear) and its checkpoint file (.pt/.pth or .safetensors); {does}. "
                        f"Example: --{role}-model {example}")
    p.add_argument("--model-config", default=None, metavar="JSON",
                   help=f"config overrides for the --{role}-model architecture (it must be the checkpoint's "
                        'architecture), e.g. \'{"input_samples": 6000}\'')


def published_model(args: argparse.Namespace, role: str) -> tuple[str, Path, dict[str, Any] | None] | None:
    """``(name, checkpoint, config)`` from ``--{role}-model`` / ``--model-config``, or None when not given.

    Raises
    ------
    RunError
        For a value that is not ``NAME:CHECKPOINT``, an unknown NAME (the valid ones are listed), a missing
        checkpoint file, or ``--backbone``/``--backbone-config`` given as well.
    """
    from edge_bridge.models import available_backbones
    from edge_bridge.runs import RunError

    flag = f"--{role}-model"
    value = getattr(args, f"{role}_model", None)
    if value is None:
        if getattr(args, "model_config", None):
            raise RunError(f"--model-config configures {flag}; pass {flag} NAME:CHECKPOINT too (or use "
                           "--backbone-config for a backbone trained from scratch)")
        return None
    name, sep, checkpoint = value.partition(":")
    if not sep or not name or not checkpoint:
        raise RunError(f"{flag} expects NAME:CHECKPOINT, e.g. {flag} {PUBLISHED_EXAMPLES[role]}; "
                       f"got {value!r}")
    names = available_backbones()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RunError(f"{flag}: unknown model {name!r}{hint}; choose one of {', '.join(names)}")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise RunError(f"{flag}: checkpoint {str(path)!r} is not a file; download the published {name} "
                       "checkpoint and pass its path")
    if getattr(args, "backbone", None) or getattr(args, "backbone_config", None):
        raise RunError(f"{flag} loads a published model; --backbone/--backbone-config choose a model "
                       "trained from scratch: pass one or the other (--model-config configures the published "
                       "model)")
    return name, path, _json_object(args.model_config, "--model-config")


def fit_config(args: argparse.Namespace) -> Any:
    from edge_bridge.fitting import FitConfig

    return FitConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
