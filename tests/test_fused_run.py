"""A fused (PPG + EDA) run made through the CLI verbs, from simulated EDF+ recordings to a fused INT8 bundle.

One tiny run per module on 4 simulated subjects (5 minutes each, task ``stress-binary+eda``): pretrain
(one backbone per target, each with ``--key``), fit-source, select (the fused rule), train (the fused
bridge, plus the single-input KD student), evaluate and export with INT8. The bundle is checked as the
device reads it: ``Bundle.load`` verifies it, the EDA front is INT8 (QDQ nodes in the graph) with its own
per-part record, and ``run_windows`` on the run's test windows gives finite logits that agree with the
torch fused composite as the guard says.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from edge_bridge.cli import main

TASK = "stress-binary+eda"
TINY_PPG = '{"widths": [8, 8, 8], "strides": [1, 2, 2], "kernel": 3}'
TINY_TRANSFORMER = '{"d_model": 16, "n_blocks": 3, "n_heads": 2}'  # the EDA backbone and the ECG model


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from edge_bridge.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("sim")
    simulate_dataset(out, "stress", subjects=4, minutes=5, seed=0)
    return out


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory, data_dir):
    """The run folder, the bundle and what each verb printed, made once through ``main([...])``."""
    root = tmp_path_factory.mktemp("fused")
    run, bundle = root / "run", root / "fused.bundle"
    common = ["--run", str(run), "--no-progress", "-q"]
    printed: dict[str, str] = {}

    def verb(name: str, *args: str) -> None:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main([name, *args])
        printed[name] = printed.get(name, "") + buf.getvalue()
        assert code == 0, f"edge-bridge {name} {' '.join(args)} exited {code}:\n{buf.getvalue()}"

    verb("pretrain", *common, "--data", str(data_dir), "--task", TASK, "--epochs", "1", "--key", "ppg",
         "--backbone-config", TINY_PPG)
    verb("pretrain", *common, "--epochs", "1", "--key", "eda", "--backbone-config", TINY_TRANSFORMER)
    verb("fit-source", *common, "--epochs", "2", "--backbone-config", TINY_TRANSFORMER)
    verb("select", *common)
    verb("train", *common, "--epochs", "2", "--kd")
    verb("evaluate", *common, "--no-upper-bound")
    verb("export", "--run", str(run), "-o", str(bundle), "--calibration-data", str(data_dir), "--report",
         "--agreement-threshold", "0.9", "-q")
    return run, bundle, printed


def test_pretrain_writes_one_backbone_per_target(fused_run):
    from edge_bridge.models import load_backbone

    run, _, printed = fused_run
    ppg, ppg_meta = load_backbone(run / "target_backbone")
    eda, eda_meta = load_backbone(run / "target_backbone_eda")
    assert ppg.kind == "resnet1d" and eda.kind == "transformer"
    assert ppg_meta["preprocessing"]["modality"] == "ppg"
    assert eda_meta["preprocessing"]["modality"] == "eda" and eda_meta["target_key"] == "eda"
    assert tuple(eda.input_shape) == (1, 240)  # 60 s of EDA at 4 Hz
    assert "pretrained eda backbone" in printed["pretrain"]


def test_select_records_one_position_per_target_and_the_rule(fused_run):
    from edge_bridge.models import load_backbone

    run, _, printed = fused_run
    sel = json.loads((run / "selection.json").read_text())
    assert sel["rule"] == "fused" and sel["targets"] == ["ppg", "eda"]
    ppg, _ = load_backbone(run / "target_backbone")
    eda, _ = load_backbone(run / "target_backbone_eda")
    assert [len(f) for f in sel["f1"]] == [ppg.n_blocks, eda.n_blocks]
    # each i_k is its own probe's best block, j the best CKA with the fused features
    assert sel["i"] == [int(np.argmax(f)) for f in sel["f1"]] and sel["j"] == int(np.argmax(sel["cka"]))
    assert any("stage 2 on fused features" in n for n in sel["notes"])
    assert (run / "selection.png").is_file()
    assert f"chosen i={sel['i']} (ppg, eda)" in printed["select"]


def test_train_makes_a_fused_bridge_at_the_selected_positions(fused_run):
    from edge_bridge.bridge import load_bridge

    run, _, _ = fused_run
    sel = json.loads((run / "selection.json").read_text())
    bridge = load_bridge(run / "bridge")
    assert bridge.meta["i"] == sel["i"] and bridge.meta["j"] == sel["j"]
    assert bridge.meta["targets"] == ["ppg", "eda"] and bridge.n_inputs == 2
    summary = json.loads((run / "bridge" / "train_summary.json").read_text())
    assert summary["i"] == sel["i"] and summary["targets"] == ["ppg", "eda"]
    assert (run / "kd_student").is_dir()


def test_evaluate_scores_the_fused_composite_on_every_target(fused_run):
    from edge_bridge import pipeline
    from edge_bridge.bridge import load_bridge
    from edge_bridge.evaluate import classification_metrics
    from edge_bridge.models import load_backbone
    from edge_bridge.runs import Run

    run, _, _ = fused_run
    metrics = json.loads((run / "metrics.json").read_text())
    comp_m = metrics["models"]["bridge (composite)"]
    assert comp_m["input"] == "target+eda" and comp_m["targets"] == ["ppg", "eda"]
    assert "alone" in metrics["models"]["kd student"]["note"]
    # the figure is the fused composite's: recomputed from the run's parts, and the EDA input matters
    r = Run.open(run)
    test = r.role("test", labelled=True)
    source, _ = load_backbone(run / "source_model")
    comp = pipeline.fused_composite(r, source, load_bridge(run / "bridge"))
    logits = pipeline.predict_composite(comp, test)
    assert comp_m["balanced_accuracy"] == classification_metrics(
        test.labels, logits.argmax(1), len(r.task.classes))["balanced_accuracy"]
    with torch.no_grad():
        zeroed = comp(torch.from_numpy(test.x["target"]), torch.zeros_like(torch.from_numpy(test.x["eda"])))
    assert np.abs(zeroed.numpy() - logits).max() > 1e-6


def test_export_ships_an_int8_eda_front_with_its_own_report(fused_run):
    from deploy.runtime import run_windows
    from edge_bridge import pipeline
    from edge_bridge.bridge import load_bridge
    from edge_bridge.bundle import Bundle
    from edge_bridge.models import load_backbone
    from edge_bridge.runs import Run

    run, root, printed = fused_run
    b = Bundle.load(root)  # verifies every file's hash and the manifest schema
    m = b.manifest
    assert b.extra_keys == ("eda",)
    sel = json.loads((run / "selection.json").read_text())
    assert [m.positions["i"], m.extra_targets[0].i] == sel["i"]
    q = m.quantization
    shipped = {p: s.precision for p, s in m.parts.items()}
    assert shipped == {p: q["precisions"][p] for p in shipped}  # the guard's choice is what ships
    assert shipped["target_front_eda"] == "int8" and not q["fallback"]
    ops = {n.op_type for n in onnx.load(str(b.part_path("target_front_eda"))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    rec = q["parts"]["target_front_eda"]
    assert rec["calibration_method"] in rec["calibration_methods"] and rec["quantized_nodes"] > 0
    assert 0.0 <= rec["held_out_agreement"] <= 1.0 and "int8" in rec["latency_ms_batch1"]
    assert q["calibration"]["windows_used"]["target_front_eda"] == q["calibration"]["windows_used"][
        "target_front"]
    assert m.report["fused"]["extra_fronts"] == {"target_front_eda": "int8"}
    assert "target_front_eda int8" in printed["export"]  # --report prints the part's line
    # run from the bundle on the run's test windows: finite logits, deciding as the guard measured
    r = Run.open(run)
    test = r.role("test")
    got = run_windows(b, {"target": test.x["target"], "eda": test.x["eda"]})
    assert got.shape == (len(test), 2) and np.isfinite(got).all()
    source, _ = load_backbone(run / "source_model")
    ref = pipeline.predict_composite(pipeline.fused_composite(r, source, load_bridge(run / "bridge")), test)
    agreement = float((got.argmax(1) == ref.argmax(1)).mean())
    assert agreement >= q["accuracy"]["threshold"] - 1 / len(test)


def test_fused_run_refusals_are_one_clear_line(fused_run, capsys):
    run, _, _ = fused_run
    common = ["--run", str(run), "--no-progress"]
    cases = [
        (["select", *common, "--rule", "trial"], "omit --rule or pass --rule fused"),
        (["select", *common, "--latency-budget-ms", "5"], "latency budget"),
        (["train", *common, "--i", "1", "--j", "1", "--epochs", "1"], "one position per target"),
        (["train", *common, "--preset", "wesad_ecg2ppg", "--epochs", "1"], "paper direction with one target"),
        (["pretrain", *common, "--backbone-config", TINY_PPG], "pretrain each with --key"),
        (["pretrain", *common, "--key", "acc"], "has no target 'acc'"),
    ]
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for argv, match in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err, (argv, err)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing added or removed
