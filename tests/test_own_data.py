"""One's own recordings end to end through the real CLI: EDF+ and BrainFlow CSV with non-preset names.

The files are written here the way other tools write them: EDF+ through edfio with an empty transducer field
(so nothing but the label tells the modality), channels ``ECG II`` (found as ECG by its label) and ``Wrist``
(found by nobody: ``--channels ppg=Wrist``), labels ``Rest``/``TSST``/``Fun`` (``--label-map``); BrainFlow CSV
at one board rate of 128 Hz (so both modalities are resampled by the one preprocessing path) with its sidecar
and a ``.labels.json``. Then pretrain -> fit-source -> select -> train -> evaluate -> export (INT8, calibrated
on the same own folder) -> calibrate --paired chest.edf wrist.csv (EDF with naive local start time, CSV with
unix timestamps), at tiny sizes. The wall time and the warnings printed are reported at the end (``-s``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import edfio
import numpy as np
from scipy import signal as sps

from edge_bridge.cli import main
from edge_bridge.recordings import Channel, Recording, write_brainflow_csv
from edge_bridge.simulate import simulate_subject

RENAME = {"baseline": "Rest", "stress": "TSST", "amusement": "Fun"}
LABEL_MAP = "Rest=baseline,TSST=stress,Fun=amusement"
CSV_RATE = 128
TINY_TARGET = '{"widths": [8, 8, 8], "strides": [1, 2, 2], "kernel": 3}'
TINY_SOURCE = '{"d_model": 16, "n_blocks": 3, "n_heads": 2}'
START = dt.datetime(2026, 5, 4, 9, 30, tzinfo=dt.UTC)


def write_foreign_edf(path: Path, chans: list[tuple[str, np.ndarray, float]], annotations, start) -> None:
    """EDF+ as another tool writes it: no modality in the transducer field, a naive local start time."""
    signals = [edfio.EdfSignal(x, rate, label=name, physical_dimension="mV",
                               physical_range=(float(x.min()) - 1, float(x.max()) + 1))
               for name, x, rate in chans]
    local = start.astimezone().replace(tzinfo=None)  # EDF+ start times are the recorder's local clock
    edf = edfio.Edf(signals, patient=edfio.Patient(code=path.stem),
                    recording=edfio.Recording(startdate=local.date()),
                    starttime=local.time(), data_record_duration=1.0,
                    annotations=[edfio.EdfAnnotation(a.onset, a.duration, RENAME.get(a.label, a.label))
                                 for a in annotations])
    edf.write(path)


def write_csv(path: Path, chans: list[tuple[str, np.ndarray, str]], rate: float, annotations, start) -> None:
    rec = Recording([Channel(name, x, rate, modality, "mV") for name, x, modality in chans],
                    start_time=start, subject=path.stem)
    write_brainflow_csv(rec, path)
    labels = [{"onset": a.onset, "duration": a.duration, "label": RENAME.get(a.label, a.label)}
              for a in annotations]
    Path(f"{path}.labels.json").write_text(json.dumps({"annotations": labels}))


def _resample(x: np.ndarray, rate: float, to: float) -> np.ndarray:
    from fractions import Fraction

    f = Fraction(to / rate).limit_denominator(1000)
    return sps.resample_poly(x, f.numerator, f.denominator)


def own_dataset(folder: Path, subjects: int = 5, minutes: float = 4.0) -> None:
    """Subjects S01..: the odd ones as foreign EDF+ at the sensors' rates, the even ones as 128 Hz CSV."""
    folder.mkdir()
    for k in range(1, subjects + 1):
        rec = simulate_subject("stress", f"S{k:02d}", minutes, seed=0)
        ecg, ppg = rec.channel("ECG"), rec.channel("PPG")
        if k % 2:
            chans = [("ECG II", ecg.data, ecg.rate), ("Wrist", ppg.data, ppg.rate)]
            write_foreign_edf(folder / f"S{k:02d}.edf", chans, rec.annotations, START)
        else:
            e, p = _resample(ecg.data, ecg.rate, CSV_RATE), _resample(ppg.data, ppg.rate, CSV_RATE)
            n = min(len(e), len(p))
            write_csv(folder / f"S{k:02d}.csv", [("ECG II", e[:n], "ecg"), ("Wrist", p[:n], "ppg")], CSV_RATE,
                      rec.annotations, START)


def calibration_pair(folder: Path, minutes: float = 4.0) -> tuple[Path, Path]:
    """A chest EDF+ (ECG only) and a wrist CSV (PPG only) recorded at the same time by two devices."""
    folder.mkdir()
    rec = simulate_subject("stress", "S90", minutes, seed=1)
    ecg, ppg = rec.channel("ECG"), rec.channel("PPG")
    chest, wrist = folder / "chest.edf", folder / "wrist.csv"
    write_foreign_edf(chest, [("ECG II", ecg.data, ecg.rate)], rec.annotations, START)
    write_csv(wrist, [("Wrist", ppg.data, "ppg")], ppg.rate, rec.annotations, START)
    return chest, wrist


