"""A fused (PPG + EDA) composite exported as a bundle, verified on load, and run from the bundle.

The fused composite is the tiny one of ``conftest.py`` plus a tiny EDA backbone (a second target, the
``stress+eda`` task's EDA spec at 4-s windows): its bridge is ``PrototypeBridge(d_in=[d_ppg, d_eda])`` with a
non-zero ``B`` and a scaled-up ``A_1``, so the EDA windows move the logits. It is exported once per module
(FP32); tests that break a bundle copy it first, and the INT8 tests export their own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from deploy.runtime import CompositeRunner, run_windows
from edge_bridge.bundle import Bundle, BundleError, Manifest
from tests.export.conftest import edit_manifest

EDA_CFG = {"patch": 2, "widths": [4, 4], "strides": [1, 1], "kernel": 3}
EDA_I = 1
# FP32 ONNX Runtime vs PyTorch FP32 on the same windows: the export's own parity tolerance
LOGIT_ATOL = 1e-4


def fused_task():
    from edge_bridge.tasks import get_task

    return get_task("stress+eda").with_window(4.0, 2.0)


def fused_composite(tiny):
    """The tiny composite's PPG and ECG backbones, a tiny EDA backbone, and a fused bridge of both."""
    from edge_bridge.bridge import PrototypeBridge
    from edge_bridge.composite import Composite
    from edge_bridge.models import build_backbone

    base = tiny.composite()
    eda_spec = fused_task().targets[1]
    torch.manual_seed(1)
    eda = build_backbone("resnet1d", {"input_samples": eda_spec.input_shape[1], **EDA_CFG}).eval()
    s_in = base.source.block_input(tiny.J)
    bridge = PrototypeBridge([base.target.block_output(tiny.I).features, eda.block_output(EDA_I).features],
                             s_in.tokens, s_in.features, rank=4, prototypes=6)
    with torch.no_grad():
        bridge.B.normal_(0.0, 0.5)
        bridge.A_1.mul_(20.0)  # the EDA features are small: make their share of the logits visible
    bridge.meta.update({"i": [tiny.I, EDA_I], "j": tiny.J})
    return Composite(base.target, base.source, bridge, tiny.I, tiny.J, extra_targets=[("eda", eda, EDA_I)])


def eda_windows(n: int, seed: int) -> np.ndarray:
    """EDA-shaped windows (z-scored noise around a slow drift), as the EDA preprocessing would give."""
    rng = np.random.default_rng(seed)
    shape = fused_task().targets[1].input_shape
    drift = np.linspace(-1, 1, shape[1])[None, None, :] * rng.uniform(-1, 1, (n, 1, 1))
    return (drift + 0.5 * rng.standard_normal((n, *shape))).astype(np.float32)


def export_fused(tiny, out: Path, **kw):
    from edge_bridge.export import export_composite

    task = fused_task()
    holdout = tiny.windows(32, 1)
    holdout.extras = {"eda": eda_windows(32, 11)}
    args = {"task": task.name, "classes": task.classes, "source_spec": task.source,
            "target_spec": task.target, "holdout": holdout, "precision": "fp32",
            "extra_specs": {"eda": task.targets[1]}, **kw}
    return export_composite(fused_composite(tiny), out, **args)


@pytest.fixture(scope="module")
def fused(tiny, tmp_path_factory):
    return export_fused(tiny, tmp_path_factory.mktemp("fused") / "fused.bundle")


@pytest.fixture
def fused_copy(fused, tmp_path):
    dst = tmp_path / "fused-copy.bundle"
    shutil.copytree(fused.root, dst)
    return dst



