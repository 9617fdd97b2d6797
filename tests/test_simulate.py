"""The simulator: deterministic, EDF-clean, one beat train behind ECG and PPG, classes and subjects differ."""

from __future__ import annotations

import json

import numpy as np
import pyedflib
import pytest
from scipy.signal import butter, find_peaks, sosfiltfilt, welch

from edge_bridge.cli import main
from edge_bridge.errors import EdgeBridgeError, SpecError
from edge_bridge.recordings import read_edf
from edge_bridge.recordings.paired import paired_windows
from edge_bridge.simulate import SimulationError, simulate_dataset, simulate_subject
from edge_bridge.tasks import EEG_CHANNELS, TASKS

STRESS = TASKS["stress"]
SLEEP = TASKS["sleep"]


@pytest.fixture(scope="module")
def cohort():
    """Twelve subjects of six minutes (all three classes each): enough to see population effects, ~1 s."""
    return [simulate_subject("stress", f"S{k:02d}", 6, seed=0) for k in range(1, 13)]


@pytest.fixture(scope="module")
def nights():
    """Two short sleep recordings (compressed cycles: wake and every stage within 20 minutes)."""
    return [simulate_subject("sleep", f"S{k:02d}", 20, seed=0) for k in (1, 2)]


def _bandpass(x: np.ndarray, rate: float, lo: float, hi: float) -> np.ndarray:
    return sosfiltfilt(butter(3, [lo, hi], btype="band", fs=rate, output="sos"), x)


def _r_peaks(rec) -> np.ndarray:
    c = rec.channel("ECG")
    x = _bandpass(c.data, c.rate, 5.0, 30.0)
    peaks, _ = find_peaks(x, distance=int(0.3 * c.rate), height=0.4 * np.percentile(x, 99.5))
    return peaks / c.rate


def _ppg_peaks(rec) -> np.ndarray:
    c = rec.channel("PPG")
    x = _bandpass(c.data, c.rate, 0.5, 8.0)
    peaks, _ = find_peaks(x, distance=int(0.3 * c.rate), prominence=0.6 * np.median(np.abs(x)))
    return peaks / c.rate


def _class_mask(rec, times: np.ndarray, label: str, settle_s: float = 20.0) -> np.ndarray:
    """Times inside blocks of ``label``, leaving out the first seconds while physiology ramps."""
    mask = np.zeros(len(times), dtype=bool)
    for a in rec.annotations:
        if a.label == label:
            mask |= (times >= a.onset + settle_s) & (times < a.onset + a.duration)
    return mask


def _mean_hr(rec, label: str) -> float:
    beats = rec.meta["r_peaks_s"]
    rr = np.diff(beats)
    return float(60.0 / rr[_class_mask(rec, beats[1:], label)].mean())


# --- determinism and format --------------------------------------------------------------------------
@pytest.mark.parametrize("task, minutes", [("stress", 3), ("sleep", 1.5)])
def test_same_seed_gives_identical_arrays_and_other_seeds_differ(task, minutes):
    a = simulate_subject(task, "S01", minutes, seed=5)
    b = simulate_subject(task, "S01", minutes, seed=5)
    c = simulate_subject(task, "S01", minutes, seed=6)
    d = simulate_subject(task, "S02", minutes, seed=5)
    for ca, cb, cc, cd in zip(a.channels, b.channels, c.channels, d.channels, strict=True):
        np.testing.assert_array_equal(ca.data, cb.data)
        assert not np.allclose(ca.data, cc.data)
        assert not np.allclose(ca.data, cd.data)
    assert a.annotations == b.annotations and a.start_time == b.start_time


def test_channels_rates_and_units_match_the_task_presets():
    rec = simulate_subject("stress", "S01", 3, seed=0)
    layout = {c.name: (c.modality, c.rate, c.unit) for c in rec.channels}
    assert layout == {"ECG": ("ecg", STRESS.source.input_rate, "mV"),
                      "PPG": ("ppg", STRESS.target.input_rate, "a.u."),
                      "RESP": ("resp", 32.0, "a.u."), "EDA": ("eda", 4.0, "uS")}
    assert rec.subject == "S01" and rec.start_time is not None
    assert rec.duration == pytest.approx(180.0)
    night = simulate_subject("sleep", "S01", 1, seed=0)
    assert night.channel_names == [*EEG_CHANNELS, "ECG"]
    for c in night.channels:
        assert c.rate == SLEEP.source.input_rate == SLEEP.target.input_rate
        assert (c.modality, c.unit) == (("ecg", "mV") if c.name == "ECG" else ("eeg", "uV"))
    assert night.labels == ["sleep", "wake"]


