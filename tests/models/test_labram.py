"""LaBraM: golden block outputs (both variants), published keys, labram-base.pth layout, corrections."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from edge_bridge.models import BackboneError, CheckpointError, build_backbone, load_backbone, save_backbone
from edge_bridge.models.labram import input_chans_for, preprocessing
from tests.helpers.golden import (
    assert_block_outputs,
    assert_golden,
    build_published,
    golden_dir,
    skip_without_golden,
)

GOLDEN = golden_dir("labram")
pytestmark = skip_without_golden("labram")
ABS_CHANS = [0, 18, 40, 81, 22, 44, 83]  # small.json: variant_abs_pos_emb.input_chans


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / name) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def io_abs() -> dict[str, np.ndarray]:
    return _npz("io_abs_pos_emb.npz")


@pytest.fixture(scope="module")
def net(small):
    return build_backbone("labram", config=small["config"], weights=GOLDEN / "small.safetensors")


def _abs_config(small: dict) -> dict:
    return {**small["config"], "use_abs_pos_emb": True, "input_chans": ABS_CHANS}


def test_acceptance_block_outputs_match_golden(net, io):
    assert_block_outputs(net, io, n_blocks=2)


def test_acceptance_channel_position_embedding_variant(small, io_abs):
    weights = GOLDEN / "small_abs_pos_emb.safetensors"
    net = build_backbone("labram", config=_abs_config(small), weights=weights)
    with torch.no_grad():
        x = torch.from_numpy(io_abs["input"])
        outs = net.block_outputs(x)
        assert_golden(net.embed_official(x), io_abs["block_0_input"], "block_0_input")
        for k, out in enumerate(outs):
            assert_golden(out, io_abs[f"block_{k}"], f"block_{k}")
        assert_golden(net.official_forward_features(x), io_abs["final_forward_features"], "forward_features")
    names = ["F3", "C3", "O1", "F4", "C4", "O2"]
    assert list(io_abs["input_chans"]) == ABS_CHANS == list(input_chans_for(names))


def test_raw_window_path_pooling_and_official_outputs_match_golden(net, io):
    raw = torch.from_numpy(io["input_raw_uV"])  # (B, 6, 6000) µV: the Backbone input
    with torch.no_grad():
        patches = net.patch_embed(torch.from_numpy(io["input"]))
        assert_golden(patches, io["debug_patch_embed_out"], "patch_embed")
        assert_golden(net.embed(raw), io["block_0_input"], "embed(raw µV)")
        assert_golden(net.features(raw), io["final_biox_pooled"], "features = final_biox_pooled")
        ff = net.official_forward_features(torch.from_numpy(io["input"]))
        assert_golden(ff, io["final_forward_features"], "forward_features")
        assert_golden(net.head(ff), io["final_logits"], "logits")
    assert net.block_paths == ["blocks.0", "blocks.1"] and net.boundaries[0].tokens == 181


def test_published_config_has_the_published_state_dict(schema):
    net = build_published("labram", schema)
    shapes = [[1, b.tokens, b.features] for b in net.boundaries[1:]]
    assert shapes == [b["output_shape"] for b in schema["bridgeable_blocks"]["blocks"]]
    assert net.block_paths == [b["module_path"] for b in schema["bridgeable_blocks"]["blocks"]]
    del net


def _pretraining_layout(weights: dict[str, torch.Tensor], time_len: int | None = None) -> dict[str, object]:
    """A ``labram-base.pth``-style dict ``{"model": {"student.*", "lm_head.*", ...}}`` (schema's keys)."""
    student = {f"student.{k}": v for k, v in weights.items() if not k.startswith(("fc_norm.", "head."))}
    if time_len is not None:
        student["student.time_embed"] = torch.randn(1, time_len, 200)
    dim = 200
    extra = {"student.mask_token": torch.zeros(1, 1, dim), "student.norm.weight": torch.ones(dim),
             "student.norm.bias": torch.zeros(dim), "student.lm_head.weight": torch.zeros(16, dim),
             "student.lm_head.bias": torch.zeros(16), "lm_head.weight": torch.zeros(16, dim),
             "lm_head.bias": torch.zeros(16), "projection_head.0.weight": torch.zeros(dim, dim),
             "projection_head.0.bias": torch.zeros(dim)}
    return {"model": {**student, **extra}, "epoch": 49}


def test_labram_base_pth_layout_loads_strictly(tmp_path, small, io_abs):
    weights = load_file(str(GOLDEN / "small_abs_pos_emb.safetensors"))
    path = tmp_path / "labram-base.pth"
    torch.save(_pretraining_layout(weights), path)
    net = build_backbone("labram", config=_abs_config(small), weights=path)
    with torch.no_grad():
        outs = net.block_outputs(torch.from_numpy(io_abs["input"]))
    for k, out in enumerate(outs):
        assert_golden(out, io_abs[f"block_{k}"], f"block_{k} via labram-base.pth layout")
    # fc_norm/head are not in the pretraining checkpoint: they keep their initialisation
    assert torch.equal(net.fc_norm.weight, torch.ones(200))

    layout = _pretraining_layout(weights)
    layout["model"]["student.blocks.0.attn.extra"] = torch.zeros(3)  # type: ignore[index]
    del layout["model"]["student.blocks.1.mlp.fc2.bias"]  # type: ignore[attr-defined]
    torch.save(layout, path)
    with pytest.raises(CheckpointError) as err:
        build_backbone("labram", config=_abs_config(small), weights=path)
    assert "blocks.0.attn.extra" in str(err.value) and "blocks.1.mlp.fc2.bias" in str(err.value)


def test_time_embed_and_pos_embed_defects_are_corrected_by_default(tmp_path, small):
    weights = load_file(str(GOLDEN / "small_abs_pos_emb.safetensors"))
    path = tmp_path / "labram-base.pth"
    torch.save(_pretraining_layout(weights, time_len=16), path)  # the published 16-entry time embedding
    base = {k: v for k, v in small["config"].items() if k not in ("time_embed_length", "use_abs_pos_emb")}

    default = build_backbone("labram", config={**base, "in_channels": 6, "input_samples": 3200}, weights=path)
    assert default.time_embed.shape == (1, 16, 200) and default.pos_embed is not None
    assert torch.equal(default.time_embed, torch.load(path, weights_only=True)["model"]["student.time_embed"])

    paper = {**small["config"]}  # BioX-Bridge: 30 entries, no channel embedding
    with pytest.raises(CheckpointError, match=r"time_embed_length=16|use_abs_pos_emb"):
        build_backbone("labram", config=paper, weights=path)
    with pytest.warns(UserWarning, match="BioX-Bridge"):
        compat = build_backbone("labram", config={**paper, "checkpoint_compat": "biox"}, weights=path)
    assert compat.pos_embed is None and compat.time_embed.shape == (1, 30, 200)
    resampled = build_backbone("labram", config={**paper, "use_abs_pos_emb": True,
                                                 "checkpoint_compat": "interpolate_time"}, weights=path)
    stored = torch.load(path, weights_only=True)["model"]["student.time_embed"]
    ends = resampled.time_embed.detach()[:, [0, -1]]
    assert torch.allclose(ends, stored[:, [0, -1]], atol=1e-5)  # linear resampling keeps both ends


def test_windows_longer_than_the_time_embedding_are_refused(small):
    with pytest.raises(BackboneError, match="time_embed_length"):
        build_backbone("labram", config={**small["config"], "time_embed_length": 16, "input_samples": 6000})
    with pytest.raises(BackboneError, match="10-20"):
        build_backbone("labram", config={**small["config"], "use_abs_pos_emb": True, "channels": ["X1"] * 6})


def test_preprocessing_spec_matches_the_model_input(net):
    spec = preprocessing()
    assert spec.input_shape == net.input_shape == (6, 6000)
    assert spec.normalise == "none" and spec.output_rate == 200.0


def test_task_head_survives_save_and_load(tmp_path, small, io):
    net = build_backbone("labram", config=small["config"], weights=GOLDEN / "small.safetensors")
    net.set_head(3)
    save_backbone(net, tmp_path / "bb")
    again, _ = load_backbone(tmp_path / "bb")
    raw = torch.from_numpy(io["input_raw_uV"])
    with torch.no_grad():
        assert again.n_classes == 3 and torch.equal(again(raw), net(raw))
