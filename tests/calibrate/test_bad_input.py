"""Every bad input of the issue gives one clear CalibrationError and leaves the bundle byte-for-byte."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from scipy.signal import resample_poly

from calibrate.core import calibrate
from calibrate.data import minimum_windows
from calibrate.errors import CalibrationError
from edge_bridge.recordings import read_recording
from edge_bridge.recordings.recording import Channel
from edge_bridge.tasks import TASKS

TASK = TASKS["stress"].with_window(10, 5)
MIN_S = TASK.source.window_s + (minimum_windows(TASK.source, 0.2) - 1) * TASK.source.hop_s


def _too_little(rec):
    return [rec.crop(0, MIN_S - TASK.source.hop_s)]


def _missing_modality(rec):
    return [rec.pick(["ECG"])]


def _flat_target(rec):
    ppg = rec.channel("PPG")
    ppg.data = np.full_like(ppg.data, 0.5)
    return [rec]


def _too_slow(rec):  # 16 Hz cannot carry the PPG band up to 8 Hz (any faster rate is resampled)
    ppg = rec.channel("PPG")
    rec.channels[rec.channel_names.index("PPG")] = Channel("PPG", resample_poly(ppg.data, 1, 4), 16.0, "ppg")
    return [rec]


def _no_overlap(rec):
    ecg, ppg = rec.copy().pick(["ECG"]), rec.copy().pick(["PPG"])
    ppg.start_time = rec.start_time + dt.timedelta(hours=1)
    return [ecg, ppg]


def _short_overlap(rec):
    ecg, ppg = rec.copy().pick(["ECG"]), rec.copy().pick(["PPG"])
    ppg.start_time = rec.start_time + dt.timedelta(seconds=rec.duration - 5)
    return [ecg, ppg]


def _no_start_time(rec):
    ecg, ppg = rec.copy().pick(["ECG"]), rec.copy().pick(["PPG"])
    ppg.start_time = None
    return [ecg, ppg]


# name -> (make recordings from the 5 min paired recording, words the message must contain)
CASES = {
    "too little data": (_too_little, ["too little paired data", "Record at least"]),
    "one modality missing": (_missing_modality, ["one modality missing", "target signal (ppg)"]),
    "flat target": (_flat_target, ["quality gate", "target ppg flat in"]),
    "rate too low for the band": (_too_slow, ["16 Hz is too slow", "above 16 Hz"]),
    "no time overlap": (_no_overlap, ["do not overlap in time"]),
    "overlap shorter than a window": (_short_overlap, ["overlap by only 5.0 s"]),
    "no start time to align by": (_no_start_time, ["no start time"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_recordings_change_nothing(case, bundle, paired_edf, snapshot):
    make, words = CASES[case]
    recs = make(read_recording(paired_edf))
    before = snapshot(bundle)
    with pytest.raises(CalibrationError) as err:
        calibrate(bundle, recs)
    for w in words:
        assert w in str(err.value), str(err.value)
    assert snapshot(bundle) == before


def test_the_minimum_is_enough(bundle, paired_edf):
    rec = read_recording(paired_edf).crop(0, MIN_S)
    report = calibrate(bundle, [rec], dry_run=True)
    assert report.windows["paired"] == minimum_windows(TASK.source, 0.2)
    assert report.windows["fit"] >= 8 and report.windows["validate"] >= 3


def test_bundle_without_source_front(tmp_path, paired_edf, tiny_bundle_factory, snapshot):
    root = tiny_bundle_factory(tmp_path / "nosf.bundle", with_source_front=False)
    before = snapshot(root)
    with pytest.raises(CalibrationError, match="no source_front part"):
        calibrate(root, [paired_edf])
    assert snapshot(root) == before


def test_unreadable_and_bad_options(bundle, paired_edf, tmp_path, snapshot):
    before = snapshot(bundle)
    with pytest.raises(CalibrationError, match="cannot read"):
        calibrate(bundle, [tmp_path / "missing.edf"])
    with pytest.raises(CalibrationError, match="--method"):
        calibrate(bundle, [paired_edf], method="fast")
    with pytest.raises(CalibrationError, match="--holdout"):
        calibrate(bundle, [paired_edf], holdout=1.5)
    with pytest.raises(CalibrationError, match="no paired recordings"):
        calibrate(bundle, [])
    assert snapshot(bundle) == before
