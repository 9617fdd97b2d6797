"""HuBERT-ECG: golden block outputs, published keys and shapes, checkpoint layouts, safe strict loading."""

from __future__ import annotations

import json
import sys
import types
import warnings

import pytest
import torch
from safetensors.torch import load_file

from edge_bridge.models import CheckpointError, build_backbone, load_backbone, save_backbone
from edge_bridge.models.checkpoints import load_state_dict_file, load_strict
from edge_bridge.models.hubert_ecg import preprocessing
from tests.helpers.golden import (
    assert_block_outputs,
    assert_golden,
    build_published,
    golden_dir,
    skip_without_golden,
)

GOLDEN = golden_dir("hubert_ecg")
pytestmark = skip_without_golden("hubert_ecg")
WN = "encoder.pos_conv_embed.conv.parametrizations.weight.original"


@pytest.fixture(scope="module")
def net(small):
    return build_backbone("hubert_ecg", config=small["config"], weights=GOLDEN / "small.safetensors")


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN / "small.safetensors"))


def test_acceptance_block_outputs_match_golden(net, io):
    assert_block_outputs(net, io, n_blocks=2)


def test_embedding_pooling_and_window_path_match_golden(net, io):
    x = torch.from_numpy(io["input"])
    with torch.no_grad():
        assert_golden(net.feature_extractor(x), io["debug_feature_extractor_out"], "feature_extractor")
        assert_golden(net.embed_official(x), io["block_0_input"], "block_0_input")
        last = net.official_forward(x)
        assert_golden(last, io["final_last_hidden_state"], "last_hidden_state")
        assert_golden(net.pool(last), io["final_biox_pooled"], "final_biox_pooled")
        # the Backbone path: one-lead windows (B, 1, 6000) -> the same features through front/pool
        window = x[:, None, :]
        assert_golden(net.features(window), io["final_biox_pooled"], "features(window)")
        assert_golden(net.front(window, 0), io["block_0"], "front(window, 0)")
    assert net.block_paths == ["encoder.layers.0", "encoder.layers.1"]
    assert [b.tokens for b in net.boundaries] == [93, 93, 93] and net.feature_dim == 256


def test_published_config_has_the_published_state_dict():
    schema = json.loads((GOLDEN / "schema.json").read_text())
    net = build_published("hubert_ecg", schema)
    shapes = [[1, b.tokens, b.features] for b in net.boundaries[1:]]
    assert shapes == [b["output_shape"] for b in schema["bridgeable_blocks"]["blocks"]]
    assert net.block_paths == [b["module_path"] for b in schema["bridgeable_blocks"]["blocks"]]
    del net


def test_full_hf_config_dict_builds_without_warnings(small):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = build_backbone("hubert_ecg", config=small["config_full_hf_dict"])
    assert net.config["hidden_size"] == 256 and net.n_blocks == 2


class _FakeHuBERTECGConfig:
    """Stands in for HuBERT-ECG's ``HuBERTECGConfig`` when writing a ``hubert_ecg_small.pt``-style file."""

    def __init__(self, **attrs: object) -> None:
        self.__dict__.update(attrs)


@pytest.fixture()
def fake_hubert_module(monkeypatch):
    """Make ``hubert_ecg.HuBERTECGConfig`` picklable under the name the published checkpoint uses."""
    module = types.ModuleType("hubert_ecg")
    _FakeHuBERTECGConfig.__module__ = "hubert_ecg"
    _FakeHuBERTECGConfig.__qualname__ = "HuBERTECGConfig"
    module.HuBERTECGConfig = _FakeHuBERTECGConfig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hubert_ecg", module)
    return _FakeHuBERTECGConfig


def test_published_pt_layout_with_pickled_config_loads_with_weights_only(tmp_path, small, weights, io,
                                                                       fake_hubert_module):
    cfg = fake_hubert_module(**small["config_full_hf_dict"])
    path = tmp_path / "hubert_ecg_small.pt"
    torch.save({"model_state_dict": weights, "model_config": cfg, "epoch": 3}, path)
    net = build_backbone("hubert_ecg", config=small["config"], weights=path)
    with torch.no_grad():
        outs = net.block_outputs(torch.from_numpy(io["input"]))
    assert_golden(outs[-1], io["block_1"], "block_1 via .pt")

    cfg.hidden_size = 512  # a checkpoint of another size: refused with the differing field named
    torch.save({"model_state_dict": weights, "model_config": cfg}, path)
    with pytest.raises(CheckpointError, match="hidden_size"):
        build_backbone("hubert_ecg", config=small["config"], weights=path)


def test_old_weight_norm_names_module_prefix_and_other_vocab_load(tmp_path, small, weights, io):
    sd = {("module." + k).replace(WN + "0", "encoder.pos_conv_embed.conv.weight_g")
          .replace(WN + "1", "encoder.pos_conv_embed.conv.weight_v"): v for k, v in weights.items()}
    sd["module.label_embedding.0.weight"] = torch.randn(500, 256)  # a larger codebook than the config's 100
    path = tmp_path / "hubert.pt"
    torch.save(sd, path)
    net = build_backbone("hubert_ecg", config=small["config"], weights=path)
    assert net.label_embedding[0].weight.shape == (500, 256) and net.config["vocab_sizes"] == [500]
    with torch.no_grad():
        assert_golden(net.block_outputs(torch.from_numpy(io["input"]))[-1], io["block_1"], "block_1")


def test_strict_loading_lists_missing_unexpected_and_mis_shaped_keys(small, weights):
    net = build_backbone("hubert_ecg", config=small["config"])
    bad = dict(weights)
    bad.pop("encoder.layers.1.final_layer_norm.bias")
    bad["encoder.layers.9.extra"] = torch.zeros(1)
    bad["feature_projection.projection.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as err:
        load_strict(net, bad, "x.pt")
    msg = str(err.value)
    assert "encoder.layers.1.final_layer_norm.bias" in msg and "encoder.layers.9.extra" in msg
    assert "feature_projection.projection.bias (file (7,), model (256,))" in msg


_EXPLOITED: list[str] = []


def _exploit(arg: str) -> None:
    _EXPLOITED.append(arg)


class _Evil:
    def __reduce__(self):
        return (_exploit, ("ran",))


def test_pickle_with_arbitrary_object_is_refused_and_never_run(tmp_path, weights):
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": weights, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_state_dict_file(path)
    with pytest.raises(CheckpointError, match="refused"):
        build_backbone("hubert_ecg", config={"hidden_size": 256}, weights=path)
    assert _EXPLOITED == []


def test_lead_expansion_and_save_load_round_trip(tmp_path, small, net, io):
    cfg = {**small["config"], "input_samples": 500, "lead_expansion": "zero_pad"}
    wide = build_backbone("hubert_ecg", config=cfg)
    assert wide.boundaries[0].tokens == (500 * 12 - 82) // 64 + 1
    save_backbone(net, tmp_path / "bb")
    again, _ = load_backbone(tmp_path / "bb")
    x = torch.from_numpy(io["input"])
    with torch.no_grad():
        assert torch.equal(again.block_outputs(x)[-1], net.block_outputs(x)[-1])


def test_preprocessing_spec_matches_the_model_input():
    spec = preprocessing(input_rate=700.0, window_s=60.0, hop_s=5.0)
    assert spec.output_rate == 100.0 and spec.input_shape == (1, 6000)
    assert spec.bandpass == (0.05, 47.0) and spec.normalise == "zscore"
