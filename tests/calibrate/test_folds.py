"""Out-of-fold validation: every window validated once, no fit window sharing a sample with its block,
flickers are no states, the gradient length chosen from one run's checkpoints, and the fallback."""

from __future__ import annotations

import numpy as np
import pytest

from calibrate.core import calibrate, decided_states, extract_features, gradient_ladder, score_bridge
from calibrate.data import MIN_FIT_WINDOWS, load_paired, purged_folds
from calibrate.errors import CalibrationError
from calibrate.refit import closed_form_refit
from calibrate.weights import read_weights
from deploy.engines import load_engine
from edge_bridge.bundle import Bundle
from edge_bridge.cli import main
from edge_bridge.recordings import read_recording


def _data(bundle, recs):
    m = Bundle.load(bundle).manifest
    return load_paired(recs, m.source, m.target), m.source


def test_every_window_is_validated_once_and_no_fit_window_overlaps_its_block(bundle, paired_edf):
    rec = read_recording(paired_edf)
    data, spec = _data(bundle, [rec.copy().crop(0, 150), rec.copy().crop(150)])  # two recordings
    splits = purged_folds(data, spec, 4)
    assert splits is not None and len(splits) == 4
    validated = np.concatenate([s.validate for s in splits])
    assert sorted(validated) == list(range(len(data)))  # each exactly once
    starts, group = data.windows.starts, data.recording
    for s in splits:
        assert not set(s.fit) & set(s.validate) and len(s.fit) >= MIN_FIT_WINDOWS
        for f in s.fit:  # a fit window shares no sample with any validation window of its own recording
            same = s.validate[group[s.validate] == group[f]]
            assert np.all(np.abs(starts[same] - starts[f]) >= spec.window_s - 1e-9)
        dropped = len(data) - len(s.validate) - len(s.fit)
        assert dropped == s.purged and s.purged > 0  # 10 s windows on a 5 s hop: neighbours are purged


def test_too_few_windows_for_folds(bundle, paired_edf):
    """12 windows (65 s, 10 s windows on a 5 s hop) leave a middle fold 7 fit windows after its purge."""
    data, spec = _data(bundle, [read_recording(paired_edf).crop(0, 65)])
    assert purged_folds(data, spec, 4) is None
    with pytest.raises(CalibrationError, match="--folds"):
        purged_folds(data, spec, 1)


def test_a_flicker_is_no_state():
    ref = np.array([0] * 60 + [1] * 1 + [2] * 39)
    assert list(decided_states(ref)) == [0, 2]  # 1 window of 100 is under 5 %
    assert list(decided_states(np.array([0] * 8 + [1] * 2))) == [0, 1]  # 2 of 10 is a state


def test_gradient_ladder():
    assert gradient_ladder(30) == (2, 5, 10, 20, 30)
    assert gradient_ladder(7) == (2, 5, 7)
    assert gradient_ladder(1) == (1,)


def test_one_gradient_run_keeps_the_weights_of_shorter_runs():
    torch = pytest.importorskip("torch")
    from calibrate.refit import gradient_refit
    from calibrate.weights import PrototypeWeights

    rng = np.random.default_rng(0)
    start = PrototypeWeights(rng.standard_normal((2, 6)), rng.standard_normal((4 * 3, 2)),
                             rng.standard_normal((5, 4)), 3)
    H = rng.standard_normal((40, 6)).astype(np.float32)
    torch.manual_seed(0)
    tail = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 5, 4), torch.nn.Tanh())
    Y = rng.standard_normal((40, 4)).astype(np.float32)
    long = gradient_refit(H, Y, start, tail, epochs=5, checkpoints=(2, 5, 9))
    assert sorted(long.ladder) == [2, 5] and long.ladder[5] is long.weights
    short = gradient_refit(H, Y, start, tail, epochs=2)
    np.testing.assert_allclose(long.ladder[2].A, short.weights.A, rtol=1e-6)
    np.testing.assert_allclose(long.ladder[2].B, short.weights.B, rtol=1e-6)
    assert not np.allclose(long.ladder[2].A, long.weights.A)


def test_calibrate_validates_out_of_fold_by_default(bundle, paired_edf):
    report = calibrate(bundle, [paired_edf], dry_run=True)
    w = report.windows
    assert report.validation == "folds" and w["folds"] == 4
    assert w["validate"] == w["paired"] == w["fit"]  # every window validated; the winner refits on all
    b = Bundle.load(bundle)
    data, _ = _data(bundle, [paired_edf])
    feats = extract_features(b, data)
    every = np.arange(len(data))
    with load_engine(b.part_path("source_back"), "cpu") as sb:
        want = score_bridge(b.bridge_path(), sb, feats, every)
    assert report.current.to_dict() == pytest.approx(want.to_dict(), abs=1e-6)
    # out of fold, not in sample: the closed form fitted on all windows fits them better than its folds did
    m = b.manifest
    current = read_weights(b.root / b.current_bridge.weights_file)
    in_sample = closed_form_refit(feats.h, feats.z, current, starts=data.windows.starts,
                                  groups=data.recording, window_s=m.source.window_s).weights
    z_hat = in_sample.forward(feats.h)
    a, z = z_hat.reshape(len(z_hat), -1), feats.z.reshape(len(z_hat), -1)
    cos = (a * z).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(z, axis=1)
    in_sample_loss = float(np.mean(1 - cos))
    assert report.candidates["closed-form"].alignment_loss > in_sample_loss


def test_short_recordings_fall_back_to_the_holdout_and_say_so(bundle, paired_edf):
    report = calibrate(bundle, [read_recording(paired_edf).crop(0, 65)], dry_run=True, min_states=1)
    assert report.validation == "holdout" and report.windows["validate"] < report.windows["paired"]
    assert any("too few for 4 folds" in n for n in report.notes)


def test_cli_says_how_it_validated(bundle, paired_edf, capsys):
    assert main(["calibrate", "--bundle", str(bundle), "--paired", str(paired_edf), "--dry-run",
                 "--folds", "3"]) == 0
    assert "validated out of fold in 3 blocks" in capsys.readouterr().err
    code = main(["calibrate", "--bundle", str(bundle), "--paired", str(paired_edf), "--validation", "tail"])
    assert code == 2 and "--validation" in capsys.readouterr().err
