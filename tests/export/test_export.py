"""Export of a tiny composite: graphs, parity, INT8 in both flavours, TensorRT audit, accuracy guard."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch

from edge_bridge.export import ExportError, audit_tensorrt
from edge_bridge.export.onnx_export import (
    PARTS,
    check_graph,
    graph_shapes,
    ort_session,
    read_stamp,
    run_session,
)


def _files(bundle):
    return {p: bundle.part_path(p) for p in PARTS}


@pytest.mark.parametrize("target", ["cpu", "jetson"])
def test_every_graph_is_valid_and_self_contained(bundles, target):
    b = bundles[target]
    assert not list(b.root.rglob("*.data"))
    for part, path in _files(b).items():
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        info = PARTS[part]
        shapes = graph_shapes(model)
        assert list(shapes) == [info.input, info.output]
        spec = b.part(part)
        for t in (*spec.inputs, *spec.outputs):
            assert isinstance(shapes[t.name][0], str) and shapes[t.name][1:] == t.shape[1:]
        stamp = read_stamp(path)
        assert stamp["part"] == part and stamp["precision"] == spec.precision and stamp["tool_version"]
        assert len(stamp["weights_sha256"]) == 64 and stamp["target"] == target


def test_fp32_parity_per_part_and_chained(tiny, tmp_path):
    """ORT on the bundle's FP32 graphs vs PyTorch, on windows the export never saw."""
    b = tiny.export(tmp_path / "fp32.bundle", precision="fp32", calibration=None)
    comp = tiny.composite()
    parts = comp.parts()
    w = tiny.windows(16, 7)
    with torch.no_grad():
        h = parts["target_front"](torch.from_numpy(w.target))
        z = parts["bridge"](h)
        ref = {"target_front": (w.target, h.numpy()), "bridge": (h.numpy(), z.numpy()),
               "source_back": (z.numpy(), parts["source_back"](z).numpy()),
               "source_front": (w.source, parts["source_front"](torch.from_numpy(w.source)).numpy())}
        logits = comp(torch.from_numpy(w.target)).numpy()
    assert np.abs(logits).max() > 1e-3  # non-trivial outputs
    sess = {p: ort_session(b.part_path(p)) for p in PARTS}
    for part, (x, y) in ref.items():
        assert b.part(part).precision == "fp32"
        assert np.abs(run_session(sess[part], part, x) - y).max() <= 1e-4, part
    h_ort = run_session(sess["target_front"], "target_front", w.target)
    chained = run_session(sess["source_back"], "source_back", run_session(sess["bridge"], "bridge", h_ort))
    assert np.abs(chained - logits).max() <= 1e-4
    par = b.manifest.report["parity"]
    assert par["ok"] and max(par["max_abs_diff"].values()) <= 1e-4
    assert b.manifest.quantization["precision"] == "fp32" and "accuracy" in b.manifest.quantization


def test_int8_agreement_is_reported(bundles):
    for b in bundles.values():
        q = b.manifest.quantization
        acc = q["accuracy"]
        assert 0.0 <= acc["requested"]["agreement"] <= 1.0
        assert acc["requested"]["precisions"] == {"target_front": "int8", "source_back": "int8"}
        assert acc["shipped"]["max_logit_drift"] >= 0.0
        assert acc["passed"] == (acc["shipped"]["agreement"] >= acc["threshold"])
        assert q["precisions"]["bridge"] == "fp32"
        assert b.manifest.bridges[1].onnx.precision == "fp32"


def test_jetson_graphs_pass_the_tensorrt_audit(bundles):
    b = bundles["jetson"]
    q = b.manifest.quantization
    assert q["config"]["activation_type"] == "QInt8" and q["config"]["quantize_bias"] is False
    for part in ("target_front", "source_back", "source_front"):
        if b.part(part).precision != "int8":
            continue
        rep = audit_tensorrt(b.part_path(part))
        assert rep.ok, rep.violations
        assert rep.counts["compute_reading_dq"] > 0
        assert q["tensorrt_audit"][part]["ok"]
    assert b.manifest.report["tensorrt"]["status"] in ("skipped", "ok", "failed")