@pytest.mark.parametrize("minutes", [3, 4, 6, 10, 25])
def test_every_class_gets_whole_blocks_covering_the_recording(minutes):
    rec = simulate_subject("stress", "S07", minutes, seed=3)
    assert rec.labels == sorted(STRESS.classes)
    ends = [a.onset + a.duration for a in rec.annotations]
    assert rec.annotations[0].onset == 0 and ends[-1] == pytest.approx(minutes * 60)
    assert all(a.onset == pytest.approx(e) for a, e in zip(rec.annotations[1:], ends, strict=False))
    assert all(a.duration >= STRESS.source.window_s for a in rec.annotations)
    assert rec.annotations[0].label == "baseline"


def test_edf_round_trip_opens_in_pyedflib(tmp_path):
    paths = simulate_dataset(tmp_path, task="stress", subjects=2, minutes=3, seed=0)
    assert [p.name for p in paths] == ["S01.edf", "S02.edf"]
    original = simulate_subject("stress", "S01", 3, seed=0)
    with pyedflib.EdfReader(str(paths[0])) as f:
        labels = f.getSignalLabels()
        assert labels == ["ECG", "PPG", "RESP", "EDA"]
        assert [f.getSampleFrequency(i) for i in range(4)] == [250, 64, 32, 4]
        assert [f.getPhysicalDimension(i) for i in range(4)] == ["mV", "a.u.", "a.u.", "uS"]
        onsets, durations, texts = f.readAnnotations()
        for i, c in enumerate(original.channels):
            step = np.ptp(c.data) / 65535
            np.testing.assert_allclose(f.readSignal(i), c.data, atol=2 * step)
    assert list(texts) == [a.label for a in original.annotations]
    np.testing.assert_allclose(onsets, [a.onset for a in original.annotations])
    np.testing.assert_allclose(durations, [a.duration for a in original.annotations])
    back = read_edf(paths[0])
    assert back.subject == "S01" and back.annotations == original.annotations

    info = json.loads((tmp_path / "dataset.json").read_text())
    assert info["task"] == "stress" and info["classes"] == list(STRESS.classes) and info["seed"] == 0
    assert [s["subject"] for s in info["subjects"]] == ["S01", "S02"]
    truth = info["subjects"][0]["parameters"]
    assert 0.15 <= truth["ptt_s"] <= 0.35 and 45 <= truth["hr_rest_bpm"] <= 100
    assert set(info["subjects"][0]["heart_rate_bpm_per_class"]) == set(STRESS.classes)


def test_sleep_edf_carries_wake_and_sleep_epochs(tmp_path):
    (path,) = simulate_dataset(tmp_path, task="sleep", subjects=1, minutes=2, seed=0, progress=True)
    with pyedflib.EdfReader(str(path)) as f:
        assert f.getSignalLabels() == [*EEG_CHANNELS, "ECG"]
        assert all(f.getSampleFrequency(i) == 200 for i in range(7))
        _, durations, texts = f.readAnnotations()
    assert set(texts) == {"wake", "sleep"} and np.allclose(durations, 30.0)
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert len(info["subjects"][0]["stages"]) == 4


def test_leftover_recordings_in_the_folder_are_reported(tmp_path, caplog):
    simulate_dataset(tmp_path, subjects=2, minutes=3, seed=0)
    with caplog.at_level("WARNING", logger="edge_bridge.simulate"):
        simulate_dataset(tmp_path, subjects=1, minutes=3, seed=1)
    assert "not from this run" in caplog.text and "S02.edf" in caplog.text
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert [s["subject"] for s in info["subjects"]] == ["S01"] and info["seed"] == 1


