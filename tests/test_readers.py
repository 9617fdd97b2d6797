"""Readers of the published file formats: each test writes a small file in the exact published layout.

WESAD pickles (Python 3 protocol 2, and Python 2 style), ISRUC ``.rec`` + scorer file written with edfio,
BrainFlow CSVs written by BrainFlow's own ``DataFilter`` from its SYNTHETIC_BOARD, plus the dispatcher and the
rule that paired windows never straddle a ``BAD`` annotation.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import struct
import time
import warnings
from pathlib import Path

import edfio
import numpy as np
import pytest

from edge_bridge.errors import RecordingError
from edge_bridge.recordings import (
    Annotation,
    Channel,
    Recording,
    read_brainflow_csv,
    read_edf,
    read_isruc,
    read_recording,
    read_wesad,
    write_brainflow_csv,
    write_edf,
)
from edge_bridge.recordings.paired import modality_windows, paired_windows
from edge_bridge.signals.spec import Preprocessing
from edge_bridge.tasks import EEG_CHANNELS, get_task

RNG = np.random.default_rng(0)


# --- WESAD ------------------------------------------------------------------------------------------------
def _wesad_dict(seconds: int = 12) -> dict:
    """A WESAD subject in the published layout: chest at 700 Hz, wrist at 32/64/4 Hz, labels at 700 Hz."""
    n = 700 * seconds
    chest = {"ACC": RNG.normal(size=(n, 3)), "ECG": RNG.normal(size=(n, 1)), "EMG": RNG.normal(size=(n, 1)),
             "EDA": RNG.normal(size=(n, 1)), "Temp": RNG.normal(size=(n, 1)), "Resp": RNG.normal(size=(n, 1))}
    # real files: the wrist streams end a little before or after the chest streams
    wrist = {"ACC": RNG.normal(size=(32 * seconds + 5, 3)), "BVP": RNG.normal(size=(64 * seconds - 3, 1)),
             "EDA": RNG.normal(size=(4 * seconds + 1, 1)), "TEMP": RNG.normal(size=(4 * seconds + 1, 1))}
    # seconds: 0-1 transient, 1-4 baseline, 4-6 stress, 6-7 transient, 7-9 amusement, 9-10 ignore (6),
    # 10-12 meditation
    label = np.repeat(np.array([0, 1, 2, 0, 3, 6, 4], dtype=np.int32), np.array([1, 3, 2, 1, 2, 1, 2]) * 700)
    label = np.resize(label, n)  # shorter subjects keep the first seconds of this protocol
    return {"subject": "S2", "signal": {"chest": chest, "wrist": wrist}, "label": label}


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles str and bytes as Python 2 ``str`` (BINSTRING), as the WESAD files were written."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _write_pickle(obj: object, path: Path, py2: bool = False) -> Path:
    with open(path, "wb") as fh:
        if py2:
            _Py2Pickler(fh, protocol=2).dump(obj)
        else:
            pickle.dump(obj, fh, protocol=2)
    if py2:  # Python 2's numpy lived at numpy.core
        path.write_bytes(path.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    return path


@pytest.mark.parametrize("py2", [False, True], ids=["py3-protocol2", "py2-style"])
def test_wesad_channels_rates_and_labels(tmp_path: Path, py2: bool) -> None:
    d = _wesad_dict()
    path = _write_pickle(d, tmp_path / "S2.pkl", py2=py2)
    if py2:
        assert b"_codecs" not in path.read_bytes() and b"numpy.core.multiarray" in path.read_bytes()
    rec = read_wesad(path)
    assert rec.subject == "S2"
    expect = {"ECG": (700, "ecg", "mV", ("chest", "ECG")), "PPG": (64, "ppg", "a.u.", ("wrist", "BVP")),
              "RESP": (700, "resp", "%", ("chest", "Resp")), "EDA": (4, "eda", "uS", ("wrist", "EDA")),
              "EMG": (700, "emg", "mV", ("chest", "EMG"))}
    assert rec.channel_names == list(expect)
    for name, (rate, modality, unit, (dev, key)) in expect.items():
        ch = rec.channel(name)
        assert (ch.rate, ch.modality, ch.unit) == (rate, modality, unit)
        np.testing.assert_array_equal(ch.data, d["signal"][dev][key][:, 0])
    assert rec.channel("PPG").duration != rec.channel("ECG").duration  # kept as published
    got = [(a.onset, a.duration, a.label) for a in rec.annotations]
    assert got == [(1.0, 3.0, "baseline"), (4.0, 2.0, "stress"), (7.0, 2.0, "amusement"),
                   (10.0, 2.0, "meditation")]
    assert rec.label_at(4.5, 5.5, ("baseline", "stress", "amusement")) == 1


def test_wesad_include_acc(tmp_path: Path) -> None:
    d = _wesad_dict(seconds=3)
    rec = read_wesad(_write_pickle(d, tmp_path / "S3.pkl"), include_acc=True)
    acc = rec.modality_channels("acc")
    assert [c.name for c in acc] == [f"ACC_{dev}_{ax}" for dev in ("chest", "wrist") for ax in "xyz"]
    assert [c.rate for c in acc] == [700.0] * 3 + [32.0] * 3
    np.testing.assert_array_equal(rec.channel("ACC_wrist_y").data, d["signal"]["wrist"]["ACC"][:, 1])


class _Exploit:
    """Runs ``func(arg)`` when unpickled by a plain ``pickle.load``."""

    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple:
        return self.func, (self.arg,)


@pytest.mark.parametrize("func", [os.system, eval], ids=["os.system", "eval"])
def test_wesad_refuses_a_malicious_pickle_without_running_it(tmp_path: Path, func: object) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    d = _wesad_dict(seconds=2)
    d["subject"] = _Exploit(func, command)
    path = _write_pickle(d, tmp_path / "S9.pkl")
    with pytest.raises(RecordingError, match=r"refusing to load.*(system|eval)") as info:
        read_wesad(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_wesad_truncated_and_malformed(tmp_path: Path) -> None:
    path = _write_pickle(_wesad_dict(seconds=2), tmp_path / "S4.pkl")
    raw = path.read_bytes()
    cut = tmp_path / "S5.pkl"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RecordingError, match=r"S5\.pkl: not a readable pickle.*truncated"):
        read_wesad(cut)

    d = _wesad_dict(seconds=2)
    del d["signal"]["wrist"]
    with pytest.raises(RecordingError, match=r"\['signal'\]\['wrist'\].*found \['chest'\]"):
        read_wesad(_write_pickle(d, tmp_path / "S6.pkl"))

    d = _wesad_dict(seconds=2)
    d["label"] = d["label"][:-7]
    with pytest.raises(RecordingError, match="label track has 1393 samples but the chest signals have 1400"):
        read_wesad(_write_pickle(d, tmp_path / "S7.pkl"))

    d = _wesad_dict(seconds=2)
    d["signal"]["chest"]["ECG"] = np.zeros((1400, 2))
    with pytest.raises(RecordingError, match=r"chest ECG should have shape \(n, 1\), found \(1400, 2\)"):
        read_wesad(_write_pickle(d, tmp_path / "S8.pkl"))


# --- ISRUC ------------------------------------------------------------------------------------------------
ISRUC_LABELS = ("LOC-A2", "ROC-A1", "F3-A2", "C3-A2", "O1-A2", "F4-A1", "C4-A1", "O2-A1", "X1", "X2", "X3",
                "X4", "X5", "X6", "DC3", "X7", "X8", "SaO2", "DC8")


def _write_isruc(directory: Path, seconds: int = 190, labels: str = "0\n0\n1\n2\n3\n5\n\n\n",
                 spelling: dict[str, str] | None = None,
                 drop: str = "") -> tuple[Path, dict[str, np.ndarray]]:
    """``N/N.rec`` (EDF, 200 Hz, ISRUC channel labels) and ``N/N_1.txt``; returns the path and the signals."""
    directory.mkdir(parents=True, exist_ok=True)
    n = 200 * seconds
    t = np.arange(n) / 200
    signals, data = [], {}
    for label in ISRUC_LABELS:
        if label == drop:
            continue
        if label == "X2":
            x, unit = np.sin(2 * np.pi * 1.2 * t) + 0.05 * RNG.normal(size=n), "mV"
        elif label == "SaO2":
            x, unit = 95 + RNG.normal(size=n), "%"
        else:
            x, unit = 40 * RNG.normal(size=n), "uV"
        data[label] = x
        name = (spelling or {}).get(label, label)
        signals.append(edfio.EdfSignal(x, 200, label=name, physical_dimension=unit,
                                       physical_range=(float(x.min()) - 1, float(x.max()) + 1)))
    rec_path = directory / f"{directory.name}.rec"
    edfio.Edf(signals, recording=edfio.Recording(startdate=dt.date(2010, 3, 4)), starttime=dt.time(22, 30),
              data_record_duration=1).write(rec_path)
    (directory / f"{directory.name}_1.txt").write_text(labels)
    return rec_path, data


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal within EDF's 16-bit quantisation."""
    np.testing.assert_allclose(a, b, atol=(b.max() - b.min() + 2) / 65535)


