"""calibrate's gradient path on an exported bundle alone: the source weights it ships suffice (no --run)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="module")
def paired_edf(tmp_path_factory):
    from edge_bridge.recordings import write_edf
    from edge_bridge.simulate import simulate_subject

    rec = simulate_subject("stress", "C01", 3, seed=3)
    return write_edf(rec, tmp_path_factory.mktemp("paired") / "C01.edf")


def test_gradient_steps_from_the_bundles_own_source_weights(bundles, paired_edf, tmp_path):
    from calibrate import calibrate

    root = tmp_path / "b.bundle"
    shutil.copytree(bundles["cpu"].root, root)
    report = calibrate(root, [paired_edf], method="gradient", epochs=2, min_states=1, dry_run=True)
    assert "gradient" in report.candidates and "closed-form" not in report.candidates
    assert any(str(root / "source_model") in n for n in report.notes)
    assert report.refit_info["gradient"]["epochs"] == 2


def test_without_source_weights_gradient_says_what_to_do(tiny, paired_edf, tmp_path):
    from calibrate import calibrate
    from calibrate.errors import CalibrationError

    b = tiny.export(tmp_path / "onnx-only.bundle", precision="fp32", source_weights=False)
    assert b.source_model_path is None and not (b.root / "source_model").exists()
    with pytest.raises(CalibrationError, match=r"--no-source-weights.*pass --run"):
        calibrate(b.root, [paired_edf], method="gradient", min_states=1)
    auto = calibrate(b.root, [paired_edf], method="auto", min_states=1, dry_run=True)
    assert set(auto.candidates) == {"closed-form"} and "closed form only" in auto.notes[0]
