"""Bridges and the composite: parameter formula, init, first-step gradients, freezing, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from edge_bridge.bridge import (
    BridgeError,
    LinearBridge,
    LowRankBridge,
    PrototypeBridge,
    build_bridge,
    init_prototypes,
    load_bridge,
)
from edge_bridge.composite import Composite
from edge_bridge.models import CheckpointError

# kind, kwargs, closed-form trainable parameter count
CASES = [
    ("prototype", dict(d_in=16, tokens=12, d_out=8, rank=4, prototypes=6), 4 * 16 + 4 * 6 * 12 + 8 * 6),
    ("prototype", dict(d_in=64, tokens=60, d_out=64, rank=8, prototypes=16), 8 * 64 + 8 * 16 * 60 + 64 * 16),
    ("prototype", dict(d_in=3, tokens=1, d_out=5, rank=1, prototypes=1), 3 + 1 + 5),
    ("linear", dict(d_in=16, tokens=12, d_out=8), 16 * 12 * 8 + 12 * 8),
    ("lowrank", dict(d_in=16, tokens=12, d_out=8, rank=4), 4 * 16 + 4 * 12 * 8),
]
IDS = [f"{k}-{i}" for i, (k, _, _) in enumerate(CASES)]


@pytest.mark.parametrize(("kind", "kw", "count"), CASES, ids=IDS)
def test_parameter_count_formula(kind, kw, count):
    bridge = build_bridge(kind, **kw)
    assert bridge.count_parameters() == (count, count)
    assert bridge.expected_parameters() == count


@pytest.mark.parametrize(("kind", "kw", "count"), CASES, ids=IDS)
def test_fresh_bridge_outputs_zeros_of_the_right_shape(kind, kw, count):
    bridge = build_bridge(kind, **kw)
    z = bridge(torch.randn(5, kw["d_in"]))
    assert z.shape == (5, kw["tokens"], kw["d_out"])
    assert torch.count_nonzero(z) == 0


def test_prototype_init_values():
    b = PrototypeBridge(d_in=16, tokens=12, d_out=8, rank=4, prototypes=6)
    assert torch.count_nonzero(b.B) == 0 and torch.count_nonzero(b.A) == b.A.numel()
    bound = 1 / 16**0.5  # Kaiming-uniform with a=sqrt(5) on fan_in=16
    assert b.A.abs().max() <= bound + 1e-6


def test_first_step_only_B_gets_gradient():
    torch.manual_seed(0)
    b = PrototypeBridge(d_in=16, tokens=12, d_out=8, rank=4, prototypes=6)
    target = torch.randn(5, 12, 8)
    loss = ((b(torch.randn(5, 16)) - target) ** 2).mean()
    loss.backward()
    assert torch.count_nonzero(b.B.grad) > 0
    assert torch.count_nonzero(b.A.grad) == 0
    assert torch.count_nonzero(b.Pi.grad) == 0
    # after one step every parameter receives gradient
    torch.optim.Adam(b.parameters(), lr=1e-2).step()
    b.zero_grad()
    ((b(torch.randn(5, 16)) - target) ** 2).mean().backward()
    assert all(torch.count_nonzero(p.grad) > 0 for p in (b.A, b.B, b.Pi))


def test_prototype_output_is_mixture_of_prototypes():
    torch.manual_seed(0)
    b = PrototypeBridge(d_in=4, tokens=3, d_out=5, rank=2, prototypes=2)
    torch.nn.init.normal_(b.B)
    h = torch.randn(7, 4)
    c = b.coefficients(h)  # (N, P, T)
    z = b(h)
    manual = torch.einsum("dp,npt->ntd", b.Pi, c)
    torch.testing.assert_close(z, manual)
    assert torch.linalg.matrix_rank(z.reshape(7, -1)) <= 2


@pytest.mark.parametrize("method", ["kmeans", "sample", "random"])
def test_init_prototypes_from_tokens(method):
    b = PrototypeBridge(d_in=4, tokens=3, d_out=5, rank=2, prototypes=3)
    tokens = torch.cat([torch.randn(50, 5) * 0.01 + c for c in (0.0, 5.0, -5.0)])
    init_prototypes(b, tokens, method=method, seed=0)
    assert b.meta["prototype_init"] == method
    if method == "kmeans":
        got = sorted(b.Pi.mean(0).tolist())
        assert got == pytest.approx([-5.0, 0.0, 5.0], abs=0.05)
    with pytest.raises(BridgeError, match="shape"):
        init_prototypes(b, torch.randn(10, 4))


@pytest.mark.parametrize(("kind", "kw", "count"), CASES, ids=IDS)
def test_save_load_round_trip_writes_no_backbone(tmp_path, kind, kw, count):
    torch.manual_seed(1)
    bridge = build_bridge(kind, **kw)
    for p in bridge.parameters():
        torch.nn.init.normal_(p)
    bridge.meta = {"i": 1, "j": 2}
    bridge.save(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bridge.safetensors", "bridge_config.json"]
    cfg = json.loads((tmp_path / "b" / "bridge_config.json").read_text())
    assert cfg["schema_version"] == 1 and cfg["kind"] == kind and cfg["parameters"] == count
    again = load_bridge(tmp_path / "b")
    assert type(again) is type(bridge) and again.meta == {"i": 1, "j": 2}
    for a, b in zip(bridge.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bridge_save_refuses_file_and_load_checks(tmp_path):
    bridge = LowRankBridge(4, 3, 2, rank=2)
    (tmp_path / "f").write_text("x")
    with pytest.raises(BridgeError, match="is a file"):
        bridge.save(tmp_path / "f")
    bridge.save(tmp_path / "b")
    LowRankBridge(4, 3, 2, rank=3).save(tmp_path / "c")
    (tmp_path / "b" / "bridge.safetensors").write_bytes((tmp_path / "c" / "bridge.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_bridge(tmp_path / "b")
    with pytest.raises(BridgeError, match="unknown bridge kind"):
        build_bridge("mlp", d_in=1, tokens=1, d_out=1)
    with pytest.raises(BridgeError, match="rank must be a positive integer, got 0"):
        PrototypeBridge(4, 3, 2, rank=0)


@pytest.mark.parametrize(("target_name", "source_name"),
                         [("resnet1d", "transformer"), ("transformer", "resnet1d"),
                          ("transformer", "transformer")])
def test_composite_freezing_and_forward(target_name, source_name, tiny):
    target, source = tiny(target_name), tiny(source_name)
    i, j = target.n_blocks - 2, 1
    t_out, s_in = target.block_output(i), source.block_input(j)
    bridge = PrototypeBridge(t_out.features, s_in.tokens, s_in.features, rank=3, prototypes=4)
    comp = Composite(target, source, bridge, i, j)
    assert comp.count_parameters()[0] == bridge.count_parameters()[0] == bridge.expected_parameters()
    comp.train()
    assert comp.bridge.training and not comp.target.training and not comp.source.training
    x = torch.randn(4, *target.input_shape)
    logits = comp(x)
    assert logits.shape == (4, source.n_classes)
    # a zero bridge feeds zeros into source block j
    with torch.no_grad():
        expected = source.back(source.from_tokens(torch.zeros(4, s_in.tokens, s_in.features)), j)
    torch.testing.assert_close(logits, expected)
    logits.sum().backward()
    assert all(p.grad is None for p in (*target.parameters(), *source.parameters()))
    parts = comp.parts()
    with torch.no_grad():
        torch.testing.assert_close(parts["source_back"](parts["bridge"](parts["target_front"](x))), logits)
        xs = torch.randn(2, *source.input_shape)
        torch.testing.assert_close(source.back(source.from_tokens(parts["source_front"](xs)), j), source(xs))


def test_composite_rejects_a_bridge_of_the_wrong_size(tiny):
    target, source = tiny("resnet1d"), tiny("transformer")
    with pytest.raises(BridgeError, match="build the bridge for these positions"):
        Composite(target, source, LinearBridge(5, 12, 16), 0, 0)