def test_isruc_channels_and_wake_sleep_epochs(tmp_path: Path) -> None:
    rec_path, data = _write_isruc(tmp_path / "1")
    rec = read_isruc(rec_path)
    assert sorted(rec.channel_names) == sorted([*EEG_CHANNELS, "ECG", "EMG"])
    assert {c.rate for c in rec.channels} == {200.0}
    assert [c.name for c in rec.modality_channels("eeg")] == list(EEG_CHANNELS)
    ecg = rec.channel("ECG")
    assert (ecg.modality, ecg.unit) == ("ecg", "mV")
    _close(ecg.data, data["X2"])
    _close(rec.channel("EMG").data, data["X1"])
    _close(rec.channel("C4-A1").data, data["C4-A1"])
    assert [(a.onset, a.duration, a.label) for a in rec.annotations] == [
        (0.0, 30.0, "wake"), (30.0, 30.0, "wake"), (60.0, 30.0, "sleep"), (90.0, 30.0, "sleep"),
        (120.0, 30.0, "sleep"), (150.0, 30.0, "sleep")]
    assert rec.subject == "1" and rec.meta["epoch_mismatch"] == 0
    assert rec.start_time == dt.datetime(2010, 3, 4, 22, 30)

    stages = read_isruc(rec_path, label_map="stages")
    assert [a.label for a in stages.annotations] == ["W", "W", "N1", "N2", "N3", "REM"]