# --- physiology --------------------------------------------------------------------------------------
def test_one_beat_train_drives_ecg_and_ppg(cohort):
    """Peaks detected independently in ECG and PPG pair up beat by beat, one pulse-transit time apart.

    Beats within motion bursts are left out: there the wrist PPG is unreadable, as it is on a person.
    """
    for rec in cohort[:6]:
        r, p = _r_peaks(rec), _ppg_peaks(rec)
        moving = np.zeros(len(r), dtype=bool)
        for onset, duration in rec.meta["motion_s"]:
            moving |= (r > onset - 1.0) & (r < onset + duration + 1.0)
        # the R-peak detector finds the simulated beats
        true = rec.meta["r_peaks_s"]
        assert np.mean(np.abs(r[~moving, None] - true[None, :]).min(axis=1) < 0.02) > 0.97
        paired = np.full(len(r), np.nan)
        for k, t in enumerate(r):
            candidates = p[(p > t + 0.1) & (p < t + 0.45)]
            if len(candidates) == 1 and not moving[k]:
                paired[k] = candidates[0]
        rr, pp = np.diff(r), np.diff(paired)
        ok = np.isfinite(pp)
        assert ok.mean() > 0.5
        assert np.corrcoef(rr[ok], pp[ok])[0, 1] > 0.9, rec.subject
        lag = np.nanmedian(paired - r)
        assert 0.15 <= lag <= 0.35
        assert lag == pytest.approx(rec.meta["parameters"]["ptt_s"], abs=0.03)


def test_stress_raises_heart_rate_and_skin_conductance_and_lowers_hrv(cohort):
    hr = np.array([[_mean_hr(rec, c) for c in ("baseline", "stress", "amusement")] for rec in cohort])
    assert (hr[:, 1] > hr[:, 0]).mean() >= 0.8
    assert (hr[:, 1] - hr[:, 0]).mean() > 4.0
    rmssd, eda, ppg_amp = [], [], []
    for rec in cohort:
        beats = rec.meta["r_peaks_s"]
        d = np.diff(np.diff(beats))
        row = []
        for label in ("baseline", "stress"):
            m = _class_mask(rec, beats[2:], label)
            row.append(np.sqrt(np.mean(d[m] ** 2)))
        rmssd.append(row)
        e = rec.channel("EDA")
        t = np.arange(len(e.data)) / e.rate
        eda.append([e.data[_class_mask(rec, t, c, 40.0)].mean() for c in ("baseline", "stress")])
        ppg = rec.channel("PPG")
        t = np.arange(len(ppg.data)) / ppg.rate
        x = _bandpass(ppg.data, ppg.rate, 0.5, 8.0)
        ppg_amp.append([np.percentile(x[_class_mask(rec, t, c)], 95) for c in ("baseline", "stress")])
    rmssd, eda, ppg_amp = np.array(rmssd), np.array(eda), np.array(ppg_amp)
    assert (rmssd[:, 1] < rmssd[:, 0]).mean() >= 0.8
    assert (eda[:, 1] > eda[:, 0]).mean() >= 0.8
    assert (ppg_amp[:, 1] < ppg_amp[:, 0]).mean() >= 0.6


def test_breathing_is_faster_under_stress(cohort):
    faster = []
    for rec in cohort:
        c = rec.channel("RESP")
        t = np.arange(len(c.data)) / c.rate
        x = _bandpass(c.data, c.rate, 0.08, 1.0)
        rates = []
        for label in ("baseline", "stress"):
            m = _class_mask(rec, t, label)
            f, pxx = welch(np.where(m, x, 0.0), c.rate, nperseg=int(64 * c.rate))
            rates.append(f[np.argmax(pxx)])
        faster.append(rates[1] > rates[0])
    assert np.mean(faster) >= 0.7


def test_subjects_differ_at_rest(cohort):
    resting = np.array([_mean_hr(rec, "baseline") for rec in cohort])
    assert resting.std() > 4.0 and np.ptp(resting) > 12.0
    ptt = np.array([rec.meta["parameters"]["ptt_s"] for rec in cohort])
    assert np.ptp(ptt) > 0.05
    r_amp = np.array([np.percentile(rec.channel("ECG").data, 99.5) for rec in cohort])
    assert np.ptp(r_amp) > 0.4


def test_heart_rate_alone_does_not_separate_classes_across_subjects(cohort):
    """A classifier on window heart rate, trained on some subjects, stays far from perfect on others."""
    from sklearn.linear_model import LogisticRegression

    def features(rec):
        beats = rec.meta["r_peaks_s"]
        x, y = [], []
        for t in np.arange(0.0, rec.duration - 30.0 + 1e-9, 10.0):
            label = rec.label_at(t, t + 30.0, STRESS.classes)
            if label >= 0:
                x.append(60.0 / np.diff(beats[(beats >= t) & (beats < t + 30.0)]).mean())
                y.append(label)
        return x, y

    parts = [features(rec) for rec in cohort]
    x_train = np.concatenate([p[0] for p in parts[:6]])[:, None]
    y_train = np.concatenate([p[1] for p in parts[:6]])
    x_test = np.concatenate([p[0] for p in parts[6:]])[:, None]
    y_test = np.concatenate([p[1] for p in parts[6:]])
    score = LogisticRegression().fit(x_train, y_train).score(x_test, y_test)
    assert score < 0.8