def test_audit_fails_on_cpu_flavour_graphs(tiny, tmp_path):
    """uint8 activations, asymmetric zero points, int32 biases, Q/DQ around everything: not for TensorRT."""
    b = tiny.export(tmp_path / "all-int8.bundle", agreement_threshold=1e-6)  # no fallback: all INT8
    assert b.manifest.parts["source_back"].precision == "int8"
    rep = audit_tensorrt(b.part_path("source_back"))
    assert not rep.ok
    assert {"int8", "symmetric", "no_bias_qdq", "qdq_placement"} <= set(rep.broken_rules)
    with pytest.raises(ExportError, match="not a TensorRT-compatible INT8 graph"):
        rep.raise_if_failed()


def test_audit_fails_on_an_fp32_graph(bundles):
    rep = audit_tensorrt(bundles["cpu"].bridge_path())
    assert rep.broken_rules == ["quantized"]


def test_forced_fallback_says_so(tiny, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edge_bridge"):
        b = tiny.export(tmp_path / "forced.bundle", agreement_threshold=1.01)
    q = b.manifest.quantization
    assert q["degraded"] and q["fallback"]
    assert {p: s.precision for p, s in b.manifest.parts.items()} == {
        "target_front": "fp32", "source_back": "fp32", "source_front": "fp32"}
    assert [e["part"] for e in q["fallback"]].count("target_front") == 2  # int8 -> fp16 -> fp32
    assert not q["accuracy"]["passed"]
    text = caplog.text
    assert "ACCURACY GUARD FALLBACK" in text and "can never be met" in text


def test_time_axis_declared_dynamic_is_caught(tmp_path):
    x = onnx.helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, ["batch", "time"])
    y = onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["batch", "time"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["h"], ["z"])], "g", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(ExportError, match="only the batch axis may be dynamic"):
        check_graph(tmp_path / "bad.onnx", "bridge", (8,), (8,))


@pytest.mark.parametrize("kw, match", [
    ({"calibration": None}, "needs calibration windows"),
    ({"precision": "int4"}, "precision must be one of int8, fp16, fp32"),
    ({"target": "jetsn"}, "did you mean 'jetson'"),
    ({"agreement_threshold": 2.0}, "agreement_threshold must be in"),
    ({"int8_search": "exhaustive"}, "int8_search must be one of off, fast, thorough"),
])
def test_bad_options_fail_early(tiny, tmp_path, kw, match):
    with pytest.raises(ExportError, match=match):
        tiny.export(tmp_path / "x.bundle", **kw)
    assert not (tmp_path / "x.bundle").exists()


def test_too_few_calibration_windows(tiny, tmp_path):
    with pytest.raises(ExportError, match="at least 16"):
        tiny.export(tmp_path / "x.bundle", calibration=tiny.windows(5, 3))
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even the staging directory


def test_existing_bundle_is_not_overwritten_without_force(bundles, tiny):
    with pytest.raises(ExportError, match="already exists"):
        tiny.export(bundles["cpu"].root)


def test_source_model_decisions_through_the_shipped_parts(bundles, tiny):
    """On-site calibration reads the source model's decisions as source_back(source_front(x)) with the
    bundle's own (quantized) parts; source_back is calibrated on those tokens too, and the guard measured
    exactly that path. Checked here against the PyTorch source model on fresh windows."""
    from deploy.engines import load_engine

    b = bundles["cpu"]
    xs = tiny.windows(200, 3).source
    with (load_engine(b.part_path("source_front"), "cpu") as sf,
          load_engine(b.part_path("source_back"), "cpu") as sb):
        z = sf.run({sf.inputs[0].name: xs})[sf.outputs[0].name]
        got = sb.run({sb.inputs[0].name: z})[sb.outputs[0].name]
    with torch.no_grad():
        ref = tiny.composite().source(torch.as_tensor(xs)).numpy()
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.9
    q = b.manifest.quantization
    assert q["accuracy"]["source_front"]["source_back_precision"] == b.manifest.parts["source_back"].precision
    assert "source_front tokens" in q["calibration"]["source_back_fed"]
