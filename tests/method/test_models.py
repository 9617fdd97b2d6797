"""Backbones: the block interface, layouts, the registry, and safetensors round trips."""

from __future__ import annotations

import json

import pytest
import torch

from edge_bridge.models import BackboneError, CheckpointError, build_backbone, load_backbone, save_backbone


def test_front_back_equal_full_forward_at_every_position(tiny_backbone):
    net = tiny_backbone
    x = torch.randn(3, *net.input_shape)
    with torch.no_grad():
        full = net(x)
        bounds, out = net.boundary_outputs(x)
        torch.testing.assert_close(out, full)
        for k in range(net.n_blocks):
            # the cut after block k: front(x, k) is the input of block k + 1
            h = net.front(x, k)
            torch.testing.assert_close(h, bounds[k + 1])
            if k + 1 < net.n_blocks:
                torch.testing.assert_close(net.back(h, k + 1), full)
            torch.testing.assert_close(net.back(bounds[k], k), full)


def test_boundaries_match_tensors_and_canonical_layout(tiny_backbone):
    net = tiny_backbone
    x = torch.randn(2, *net.input_shape)
    with torch.no_grad():
        bounds, _ = net.boundary_outputs(x)
    assert len(net.boundaries) == net.n_blocks + 1
    for b, t in zip(net.boundaries, bounds, strict=True):
        assert tuple(t.shape[1:]) == b.native_shape
        tok = net.to_tokens(t)
        assert tuple(tok.shape) == (2, b.tokens, b.features)
        torch.testing.assert_close(net.from_tokens(tok), t)
        torch.testing.assert_close(net.pool(t), tok.mean(1))


def test_positions_by_index_and_path(tiny):
    net = tiny("transformer")
    assert net.position("blocks.2") == 2 == net.position(2)
    with pytest.raises(BackboneError, match="valid paths"):
        net.position("blocks.9")
    with pytest.raises(BackboneError, match=r"0\.\.2"):
        net.position(3)


def test_bad_input_and_config_errors(tiny):
    net = tiny("resnet1d")
    with pytest.raises(BackboneError, match=r"\(batch, 1, 300\)"):
        net(torch.randn(2, 1, 299))
    with pytest.raises(BackboneError, match="did you mean 'resnet1d'"):
        build_backbone("resnet1")
    with pytest.raises(BackboneError, match="multiple of patch"):
        build_backbone("transformer", {"input_samples": 250, "patch": 20})
    with pytest.raises(BackboneError, match="integer"):
        build_backbone("transformer", {"d_model": "big"})
    with pytest.warns(UserWarning, match="newer"):
        build_backbone("transformer", {"input_samples": 200, "patch": 20, "d_model": 8, "n_heads": 2,
                                       "from_the_future": 1})


@pytest.mark.parametrize("name", ["resnet1d", "resnet1d-nohead", "transformer", "transformer-2ch"])
def test_save_load_round_trip(tmp_path, name, tiny):
    net = tiny(name)
    save_backbone(net, tmp_path / "m", meta={"classes": ["a", "b"]})
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["schema_version"] == 1 and "tool_version" in cfg and cfg["kind"] == net.kind
    again, meta = load_backbone(tmp_path / "m")
    assert meta == {"classes": ["a", "b"]}
    for (k, a), (k2, b) in zip(net.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, *net.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x))


def test_corrupted_and_mismatched_weights_are_clear_errors(tmp_path, tiny):
    net = tiny("transformer")
    save_backbone(net, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_backbone(tmp_path / "m")
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_backbone(tmp_path / "m")
    # weights of another architecture under this config
    save_backbone(tiny("transformer-2ch"), tmp_path / "other")
    other = (tmp_path / "other" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(other)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_backbone(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    d = json.loads(cfg.read_text())
    del d["kind"]
    cfg.write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="'kind'"):
        load_backbone(tmp_path / "m")


def test_set_head_and_freeze(tiny):
    net = tiny("resnet1d-nohead")
    assert net.head is None and net(torch.randn(2, *net.input_shape)).shape == (2, net.feature_dim)
    net.set_head(4)
    assert net(torch.randn(2, *net.input_shape)).shape == (2, 4) and net.config["n_classes"] == 4
    net.freeze()
    assert net.num_parameters(trainable_only=True) == 0 and not net.training


def test_transformer_attention_is_multihead_attention_with_the_same_weights():
    """The transformer's own attention (no q/k/v copies) must stay a drop-in for nn.MultiheadAttention:
    same state-dict keys, same initial weights for the same seed, same outputs and input gradients."""
    from edge_bridge.models.transformer import SelfAttention

    torch.manual_seed(3)
    ref = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    torch.manual_seed(3)
    ours = SelfAttention(32, 4, 0.0)
    assert list(ref.state_dict()) == list(ours.state_dict())
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, rtol=0, atol=0)
    with torch.no_grad():  # trained-looking weights: non-zero biases
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours.load_state_dict(ref.state_dict())
    x1 = torch.randn(5, 7, 32, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y_ref = ref(x1, x1, x1, need_weights=False)[0]
    y = ours(x2)
    torch.testing.assert_close(y, y_ref)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)


def test_registry_knows_every_builtin_by_name_without_the_models_importing_it() -> None:
    """The registry reads a name table; a model module builds without the registry (no import circle)."""
    import ast
    import importlib
    from pathlib import Path

    from edge_bridge.models.registry import BUILTINS, available_backbones

    assert set(BUILTINS) <= set(available_backbones())
    for name, (module, function) in BUILTINS.items():
        mod = importlib.import_module(module)
        assert callable(getattr(mod, function)), name
        tree = ast.parse(Path(mod.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "edge_bridge.models.registry" not in imported, module
    net = build_backbone("resnet1d", {"input_samples": 640})
    assert net.kind == "resnet1d"
