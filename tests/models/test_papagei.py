"""PaPaGei-S: golden block outputs, published keys and shapes, checkpoint layouts, strict-loading errors."""

from __future__ import annotations

import pytest
import torch

from edge_bridge.models import BackboneError, CheckpointError, build_backbone, load_backbone, save_backbone
from edge_bridge.models.papagei import normalise_config, preprocessing
from tests.helpers.golden import (
    assert_block_outputs,
    assert_golden,
    build_published,
    golden_dir,
    skip_without_golden,
)

GOLDEN = golden_dir("papagei")
pytestmark = skip_without_golden("papagei")


@pytest.fixture(scope="module")
def net(small):
    return build_backbone("papagei", config=small["config"], weights=GOLDEN / "small.safetensors")


def test_acceptance_block_outputs_match_golden(net, io):
    assert_block_outputs(net, io, n_blocks=8)


def test_embedding_pooling_and_official_heads_match_golden(net, io):
    x = torch.from_numpy(io["input"])
    with torch.no_grad():
        assert_golden(net.embed(x), io["block_0_input"], "block_0_input")
        assert_golden(net.features(x), io["final_biox_pooled"], "final_biox_pooled")
        assert_golden(net(x), io["final_biox_pooled"], "forward (no head)")
        out_class, moe1, moe2, pooled = net.official_forward(x)
    for name, got in (("final_out_class", out_class), ("final_out_moe1", moe1), ("final_out_moe2", moe2),
                      ("final_pooled", pooled)):
        assert_golden(got, io[name], name)


def test_front_and_back_split_at_typical_positions(net, io):
    x = torch.from_numpy(io["input"])
    with torch.no_grad():
        full = net.features(x)
        for i in (0, 3, 4, 7):  # first block, a downsampling block, a widening block, the last block
            h = net.front(x, i)
            assert_golden(h, io[f"block_{i}"], f"front {i}")
            b = net.block_output(i)
            assert tuple(net.to_tokens(h).shape[1:]) == (b.tokens, b.features)
            if i + 1 < net.n_blocks:
                torch.testing.assert_close(net.back(h, i + 1), full)
    assert net.block_paths[3] == "basicblock_list.3" and net.position("basicblock_list.3") == 3


def test_published_config_has_the_published_keys_and_shapes(schema):
    full = build_published("papagei", schema)
    # block output shapes for example_input_shape (batch 1), as BioX-Bridge's hooks saw them
    shapes = [[1, b.features, b.tokens] for b in full.boundaries[1:]]
    assert shapes == [b["output_shape"] for b in schema["bridgeable_blocks"]["blocks"]]
    assert full.feature_dim == 512 and full.input_shape == tuple(schema["example_input_shape"][1:])


def test_config_spellings():
    assert normalise_config({"default_use_bn": True, "n_block": 4}) == {"use_bn": True, "n_block": 4}
    with pytest.raises(BackboneError, match="twice"):
        normalise_config({"default_downsample_gap": 2, "downsample_gap": 3})


def test_published_checkpoint_layout_with_module_prefix_loads_strictly(net, small, io, tmp_path):
    # papagei_s.pt is a plain state_dict saved by torch.save, keys possibly prefixed by DataParallel
    sd = {f"module.{k}": v.clone() for k, v in net.state_dict().items()}
    path = tmp_path / "papagei_s.pt"
    torch.save(sd, path)
    loaded = build_backbone("papagei", config=small["config"], weights=path)
    assert loaded.state_dict()["first_block_bn.num_batches_tracked"].dtype == torch.int64
    with torch.no_grad():
        assert_golden(loaded.block_outputs(torch.from_numpy(io["input"]))[-1], io["block_7"], "block_7")


def test_missing_and_unexpected_keys_are_listed(net, small, tmp_path):
    sd = dict(net.state_dict())
    sd.pop("basicblock_list.2.bn1.running_var")
    sd["basicblock_list.9.conv1.conv.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        build_backbone("papagei", config=small["config"], weights=path)
    msg = str(err.value)
    assert "missing" in msg and "basicblock_list.2.bn1.running_var" in msg
    assert "unexpected" in msg and "basicblock_list.9.conv1.conv.weight" in msg
    # a deeper config than the weights: the missing block's keys are named
    with pytest.raises(CheckpointError, match="missing key"):
        build_backbone("papagei", config={**small["config"], "n_block": 9},
                       weights=GOLDEN / "small.safetensors")


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        build_backbone("papagei", config={"n_block": 2}, weights=path)


def test_save_and_load_round_trip_keeps_official_keys(net, tmp_path):
    save_backbone(net, tmp_path / "pg")
    again, _ = load_backbone(tmp_path / "pg")
    assert list(again.state_dict()) == list(net.state_dict())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)
    again.set_head(3)  # a task head must not change the dense layer's config (the checkpoint's n_classes)
    assert again.config["n_classes"] == 512 and again.config["head_classes"] == 3


def test_preprocessing_spec_feeds_the_model():
    spec = preprocessing()
    assert spec.input_shape == (1, 7500) and spec.output_rate == 125 and spec.bandpass == (0.5, 12.0)