# --- 1. the bundle ------------------------------------------------------------------------------------------
def test_fused_bundle_has_one_front_per_target_and_a_k_input_bridge(fused, tiny):
    task = fused_task()
    m = json.loads((fused.root / "manifest.json").read_text())
    assert m["schema_version"] == 2
    assert m["modalities"]["target"] == task.target.to_dict()  # the main target as in a single bundle
    assert m["modalities"]["extra_targets"] == [{"key": "eda", "preprocessing": task.targets[1].to_dict()}]
    assert m["positions"] == {"i": tiny.I, "j": tiny.J, "i_extra": {"eda": EDA_I}}
    parts = m["parts"]
    assert set(parts) == {"target_front", "target_front_eda", "source_back", "source_front"}
    assert parts["target_front"]["file"] == "target_front.onnx"
    assert parts["target_front_eda"]["file"] == "target_front_eda.onnx"
    assert parts["target_front_eda"]["inputs"] == [{"name": "x_target_eda", "shape": [None, 1, 16],
                                                    "dtype": "float32"}]
    assert parts["target_front_eda"]["outputs"] == [{"name": "h_eda", "shape": [None, 4], "dtype": "float32"}]
    bridge = m["bridges"]["versions"]["0001"]["onnx"]
    assert [t["name"] for t in bridge["inputs"]] == ["h", "h_eda"]
    assert bridge["inputs"][0]["shape"] == parts["target_front"]["outputs"][0]["shape"]
    assert bridge["inputs"][1]["shape"] == [None, 4]
    assert all(p["precision"] == "fp32" for p in parts.values()) and bridge["precision"] == "fp32"
    assert "FP32" in m["report"]["fused"]["note"] and m["report"]["fused"]["extra_fronts"] == {
        "target_front_eda": "fp32"}
    assert m["report"]["parity"]["ok"] and "target_front_eda" in m["report"]["parity"]["max_abs_diff"]
    # the loaded manifest gives the extra target back as it was exported
    (extra,) = fused.manifest.extra_targets
    assert (extra.key, extra.spec, extra.i) == ("eda", task.targets[1], EDA_I)
    assert fused.extra_keys == ("eda",)
    assert fused.part_path("target_front_eda").is_file()
    with np.load(fused.root / "golden.npz") as g:
        assert {"target_front_eda.x_target_eda", "target_front_eda.h_eda", "bridge.h_eda"} <= set(g.files)
        np.testing.assert_array_equal(g["bridge.h_eda"], g["target_front_eda.h_eda"])


