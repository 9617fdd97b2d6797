"""Paired windows: the same seconds in both modalities, each at its own rate, labels only when unambiguous."""

from __future__ import annotations

import numpy as np
import pytest

from edge_bridge.errors import SignalError
from edge_bridge.recordings import Annotation, Channel, Recording, write_edf
from edge_bridge.recordings.paired import Windows, paired_windows, windows_from_files
from edge_bridge.tasks import get_task

TASK = get_task("stress").with_window(10, 5)


def _rec(seconds=60, subject="S01", hr=1.2):
    t_e = np.arange(250 * seconds) / 250
    t_p = np.arange(64 * seconds) / 64
    rng = np.random.default_rng(len(subject))
    ecg = np.sin(2 * np.pi * hr * t_e) + 0.01 * rng.standard_normal(t_e.size)
    ppg = np.sin(2 * np.pi * hr * (t_p - 0.2)) + 0.01 * rng.standard_normal(t_p.size)
    return Recording(
        [Channel("ECG", ecg, 250, "ecg", "mV"), Channel("PPG", ppg, 64, "ppg")],
        [Annotation(0, 30, "baseline"), Annotation(30, 30, "stress")],
        subject=subject,
    )


def test_windows_align_in_time_and_carry_labels():
    w = paired_windows(_rec(), TASK.source, TASK.target, TASK.classes)
    assert len(w) == 11
    assert w.x["source"].shape == (11, 1, 1000) and w.x["target"].shape == (11, 1, 1250)
    np.testing.assert_allclose(w.starts, np.arange(11) * 5.0)
    # windows [0,10) .. [20,30) baseline, [25,35) mixed -> -1, [30,40).. stress
    assert w.labels.tolist() == [0, 0, 0, 0, 0, -1, 1, 1, 1, 1, 1]
    assert set(w.subjects) == {"S01"}


def test_bad_windows_are_left_out_and_counted():
    rec = _rec()
    rec.channel("PPG").data[64 * 12 : 64 * 13] = np.nan  # second 12: hits windows starting at 5 and 10
    w = paired_windows(rec, TASK.source, TASK.target, TASK.classes)
    assert len(w) == 9 and w.skipped == 2
    assert 5.0 not in w.starts and 10.0 not in w.starts
    assert np.isfinite(w.x["target"]).all()


def test_rate_mismatch_and_missing_channel_are_clear():
    rec = _rec()
    rec.channel("PPG").rate = 128
    with pytest.raises(SignalError, match="sampled at 128 Hz but the ppg spec expects 64 Hz"):
        paired_windows(rec, TASK.source, TASK.target)
    with pytest.raises(ValueError, match=r"no channel\(s\) \['PPG'\]"):
        paired_windows(_rec().pick(["ECG"]), TASK.source, TASK.target)
    with pytest.raises(SignalError, match="same window and hop"):
        paired_windows(_rec(), TASK.source, get_task("stress").target)


def test_files_to_windows_and_npz_round_trip(tmp_path):
    for s in ("S01", "S02"):
        write_edf(_rec(subject=s), tmp_path / f"{s}.edf")
    w = windows_from_files(sorted(tmp_path.glob("*.edf")), TASK.source, TASK.target, TASK.classes)
    assert len(w) == 22 and sorted(set(w.subjects)) == ["S01", "S02"]
    assert len(w.by_subjects(["S02"])) == 11
    w.save(tmp_path / "w.npz")
    back = Windows.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(back.x["target"], w.x["target"])
    np.testing.assert_array_equal(back.labels, w.labels)
    assert back.classes == TASK.classes


def test_a_task_that_merges_conditions_labels_through_its_map():
    """stress-binary: baseline and amusement are one class; the recording keeps its three conditions."""
    binary = get_task("stress-binary").with_window(10, 5)
    rec = _rec()
    rec.annotations = [Annotation(0, 20, "baseline"), Annotation(20, 20, "amusement"),
                       Annotation(40, 20, "stress")]
    w = paired_windows(rec, binary.source, binary.target, binary.classes, binary.label_map)
    assert binary.classes == ("non-stress", "stress")
    # [0,10) [5,15) [10,20) baseline; [15,25) straddles two annotations -> -1 even though both map to
    # non-stress (one annotation must cover the window); [20,30) [25,35) [30,40) amusement; ...
    assert w.labels.tolist() == [0, 0, 0, -1, 0, 0, 0, -1, 1, 1, 1]
    three = paired_windows(rec, TASK.source, TASK.target, TASK.classes)
    assert three.labels.tolist() == [0, 0, 0, -1, 2, 2, 2, -1, 1, 1, 1]
