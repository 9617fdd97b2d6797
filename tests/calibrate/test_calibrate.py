"""Calibrate end to end on the tiny bundle: accept, keep when not better, dry run, rollback, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from calibrate.core import calibrate, rollback
from calibrate.errors import CalibrationError
from calibrate.weights import read_weights
from edge_bridge.bundle import Bundle
from edge_bridge.cli import main
from edge_bridge.recordings import read_recording
from edge_bridge.recordings.recording import Recording

# The tiny bundle's random fronts leave its bridge family nothing to learn decisions from (out of fold, a
# refit agrees with the source model at chance: tests/calibrate/test_folds.py), so the tests of publishing,
# margins and rollback use the tail holdout, on which this recording's refit validates better.
HOLDOUT = {"validation": "holdout"}


def test_accepts_publishes_and_second_run_keeps(bundle, paired_edf, snapshot):
    report = calibrate(bundle, [paired_edf], **HOLDOUT)
    assert report.accepted and report.new_version == 2 and report.previous_version == 1
    assert report.chosen == "closed-form" and "replaces v0001" in report.verdict
    assert report.windows["fit"] >= 8 and report.windows["validate"] >= 3
    assert report.candidates["closed-form"].alignment_loss < report.current.alignment_loss
    b = Bundle.load(bundle)  # verifies hashes and shapes
    v = b.current_bridge
    assert b.manifest.current_bridge == 2 and v.origin == "calibrate" and v.metrics["method"] == "closed-form"
    assert sorted(b.manifest.bridges) == [1, 2]  # the previous version stays for rollback
    # the published graph computes what its weights say
    w = read_weights(bundle / v.weights_file)
    h = np.random.default_rng(0).standard_normal((4, w.d_in)).astype(np.float32)
    sess = ort.InferenceSession(str(bundle / v.onnx.file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"h": h})[0], w.forward(h), rtol=1e-4, atol=1e-5)
    # the same data again: the same refit, not better by the margin -> nothing changes
    before = snapshot(bundle)
    again = calibrate(bundle, [paired_edf], **HOLDOUT)
    assert not again.accepted and again.new_version is None and again.verdict.startswith("kept v0002")
    assert "not better by the margin" in again.verdict
    assert snapshot(bundle) == before


def test_dry_run_and_strict_margin_write_nothing(bundle, paired_edf, snapshot):
    before = snapshot(bundle)
    dry = calibrate(bundle, [paired_edf], dry_run=True, **HOLDOUT)
    assert not dry.accepted and dry.verdict.startswith("dry run")
    strict = calibrate(bundle, [paired_edf], margin_agreement=1.0, margin_loss=1.0, **HOLDOUT)
    assert not strict.accepted and "not better" in strict.verdict
    assert snapshot(bundle) == before


def test_data_the_source_model_sees_as_too_few_states_keeps_the_bridge(bundle, paired_edf, snapshot):
    """The refusal that protects a bridge from a refit on one state only; asking for more states than the
    task has classes triggers it on any recording."""
    b = Bundle.load(bundle)
    seen = len(b.manifest.classes)
    before = snapshot(bundle)
    report = calibrate(bundle, [paired_edf], min_states=seen + 1)
    assert not report.accepted and report.new_version is None and report.current is None
    assert report.verdict.startswith("kept v0001") and "--min-states" in report.verdict
    assert json.loads(json.dumps(report.to_dict()))["current"] is None  # the JSON report still works
    assert snapshot(bundle) == before
    with pytest.raises(CalibrationError, match="min-states"):
        calibrate(bundle, [paired_edf], min_states=0)


def test_rollback_moves_the_pointer_only(bundle, paired_edf, snapshot):
    with pytest.raises(CalibrationError, match="earliest"):
        rollback(bundle)
    calibrate(bundle, [paired_edf], **HOLDOUT)
    files = set(snapshot(bundle)) - {"manifest.json"}
    assert rollback(bundle) == (2, 1)
    assert Bundle.load(bundle).manifest.current_bridge == 1
    assert set(snapshot(bundle)) - {"manifest.json"} == files  # nothing deleted, nothing rebuilt
    assert rollback(bundle, 2) == (1, 2)
    with pytest.raises(CalibrationError, match="already current"):
        rollback(bundle, 2)
    with pytest.raises(CalibrationError, match="no bridge v0007"):
        rollback(bundle, 7)


def _split_modalities(rec: Recording, target_delay_s: float) -> tuple[Recording, Recording]:
    """ECG-only and PPG-only recordings; the PPG one starts ``target_delay_s`` later (a second device)."""
    import datetime as dt

    ecg = rec.copy().pick(["ECG"])
    ppg = rec.copy().pick(["PPG"]).crop(target_delay_s)
    ppg.meta["source_file"], ecg.meta["source_file"] = "wrist", "chest"
    assert ppg.start_time == rec.start_time + dt.timedelta(seconds=target_delay_s)
    return ecg, ppg


def test_two_recordings_aligned_by_time_stamps(bundle, paired_edf):
    rec = read_recording(paired_edf)
    ecg, ppg = _split_modalities(rec, 30.0)
    report = calibrate(bundle, [ppg, ecg], dry_run=True)  # order does not matter
    one = calibrate(bundle, [rec.copy().crop(30.0)], dry_run=True)
    assert report.windows == one.windows
    got, want = report.candidates["closed-form"].to_dict(), one.candidates["closed-form"].to_dict()
    assert got == pytest.approx(want, abs=1e-4)


def test_cli_calibrate_json_and_rollback(bundle, paired_edf, capsys, tmp_path):
    report_path = tmp_path / "report.json"
    assert main(["calibrate", "--bundle", str(bundle), "--paired", str(paired_edf), "--json",
                 "--validation", "holdout", "--report", str(report_path), "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] and out["new_version"] == 2 and json.loads(report_path.read_text()) == out
    assert main(["calibrate", "--bundle", str(bundle), "--rollback"]) == 0
    assert "v0001 is current (was v0002)" in capsys.readouterr().out
    code = main(["calibrate", "--bundle", str(bundle), "--paired", str(paired_edf), "--method", "gradient"])
    err = capsys.readouterr().err
    assert code == 2 and "--method gradient" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_cli_help_lists_calibrate(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    assert "--rollback" in capsys.readouterr().out