def test_fused_export_refuses_missing_extra_windows(tiny, tmp_path):
    from edge_bridge.export.errors import ExportError

    holdout = tiny.windows(8, 1)  # no EDA windows beside the PPG ones
    with pytest.raises(ExportError, match="held-out windows need the eda windows in lockstep"):
        export_fused(tiny, tmp_path / "a.bundle", holdout=holdout)
    with pytest.raises(ExportError, match="calibration windows need the eda windows in lockstep"):
        export_fused(tiny, tmp_path / "b.bundle", precision="int8", calibration=tiny.windows(64, 2))
    with pytest.raises(ExportError, match="specs were given"):
        export_fused(tiny, tmp_path / "c.bundle", extra_specs={})
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_fused_int8_searches_and_guards_every_front_on_the_fused_chain(tiny, tmp_path):
    """INT8: every front (the EDA one too), source_back and source_front through the search and the guard,
    measured on the fused chain; each front recorded per part; the shipped bundle agrees with torch FP32 as
    the guard says."""
    cal = tiny.windows(64, 2)
    cal.extras = {"eda": eda_windows(64, 12)}
    b = export_fused(tiny, tmp_path / "int8.bundle", precision="int8", calibration=cal)
    m = b.manifest
    q = m.quantization
    assert q["calibration"]["windows_used"]["target_front"] == 64
    assert q["calibration"]["windows_used"]["target_front_eda"] == 64
    parts = ("target_front", "target_front_eda", "source_back", "source_front")
    shipped = {p: m.parts[p].precision for p in parts}
    assert shipped == {p: q["precisions"][p] for p in shipped}
    assert shipped["target_front_eda"] == "int8" and not q["fallback"]
    ops = {n.op_type for n in onnx.load(str(b.part_path("target_front_eda"))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    rec = q["parts"]["target_front_eda"]
    assert rec["quantized_nodes"] > 0 and rec["calibration_method"] in rec["calibration_methods"]
    # its held-out figure is the fused chain with only this front INT8: the EDA windows move the logits,
    # so a quantized EDA front shows as drift (it would be exactly 0 if the chain read the FP32 front)
    assert rec["held_out_max_logit_drift"] > 0 and 0.0 <= rec["held_out_agreement"] <= 1.0
    assert set(rec["latency_ms_batch1"]) == {"fp32", "int8"}
    assert q["accuracy"]["shipped"]["precisions"] == {p: shipped[p] for p in parts[:3]}
    assert m.report["fused"]["extra_fronts"] == {"target_front_eda": "int8"}
    assert "guarded on the fused chain" in m.report["fused"]["note"]
    acc = q["accuracy"]["shipped"]
    assert acc["agreement"] >= q["accuracy"]["threshold"]
    # the guard's figure is what the bundle does: its argmax vs the torch FP32 fused composite
    holdout = tiny.windows(32, 1)
    xe = eda_windows(32, 11)
    with torch.no_grad():
        ref = fused_composite(tiny).eval()(torch.from_numpy(holdout.target), torch.from_numpy(xe)).numpy()
    got = run_windows(b, {"target": holdout.target, "eda": xe})
    agreement = float((got.argmax(1) == ref.argmax(1)).mean())
    assert abs(agreement - acc["agreement"]) <= 1 / 32
    with CompositeRunner(b, "cpu") as runner:
        assert runner.self_test().passed
    from edge_bridge.commands.bundle import quantization_lines

    assert any(line.strip().startswith("target_front_eda int8") for line in quantization_lines(m))


def test_fused_front_that_fails_the_guard_falls_back_like_the_others(tiny, tmp_path):
    """A threshold above 1 can never be met: every front steps down the ladder (int8 -> fp16 -> fp32) as
    target_front and source_back do, each step recorded, and the bundle ships what the guard chose."""
    cal = tiny.windows(64, 2)
    cal.extras = {"eda": eda_windows(64, 12)}
    b = export_fused(tiny, tmp_path / "fallback.bundle", precision="int8", calibration=cal,
                     agreement_threshold=1.01)
    m = b.manifest
    q = m.quantization
    steps = [(e["part"], e["from"], e["to"]) for e in q["fallback"]]
    assert ("target_front_eda", "int8", "fp16") in steps and ("target_front_eda", "fp16", "fp32") in steps
    assert {p for p, _, _ in steps} >= {"target_front", "target_front_eda", "source_back"}
    assert q["degraded"] and m.parts["target_front_eda"].precision == "fp32"
    assert m.report["fused"]["extra_fronts"] == {"target_front_eda": "fp32"}
    ops = {n.op_type for n in onnx.load(str(b.part_path("target_front_eda"))).graph.node}
    assert "QuantizeLinear" not in ops


# --- 2. load verifies the new parts -------------------------------------------------------------------------
def test_missing_extra_front_is_a_clear_bundle_error(fused_copy):
    edit_manifest(fused_copy, lambda m: m["parts"].pop("target_front_eda"))
    with pytest.raises(BundleError, match=r"extra target\(s\) \['eda'\].*no \['target_front_eda'\]"):
        Bundle.load(fused_copy)


def test_deleted_extra_front_file_is_a_bundle_error(fused_copy):
    (fused_copy / "target_front_eda.onnx").unlink()
    with pytest.raises(BundleError, match="target_front_eda"):
        Bundle.load(fused_copy)


def test_changed_extra_front_fails_its_hash(fused_copy):
    path = fused_copy / "target_front_eda.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"target_front_eda\.onnx with sha256"):
        Bundle.load(fused_copy)


@pytest.mark.parametrize(("what", "edit", "match"), [
    ("bridge input width", lambda m: m["bridges"]["versions"]["0001"]["onnx"]["inputs"][1].update(
        shape=[None, 5]), "bridge input 1 h_eda"),
    ("front input shape", lambda m: m["parts"]["target_front_eda"]["inputs"][0].update(shape=[None, 1, 17]),
     "target_front_eda input"),
    ("bridge input name", lambda m: m["bridges"]["versions"]["0001"]["onnx"]["inputs"][1].update(
        name="h_ppg"), r"expected \('h', 'h_eda'\)"),
    ("position missing", lambda m: m["positions"].pop("i_extra"), "needs its position"),
    ("schema 1 with extra targets", lambda m: m.update(schema_version=1), "need schema_version 2"),
    ("front of an unlisted target", lambda m: m["modalities"].pop("extra_targets") and m["positions"].pop(
        "i_extra"), "unknown part 'target_front_eda'"),
])
def test_fused_manifest_that_does_not_fit_is_refused(fused_copy, what, edit, match):
    edit_manifest(fused_copy, edit)
    with pytest.raises(BundleError, match=match):
        Bundle.load(fused_copy)


def test_a_schema_1_manifest_loads_as_before(bundles):
    """The single-target bundle is written as schema 1 and reads back to the very same manifest."""
    root = bundles["cpu"].root
    m = json.loads((root / "manifest.json").read_text())
    assert m["schema_version"] == 1
    assert "extra_targets" not in m["modalities"] and "i_extra" not in m["positions"]
    b = Bundle.load(root)
    assert b.extra_keys == () and b.manifest.extra_targets == []
    assert Manifest.from_dict(m).to_dict() == m  # nothing added, nothing lost


# --- 3. running it from the bundle --------------------------------------------------------------------------
def test_bundle_logits_equal_the_torch_fused_composite(fused, tiny):
    comp = fused_composite(tiny).eval()
    x = tiny.windows(10, 7).target  # windows the export never saw
    xe = eda_windows(10, 8)
    with torch.no_grad():
        want = comp(torch.from_numpy(x), torch.from_numpy(xe)).numpy()
    got = run_windows(fused, {"target": x, "eda": xe})
    assert got.shape == (10, len(fused_task().classes))
    np.testing.assert_allclose(got, want, atol=LOGIT_ATOL, rtol=0)
    # the EDA input matters: other EDA windows give other logits (through the bundle and through torch)
    other = run_windows(fused, {"target": x, "eda": eda_windows(10, 9)})
    assert np.abs(other - got).max() > 100 * LOGIT_ATOL


def test_fused_runner_self_tests_every_front_and_refuses_a_single_window(fused):
    with CompositeRunner(fused, "cpu") as runner:
        report = runner.self_test()
        assert report.passed
        assert {c.part for c in report.checks} == {"target_front", "target_front_eda", "bridge",
                                                    "source_back"}
        assert runner.warm_up(2) > 0
        x = np.zeros((2, *fused.manifest.target.input_shape), np.float32)
        with pytest.raises(BundleError, match="run_targets"):
            runner(x)
        with pytest.raises(BundleError, match="one window batch per target modality"):
            runner.run_targets({"target": x})
        with pytest.raises(BundleError, match="the eda windows have shape"):
            runner.run_targets({"target": x, "eda": np.zeros((2, 1, 15), np.float32)})
        with pytest.raises(BundleError, match="differ in length"):
            runner.run_targets({"target": x, "eda": np.zeros((3, 1, 16), np.float32)})


def test_single_target_bundle_runs_the_same_through_run_targets(bundles, tiny):
    b = bundles["cpu"]
    x = tiny.windows(6, 4).target
    with CompositeRunner(b, "cpu") as runner:
        before = runner(x)
        assert runner.self_test().passed
    got = run_windows(b, {"target": x})
    np.testing.assert_array_equal(got, before)
    with np.load(b.root / "golden.npz") as g:  # and the golden chain, as exported
        np.testing.assert_allclose(run_windows(b, {"target": g["target_front.x_target"]}),
                                   g["source_back.logits"], atol=1e-5, rtol=0)


# --- the run-directory path (edge-bridge export RUN) --------------------------------------------------------
def test_export_of_a_fused_run_directory(tiny, tmp_path):
    from edge_bridge.export import export
    from edge_bridge.models import save_backbone
    from edge_bridge.recordings.paired import Windows
    from edge_bridge.splits import DEFAULT_FRACTIONS

    task = fused_task()
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"task": "stress+eda", "data": str(tmp_path / "data"),
                                              "seed": 0, "fractions": DEFAULT_FRACTIONS}))
    (run / "splits.json").write_text(json.dumps({"train": ["s1"], "val": ["s2"], "paired": ["s3"],
                                                 "test": ["s4"]}))
    subjects = ["s1", "s2", "s3", "s4"]
    w = tiny.windows(8 * len(subjects), 5)
    subj = np.repeat(subjects, 8).astype(str)
    Windows({"source": w.source, "target": w.target, "eda": eda_windows(len(subj), 6)}, w.labels,
            np.arange(len(subj), dtype=float), subj, tuple(task.classes)).save(run / "windows.npz")
    comp = fused_composite(tiny)
    save_backbone(comp.target, run / "target_backbone", meta={"preprocessing": task.target.to_dict()})
    save_backbone(comp.extra_fronts["eda"].target, run / "target_backbone_eda",
                  meta={"preprocessing": task.targets[1].to_dict(), "target_key": "eda"})
    save_backbone(comp.source, run / "source_model", meta={"preprocessing": task.source.to_dict()})
    comp.bridge.save(run / "bridge")

    b = export(run, tmp_path / "run.bundle", precision="fp32")
    assert b.extra_keys == ("eda",) and b.manifest.extra_targets[0].i == EDA_I
    test = Windows.load(run / "windows.npz").by_subjects(["s4"])
    with torch.no_grad():
        want = comp.eval()(torch.from_numpy(test.x["target"]), torch.from_numpy(test.x["eda"])).numpy()
    got = run_windows(b, {"target": test.x["target"], "eda": test.x["eda"]})
    np.testing.assert_allclose(got, want, atol=LOGIT_ATOL, rtol=0)
    stamp = b.part_path("target_front_eda").read_bytes()
    assert b"weights_file_sha256" in stamp  # the EDA backbone's weights file is recorded in its graph


# deploy streams a fused bundle live: tests/deploy/test_fused_live.py; calibrate refits it:
# tests/calibrate/test_fused_calibrate.py
