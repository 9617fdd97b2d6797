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


def test_auto_validates_on_the_papers_objective_with_a_warm_start_from_the_current_bridge(bundles, paired_edf,
                                                                                         tmp_path):
    """With source weights, auto makes a closed-form and a gradient candidate (started from the current
    bridge) and scores every bridge by the paper's objective at the source model's last block, recomputed
    here from the bundle's parts for the current bridge."""
    import numpy as np
    import torch

    from calibrate import calibrate
    from calibrate.core import extract_features
    from calibrate.data import load_paired
    from calibrate.torch_tail import load_source_tail
    from calibrate.weights import read_weights
    from edge_bridge.bundle import Bundle

    root = tmp_path / "b.bundle"
    shutil.copytree(bundles["cpu"].root, root)
    report = calibrate(root, [paired_edf], method="auto", epochs=2, min_states=1, dry_run=True)
    assert set(report.candidates) == {"closed-form", "gradient"}
    assert report.refit_info["gradient"]["warm_start"] == "v0001"

    b = Bundle.load(root)
    m = b.manifest
    data = load_paired([paired_edf], m.source, m.target)
    assert report.validation == "folds" and report.windows["validate"] == len(data)
    val = np.arange(len(data))  # out of fold: every window validated, the current bridge on all of them
    feats = extract_features(b, data)
    tail = load_source_tail(b.source_model_path, m.positions["j"])
    z_hat = read_weights(root / b.current_bridge.weights_file).forward(feats.h[val]).astype(np.float32)
    with torch.no_grad():
        a = tail(torch.as_tensor(z_hat)).flatten(1)
        y = tail(torch.as_tensor(feats.z[val])).flatten(1)
    want = float((1 - torch.nn.functional.cosine_similarity(a, y, dim=1)).mean())
    assert report.current.alignment_loss == pytest.approx(want, rel=1e-3, abs=1e-4)
