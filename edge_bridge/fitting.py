"""Training whole backbones: the shared loop of ``fit-source``, the supervised upper bound and the KD student.

These recipes exist because no pretrained weights can be downloaded here; the bridge itself is trained by
:mod:`edge_bridge.train`. One loop (:func:`fit`) serves them all: minibatches of in-memory windows, Adam,
a per-epoch validation score, the best epoch's weights kept, everything seeded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_bridge.errors import EdgeBridgeError
from edge_bridge.models.backbone import Backbone

logger = logging.getLogger(__name__)


class FitError(EdgeBridgeError, ValueError):
    """A backbone recipe got data it cannot train on."""


@dataclass
class FitConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = False  # supervised recipes: random circular time shift + gain per training window


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = float("-inf")
    seconds_per_epoch: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)


def shift_and_scale(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A label-preserving view of each window ``(B, C, L)``: random circular time shift, gain 0.9-1.1.

    A 60 s window of a steady state is as valid started anywhere, so the shift teaches the model that
    *where* a beat falls in the window carries no class information (a small model otherwise memorises
    beat positions of the few training subjects).
    """
    b, _, length = x.shape
    shifts = torch.randint(0, length, (b,), generator=generator)
    idx = (torch.arange(length)[None, :] - shifts[:, None]) % length  # (B, L)
    out = torch.gather(x, 2, idx[:, None, :].expand_as(x))  # (B, C, L)
    return out * (0.9 + 0.2 * torch.rand(b, 1, 1, generator=generator))


def fit(model: nn.Module, inputs: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        score_fn: Callable[[nn.Module], float], config: FitConfig, *, progress: bool = False,
        desc: str = "fit", params: list[nn.Parameter] | None = None,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None) -> FitResult:
    """Minibatch Adam on ``loss_fn(model(x), target)``; keeps the weights of the epoch with the best score.

    ``score_fn(model)`` is called in eval mode after every epoch; higher is better. ``augment(x, gen)``, when
    given, transforms each training batch (seeded). ``seconds`` per epoch count the training steps only,
    not the validation score.
    """
    from edge_bridge.train import seed_everything

    integer = (targets.dtype in (torch.int64, torch.int32) if isinstance(targets, torch.Tensor)
               else np.asarray(targets).dtype.kind in "iu")
    x, t = _tensor(inputs), _tensor(targets, torch.long if integer else torch.float32)
    if len(x) == 0 or len(x) != len(t):
        raise FitError(f"need as many targets as inputs (and at least one), got {len(x)} and {len(t)}")
    seed_everything(config.seed)
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    result = FitResult()
    best: dict[str, torch.Tensor] | None = None
    aug_gen = torch.Generator().manual_seed(config.seed + 104_729)
    epochs: Any = range(config.epochs)
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=desc, unit="epoch")
    for epoch in epochs:
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
        total = 0.0
        for s in range(0, len(x), config.batch_size):
            idx = perm[s:s + config.batch_size]
            if len(idx) < 2 and len(x) > 1:  # BatchNorm cannot train on one window
                continue
            xb = x[idx] if augment is None else augment(x[idx], aug_gen)
            loss = loss_fn(model(xb), t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        secs = time.perf_counter() - t0
        model.eval()
        score = float(score_fn(model))
        result.history.append({"epoch": epoch, "train_loss": total / len(x), "score": score, "seconds": secs})
        if score > result.best_score:
            result.best_score, result.best_epoch = score, epoch
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if progress and hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{total / len(x):.4f}", score=f"{score:.4f}")
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    result.seconds_per_epoch = float(np.median([h["seconds"] for h in result.history]))
    return result


def predict(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Model outputs (logits) for ``x`` in eval mode, as a NumPy array."""
    from edge_bridge.features import run_batched

    model.eval()
    (out,) = run_batched(model, x, batch_size, sharded=False)
    return out.numpy()


def fit_supervised(model: Backbone, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                   config: FitConfig | None = None, *, progress: bool = False,
                   desc: str = "supervised") -> FitResult:
    """Train a backbone + head with labels (class-balanced cross-entropy); best epoch by val balanced acc.

    Used for the source task model (``fit-source``) and the supervised target model (upper bound).
    """
    from sklearn.metrics import balanced_accuracy_score

    cfg = config or FitConfig()
    if model.head is None:
        raise FitError("the backbone has no head; call set_head(n_classes) first")
    counts = np.bincount(y, minlength=model.n_classes).astype(np.float64)
    if (counts == 0).any():
        logger.warning("class(es) %s have no training windows", np.flatnonzero(counts == 0).tolist())
    weights = torch.tensor(len(y) / (model.n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    loss = nn.CrossEntropyLoss(weight=weights)

    def score(m: nn.Module) -> float:
        return float(balanced_accuracy_score(y_val, predict(m, x_val).argmax(1)))

    for p in model.parameters():
        p.requires_grad_(True)
    result = fit(model, x, y, loss, score, cfg, progress=progress, desc=desc,
                 augment=shift_and_scale if cfg.augment else None)
    from edge_bridge.evaluate import check_decisions

    decided = len(np.unique(predict(model, x_val).argmax(1)))
    check_decisions(f"the {desc} (best epoch {result.best_epoch})", model.n_classes, decided,
                    result.best_score, windows="validation window", log=logger)
    return result