def test_isruc_mastoid_spelling_and_sleep_task_windows(tmp_path: Path) -> None:
    spelling = {name: name.replace("-A1", "-M1").replace("-A2", "-M2") for name in ISRUC_LABELS}
    rec_path, data = _write_isruc(tmp_path / "7", spelling=spelling)
    rec = read_isruc(rec_path)
    assert [c.name for c in rec.modality_channels("eeg")] == list(EEG_CHANNELS)
    _close(rec.channel("F3-A2").data, data["F3-A2"])
    task = get_task("sleep")
    w = paired_windows(rec, task.source, task.target, task.classes)
    assert len(w) == 6 and w.labels.tolist() == [0, 0, 1, 1, 1, 1]
    assert w.x["source"].shape == (6, 6, 6000) and w.x["target"].shape == (6, 1, 3000)


def test_isruc_label_count_mismatch(tmp_path: Path) -> None:
    # one label more than whole epochs: tolerated, the surplus is dropped
    rec_path, _ = _write_isruc(tmp_path / "2", labels="0\n1\n2\n2\n3\n5\n0\n")
    rec = read_isruc(rec_path)
    assert len(rec.annotations) == 6 and rec.meta["epoch_mismatch"] == 1
    # two epochs unscored at the end: tolerated, left unannotated
    rec_path, _ = _write_isruc(tmp_path / "3", labels="0\n1\n2\n2\n\n")
    rec = read_isruc(rec_path)
    assert [a.onset for a in rec.annotations] == [0.0, 30.0, 60.0, 90.0] and rec.meta["epoch_mismatch"] == -2
    with pytest.raises(RecordingError, match=r"3_1\.txt: 4 labelled epochs.*6 whole 30 s epochs.*2 fewer"):
        read_isruc(rec_path, max_epoch_mismatch=1)


