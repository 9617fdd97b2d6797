"""Tiny backbones shared by the method tests: a table of cases, each small enough for milliseconds."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

torch.set_num_threads(1)

# name -> (registry kind, config); sizes chosen so every case runs in milliseconds on one core
TINY_BACKBONES: dict[str, tuple[str, dict]] = {
    "transformer": ("transformer", {"input_samples": 240, "patch": 20, "d_model": 16, "n_blocks": 3,
                                    "n_heads": 2, "n_classes": 3}),
    "transformer-2ch": ("transformer", {"in_channels": 2, "input_samples": 120, "patch": 10, "d_model": 8,
                                        "n_blocks": 2, "n_heads": 2, "n_classes": 2}),
    "resnet1d": ("resnet1d", {"input_samples": 300, "patch": 10, "widths": [8, 12, 16], "strides": [1, 2, 2],
                              "kernel": 3, "n_classes": 3}),
    "resnet1d-nohead": ("resnet1d", {"input_samples": 200, "patch": 10, "widths": [8, 8], "strides": [1, 2],
                                     "kernel": 3}),
}


def _build(name: str):
    from edge_bridge.models import build_backbone

    kind, cfg = TINY_BACKBONES[name]
    torch.manual_seed(0)
    return build_backbone(kind, cfg).eval()


@pytest.fixture(params=sorted(TINY_BACKBONES))
def tiny_backbone(request: pytest.FixtureRequest):
    """Every tiny backbone of the table, in turn."""
    return _build(request.param)


@pytest.fixture
def tiny() -> Callable[[str], object]:
    """Factory: ``tiny(name)`` builds the named tiny backbone (seeded, eval mode)."""
    return _build


@pytest.fixture
def tiny_names() -> list[str]:
    return sorted(TINY_BACKBONES)
