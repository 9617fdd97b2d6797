"""The fused (multi-input) prototype bridge: K = 1 is the paper's bridge bit for bit, K > 1 counts
``r * sum d_k + r*P*T + D_out*P`` parameters, sums one A_k h_k per modality and round-trips through save."""

from __future__ import annotations

import json

import pytest
import torch

from edge_bridge.bridge import BridgeError, PrototypeBridge, build_bridge, load_bridge
from edge_bridge.models.io import read_tensors


def _trained_like(bridge: PrototypeBridge, seed: int = 3) -> PrototypeBridge:
    """Give B non-zero values so outputs are not trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bridge.B.copy_(torch.randn(bridge.B.shape, generator=g))
    return bridge


def test_k1_is_the_paper_bridge_bit_for_bit(tmp_path):
    torch.manual_seed(0)
    old = PrototypeBridge(d_in=12, tokens=5, d_out=7, rank=3, prototypes=4)
    torch.manual_seed(0)
    new = PrototypeBridge(d_in=[12], tokens=5, d_out=7, rank=3, prototypes=4)
    assert list(old.state_dict()) == list(new.state_dict()) == ["A", "B", "Pi"]
    for k, v in old.state_dict().items():
        assert torch.equal(v, new.state_dict()[k]), k
    assert new.config == old.config and isinstance(new.config["d_in"], int)
    _trained_like(old)
    _trained_like(new)
    h = torch.randn(6, 12)
    assert torch.equal(old(h), new(h))
    old.save(tmp_path / "old")
    new.save(tmp_path / "new")
    assert (tmp_path / "old" / "bridge.safetensors").read_bytes() == (
        tmp_path / "new" / "bridge.safetensors").read_bytes()
    cfg_old = json.loads((tmp_path / "old" / "bridge_config.json").read_text())
    cfg_new = json.loads((tmp_path / "new" / "bridge_config.json").read_text())
    assert cfg_old["config"] == cfg_new["config"]


@pytest.mark.parametrize("dims", [(12, 5), (8, 3, 20)])
def test_fused_parameter_count_formula(dims):
    r, p, t, d_out = 3, 4, 5, 7
    b = PrototypeBridge(d_in=list(dims), tokens=t, d_out=d_out, rank=r, prototypes=p)
    trainable, total = b.count_parameters()
    assert trainable == total == r * sum(dims) + r * p * t + d_out * p == b.expected_parameters()
    assert [tuple(a.shape) for a in b.input_maps()] == [(r, d) for d in dims]
    assert sorted(b.state_dict()) == sorted([f"A_{k}" for k in range(len(dims))] + ["B", "Pi"])


def test_fused_output_is_sum_of_per_modality_maps():
    torch.manual_seed(1)
    b = _trained_like(PrototypeBridge(d_in=[6, 4], tokens=3, d_out=5, rank=2, prototypes=3))
    h1, h2 = torch.randn(4, 6), torch.randn(4, 4)
    z = (h1 @ b.A_0.T + h2 @ b.A_1.T) @ b.B.T  # sum_k A_k h_k, then B
    want = torch.matmul(b.Pi, z.view(-1, 3, 3)).transpose(1, 2)
    torch.testing.assert_close(b([h1, h2]), want)
    torch.testing.assert_close(b(torch.cat([h1, h2], 1)), want)  # the cache's concatenated form
    # each modality matters: changing only h2 changes the output
    assert not torch.allclose(b([h1, h2]), b([h1, h2 + 1.0]))


def test_fused_fresh_is_zero_and_only_b_gets_first_gradient():
    b = PrototypeBridge(d_in=[6, 4], tokens=3, d_out=5, rank=2, prototypes=3)
    out = b([torch.randn(4, 6), torch.randn(4, 4)])
    assert torch.count_nonzero(out) == 0
    (out.sum() + (out ** 2).sum() + out.mean()).backward()
    assert b.B.grad is not None
    for a in b.input_maps():
        assert a.grad is None or torch.count_nonzero(a.grad) == 0


def test_fused_save_load_round_trip_records_input_dims(tmp_path):
    torch.manual_seed(2)
    b = _trained_like(PrototypeBridge(d_in=[6, 4], tokens=3, d_out=5, rank=2, prototypes=3))
    b.meta["targets"] = ["ppg", "eda"]
    b.save(tmp_path / "f")
    cfg = json.loads((tmp_path / "f" / "bridge_config.json").read_text())
    assert cfg["config"]["d_in"] == [6, 4]
    assert set(read_tensors(tmp_path / "f" / "bridge.safetensors")) == {"A_0", "A_1", "B", "Pi"}
    back = load_bridge(tmp_path / "f")
    assert back.input_dims == (6, 4) and back.meta["targets"] == ["ppg", "eda"]
    h = [torch.randn(3, 6), torch.randn(3, 4)]
    assert torch.equal(back(h), b(h))
    assert build_bridge("prototype", **cfg["config"]).input_dims == (6, 4)


def test_fused_bad_inputs_are_clear_errors():
    b = PrototypeBridge(d_in=[6, 4], tokens=3, d_out=5, rank=2, prototypes=3)
    with pytest.raises(BridgeError, match="2 pooled target feature tensors"):
        b([torch.randn(2, 6)])
    with pytest.raises(BridgeError, match="widths"):
        b([torch.randn(2, 4), torch.randn(2, 6)])
    with pytest.raises(BridgeError, match="at least one"):
        PrototypeBridge(d_in=[], tokens=3, d_out=5)
    with pytest.raises(BridgeError, match=r"d_in\[1\]"):
        PrototypeBridge(d_in=[6, 0], tokens=3, d_out=5)
