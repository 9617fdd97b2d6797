"""Paired windows of several target modalities (a fused bridge's data): lockstep windows, one
preprocessing path, and the single-target path unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from edge_bridge.errors import SpecError
from edge_bridge.recordings.dataset import recording_files
from edge_bridge.recordings.paired import windows_from_files
from edge_bridge.signals import cut_windows, process_windows
from edge_bridge.simulate import simulate_dataset
from edge_bridge.tasks import WRIST_EDA, get_task


@pytest.fixture(scope="module")
def stress_files(tmp_path_factory):
    data = tmp_path_factory.mktemp("sim")
    simulate_dataset(data, "stress", subjects=2, minutes=3, seed=0)
    return recording_files(data)


def test_eda_windowed_in_lockstep_through_the_one_path(stress_files):
    task = get_task("stress-binary+eda")
    assert task.target_keys == ("target", "eda") and task.targets == (task.target, WRIST_EDA)
    fused = windows_from_files(stress_files, task.source, task.target, task.classes,
                               label_map=task.label_map, extra_targets=task.extra_targets)
    single = windows_from_files(stress_files, task.source, task.target, task.classes,
                                label_map=task.label_map)
    assert set(fused.x) == {"source", "target", "eda"}
    assert set(single.x) == {"source", "target"}
    assert fused.x["eda"].shape == (len(fused), 1, 240)  # 60 s at 4 Hz
    # lockstep: every kept window has all modalities, and the EDA window is the one cut at the same start
    keep = np.isin(single.starts, fused.starts)
    for subject in np.unique(fused.subjects):
        f = fused.subjects == subject
        s = single.subjects == subject
        common = np.isin(single.starts[s], fused.starts[f])
        np.testing.assert_array_equal(single.x["target"][s][common],
                                      fused.x["target"][f][np.isin(fused.starts[f], single.starts[s])])
    assert keep.any()
    from edge_bridge.recordings.dataset import read_labelled

    rec = read_labelled(stress_files[0], None, [task.source, task.target, WRIST_EDA])
    data, _ = rec.data(WRIST_EDA.channels)
    raw, starts = cut_windows(data, WRIST_EDA)
    first = fused.subjects == rec.subject
    k = int(np.flatnonzero(np.isclose(starts / WRIST_EDA.input_rate, fused.starts[first][0]))[0])
    np.testing.assert_allclose(fused.x["eda"][first][0], process_windows(raw[k:k + 1], WRIST_EDA)[0],
                               rtol=1e-6, atol=1e-6)


def test_extra_targets_must_share_window_and_differ():
    base = get_task("stress")
    with pytest.raises(SpecError, match="lockstep"):
        base.__class__(**{**base.__dict__, "name": "x",
                          "extra_targets": (WRIST_EDA.__class__(**{**WRIST_EDA.__dict__, "hop_s": 10}),)})
    with pytest.raises(SpecError, match="distinct modalities"):
        base.__class__(**{**base.__dict__, "name": "x", "extra_targets": (WRIST_EDA, WRIST_EDA)})
    short = get_task("stress+eda").with_window(30, 5)
    assert short.extra_targets[0].window_s == 30 and short.target.window_s == 30
