"""The physiological quality gate: still wrists pass, stair climbing is caught, by name, cheaply.

Windows come from the simulator: the same subject still (``motion=0``, wrist accelerometer present) and
climbing stairs (``motion=1``: the artefact is added to the same beats), cut with the stress task's own specs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edge_bridge.signals import (
    Preprocessing,
    Quality,
    QualityLimits,
    assess_quality,
    cut_windows,
    describe_flags,
)
from edge_bridge.signals.physio import beat_template_sqi, motion_energy
from edge_bridge.simulate import simulate_subject
from edge_bridge.tasks import TASKS

TASK = TASKS["stress"].with_window(30, 10)
ACC = ["ACC_X", "ACC_Y", "ACC_Z"]


@pytest.fixture(scope="module")
def recordings():
    return {m: simulate_subject("stress", "S02", minutes=4, seed=0, motion=m) for m in (0.0, 1.0)}


def _cut(rec, spec, names=None):
    data, rate = rec.data(names or list(spec.channels))
    if names:
        spec = Preprocessing("acc", tuple(names), input_rate=rate, output_rate=rate, window_s=spec.window_s,
                             hop_s=spec.hop_s)
    return cut_windows(data, spec)[0]


def test_still_windows_pass_and_moving_ppg_is_caught(recordings):
    spec = TASK.target
    still = assess_quality(_cut(recordings[0.0], spec), spec)
    moving = assess_quality(_cut(recordings[1.0], spec), spec)
    assert (still == 0).mean() >= 0.9
    assert (moving & Quality.LOW_SQI).astype(bool).mean() >= 0.9
    assert describe_flags(moving[0], spec.channels) == "PPG: low_sqi"
    # bare limits know no rate: the old checks only, and a stair-climbing PPG is not broken
    assert not (assess_quality(_cut(recordings[1.0], spec), spec.quality) & Quality.LOW_SQI).any()


def test_chest_ecg_keeps_its_beats_under_movement(recordings):
    spec = TASK.source
    sqi = beat_template_sqi(_cut(recordings[1.0], spec)[:, 0], spec.input_rate, "ecg")
    assert np.median(sqi) > 0.9
    assert (assess_quality(_cut(recordings[0.0], spec), spec) == 0).mean() >= 0.9


def test_accelerometer_motion_flags_every_channel_of_the_window(recordings):
    spec = TASK.target
    for m, expect in ((0.0, False), (1.0, True)):
        raw, acc = _cut(recordings[m], spec), _cut(recordings[m], spec, ACC)
        energy = motion_energy(acc, 32.0)
        assert ((energy > spec.quality.max_motion) == expect).all(), energy
        flags = assess_quality(raw, spec, acc=acc, acc_rate=32.0)
        assert (((flags & Quality.MOTION) != 0) == expect).all()
    with pytest.raises(ValueError, match="acc_rate"):
        assess_quality(raw, spec, acc=acc)
    with pytest.raises(ValueError, match="do not match"):
        assess_quality(raw, spec, acc=acc[:1], acc_rate=32.0)


def test_broken_channels_are_not_also_scored():
    spec = TASK.target
    flat = np.zeros((2, 1, spec.window_samples))
    assert (assess_quality(flat, spec) == Quality.FLAT).all()


def test_no_beats_no_score():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((3, 64 * 30))
    assert (beat_template_sqi(noise, 64.0, "ppg") < 0.5).all()
    with pytest.raises(ValueError, match="works on ppg, ecg"):
        beat_template_sqi(noise, 64.0, "eeg")


def test_limits_validate_and_old_manifests_get_the_modality_defaults():
    with pytest.raises(Exception, match="min_beat_sqi"):
        QualityLimits(flat_ptp=0.1, max_abs=1.0, min_beat_sqi=1.5)
    with pytest.raises(Exception, match="max_motion"):
        QualityLimits(flat_ptp=0.1, max_abs=1.0, max_motion=0)
    d = TASK.target.to_dict()
    d["quality"] = {"flat_ptp": 0.5, "max_abs": 3.0, "clip_fraction": 0.1}  # written before the gate
    spec = Preprocessing.from_dict(d)
    assert spec.quality.flat_ptp == 0.5 and spec.quality.min_beat_sqi == TASK.target.quality.min_beat_sqi
    assert spec.quality.max_motion == TASK.target.quality.max_motion
    d["quality"]["from_the_future"] = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Preprocessing.from_dict(d).quality == spec.quality
    assert any("from_the_future" in str(w.message) for w in caught)


def test_motion_option_adds_to_the_same_recording(recordings):
    plain = simulate_subject("stress", "S02", minutes=4, seed=0)
    still, moving = recordings[0.0], recordings[1.0]
    assert plain.channel_names == ["ECG", "PPG", "RESP", "EDA"]  # no option: what it always produced
    assert still.channel_names == [*plain.channel_names, *ACC]
    for name in plain.channel_names:
        np.testing.assert_array_equal(still.channel(name).data, plain.channel(name).data)
    np.testing.assert_array_equal(moving.channel("EDA").data, plain.channel("EDA").data)
    art = moving.channel("PPG").data - plain.channel("PPG").data
    assert art.std() > plain.channel("PPG").data.std()  # stair climbing: artefact larger than the pulse
    assert moving.meta["motion"]["intensity"] == 1.0
    with pytest.raises(Exception, match="motion must be"):
        simulate_subject("stress", "S02", minutes=4, seed=0, motion=-1)


def test_ecg_index_finds_slow_beats_and_fails_beats_buried_in_noise(recordings):
    sleep = TASKS["sleep"].target  # ECG 200 Hz, 30 s windows; simulated sleep runs near 50 bpm
    raw = _cut(simulate_subject("sleep", "S02", minutes=5, seed=0), sleep)
    assert (assess_quality(raw, sleep) == 0).all()
    spec = TASK.source
    ecg = _cut(recordings[0.0], spec)[:, 0]
    noisy = ecg + 2 * ecg.std() * np.random.default_rng(0).standard_normal(ecg.shape)
    assert (beat_template_sqi(noisy, spec.input_rate, "ecg") < spec.quality.min_beat_sqi).all()
