"""A small 1-D ResNet for PPG (in the spirit of PaPaGei): strided patch stem, residual conv blocks.

Layout ``"bcl"`` at every boundary: ``(batch, channels, length)``, read as tokens = length. The stem is one
convolution whose kernel equals its stride, i.e. a patch embedding: with the default 50-sample patch a 60 s
PPG window at 125 Hz (7500 samples) becomes 150 steps, which keeps a CPU forward pass over a few hundred
windows to seconds. Blocks may halve the length (``strides``) and change the width (``widths``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from edge_bridge.models.backbone import Backbone, BackboneError
from edge_bridge.models.config import config_from_dict


@dataclass(frozen=True)
class ResNet1dConfig:
    """Architecture of :class:`ResNet1d`; defaults fit the stress task's PPG (1 x 7500 at 125 Hz)."""

    in_channels: int = 1
    input_samples: int = 7500
    patch: int = 50  # stem kernel = stride: 0.4 s at 125 Hz per step
    widths: tuple[int, ...] = (32, 48, 64, 64)  # one entry per block
    strides: tuple[int, ...] = (1, 2, 1, 2)  # 2 halves the length in that block
    kernel: int = 7
    n_classes: int = 0  # 0 = no head (self-supervised backbone)

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.strides) or not self.widths:
            raise BackboneError(f"resnet1d: widths {list(self.widths)} and strides {list(self.strides)} "
                                "must be "
                                "non-empty lists of the same length (one entry per block)")
        if any(w < 1 for w in self.widths) or any(s not in (1, 2) for s in self.strides):
            raise BackboneError("resnet1d: widths must be positive and strides 1 or 2, got "
                                f"{list(self.widths)}, "
                                f"{list(self.strides)}")
        if not 1 <= self.patch <= self.input_samples:
            raise BackboneError(f"resnet1d: patch must be in 1..input_samples={self.input_samples}, "
                                f"got {self.patch}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise BackboneError(f"resnet1d: kernel must be a positive odd number, got {self.kernel}")


class ResBlock1d(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (projected) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm1d(c_out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(h)))  # (B, C_out, L')
        out = self.bn2(self.conv2(out))  # (B, C_out, L')
        return torch.relu(out + self.shortcut(h))


class ResNet1d(Backbone):
    """1-D ResNet backbone; see :class:`ResNet1dConfig`."""

    kind = "resnet1d"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        cfg = config_from_dict(ResNet1dConfig, dict(config or {}), what="resnet1d")
        super().__init__(asdict(cfg))
        self.embed = nn.Sequential(
            nn.Conv1d(cfg.in_channels, cfg.widths[0], cfg.patch, stride=cfg.patch, bias=False),
            nn.BatchNorm1d(cfg.widths[0]),
            nn.ReLU(),
        )
        c_in = cfg.widths[0]
        blocks = []
        for width, stride in zip(cfg.widths, cfg.strides, strict=True):
            blocks.append(ResBlock1d(c_in, width, stride, cfg.kernel))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.Identity()  # BN inside the blocks already normalises
        self.head = nn.Linear(c_in, cfg.n_classes) if cfg.n_classes else None
        self._finish_init()

    @property
    def layout(self) -> str:
        return "bcl"


def build_resnet1d(config: dict[str, Any]) -> Backbone:
    return ResNet1d(config)
