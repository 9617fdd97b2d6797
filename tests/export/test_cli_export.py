"""`edge-bridge export RUN` on a hand-made run directory, and the `edge-bridge bundle` verbs."""

from __future__ import annotations

import json

import numpy as np

from edge_bridge.cli import main


def _windows(tiny, subjects: list[str], per_subject: int, seed: int):
    from edge_bridge.recordings.paired import Windows

    w = tiny.windows(per_subject * len(subjects), seed)
    subj = np.repeat(subjects, per_subject).astype(str)
    return Windows({"source": w.source, "target": w.target}, w.labels, np.arange(len(subj), dtype=float),
                   subj, tuple(tiny.task().classes))


def _make_run(tiny, root):
    """What pretrain/fit-source/train would leave, with the tiny composite's weights."""
    from edge_bridge.models import save_backbone
    from edge_bridge.splits import DEFAULT_FRACTIONS

    run, data = root / "run", root / "data"
    run.mkdir()
    data.mkdir()
    task = tiny.task()
    (run / "run.json").write_text(json.dumps({"task": "stress", "data": str(data), "seed": 0,
                                              "fractions": DEFAULT_FRACTIONS}))
    (run / "splits.json").write_text(json.dumps({"train": ["s1"], "val": ["s2"], "paired": ["s3"],
                                                 "test": ["s4"]}))
    _windows(tiny, ["s1", "s2", "s3", "s4"], 12, 5).save(run / "windows.npz")
    comp = tiny.composite()
    save_backbone(comp.target, run / "target_backbone", meta={"preprocessing": task.target.to_dict()})
    save_backbone(comp.source, run / "source_model", meta={"preprocessing": task.source.to_dict()})
    comp.bridge.save(run / "bridge")
    return run


def test_export_command_then_bundle_verbs(tiny, tmp_path, capsys):
    run = _make_run(tiny, tmp_path)
    cal = tmp_path / "cal.npz"
    _windows(tiny, ["s1", "s2", "s3", "s4"], 10, 6).save(cal)
    out = tmp_path / "stress.bundle"
    code = main(["export", str(run), "-o", str(out), "--calibration-data", str(cal), "--target", "jetson",
                 "--report", "-q"])
    assert code == 0
    text = capsys.readouterr().out
    assert f"edge-bridge deploy --bundle {out}" in text and "agreement with FP32" in text
    assert "per part" in text and "nodes FP32" in text and "fp32 " in text and " ms" in text  # --report
    raw = (out / "manifest.json").read_text()
    m = json.loads(raw)
    assert m["quantization"]["calibration"]["windows_given"] == 30  # s4 (held out) left out
    assert m["quantization"]["accuracy"]["held_out"]["subjects"] == ["s4"]
    # origins are names + sha256: the bundle travels, the builder's file system stays home
    assert str(tmp_path) not in raw and str(tmp_path.resolve()) not in raw
    assert m["report"]["run"]["name"] == "run" and len(m["report"]["run"]["run_json_sha256"]) == 64
    import hashlib

    digest = hashlib.sha256(cal.read_bytes()).hexdigest()
    assert m["quantization"]["calibration"]["origin"] == {"name": "cal.npz", "sha256": digest}

    assert main(["bundle", "verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["bundle", "info", str(out)]) == 0
    assert "target_front" in capsys.readouterr().out
    tar = tmp_path / "b.tar"
    assert main(["bundle", "pack", str(out), "-o", str(tar)]) == 0
    assert main(["bundle", "unpack", str(tar), "-o", str(tmp_path / "copy")]) == 0
    capsys.readouterr()
    assert main(["bundle", "unpack", str(tar), "-o", str(tmp_path / "copy")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "run.json" in err
    assert main(["bundle", "verify", str(tmp_path)]) == 2
    assert "not an edge-bridge bundle" in capsys.readouterr().err


def test_export_reference_data_replaces_the_test_subjects_for_the_drift_reference(tiny, tmp_path):
    """--reference-data: the drift reference comes from the given subjects' windows (their number gives the
    within-session null), not from the run's one test subject; the manifest names no host path."""
    from edge_bridge.bundle import Bundle, read_reference

    run = _make_run(tiny, tmp_path)
    cal, ref_file = tmp_path / "cal.npz", tmp_path / "ref.npz"
    _windows(tiny, ["s1", "s2", "s3", "s4"], 10, 6).save(cal)
    _windows(tiny, ["r1", "r2", "r3"], 70, 7).save(ref_file)  # a minute is 30 hops
    plain, with_ref = tmp_path / "plain.bundle", tmp_path / "ref.bundle"
    for out, extra in ((plain, []), (with_ref, ["--reference-data", str(ref_file)])):
        assert main(["export", "--run", str(run), "-o", str(out), "--calibration-data", str(cal),
                     "--precision", "fp32", "-q", *extra]) == 0
    # s4's 12 windows are too few for a reference at all: the bundle would run without drift detection
    assert Bundle.load(plain).manifest.reference is None
    assert Bundle.load(plain).manifest.report["drift_reference"] == {
        "data": Bundle.load(plain).manifest.report["drift_reference"]["data"], "windows": 12,
        "written": False, "subjects": 1}
    ref = read_reference(Bundle.load(with_ref))
    assert int(ref["windows"][0]) == 210 and int(ref["session_subjects"][0]) == 3
    m = Bundle.load(with_ref).manifest
    assert m.report["drift_reference"]["subjects"] == 3 and m.report["drift_reference"]["windows"] == 210
    assert str(tmp_path) not in (with_ref / "manifest.json").read_text()


def test_export_refuses_reference_data_that_does_not_exist(tiny, tmp_path, capsys):
    run = _make_run(tiny, tmp_path)
    code = main(["export", "--run", str(run), "-o", str(tmp_path / "b"), "--reference-data",
                 str(tmp_path / "nowhere")])
    assert code != 0 and "--reference-data" in capsys.readouterr().err
