"""Per-node INT8 sensitivity: the fewest nodes kept in FP32, found with ONNX Runtime's own quantizer.

The graph here is built by hand so that exactly one node is known to be INT8-hostile: a ``Mul`` whose input
has one channel a thousand times larger than the rest (it is then masked to zero). Quantizing that input
per tensor spends all 256 levels on the outlier and rounds every useful channel to zero, so the decisions
are lost; the ``MatMul`` nodes around it are harmless (per-channel weights, well-ranged inputs). The search
must find the ``Mul`` and keep only it in FP32, and the file it ships must be a real ``quantize_static``
with that node excluded.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edge_bridge.export.audit import audit_tensorrt
from edge_bridge.export.quantize import QuantConfig, WindowReader, preprocess, quantize_part
from edge_bridge.export.sensitivity import (
    emulate_fp32,
    fewest_fp32_nodes,
    node_errors,
    quantized_nodes,
    rank_by_effect,
)

D, CLASSES = 16, 4


def _hostile_graph(path):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((D, D)).astype(np.float32)
    w1[:, 0] *= 1000.0  # channel 0 of h is huge ...
    mask = np.ones(D, np.float32)
    mask[0] = 0.0  # ... and masked away: only the small channels carry the decision
    w2 = rng.standard_normal((D, CLASSES)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Mul", ["h", "mask"], ["hm"], name="mask_mul"),
             helper.make_node("MatMul", ["hm", "w2"], ["logits"], name="mm2")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", CLASSES])
    graph = helper.make_graph(nodes, "hostile", [x], [y],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(mask, "mask"),
                               numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _run(path, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    pre = preprocess(_hostile_graph(root / "fp32.onnx"), root / "pre.onnx")
    x = np.random.default_rng(1).standard_normal((128, D)).astype(np.float32)
    ref = _run(pre, x)

    def measure_file(path):
        got = _run(path, x)
        return {"agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
                "max_logit_drift": float(np.abs(got - ref).max()),
                "mean_logit_drift": float(np.abs(got - ref).mean())}

    return root, pre, x, measure_file


def _build(root, pre, x, exclude, target="cpu"):
    dst = root / f"{target}-{'-'.join(exclude) or 'all'}.onnx"
    # cpu: every op type (the Mul too: the default op set has no INT8 Mul, and the search is what is tested)
    over = {"op_types": None} if target == "cpu" else {}
    return quantize_part(pre, dst, WindowReader("x", x), QuantConfig.for_target(target, **over),
                         nodes_to_exclude=tuple(exclude), preprocessed=True)


def _reads_dq(model, name):
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == name)
    return any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input)


def test_full_int8_loses_the_decisions_and_the_search_keeps_only_the_hostile_node(hostile):
    root, pre, x, measure_file = hostile
    full = _build(root, pre, x, ())
    assert {n.name for n in quantized_nodes(onnx.load(str(full)))} == {"mm1", "mask_mul", "mm2"}
    assert measure_file(full)["agreement"] < 0.9  # INT8 everywhere breaks it (else the test proves nothing)

    errors = node_errors(pre, full, WindowReader("x", x[:32]))
    assert errors[0].node in ("mask_mul", "mm2")  # the outlier tensor h is read by mask_mul only
    assert {e.node for e in errors} == {"mm1", "mask_mul", "mm2"}
    assert all(np.isfinite(e.sqnr_db) for e in errors)

    ranked = rank_by_effect(full, pre, errors, measure_file, root, threshold=0.98, max_steps=2)
    assert ranked[0].node == "mask_mul" and ranked[0].effect["agreement"] >= 0.98

    found = fewest_fp32_nodes(ranked, lambda ex: measure_file(_build(root, pre, x, ex)), 0.98, max_nodes=2)
    assert found.passed and found.names == ("mask_mul",)
    kept = found.kept[0]
    assert kept["op_type"] == "Mul" and kept["agreement_if_int8"] < 0.98  # why it stays FP32, measured
    shipped = onnx.load(str(_build(root, pre, x, found.names)))
    assert not _reads_dq(shipped, "mask_mul") and _reads_dq(shipped, "mm1") and _reads_dq(shipped, "mm2")
    assert found.result["agreement"] >= 0.98
    assert json.dumps(found.kept)  # goes into the manifest as is


def test_emulated_exclusion_matches_a_real_exclusion(hostile):
    root, pre, x, measure_file = hostile
    full = _build(root, pre, x, ())
    emu = root / "emulated.onnx"
    onnx.save(emulate_fp32(onnx.load(str(full)), onnx.load(str(pre)), {"mask_mul"}), str(emu))
    real = _build(root, pre, x, ("mask_mul",))
    assert measure_file(emu)["agreement"] >= 0.98
    assert np.abs(_run(emu, x) - _run(real, x)).max() < 0.05 * np.abs(_run(pre, x)).max()


def test_no_search_when_int8_already_passes():
    calls = []

    def measure(ex):
        calls.append(ex)
        return {"agreement": 1.0}

    found = fewest_fp32_nodes([], measure, 0.98, max_nodes=3)
    assert found.passed and found.kept == [] and calls == [()]


def test_search_gives_up_beyond_the_node_budget(hostile):
    root, pre, x, measure_file = hostile
    full = _build(root, pre, x, ())
    errors = [e for e in node_errors(pre, full, WindowReader("x", x[:32])) if e.node != "mask_mul"]
    found = fewest_fp32_nodes(errors, lambda ex: measure_file(_build(root, pre, x, ex)), 0.98, max_nodes=2)
    assert not found.passed  # without the hostile node no set can pass: the caller falls back whole


def test_jetson_mixed_precision_still_passes_the_tensorrt_audit(hostile):
    root, pre, x, _ = hostile
    mixed = onnx.load(str(_build(root, pre, x, ("mm2",), target="jetson")))
    rep = audit_tensorrt(mixed)
    assert rep.ok, rep.violations
    assert _reads_dq(mixed, "mm1") and not _reads_dq(mixed, "mm2")


# --- the exporter's record of it, on the tiny composite of tests/export/conftest.py ---------------------
@pytest.fixture(scope="module")
def searched(tiny, tmp_path_factory):
    """The tiny composite exported with the default search (``int8_search="fast"``), cpu and jetson."""
    root = tmp_path_factory.mktemp("searched")
    return {t: tiny.export(root / f"{t}.bundle", target=t, int8_search="fast") for t in ("cpu", "jetson")}


@pytest.mark.parametrize("target", ["cpu", "jetson"])
def test_manifest_records_method_search_nodes_and_figures_per_part(searched, target):
    b = searched[target]
    q = b.manifest.quantization
    assert q["config"]["calibration_method"].startswith("per part")
    for part in ("target_front", "source_back", "source_front"):
        r = q["parts"][part]
        assert set(r["calibration_methods"]) == {"MinMax", "Percentile", "Entropy"}
        assert r["calibration_method"] in r["calibration_methods"]
        assert r["quantized_nodes"] > 0 and len(r["fp32_nodes"]) <= max(1, r["quantized_nodes"] // 4)
        assert r["precision"] == b.manifest.parts[part].precision
        assert 0.0 <= r["held_out_agreement"] <= 1.0
        lat = r["latency_ms_batch1"]
        assert lat["fp32"] > 0 and (r["precision"] == "fp32" or lat[r["precision"]] > 0)
        model = onnx.load(str(b.part_path(part)))
        names = {n.name for n in model.graph.node}
        for kept in r["fp32_nodes"]:  # every node the manifest says is FP32 really reads no DQ
            assert kept["node"] in names and not _reads_dq(model, kept["node"])
            assert kept["agreement_if_int8"] < r["search_target"]


def test_report_lines_and_demo_precision_line(searched):
    from edge_bridge.commands.bundle import quantization_lines
    from edge_bridge.demo import precision_line

    bundles = searched
    lines = quantization_lines(bundles["cpu"].manifest)
    assert lines[0].startswith("  per part")
    body = "\n".join(lines)
    for part in ("target_front", "source_back", "source_front"):
        assert part in body
    assert "agreement" in body and "kB" in body and "fp32 " in body and " ms" in body
    line = precision_line(bundles["cpu"])
    assert line.startswith("precision: target_front ") and "accuracy guard" in line and "degraded:" in line


def _attention_graph(path):
    """x -> MatMul(weight) -> h; s = h @ h^T (two activations); y = s @ h: one weight MatMul, two attention
    MatMuls."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((D, D)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("Transpose", ["h"], ["ht"], name="t", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["h", "ht"], ["s"], name="scores"),
             helper.make_node("MatMul", ["s", "h"], ["y"], name="mix")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, D])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6, D])
    graph = helper.make_graph(nodes, "attention", [x], [y], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("target", ["cpu", "jetson"])
def test_activation_matmuls_stay_fp32_unless_asked(tmp_path, target):
    from edge_bridge.export.quantize import activation_matmuls

    pre = preprocess(_attention_graph(tmp_path / "fp32.onnx"), tmp_path / "pre.onnx")
    assert sorted(activation_matmuls(onnx.load(str(pre)))) == ["mix", "scores"]
    x = np.random.default_rng(3).standard_normal((32, 6, D)).astype(np.float32)
    default = onnx.load(str(quantize_part(pre, tmp_path / "default.onnx", WindowReader("x", x),
                                          QuantConfig.for_target(target), preprocessed=True)))
    assert _reads_dq(default, "proj") and not _reads_dq(default, "scores") and not _reads_dq(default, "mix")
    if target == "jetson":
        assert audit_tensorrt(default).ok
    asked = onnx.load(str(quantize_part(pre, tmp_path / "asked.onnx", WindowReader("x", x),
                                        QuantConfig.for_target(target, activation_matmuls=True),
                                        preprocessed=True)))
    assert _reads_dq(asked, "scores") and _reads_dq(asked, "mix")


def test_choices_follow_the_recorded_measurements(searched):
    for target, b in searched.items():
        for part, r in b.manifest.quantization["parts"].items():
            sets, target_agreement = r["op_sets"], r["search_target"]
            passing = [k for k, v in sets.items() if v["agreement"] >= target_agreement]
            if target == "jetson":
                assert list(sets) == ["configured"]  # TensorRT's placement: compute inputs only
            elif passing:  # the fewest nodes after ONNX Runtime's optimisation among those that pass
                assert r["op_set"] in passing
                fewest = min(sets[k]["optimised_nodes"] for k in passing)
                assert sets[r["op_set"]]["optimised_nodes"] == fewest
            else:
                assert sets[r["op_set"]]["agreement"] == max(v["agreement"] for v in sets.values())
            methods = r["calibration_methods"]
            if not r["fp32_nodes"]:
                assert methods[r["calibration_method"]]["agreement"] == max(
                    v["agreement"] for v in methods.values())
            model = onnx.load(str(b.part_path(part)))
            for rule in r["fp32_by_rule"]:  # attention's MatMuls: listed, and really FP32
                assert not _reads_dq(model, rule["node"])
        rules = b.manifest.quantization["parts"]["source_back"]["fp32_by_rule"]
        assert len(rules) == 2  # the tiny source_back is one transformer block: q k^T and softmax . v


def test_search_off_is_the_configured_flavour_with_minmax(bundles):
    for b in bundles.values():
        for r in b.manifest.quantization["parts"].values():
            assert r["op_set"] == "configured" and r["calibration_method"] == "MinMax"
            assert set(r["calibration_methods"]) == {"MinMax"} and "search" not in r


def test_an_outlier_channel_costs_one_fp32_node_not_the_part(tiny, tmp_path):
    """A function-preserving outlier: source_back's LayerNorm gain x1000 on one channel and the attention
    projection's matching input column /1000. FP32 outputs are unchanged, but the projection's input now has
    one channel a thousand times the rest, and per-tensor INT8 rounds every other channel away. The default
    search must keep exactly that MatMul in FP32 and ship source_back INT8, where every node INT8 misses
    the search's target. (The tiny random model's other INT8 noise flips 2 of 64 decisions, hence the lower
    threshold.) The whole-tensor SQNR of that input stays high (the outlier carries its power); the
    per-channel one (:func:`channel_sqnr`) is low, which is checked too."""
    composite = tiny.composite()
    block = composite.source.blocks[tiny.J]
    x = torch.from_numpy(tiny.windows(8, 5).target)
    with torch.no_grad():
        before = composite(x)
        block.ln1.weight[3] *= 1000.0
        block.attn.in_proj_weight[:, 3] /= 1000.0
        assert torch.allclose(composite(x), before, atol=1e-4)  # same model in FP32

    from edge_bridge.export import export_composite

    task = tiny.task()
    searched = export_composite(composite, tmp_path / "fast.bundle", task="stress", classes=task.classes,
                                source_spec=task.source, target_spec=task.target,
                                holdout=tiny.windows(48, 1), calibration=tiny.windows(64, 2),
                                precision="int8", target="cpu", int8_search="fast",
                                agreement_threshold=0.9,  # the tiny random model's other noise: 2 of 64
                                ).manifest.quantization
    rec = searched["parts"]["source_back"]
    assert searched["precisions"]["source_back"] == "int8" and not searched["degraded"]
    assert [k["op_type"] for k in rec["fp32_nodes"]] == ["MatMul"]
    kept = rec["fp32_nodes"][0]
    assert kept["agreement_if_int8"] < rec["search_target"] <= rec["calibration_agreement"]
    model = onnx.load(str(tmp_path / "fast.bundle" / "source_back.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == kept["node"])
    assert producer[node.input[0]].op_type == "LayerNormalization"  # the projection reading the outlier
    assert not _reads_dq(model, kept["node"])
    assert kept["sqnr_db"] < 10.0  # per channel; the whole tensor's is above 40 dB
    # every node INT8 (the same op set and method, as measured before the node search) missed the target
    assert rec["calibration_methods"][rec["calibration_method"]]["agreement"] < rec["search_target"]


def test_channel_sqnr_sees_what_an_outlier_hides():
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio as sqnr

    from edge_bridge.export.sensitivity import channel_sqnr

    x = np.random.default_rng(4).standard_normal((8, 6, D)).astype(np.float32)
    x[..., 3] *= 1000.0
    y = x.copy()
    y[..., [c for c in range(D) if c != 3]] = 0.0  # every small channel rounded away
    assert sqnr(x, y) > 40.0 and channel_sqnr(x, y) < 5.0
    assert channel_sqnr(x, x + 1e-3) > 40.0

