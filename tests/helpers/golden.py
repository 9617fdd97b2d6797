"""One conformance check for the published foundation models against ``../shared/golden/``.

Every model test compares with the same tolerance, the one the acceptance contract states:
``|a - b| <= 1e-4 + 1e-4 |b|`` elementwise, float32 on CPU, no NaN or Inf.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

GOLDEN_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "golden"


def golden_dir(name: str) -> Path:
    return GOLDEN_ROOT / name


def skip_without_golden(name: str) -> pytest.MarkDecorator:
    """Skip a module, with the reason printed, where the golden data is not beside the checkout."""
    path = golden_dir(name)
    return pytest.mark.skipif(not (path / "io.npz").is_file(), reason=f"no golden data at {path}")


def load_json(name: str, file: str) -> dict[str, Any]:
    return json.loads((golden_dir(name) / file).read_text())


def load_npz(name: str, file: str = "io.npz") -> dict[str, np.ndarray]:
    with np.load(golden_dir(name) / file) as data:
        return {k: data[k] for k in data.files}


def assert_golden(got: torch.Tensor | np.ndarray, ref: np.ndarray, what: str) -> float:
    """Assert the acceptance tolerance; returns the max abs difference for reporting."""
    got_np = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    assert got_np.shape == ref.shape, f"{what}: shape {got_np.shape} != golden {ref.shape}"
    assert np.isfinite(got_np).all(), f"{what}: NaN or Inf"
    diff = np.abs(got_np.astype(np.float64) - ref)
    bad = diff > 1e-4 + 1e-4 * np.abs(ref)
    assert not bad.any(), f"{what}: {int(bad.sum())} elements off, max abs diff {diff.max():.3g}"
    return float(diff.max())


def assert_block_outputs(net: torch.nn.Module, io: dict[str, np.ndarray], n_blocks: int) -> None:
    """The acceptance contract: in eval mode, ``block_outputs(io["input"])[k]`` equals ``io["block_k"]``."""
    assert not net.training
    with torch.no_grad():
        outs = net.block_outputs(torch.from_numpy(io["input"]))
    assert len(outs) == net.n_blocks == n_blocks
    for k, out in enumerate(outs):
        assert_golden(out, io[f"block_{k}"], f"block_{k}")


def build_published(name: str, schema: dict[str, Any]) -> torch.nn.Module:
    """``build_backbone(name, config=published_config)``, asserted to have schema.json's state dict (keys in
    order, shapes, dtypes) and parameter count; model-specific block checks stay with each test."""
    from edge_bridge.models import build_backbone

    net = build_backbone(name, config=schema["published_config"])
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()]
    want = [(e["key"], e["shape"], e["dtype"]) for e in schema["state_dict"]]
    assert got == want
    assert net.num_parameters() == schema["parameter_count"]["n_parameters"]
    return net