def test_own_recordings_end_to_end(tmp_path, capsys):
    t0 = time.perf_counter()
    data = tmp_path / "mine"
    own_dataset(data)
    run, bundle = tmp_path / "run", tmp_path / "mine.bundle"
    common = ["--run", str(run), "--no-progress"]
    steps = [
        ["pretrain", *common, "--data", str(data), "--task", "stress", "--channels", "ppg=Wrist",
         "--label-map", LABEL_MAP, "--epochs", "1", "--backbone-config", TINY_TARGET],
        ["fit-source", *common, "--epochs", "2", "--backbone-config", TINY_SOURCE],
        ["select", *common],
        ["train", *common, "--epochs", "2"],
        ["evaluate", *common],
        ["export", "--run", str(run), "-o", str(bundle), "--calibration-data", str(data)],
    ]
    outputs = []
    for argv in steps:
        code = main(argv)
        out = capsys.readouterr()
        outputs.append(out)
        assert code == 0, f"{argv[0]} failed: {out.err[-2000:]}"
    meta = json.loads((run / "run.json").read_text())
    assert meta["channels"] == {"ppg": "Wrist"}
    assert meta["label_map"] == {"Rest": "baseline", "TSST": "stress", "Fun": "amusement"}
    seen = json.loads((run / "recordings.json").read_text())["recordings"]
    assert {r["file"].rsplit(".", 1)[1] for r in seen} == {"edf", "csv"}
    assert all(r["channels"] == {"ECG": "ECG II", "PPG": "Wrist"} for r in seen)
    assert {r["rates"]["ppg"] for r in seen} == {64.0, 128.0}  # both resampled to the model's 125 Hz
    metrics = json.loads((run / "metrics.json").read_text())
    test_subjects = set(metrics["test_subjects"])
    assert all(m["n"] > 0 for m in metrics["models"].values())  # labels came through the label map
    windows = np.load(run / "windows.npz")
    subjects = set(windows["subjects"].tolist())
    assert subjects == {f"S{k:02d}" for k in range(1, 6)}  # CSV and EDF subjects alike
    labels = windows["labels"]
    assert set(labels[labels >= 0].tolist()) == {0, 1, 2}  # Rest/TSST/Fun became the three classes
    for s in subjects:  # in EDF+ annotations and CSV label sidecars alike
        assert (labels[windows["subjects"] == s] >= 0).any(), s
    assert test_subjects <= subjects
    assert (bundle / "manifest.json").is_file()

    # 6 min: this simulated subject moves a lot, and the gate leaves out PPG windows without a clean pulse
    chest, wrist = calibration_pair(tmp_path / "site", minutes=6.0)
    code = main(["calibrate", "--bundle", str(bundle), "--paired", str(chest), str(wrist), "--channels",
                 "ppg=Wrist", "--method", "closed-form", "--json"])
    out = capsys.readouterr()
    outputs.append(out)
    assert code == 0, out.err[-2000:]
    report = json.loads(out.out)
    assert report["windows"]["paired"] >= 20
    assert "Traceback" not in "".join(o.err for o in outputs)
    wall = time.perf_counter() - t0
    warnings = [line for o in outputs for line in o.err.splitlines()
                if re.search(r"warn|WARNING|FALLBACK|below chance|one class", line, re.IGNORECASE)]
    with capsys.disabled():
        print(f"\nown-data path: {wall:.1f} s wall, {len(warnings)} warning line(s)")
        for line in warnings:
            print(f"  {line}")


def test_recordings_at_one_board_rate_set_the_runs_input_rate(tmp_path):
    """All recordings at 128 Hz: the run (and so the bundle's manifest) asks for 128 Hz, not the preset's
    250/64 Hz, while the model input stays the same (resampled to 100/125 Hz by the one path)."""
    from edge_bridge.runs import Run

    data = tmp_path / "board"
    data.mkdir()
    for k in range(1, 5):
        rec = simulate_subject("stress", f"S{k:02d}", 3.0, seed=0)
        e = _resample(rec.channel("ECG").data, 250, CSV_RATE)
        p = _resample(rec.channel("PPG").data, 64, CSV_RATE)
        n = min(len(e), len(p))
        write_csv(data / f"S{k:02d}.csv", [("ECG II", e[:n], "ecg"), ("BVP", p[:n], "ppg")], CSV_RATE,
                  rec.annotations, START)
    run = Run.open(tmp_path / "run", data=data, task="stress")
    w = run.windows()
    assert (run.task.source.input_rate, run.task.target.input_rate) == (CSV_RATE, CSV_RATE)
    assert w.x["source"].shape[1:] == (1, 6000) and w.x["target"].shape[1:] == (1, 7500)
    again = Run.open(tmp_path / "run")
    assert again.task.source == run.task.source and again.task.target == run.task.target
    assert again.task.source.output_rate == 100 and again.task.target.output_rate == 125