@pytest.mark.parametrize(("labels", "match"), [
    ("0\n1\n4\n2\n", r"line 3: expected a stage code \(0=W, 1=N1, 2=N2, 3=N3, 5=REM\), found '4'"),
    ("0\nW\n", r"line 2: expected a stage code .* found 'W'"),
])
def test_isruc_unknown_stage_code(tmp_path: Path, labels: str, match: str) -> None:
    rec_path, _ = _write_isruc(tmp_path / "4", seconds=60, labels=labels)
    with pytest.raises(RecordingError, match=match):
        read_isruc(rec_path)


def test_isruc_missing_and_broken_files(tmp_path: Path) -> None:
    rec_path, _ = _write_isruc(tmp_path / "5", seconds=60, labels="0\n0\n", drop="X2")
    with pytest.raises(RecordingError, match=r"5\.rec: expected ISRUC channels .* missing \['ECG'\]"):
        read_isruc(rec_path)
    with pytest.raises(RecordingError, match=r"5_2\.txt: no such label file"):
        read_isruc(rec_path, scorer=2)
    rec_path, _ = _write_isruc(tmp_path / "6", seconds=60, labels="0\n0\n")
    raw = rec_path.read_bytes()
    rec_path.write_bytes(raw[: len(raw) - 5000])
    with pytest.raises(RecordingError, match=r"6\.rec: truncated"):
        read_isruc(rec_path)


# --- BrainFlow CSV ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, dict]:
    """About 1.5 s streamed from BrainFlow's SYNTHETIC_BOARD, and a sidecar naming row 1 "ECG"."""
    from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams

    with warnings.catch_warnings():  # BrainFlow 5.x imports the deprecated pkg_resources to find its library
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        BoardShim.disable_board_logger()
    board_id = BoardIds.SYNTHETIC_BOARD.value
    board = BoardShim(board_id, BrainFlowInputParams())
    board.prepare_session()
    try:
        board.start_stream()
        time.sleep(1.5)
        data = board.get_board_data()
        board.stop_stream()
    finally:
        board.release_session()
    sidecar = {"format": "edge-bridge/brainflow-csv", "version": 1, "board_id": board_id,
               "board_name": BoardIds(board_id).name,
               "sampling_rate": float(BoardShim.get_sampling_rate(board_id)), "subject": "P01",
               "start_time": None, "timestamp_row": BoardShim.get_timestamp_channel(board_id),
               "package_num_row": BoardShim.get_package_num_channel(board_id),
               "marker_row": BoardShim.get_marker_channel(board_id),
               "channels": [{"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"}]}
    assert data.shape[1] > 300, "the synthetic board streamed too little"
    return data, sidecar


def _write_bf(data: np.ndarray, sidecar: dict, path: Path) -> Path:
    """What a recording tool does: BrainFlow's own writer, then the sidecar."""
    from brainflow.data_filter import DataFilter

    DataFilter.write_file(np.ascontiguousarray(data), str(path), "w")
    Path(f"{path}.json").write_text(json.dumps(sidecar))
    return path


