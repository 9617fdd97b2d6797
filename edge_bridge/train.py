"""Bridge training: the BioX-Bridge alignment objective, Adam on the bridge only, resumable, DDP-ready.

Objective (official code): mean over windows of ``1 - cos(vec Y_hat, vec Y)`` where ``Y`` is the source
model's last-block output on the source signal and ``Y_hat`` the same output when source block *j* is fed the
bridge output. Both backbones are frozen and in eval mode; ``Y`` and the bridge inputs come from a
:class:`~edge_bridge.features.BridgeCache`, so an epoch runs only the bridge and ``source[j:]``.

Files written into ``out_dir`` (the run's ``bridge/`` folder)::

    bridge_config.json, bridge.safetensors   best bridge by the checkpoint rule (no labels needed)
    history.json                              per-epoch train/val loss, val agreement and seconds
    last/                                     resume point: bridge + optimizer.safetensors + state.json

Besides the loss, every epoch records how often the composite's decision on a validation window agrees
with the source model's decision on the paired source window (``val_agreement``, and
``val_balanced_agreement``: the mean over the source model's classes) -- still no labels. Why: the
alignment loss can be lowest for a bridge that gives every window the same class. On the benchmark's second
draw at source block j=3, the bridge of seed 2 decided one class for its first 15 epochs and had its lowest
validation loss there (0.4354; test balanced accuracy 0.50), while its later epochs, at loss 0.44-0.46,
tested at 0.65-0.69 (seed 3: the same lowest loss in the same state). So the best checkpoint is chosen by
the label-free score of :mod:`edge_bridge.selection.score` (``TrainConfig.checkpoint_rule="label-free"``,
the default): val balanced agreement minus val alignment loss, with a one-class epoch never chosen over one
that is not; ``select``'s trial trainings rank candidates by the same score, so selection and training
agree. ``checkpoint_rule="paper"`` (``train --checkpoint-rule paper``) keeps the paper's lowest validation
loss. When the best checkpoint still decides one class on every validation window while the source model
decides several, :attr:`TrainResult.one_class` says so and a warning names the fix
(:func:`edge_bridge.evaluate.check_decisions`); ``training_curve.png`` shows loss and agreement per epoch.

Scaling out uses ``torch.distributed`` as launched by ``torchrun`` (``init_distributed``): gloo on CPUs,
NCCL on GPUs. Features are extracted on contiguous shards and all-gathered; every global batch is split
across ranks and the loss is scaled so that DistributedDataParallel's gradient average equals the
single-process gradient of the whole batch, so N processes train the same bridge as one (within float
tolerance). Rank 0 writes the files.

Example::

    torchrun --standalone --nproc-per-node 2 -m edge_bridge.cli train --run RUN
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_bridge.bridge import Bridge, load_bridge
from edge_bridge.composite import SourceBack
from edge_bridge.errors import EdgeBridgeError
from edge_bridge.features import BridgeCache
from edge_bridge.models.backbone import Backbone
from edge_bridge.models.io import load_state_checked, read_tensors, save_tensors
from edge_bridge.selection.score import label_free_score, rank_key

logger = logging.getLogger(__name__)


class TrainingError(EdgeBridgeError, ValueError):
    """Training cannot start or resume with the settings or files given."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and prefer deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# --- distributed -------------------------------------------------------------------------------------------
def init_distributed() -> tuple[int, int]:
    """Join the process group ``torchrun`` describes in the environment; returns ``(rank, world_size)``.

    Without ``WORLD_SIZE`` > 1 in the environment this is a no-op returning ``(0, 1)``. NCCL is used when
    CUDA is available, gloo otherwise.
    """
    dist = torch.distributed
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, or ``(0, 1)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return world_info()[0] == 0


