"""EDF+ round trips of multi-rate recordings, read back by us and by an independent reader (pyedflib)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyedflib
import pytest

from edge_bridge.errors import RecordingError
from edge_bridge.recordings import Annotation, Channel, Recording, read_edf, write_edf


def _recording(seconds: int = 20) -> Recording:
    rng = np.random.default_rng(0)
    return Recording(
        [
            Channel("ECG", rng.standard_normal(250 * seconds), 250, "ecg", "mV"),
            Channel("PPG", rng.standard_normal(64 * seconds), 64, "ppg", "a.u."),
            Channel("EDA", 5 + rng.random(4 * seconds), 4, "eda", "uS"),
        ],
        [Annotation(0, 8, "baseline"), Annotation(8, 12, "stress")],
        start_time=dt.datetime(2025, 3, 4, 10, 11, 12),
        subject="S07",
    )


def test_round_trip_keeps_rates_modalities_labels(tmp_path):
    rec = _recording()
    path = write_edf(rec, tmp_path / "s.edf")
    back = read_edf(path)
    assert back.channel_names == ["ECG", "PPG", "EDA"]
    assert [c.rate for c in back.channels] == [250, 64, 4]
    assert [c.modality for c in back.channels] == ["ecg", "ppg", "eda"]
    assert [c.unit for c in back.channels] == ["mV", "a.u.", "uS"]
    assert back.annotations == rec.annotations
    assert back.subject == "S07" and back.start_time == rec.start_time
    for a, b in zip(rec.channels, back.channels, strict=True):
        # 16-bit EDF: error below one digital step of the channel's range
        step = (a.data.max() - a.data.min()) / 65535
        assert np.max(np.abs(a.data - b.data)) <= step


def test_independent_reader_sees_the_same_file(tmp_path):
    path = write_edf(_recording(), tmp_path / "s.edf")
    with pyedflib.EdfReader(str(path)) as f:
        assert f.getSignalLabels() == ["ECG", "PPG", "EDA"]
        np.testing.assert_array_equal(f.getSampleFrequencies(), [250, 64, 4])
        onsets, durations, texts = f.readAnnotations()
        assert list(texts) == ["baseline", "stress"]
        np.testing.assert_allclose(onsets, [0, 8])
        np.testing.assert_allclose(durations, [8, 12])


@pytest.mark.parametrize("cut", [3000, 256 * 4 + 100])
def test_truncated_file_is_an_error_naming_it(tmp_path, cut):
    path = write_edf(_recording(), tmp_path / "s.edf")
    short = tmp_path / "short.edf"
    short.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(RecordingError, match=r"short\.edf"):
        read_edf(short)


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "bad.edf"
    bad.write_bytes(b"not an edf" * 50)
    with pytest.raises(RecordingError, match="not a readable EDF"):
        read_edf(bad)
    with pytest.raises(RecordingError, match="no such file"):
        read_edf(tmp_path / "absent.edf")


def test_write_refuses_nan_and_unequal_durations_and_keeps_old_file(tmp_path):
    path = write_edf(_recording(), tmp_path / "s.edf")
    before = path.read_bytes()
    rec = _recording()
    rec.channel("PPG").data[5] = np.nan
    with pytest.raises(RecordingError, match="NaN"):
        write_edf(rec, path)
    rec = _recording()
    rec.channel("PPG").data = rec.channel("PPG").data[:-64]
    with pytest.raises(RecordingError, match="equal duration"):
        write_edf(rec, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.edf"]  # no temp files left behind


def test_crop_and_label_lookup():
    rec = _recording().crop(5, 15)
    assert rec.duration == pytest.approx(10)
    assert rec.annotations == [Annotation(0, 3, "baseline"), Annotation(3, 7, "stress")]
    assert rec.start_time == dt.datetime(2025, 3, 4, 10, 11, 17)
    classes = ("baseline", "stress")
    assert rec.label_at(0, 3, classes) == 0
    assert rec.label_at(2, 4, classes) == -1  # straddles two labels
    assert rec.label_at(4, 9, classes) == 1


def test_recording_validation():
    with pytest.raises(RecordingError, match="duplicates"):
        Recording([Channel("A", np.zeros(4), 1, "ecg"), Channel("A", np.zeros(4), 1, "ecg")])
    with pytest.raises(ValueError, match="modality must be one of"):
        Channel("A", np.zeros(4), 1, "ekg")
    with pytest.raises(ValueError, match="different rates"):
        _recording().data(["ECG", "PPG"])