def test_brainflow_synthetic_board_file(tmp_path: Path, synthetic: tuple[np.ndarray, dict]) -> None:
    data, sidecar = synthetic
    path = _write_bf(data, sidecar, tmp_path / "rec.csv")
    rec = read_brainflow_csv(path)
    ch = rec.channel("ECG")
    assert (ch.rate, ch.modality, ch.unit) == (250.0, "ecg", "mV") and rec.channel_names == ["ECG"]
    np.testing.assert_allclose(ch.data, data[1], atol=1e-6)
    ts = sidecar["timestamp_row"]
    assert rec.start_time == dt.datetime.fromtimestamp(round(data[ts][0], 6), tz=dt.UTC)
    assert rec.subject == "P01"
    assert rec.meta["board_id"] == -1 and rec.meta["board_name"] == "SYNTHETIC_BOARD"
    assert rec.meta["gaps"] == 0 and rec.meta["lost_samples"] == 0 and rec.annotations == []


def test_brainflow_gap_is_marked_and_counted(tmp_path: Path, synthetic: tuple[np.ndarray, dict]) -> None:
    data, sidecar = synthetic
    data = data.copy()
    data[sidecar["marker_row"], 40] = 3.0
    cut = np.delete(data, np.s_[100:110], axis=1)  # the ring buffer lost 10 packages
    rec = read_brainflow_csv(_write_bf(cut, sidecar, tmp_path / "gap.csv"))
    assert len(rec.channel("ECG").data) == data.shape[1] - 10  # samples kept as they are
    assert rec.meta["gaps"] == 1 and rec.meta["lost_samples"] == 10
    assert rec.annotations == [Annotation(40 / 250, 0.0, "marker_3"), Annotation(100 / 250, 0.0, "BAD_gap")]


def test_brainflow_gap_longer_than_the_package_counter(tmp_path: Path) -> None:
    rate, n = 250.0, 2000
    t0 = 1_700_000_000.0
    data = np.zeros((4, n))
    data[0] = np.arange(n) % 256
    data[1] = np.sin(np.arange(n) / 10)
    data[2] = t0 + np.arange(n) / rate
    keep = np.r_[0:500, 800:n]  # 300 samples lost: the counter wrapped once, so it alone says 44
    sidecar = {"format": "edge-bridge/brainflow-csv", "version": 1, "sampling_rate": rate,
               "timestamp_row": 2, "package_num_row": 0,
               "channels": [{"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"}]}
    rec = read_brainflow_csv(_write_bf(data[:, keep], sidecar, tmp_path / "long.csv"))
    assert rec.meta["gaps"] == 1 and rec.meta["lost_samples"] == 300
    assert rec.start_time == dt.datetime.fromtimestamp(t0, tz=dt.UTC)
    sidecar["timestamp_row"] = None
    rec = read_brainflow_csv(_write_bf(data[:, keep], sidecar, tmp_path / "nots.csv"))
    assert rec.meta["lost_samples"] == 44 and rec.start_time is None


def test_brainflow_windows_never_straddle_a_gap(tmp_path: Path) -> None:
    rate, n = 100.0, 2000
    data = np.zeros((3, n))
    data[0] = np.arange(n) % 256
    data[1] = np.sin(2 * np.pi * 1.3 * np.arange(n) / rate) + 0.05 * RNG.normal(size=n)
    sidecar = {"format": "edge-bridge/brainflow-csv", "version": 1, "sampling_rate": rate,
               "timestamp_row": None, "package_num_row": 0,
               "channels": [{"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"}]}
    rec = read_brainflow_csv(_write_bf(np.delete(data, np.s_[750:760], axis=1), sidecar, tmp_path / "w.csv"))
    assert rec.annotations == [Annotation(7.5, 0.0, "BAD_gap")]
    spec = Preprocessing("ecg", ("ECG",), input_rate=rate, output_rate=rate, window_s=2, hop_s=0.5)
    w = modality_windows(rec, spec)
    assert not np.any((w.starts < 7.5) & (w.starts + 2 > 7.5))
    assert w.skipped_reasons == {"bad_span": 3}  # starts 6.0, 6.5, 7.0
    assert len(w) == 36 - 3