# --- objective -------------------------------------------------------------------------------------------
def alignment_loss(y_hat: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``1 - cos(vec Y_hat, vec Y)`` per window, averaged (``"mean"``), summed or kept (``"none"``)."""
    cos = nn.functional.cosine_similarity(y_hat.flatten(1), y.flatten(1), dim=1, eps=1e-8)  # (B,)
    loss = 1.0 - cos
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


@dataclass
class TrainConfig:
    """Bridge-training settings (written into ``last/state.json`` so a resume uses the same ones)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    # Recompute source[j:] activations in backward: the same arithmetic, ~0.6x the peak training memory
    # for ~1.3x the epoch time. On by default because memory, not time, is what a bridge's training runs
    # out of first on a small host (the bridge is tiny; the activations of source[j:] are not), and with
    # it the bridge costs <= 1/3 of the KD student in both time and memory (README "Measured").
    recompute: bool = True
    # which epoch is kept: "label-free" (val balanced agreement - val loss, one-class epochs last) or
    # "paper" (lowest val alignment loss); see the module docstring
    checkpoint_rule: str = "label-free"

    def __post_init__(self) -> None:
        from edge_bridge.selection.score import CHECKPOINT_RULES

        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise TrainingError(
                f"need epochs >= 1, batch_size >= 1, lr > 0 and weight_decay >= 0, got {self}")
        if self.checkpoint_rule not in CHECKPOINT_RULES:
            raise TrainingError(f"checkpoint_rule must be one of {', '.join(CHECKPOINT_RULES)}, got "
                                f"{self.checkpoint_rule!r}")


@dataclass
class TrainResult:
    """What training produced: per-epoch history and the best epoch by the checkpoint rule.

    ``best_val`` is the best epoch's validation alignment loss (whatever the rule), ``best_score`` its
    label-free score (:func:`edge_bridge.selection.score.label_free_score`).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val: float = float("inf")
    seconds_per_epoch: float = 0.0
    checkpoint_rule: str = "label-free"
    best_score: float = float("-inf")

    @property
    def best(self) -> dict[str, float]:
        """The history entry of the best epoch (empty before the first epoch)."""
        return next((h for h in self.history if h["epoch"] == self.best_epoch), {})

    @property
    def one_class(self) -> bool:
        """The best bridge decides one class on every val window, where the source model decides several."""
        return self.best.get("val_classes", 2) == 1 and self.best.get("val_source_classes", 1) > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decisions:
    """How the composite's decisions on validation windows compare with the source model's (no labels)."""

    agreement: float
    balanced_agreement: float  # mean over the classes the source model decides of the share matched
    classes: int  # distinct classes the composite decides
    source_classes: int  # distinct classes the source model decides on the same windows

    @classmethod
    def compare(cls, ours: np.ndarray, theirs: np.ndarray) -> Decisions:
        seen = np.unique(theirs)
        return cls(agreement=float(np.mean(ours == theirs)),
                   balanced_agreement=float(np.mean([np.mean(ours[theirs == c] == c) for c in seen])),
                   classes=len(np.unique(ours)), source_classes=len(seen))


def source_decisions(back: SourceBack, cache: BridgeCache, batch_size: int = 256) -> np.ndarray:
    """The source model's own class for each cached window: its head on the cached last-block output ``Y``
    (fixed during training, so computed once)."""
    with torch.no_grad():
        logits = [back.source.head_forward(back.source.from_tokens(cache.y[s:s + batch_size]))
                  for s in range(0, len(cache), batch_size)]
    return torch.cat(logits).argmax(1).numpy()


def validate(bridge: nn.Module, back: SourceBack, cache: BridgeCache, reference: np.ndarray | None = None,
             batch_size: int = 256) -> tuple[float, Decisions | None]:
    """Mean alignment loss of ``bridge`` over ``cache`` and, given the source model's decisions on the same
    windows (``reference``, :func:`source_decisions`), how the composite's compare; one pass of the bridge
    and ``source[j:]`` serves both (no gradients)."""
    total = 0.0
    ours = []
    with torch.no_grad():
        for s in range(0, len(cache), batch_size):
            y_hat = back.last_block(bridge(cache.h[s:s + batch_size]))  # native layout
            y = back.source.from_tokens(cache.y[s:s + batch_size])
            total += float(alignment_loss(y_hat, y, "sum"))
            if reference is not None:
                ours.append(back.source.head_forward(y_hat).argmax(1))
    loss = total / max(len(cache), 1)
    return loss, None if reference is None else Decisions.compare(torch.cat(ours).numpy(), reference)


def evaluate_alignment(bridge: nn.Module, back: SourceBack, cache: BridgeCache,
                       batch_size: int = 256) -> float:
    """Mean alignment loss of ``bridge`` over ``cache`` (no gradients)."""
    return validate(bridge, back, cache, batch_size=batch_size)[0]


def plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    """Training curve as a PNG: train/val alignment loss and the val agreement with the source model.

    Why the agreement too: the best epoch is chosen by loss alone (the paper's rule), and a checkpoint can
    have the lowest loss while deciding one class; the curve shows where that happened.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_bridge.fileio import atomic_path

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h.get("train_loss", np.nan) for h in history], label="train loss")
    ax.plot(epochs, [h.get("val_loss", np.nan) for h in history], label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("alignment loss (1 - cos)")
    if any("val_balanced_agreement" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [h.get("val_balanced_agreement", np.nan) for h in history], "g:",
                 label="val balanced agreement")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("balanced agreement", color="g")
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
    sd = opt.state_dict()
    tensors = {f"{k}.{name}": (v if isinstance(v, torch.Tensor) else torch.tensor(float(v)))
               for k, st in sd["state"].items() for name, v in st.items()}
    if tensors:
        save_tensors(path, tensors)
    return {"param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, path: Path, groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    if path.is_file():
        for key, v in read_tensors(path).items():
            k, name = key.split(".", 1)
            state.setdefault(int(k), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def train_bridge(bridge: Bridge, source: Backbone, j: int, train: BridgeCache, val: BridgeCache | None = None,
                 config: TrainConfig | None = None, *, out_dir: str | os.PathLike[str] | None = None,
                 resume: bool = False, progress: bool = False, report: bool = True) -> TrainResult:
    """Train ``bridge`` so that ``source[j:]`` fed by it reproduces the source model's last-block output.

    Parameters
    ----------
    bridge : Bridge
        Trained in place; at the end it holds the best weights by ``config.checkpoint_rule`` (training
        loss when ``val`` is None).
    source : Backbone
        Frozen source model.
    j : int
        Source block the bridge feeds.
    train, val : BridgeCache
        Cached bridge inputs and targets (every rank holds the full cache; batches are split by rank).
    config : TrainConfig
    out_dir : path, optional
        Where the best bridge, the history and the resume point go (rank 0 writes).
    resume : bool
        Continue from ``out_dir/last`` when it exists.
    report : bool
        Write ``training_curve.png`` and warn when the best checkpoint decides one class; ``select``'s
        trial trainings turn both off (the selection reports its candidates itself).

    Returns
    -------
    TrainResult
    """
    cfg = config or TrainConfig()
    rank, world = world_info()
    seed_everything(cfg.seed)
    source.freeze()
    back = SourceBack(source, j)
    bridge.train()
    for p in bridge.parameters():
        p.requires_grad_(True)
    model: nn.Module = bridge
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(bridge)  # broadcasts rank 0's initial weights
    opt = torch.optim.Adam(bridge.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = TrainResult(checkpoint_rule=cfg.checkpoint_rule)
    start = 0
    out = Path(out_dir) if out_dir is not None else None
    last = out / "last" if out is not None else None
    if resume and last is not None and (last / "state.json").is_file():
        state = json.loads((last / "state.json").read_text())
        saved_cfg = state.get("config", {})
        if saved_cfg.get("batch_size") != cfg.batch_size or saved_cfg.get("seed") != cfg.seed:
            raise TrainingError(f"{last}: saved with batch_size/seed {state['config']}, now {asdict(cfg)}; "
                                "resume with the same settings or start a fresh run directory")
        saved_rule = saved_cfg.get("checkpoint_rule", "paper")  # state from before the rule was a setting
        if saved_rule != cfg.checkpoint_rule:
            raise TrainingError(f"{last}: saved with checkpoint rule {saved_rule!r}, now "
                                f"{cfg.checkpoint_rule!r}; resume with --checkpoint-rule {saved_rule} or "
                                "start a fresh run directory")
        saved = load_bridge(last)
        load_state_checked(bridge, saved.state_dict(), str(last))
        _load_optimizer(opt, last / "optimizer.safetensors", state["param_groups"])
        start = int(state["epoch"]) + 1
        result = TrainResult(state["history"], state["best_epoch"], state["best_val"],
                             checkpoint_rule=cfg.checkpoint_rule,
                             best_score=state.get("best_score", float("-inf")))
        logger.info("resuming bridge training at epoch %d of %d from %s", start, cfg.epochs, last)

    n = len(train)
    reference = source_decisions(back, val) if val is not None and len(val) else None
    epochs = range(start, cfg.epochs)
    if progress and rank == 0:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc="bridge", unit="epoch", initial=start, total=cfg.epochs)
    for epoch in epochs:
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=gen)  # same on every rank
        bridge.train()
        run_loss = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            local = idx[rank::world]  # this rank's share of the global batch
            y_hat = back.last_block(model(train.h[local]), recompute=cfg.recompute)  # native layout
            y = source.from_tokens(train.y[local])
            # DDP averages gradients over ranks: scale the local sum so the average is the global-batch mean
            loss = alignment_loss(y_hat, y, "sum") * (world / len(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_loss += float(loss.detach()) * len(idx) / world
        if world > 1:
            t = torch.tensor([run_loss], dtype=torch.float64)
            torch.distributed.all_reduce(t)
            run_loss = float(t)
        secs = time.perf_counter() - t0  # training steps only, like the KD loop (validation excluded)
        bridge.eval()
        train_loss = run_loss / n
        entry: dict[str, float] = {"epoch": epoch, "train_loss": train_loss}
        if val is not None and len(val):
            val_loss, d = validate(bridge, back, val, reference)
            assert d is not None  # a reference was given
            entry |= {"val_loss": val_loss, "val_agreement": d.agreement,
                      "val_balanced_agreement": d.balanced_agreement, "val_classes": d.classes,
                      "val_source_classes": d.source_classes}
        else:
            val_loss = entry["val_loss"] = train_loss
        result.history.append(entry | {"seconds": secs})
        best_entry = result.best
        improved = not best_entry or rank_key(entry, cfg.checkpoint_rule) > rank_key(best_entry,
                                                                                     cfg.checkpoint_rule)
        if improved:
            result.best_val, result.best_epoch = val_loss, epoch
            result.best_score = label_free_score(entry)
            best_state = {k: v.detach().clone() for k, v in bridge.state_dict().items()}
        if progress and rank == 0 and hasattr(epochs, "set_postfix"):
            epochs.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        logger.debug("epoch %d: train %.5f val %.5f (%.2f s)", epoch, train_loss, val_loss, secs)
        if out is not None and last is not None and rank == 0:
            if improved:
                bridge.save(out)
            bridge.save(last)
            groups = _save_optimizer(opt, last / "optimizer.safetensors")
            from edge_bridge.fileio import atomic_write_text

            atomic_write_text(last / "state.json", json.dumps(
                {"epoch": epoch, "history": result.history, "best_epoch": result.best_epoch,
                 "best_val": result.best_val, "best_score": result.best_score, "config": asdict(cfg),
                 **groups}, indent=1))
            atomic_write_text(out / "history.json", json.dumps(result.to_dict(), indent=1))
    if "best_state" in locals():
        bridge.load_state_dict(best_state)
    elif out is not None and (out / "bridge.safetensors").is_file():  # resumed after the last epoch
        load_state_checked(bridge, load_bridge(out).state_dict(), str(out))
    bridge.eval()
    if report and rank == 0 and "val_classes" in result.best:
        from edge_bridge.evaluate import check_decisions

        b = result.best
        rule = ("validation alignment loss" if cfg.checkpoint_rule == "paper"
                else "the label-free score (balanced agreement - alignment loss)")
        check_decisions(
            f"the best bridge by {rule} (epoch {result.best_epoch}, loss "
            f"{result.best_val:.4f}; history.json shows every epoch)", int(b["val_source_classes"]),
            int(b["val_classes"]), b.get("val_balanced_agreement"),
            measure="balanced agreement with the source model", windows="validation window", log=logger)
    if report and out is not None and rank == 0 and result.history:
        try:
            plot_history(result.history, out / "training_curve.png")
        except OSError as exc:  # the picture is a convenience; the bridge is saved already
            logger.warning("could not write %s: %s", out / "training_curve.png", exc)
    times = [h["seconds"] for h in result.history[start:]]
    result.seconds_per_epoch = float(np.median(times)) if times else 0.0
    return result
