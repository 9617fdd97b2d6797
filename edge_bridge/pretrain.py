"""Self-supervised pretraining of a target backbone (no labels), standing in for a published foundation model.

Recipe: contrastive learning in the manner of SimCLR. Two random views of each window (time shift, amplitude
scaling, additive noise, a masked span) go through the backbone and a small projection head; the NT-Xent loss
pulls views of the same window together and pushes other windows away. It needs nothing architecture-
specific (only the pooled features), so it works for every registered backbone. The projection head is
dropped afterwards; the backbone is saved without a head.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from edge_bridge.fitting import FitConfig, FitResult, fit
from edge_bridge.models.backbone import Backbone

logger = logging.getLogger(__name__)


def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random view of each window ``(B, C, L)``: shift, scale, noise and one masked span (10 %)."""
    b, _, length = x.shape
    g = generator
    shifts = torch.randint(-length // 10, length // 10 + 1, (b,), generator=g)
    idx = (torch.arange(length)[None, :] - shifts[:, None]) % length  # (B, L)
    out = torch.gather(x, 2, idx[:, None, :].expand_as(x))  # (B, C, L)
    out = out * (0.8 + 0.4 * torch.rand(b, 1, 1, generator=g))
    out = out + 0.1 * torch.randn(out.shape, generator=g)
    span = length // 10
    start = torch.randint(0, length - span + 1, (b,), generator=g)
    pos = torch.arange(length)[None, :]
    mask = (pos >= start[:, None]) & (pos < start[:, None] + span)  # (B, L)
    return out.masked_fill(mask[:, None, :], 0.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Normalised-temperature cross-entropy over the 2B views of a batch."""
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)  # (2B, E)
    sim = z @ z.T / temperature  # (2B, 2B)
    n = len(z1)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return nn.functional.cross_entropy(sim, positives)


class _Contrastive(nn.Module):
    """Backbone features + projection; returns the contrastive loss for a batch of raw windows."""

    def __init__(self, backbone: Backbone, proj_dim: int, temperature: float, seed: int) -> None:
        super().__init__()
        d = backbone.feature_dim
        self.backbone = backbone
        self.proj = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))
        self.temperature = temperature
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1, v2 = augment(x, self.gen), augment(x, self.gen)
        z1 = self.proj(self.backbone.features(v1))  # (B, E)
        z2 = self.proj(self.backbone.features(v2))  # (B, E)
        return nt_xent(z1, z2, self.temperature)


def pretrain_contrastive(backbone: Backbone, x: np.ndarray, x_val: np.ndarray,
                         config: FitConfig | None = None, *, proj_dim: int = 32, temperature: float = 0.2,
                         progress: bool = False) -> FitResult:
    """Pretrain ``backbone`` in place on unlabelled windows ``x`` ``(n, C, L)``; best epoch by val loss."""
    cfg = config or FitConfig(epochs=10, batch_size=64, lr=1e-3)
    if backbone.head is not None:
        backbone.set_head(0)
    for p in backbone.parameters():
        p.requires_grad_(True)
    model = _Contrastive(backbone, proj_dim, temperature, cfg.seed)
    xv = torch.as_tensor(x_val, dtype=torch.float32)

    def score(m: nn.Module) -> float:
        m.gen.manual_seed(cfg.seed + 1)  # the same validation views every epoch
        with torch.no_grad():
            losses = [float(m(xv[s:s + cfg.batch_size])) for s in range(0, len(xv), cfg.batch_size)
                      if len(xv[s:s + cfg.batch_size]) > 1]
        return -float(np.mean(losses)) if losses else 0.0

    dummy = np.zeros(len(x), dtype=np.int64)  # the loss ignores targets
    res = fit(model, x, dummy, lambda loss, _t: loss, score, cfg, progress=progress, desc="pretrain")
    backbone.eval()
    return res