@pytest.mark.parametrize(("damage", "match"), [
    (lambda raw: raw[:-7], r"cut\.csv: truncated: the last line \(line \d+\) ends without a newline"),
    (lambda raw: raw.replace(raw.split(b"\n")[4], raw.split(b"\n")[4].rsplit(b"\t", 1)[0], 1),
     r"cut\.csv, line 5: expected 32 tab-separated values \(as on line 1\), found 31"),
    (lambda raw: b"", r"cut\.csv: the file is empty"),
])
def test_brainflow_truncated_or_damaged_csv(tmp_path: Path, synthetic: tuple[np.ndarray, dict], damage,
                                            match: str) -> None:
    data, sidecar = synthetic
    path = _write_bf(data, sidecar, tmp_path / "cut.csv")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(RecordingError, match=match):
        read_brainflow_csv(path)


def test_brainflow_sidecar_problems(tmp_path: Path, synthetic: tuple[np.ndarray, dict]) -> None:
    data, sidecar = synthetic
    path = _write_bf(data, sidecar, tmp_path / "rec.csv")
    Path(f"{path}.json").unlink()
    with pytest.raises(RecordingError, match=r"rec\.csv: no sidecar rec\.csv\.json beside it.*write .*"
                                             r"\"format\": \"edge-bridge/brainflow-csv\""):
        read_brainflow_csv(path)
    bad = {**sidecar, "channels": [{"name": "ECG", "row": 40, "modality": "ecg", "unit": "mV"}]}
    _write_bf(data, bad, path)
    with pytest.raises(RecordingError,
                       match=r"names row\(s\) \{\"channel 'ECG'\": 40\}, but the file has only 32 rows"):
        read_brainflow_csv(path)
    _write_bf(data, {**sidecar, "channels": [{"name": "ECG", "row": 1, "modality": "ekg"}]}, path)
    with pytest.raises(RecordingError, match=r"channels\[0\] \('ECG'\) modality must be one of .*got 'ekg'"):
        read_brainflow_csv(path)
    _write_bf(data, {**sidecar, "version": 2}, path)
    with pytest.raises(RecordingError, match=r"version 2 is newer .* upgrade edge-bridge"):
        read_brainflow_csv(path)


def test_brainflow_timestamps_out_of_order(tmp_path: Path, synthetic: tuple[np.ndarray, dict]) -> None:
    data, sidecar = synthetic
    data = data.copy()
    ts = sidecar["timestamp_row"]
    data[ts, 200] = data[ts, 199] - 1.0
    with pytest.raises(RecordingError, match=r"ooo\.csv: timestamps go backwards at sample 200 "):
        read_brainflow_csv(_write_bf(data, sidecar, tmp_path / "ooo.csv"))


def test_write_brainflow_csv_round_trip(tmp_path: Path, synthetic: tuple[np.ndarray, dict]) -> None:
    start = dt.datetime(2024, 5, 6, 7, 8, 9, 250000, tzinfo=dt.UTC)
    t = np.arange(1000) / 250
    rec = Recording([Channel("ECG", np.sin(t), 250, "ecg", "mV"),
                     Channel("PPG", np.cos(t), 250, "ppg", "a.u.")], start_time=start, subject="S1")
    path = write_brainflow_csv(rec, tmp_path / "out" / "rec.csv")
    side = json.loads(Path(f"{path}.json").read_text())
    assert set(side) == {"format", "version", "board_id", "board_name", "sampling_rate", "subject",
                         "start_time", "timestamp_row", "package_num_row", "marker_row", "channels"}
    assert side["channels"][1] == {"name": "PPG", "row": 2, "modality": "ppg", "unit": "a.u."}
    back = read_brainflow_csv(path)
    assert back.channel_names == ["ECG", "PPG"] and back.subject == "S1" and back.start_time == start
    np.testing.assert_allclose(back.channel("PPG").data, np.cos(t), atol=1e-6)
    assert back.meta["gaps"] == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["rec.csv", "rec.csv.json"]  # no temp files left

    data, sidecar = synthetic  # a board array as it comes, with its sidecar
    back = read_brainflow_csv(write_brainflow_csv(data, tmp_path / "board.csv", sidecar))
    np.testing.assert_allclose(back.channel("ECG").data, data[1], atol=1e-6)
    with pytest.raises(RecordingError, match="needs a sidecar"):
        write_brainflow_csv(data, tmp_path / "x.csv")
    mixed = Recording([Channel("ECG", np.sin(t), 250, "ecg"), Channel("PPG", np.cos(t[:640]), 64, "ppg")])
    with pytest.raises(RecordingError, match="one sampling rate"):
        write_brainflow_csv(mixed, tmp_path / "mixed.csv")
    assert not (tmp_path / "mixed.csv").exists()