def test_most_windows_pass_the_quality_gate(cohort):
    task = STRESS.with_window(10, 5)
    kept = skipped = 0
    seen = set()
    for rec in cohort[:4]:
        w = paired_windows(rec, task.source, task.target, task.classes)
        kept, skipped = kept + len(w), skipped + w.skipped
        seen |= set(w.labels.tolist())
    assert kept / (kept + skipped) > 0.9
    assert {0, 1, 2} <= seen
    for rec in cohort:
        assert np.abs(rec.channel("ECG").data).max() < 20.0


def test_sleep_eeg_has_alpha_in_wake_and_delta_in_sleep_and_heart_slows(nights):
    for rec in nights:
        assert set(rec.labels) == {"wake", "sleep"}
        wake = np.array([a.label == "wake" for a in rec.annotations])
        assert 0 < wake.sum() < len(wake)
        x, rate = rec.data(EEG_CHANNELS)
        epochs = x[:, : len(wake) * int(30 * rate)].reshape(len(EEG_CHANNELS), len(wake), int(30 * rate))
        f, pxx = welch(epochs, rate, nperseg=int(4 * rate), axis=-1)
        alpha = pxx[EEG_CHANNELS.index("O1-A2")][:, (f >= 8.0) & (f < 12.0)].mean(axis=-1)
        delta = pxx[EEG_CHANNELS.index("F3-A2")][:, (f >= 0.5) & (f < 2.0)].mean(axis=-1)
        assert alpha[wake].mean() > 2.0 * alpha[~wake].mean()
        assert delta[~wake].mean() > 2.0 * delta[wake].mean()
        beats = rec.meta["r_peaks_s"]
        epoch_of_beat = (beats[1:] // 30).astype(int)
        hr = 60.0 / np.diff(beats)
        assert hr[wake[epoch_of_beat]].mean() > hr[~wake[epoch_of_beat]].mean() + 2.0
        stages = rec.meta["stages"]
        assert {"W", "N2", "N3", "REM"} <= set(stages)


def test_sleep_eeg_channels_correlate_by_distance(nights):
    x, rate = nights[0].data(EEG_CHANNELS)
    corr = np.corrcoef(_bandpass(x, rate, 0.3, 35.0))
    f3, c3, o1, f4 = (EEG_CHANNELS.index(c) for c in ("F3-A2", "C3-A2", "O1-A2", "F4-A1"))
    assert 0.3 < corr[f3, o1] < corr[f3, c3] < 0.98
    assert corr[f3, f4] > corr[f3, o1]


# --- command line and errors -------------------------------------------------------------------------
def test_cli_writes_recordings_and_summary(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["simulate", str(out), "--subjects", "2", "--minutes", "3", "--seed", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["S01.edf", "S02.edf", "dataset.json"]
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "2 stress recording(s)" in printed[0]
    assert json.loads((out / "dataset.json").read_text())["seed"] == 4


@pytest.mark.parametrize("kwargs, expected", [
    ({"subjects": 0}, "subjects must be"),
    ({"minutes": 0.5}, "too short"),
    ({"minutes": float("nan")}, "too short"),
    ({"task": "fog"}, "no simulator for task 'fog'"),
    ({"seed": -1}, "seed must be"),
])
def test_bad_arguments_raise_a_clear_error_and_write_nothing(tmp_path, kwargs, expected):
    args = {"task": "stress", "subjects": 2, "minutes": 3, "seed": 0, **kwargs}
    with pytest.raises(SimulationError, match=expected) as exc:
        simulate_dataset(tmp_path / "out", **args)
    assert isinstance(exc.value, SpecError) and isinstance(exc.value, EdgeBridgeError)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["--subjects", "0"], ["--minutes", "1"], ["--task", "fog"],
                                  ["--task", "sleep", "--minutes", "0.2"]])
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv):
    assert main(["simulate", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-bridge simulate: error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
