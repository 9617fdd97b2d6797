"""Published foundation models go through export: their fronts and backs become ONNX graphs that ONNX
Runtime runs like PyTorch (the device path), at every kind of bridge position the paper uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_bridge.composite import SourceBack, TargetFront
from edge_bridge.export.onnx_export import export_part, ort_session, run_session
from edge_bridge.models import build_backbone
from tests.helpers.golden import golden_dir, load_json

# (model, position) pairs: a CNN target front (PaPaGei), transformer backs (HuBERT-ECG, LaBraM)
CASES = [("papagei", "target_front", 3), ("hubert_ecg", "source_back", 1), ("labram", "source_back", 1)]


@pytest.mark.parametrize(("name", "part", "pos"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_published_part_exports_with_parity(name, part, pos, tmp_path):
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    if not (golden_dir(name) / "small.safetensors").is_file():
        pytest.skip(f"no golden weights for {name} at {golden_dir(name)}")
    torch.manual_seed(0)
    bb = build_backbone(name, config=load_json(name, "small.json")["config"],
                        weights=golden_dir(name) / "small.safetensors")
    rng = np.random.default_rng(0)
    if part == "target_front":
        module = TargetFront(bb, pos)
        in_shape = tuple(bb.input_shape)
        out_shape = (bb.block_output(pos).features,)
    else:
        bb.set_head(3)
        module = SourceBack(bb, pos)
        b = bb.block_input(pos)
        in_shape, out_shape = (b.tokens, b.features), (3,)
    x = rng.standard_normal((4, *in_shape)).astype(np.float32)
    exported = export_part(module, part, in_shape, out_shape, tmp_path / f"{part}.onnx")
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = run_session(ort_session(exported.path, threads=1), part, x)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-4