# --- dispatch ---------------------------------------------------------------------------------------------
def test_read_recording_dispatches_on_suffix(tmp_path: Path) -> None:
    wesad = _write_pickle(_wesad_dict(seconds=2), tmp_path / "S2.PKL")
    assert read_recording(wesad).channel("PPG").rate == 64
    rec_path, _ = _write_isruc(tmp_path / "9", seconds=60, labels="0\n5\n")
    assert read_recording(rec_path, label_map="stages").labels == ["REM", "W"]
    t = np.arange(500) / 250
    rec = Recording([Channel("ECG", np.sin(t), 250, "ecg", "mV")])
    assert read_recording(write_brainflow_csv(rec, tmp_path / "r.csv")).channel_names == ["ECG"]
    assert read_recording(write_edf(rec, tmp_path / "r.edf")).channel_names == ["ECG"]
    with pytest.raises(RecordingError, match=r"r\.xyz: unsupported file type '\.xyz'; supported are "
                                             r"\.edf, \.bdf, \.rec, \.pkl, \.csv"):
        read_recording(tmp_path / "r.xyz")
    bdf = tmp_path / "r.bdf"
    bdf.write_bytes(b"\xffBIOSEMI" + b" " * 248)
    with pytest.raises(RecordingError, match="24-bit BDF file"):
        read_recording(bdf)
    assert read_edf is not None  # exported


# --- paired windows and BAD spans -------------------------------------------------------------------------
def test_windows_leave_out_bad_spans(tmp_path: Path) -> None:
    rate = 100
    t = np.arange(20 * rate) / rate
    ecg = np.sin(2 * np.pi * 1.1 * t) + 0.05 * RNG.normal(size=t.size)
    ecg[15 * rate : 17 * rate] = 0.0  # flat: fails the quality gate
    rec = Recording([Channel("ECG", ecg, rate, "ecg", "mV"), Channel("PPG", ecg.copy(), rate, "ppg")],
                    [Annotation(5.0, 0.0, "BAD_gap"), Annotation(10.0, 1.5, "BAD_motion"),
                     Annotation(0.0, 20.0, "stress")])
    spec = Preprocessing("ecg", ("ECG",), input_rate=rate, output_rate=rate, window_s=2, hop_s=1)
    w = modality_windows(rec, spec, classes=("stress",))
    # 19 windows start at 0..18 s; 4 (straddles 5 s) and 9, 10, 11 (overlap [10, 11.5)) are BAD, 15 is flat
    assert w.starts.tolist() == [float(s) for s in range(19) if s not in (4, 9, 10, 11, 15)]
    assert w.skipped_reasons == {"bad_span": 4, "quality": 1} and w.skipped == 5
    assert (w.labels == 0).all()

    ppg = Preprocessing("ppg", ("PPG",), input_rate=rate, output_rate=rate, window_s=2, hop_s=1)
    pw = paired_windows(rec, spec, ppg)
    assert pw.starts.tolist() == w.starts.tolist() and pw.skipped_reasons == {"bad_span": 4, "quality": 1}

    rec.annotations = [a for a in rec.annotations if not a.label.startswith("BAD")]
    w = modality_windows(rec, spec)
    assert len(w) == 18 and w.skipped_reasons == {"quality": 1} and w.skipped == 1


