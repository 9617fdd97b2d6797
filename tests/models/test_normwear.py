"""NormWear: golden block outputs, the NumPy CWT against SciPy 1.14 and NormWear's torch CWT, published keys,
checkpoint layouts and the (B * nvar, P, E) <-> (B, nvar * P, E) layout."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from edge_bridge.models import BackboneError, CheckpointError, build_backbone
from edge_bridge.models.normwear import cwt_length, normalise_config, normwear_cwt, preprocessing
from tests.helpers.golden import (
    assert_block_outputs,
    assert_golden,
    build_published,
    golden_dir,
    skip_without_golden,
)

GOLDEN = golden_dir("normwear")
pytestmark = skip_without_golden("normwear")


@pytest.fixture(scope="module")
def net(small):
    return build_backbone("normwear", config=small["config"], weights=GOLDEN / "small.safetensors")


def test_acceptance_block_outputs_match_golden(net, io):
    assert_block_outputs(net, io, n_blocks=2)


def test_embedding_and_pooling_match_golden(net, io):
    x = torch.from_numpy(io["input"])
    with torch.no_grad():
        patches = net.patch_embed(x.reshape(-1, *x.shape[2:]))
        assert_golden(patches, io["debug_patch_embed_out"], "patch_embed")
        assert_golden(net.embed(x), io["block_0_input"], "block_0_input")
        assert_golden(net.embedding(x), io["final_embedding"], "final_embedding")
        assert_golden(net.features(x), io["final_biox_pooled"], "final_biox_pooled")
        assert_golden(net(x), io["final_biox_pooled"], "forward (no head)")


def test_numpy_cwt_matches_normwear_torch_cwt(io):
    # io.npz's input is NormWearModel.calc_cwt (optimized torch CWT) of input_raw
    got = normwear_cwt(io["input_raw"], "optimized")
    assert_golden(got, io["input"], "optimized CWT")
    assert got.shape[3] == cwt_length(io["input_raw"].shape[-1], "optimized") == 389


def test_numpy_cwt_matches_scipy_1_14_and_feeds_the_model(net):
    with np.load(GOLDEN / "cwt_scipy_reference.npz") as ref:
        raw, cwt, emb = ref["input_raw"], ref["cwt_scipy"], ref["final_embedding_from_cwt_scipy"]
    got = normwear_cwt(raw, "scipy")
    assert_golden(got, cwt, "scipy CWT")
    assert got.shape[3] == cwt_length(raw.shape[-1], "scipy") == 388
    with torch.no_grad():  # 388 rows give the same 43 time patches: accepted without interpolation
        assert_golden(net.embedding(torch.from_numpy(got)), emb, "embedding of the scipy CWT")
    with pytest.raises(BackboneError, match="CWT method"):
        normwear_cwt(raw, "morlet")


def test_published_config_has_the_published_keys_and_shapes(schema):
    full = build_published("normwear", schema)
    counts = schema["parameter_count"]
    trainable = sum(p.numel() for p in full.parameters() if p.requires_grad)
    assert trainable == counts["n_parameters_requires_grad_default"]
    assert full.input_shape == tuple(schema["example_input_shape"][1:])
    for b in schema["bridgeable_blocks"]["blocks"]:  # native (B * nvar, P, E) <-> canonical (B, nvar * P, E)
        bv, p, e = b["output_shape"]
        assert (full.block_output(b["index"]).tokens, full.block_output(b["index"]).features) == (bv * p, e)
    assert full.block_paths[0] == "encoder_blocks.0" and full.feature_dim == 768


def test_config_forms():
    flat = normalise_config({"NormWearModel": {"optimized_cwt": True, "use_cwt": True},
                             "backbone_args": {"nvar": 4, "img_size": [387, 65]},
                             "backbone_defaults_used": {"depth": 12, "nvar": 9}})
    assert flat == {"nvar": 4, "img_size": [387, 65], "depth": 12}
    with pytest.raises(BackboneError, match="unknown NormWearModel"):
        normalise_config({"NormWearModel": {"weight_path": "x.pth"}})
    with pytest.raises(BackboneError, match="use_cwt"):
        build_backbone("normwear", config={"use_cwt": False, "depth": 1, "embed_dim": 32, "num_heads": 2})


def test_layout_split_and_input_checks(net, io):
    x = torch.from_numpy(io["input"])
    with torch.no_grad():
        bounds, out = net.boundary_outputs(x)
        assert [tuple(net.to_tokens(b).shape) for b in bounds] == [(2, b.tokens, b.features)
                                                                  for b in net.boundaries]
        for b in bounds:
            torch.testing.assert_close(net.from_tokens(net.to_tokens(b)), b)
        torch.testing.assert_close(net.back(bounds[1], 1), out)
        torch.testing.assert_close(net.back(bounds[0], 0), out)
    with pytest.raises(BackboneError, match="in_channels"):
        net.block_outputs(x[:, :2])
    with pytest.raises(BackboneError, match="time patches"):
        net.block_outputs(x[:, :, :, :300])


def _checkpoint(net, prefix: str = "") -> dict:
    # the MAE training loop's layout: {'model', 'optimizer', 'epoch', 'scaler', 'args' (argparse.Namespace)}
    return {"model": {prefix + k: v.clone() for k, v in net.state_dict().items()}, "epoch": 15470,
            "args": argparse.Namespace(lr=1e-4, remark="normwear")}


@pytest.mark.parametrize("prefix", ["", "backbone."])
def test_published_checkpoint_layout_loads_strictly(net, small, io, tmp_path, prefix):
    path = tmp_path / "normwear_last_checkpoint-15470-correct.pth"
    torch.save(_checkpoint(net, prefix), path)
    loaded = build_backbone("normwear", config=small["config"], weights=path)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)


def test_missing_and_unexpected_keys_are_listed(net, small, tmp_path):
    ckpt = _checkpoint(net)
    ckpt["model"].pop("encoder_blocks.0.cls_fusion.attn.qkv.bias")
    ckpt["model"]["encoder_blocks.1.cls_fusion.attn.qkv.bias"] = torch.zeros(384)
    path = tmp_path / "broken.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        build_backbone("normwear", config=small["config"], weights=path)
    msg = str(err.value)
    assert "missing" in msg and "encoder_blocks.0.cls_fusion.attn.qkv.bias" in msg
    assert "unexpected" in msg and "encoder_blocks.1.cls_fusion.attn.qkv.bias" in msg
    with pytest.raises(CheckpointError, match="28 unexpected key"):  # an encoder-only model has no decoder
        build_backbone("normwear", config={**small["config"], "is_pretrain": False},
                       weights=GOLDEN / "small.safetensors")


def test_preprocessing_spec_then_cwt_gives_the_model_input(net):
    from edge_bridge.signals import process_window

    spec = preprocessing()
    t = np.arange(spec.window_samples) / spec.input_rate
    raw = np.stack([np.sin(2 * np.pi * f * t) + 0.1 * np.cos(7 * t) for f in (5.0, 11.0, 23.0)])  # (3, 1500)
    x = process_window(raw, spec)  # (3, 390) at 130 Hz
    assert x.shape == (3, 390)
    cwt = normwear_cwt(x[None])
    assert cwt.shape[1:] == net.input_shape


def test_raw_input_computes_the_cwt_in_the_graph(small, tmp_path):
    """raw_input: same keys, same CWT as normwear_cwt, same features, and it exports to ONNX with parity."""
    from edge_bridge.composite import TargetFront
    from edge_bridge.export.onnx_export import export_part, ort_session, run_session

    weights = GOLDEN / "small.safetensors"
    raw = build_backbone("normwear", config={**small["config"], "raw_input": True}, weights=weights)
    img = build_backbone("normwear", config=small["config"], weights=weights)
    assert list(raw.state_dict()) == list(img.state_dict())  # the bank is not a checkpoint key
    assert raw.input_shape == (raw.cfg.in_channels, raw.cfg.input_samples + 1)
    x = np.random.default_rng(3).standard_normal((2, *raw.input_shape)).astype(np.float32)
    with torch.no_grad():
        assert_golden(raw.cwt(torch.from_numpy(x)), normwear_cwt(x), "in-graph CWT")
        from_image = img.features(torch.from_numpy(normwear_cwt(x))).numpy()
        assert_golden(raw.features(torch.from_numpy(x)), from_image, "features from raw windows")
    with pytest.raises(BackboneError, match="raw windows of shape"):
        raw.features(torch.zeros(1, 3, 100))
    front = TargetFront(raw, 0)
    exported = export_part(front, "target_front", raw.input_shape, (raw.block_output(0).features,),
                           tmp_path / "target_front.onnx")
    with torch.no_grad():
        want = front(torch.from_numpy(x)).numpy()
    got = run_session(ort_session(exported.path, threads=1), "target_front", x)
    assert np.max(np.abs(got - want)) <= 1e-4