# --- a folder of one's own recordings, as the method verbs read it ------------------------------------------
def test_folder_of_wesad_and_isruc_files_gives_windows(tmp_path: Path) -> None:
    """WESAD ``S2/S2.pkl`` and ISRUC ``1/1.rec`` sit one folder down, as published; both are found, and
    WESAD's 700 Hz chest ECG is brought to the stress task's 100 Hz by the one preprocessing path."""
    from edge_bridge.recordings.dataset import recording_files
    from edge_bridge.recordings.paired import windows_from_files

    wesad = tmp_path / "wesad"
    (wesad / "S2").mkdir(parents=True)
    _write_pickle(_wesad_dict(seconds=40), wesad / "S2" / "S2.pkl")
    files = recording_files(wesad)
    assert files == [wesad / "S2" / "S2.pkl"]
    task = get_task("stress").with_window(10, 5)
    w = windows_from_files(files, task.source, task.target, task.classes)
    assert len(w) == 6 and set(w.subjects.tolist()) == {"S2"}  # the wrist stream ends 3 samples early
    assert w.x["source"].shape[1:] == (1, 1000) and w.x["target"].shape[1:] == (1, 1250)

    isruc = tmp_path / "isruc"
    _write_isruc(isruc / "1")
    sleep = get_task("sleep")
    files = recording_files(isruc)
    assert files == [isruc / "1" / "1.rec"]  # the scorer's .txt is not a recording
    w = windows_from_files(files, sleep.source, sleep.target, sleep.classes)
    assert w.labels.tolist() == [0, 0, 1, 1, 1, 1]


def test_channel_and_label_maps_from_files(tmp_path: Path) -> None:
    from edge_bridge.recordings.dataset import compose_label_map, parse_map, resolve_channels

    (tmp_path / "channels.toml").write_text('ecg = "ECG II"\nppg = "BVP"\n')
    (tmp_path / "labels.json").write_text('{"TSST": "stress", "Rest": "baseline"}')
    cmap = parse_map(str(tmp_path / "channels.toml"), "--channels")
    assert cmap == {"ecg": "ECG II", "ppg": "BVP"}
    assert parse_map('ecg="ECG II",ppg=BVP', "--channels") == cmap  # the shell form, quotes kept
    task = get_task("stress-binary")
    lmap = compose_label_map(parse_map(str(tmp_path / "labels.json"), "--label-map"), task.classes,
                             task.label_map)
    assert lmap["Rest"] == "non-stress" and lmap["TSST"] == "stress"  # through the preset's own map
    rec = Recording([Channel("ECG II", np.zeros(10), 250, "ecg"), Channel("BVP", np.zeros(10), 64, "ppg"),
                     Channel("PPG", np.zeros(10), 64, "ppg")])
    assert resolve_channels(rec, task.target, cmap) == ["BVP"]  # the map wins over the preset's name
    assert resolve_channels(rec, task.target) == ["PPG"]  # by name
    assert resolve_channels(rec, task.source) == ["ECG II"]  # the only ECG
    with pytest.raises(RecordingError, match="ambiguous"):
        resolve_channels(Recording([Channel("a", np.zeros(3), 64, "ppg"),
                                    Channel("b", np.zeros(3), 64, "ppg")]), task.target)


def test_toml_map_without_a_toml_reader_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    """Python 3.10 (the Jetson's) has no tomllib: a TOML map names the fix instead of an ImportError."""
    import sys

    from edge_bridge.recordings.dataset import parse_map

    (tmp_path / "channels.toml").write_text('ecg = "ECG II"\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)  # None in sys.modules makes the import fail
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(RecordingError, match=r"tomli.*JSON"):
        parse_map(str(tmp_path / "channels.toml"), "--channels")
    (tmp_path / "bad.toml").write_text("ecg = = 1\n")
    monkeypatch.delitem(sys.modules, "tomllib")
    with pytest.raises(RecordingError, match="not valid TOML"):
        parse_map(str(tmp_path / "bad.toml"), "--channels")
