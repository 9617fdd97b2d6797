"""Hostile input, class *paired data*: bad recordings and maps given to ``calibrate --paired`` and ``--data``.

Every case runs the real CLI (``edge_bridge.cli.main``) on files written here in the real formats (EDF+ via
edfio, BrainFlow CSV via BrainFlow's own writer) and asserts: exit code 2, exactly one line on stderr that
names the culprit (file or option), no traceback, and that nothing changed: the bundle's bytes (every file
hashed before and after), the data folder's bytes, and no run folder left behind by a refused first verb.
A positive control per verb shows the same fixtures are accepted when nothing is wrong.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import edfio
import numpy as np
import pytest

from edge_bridge.cli import main
from edge_bridge.recordings import Channel, Recording, write_brainflow_csv
from edge_bridge.simulate import simulate_subject

START = dt.datetime(2026, 5, 4, 9, 30, tzinfo=dt.UTC)
TINY_TARGET = '{"widths": [8, 8, 8], "strides": [1, 2, 2], "kernel": 3}'


def _load_calibrate_conftest():
    """The tiny ONNX bundle builder of tests/calibrate (real ONNX files, built in milliseconds)."""
    path = Path(__file__).parents[1] / "calibrate" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_calibrate_tiny_bundle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- writers: the formats as other tools write them ---------------------------------------------------------
def edf(path: Path, chans: list[tuple[str, np.ndarray, float]], annotations=(), start=START) -> Path:
    signals = [edfio.EdfSignal(np.asarray(x, float), rate, label=name, physical_dimension="mV",
                               physical_range=(float(np.min(x)) - 1, float(np.max(x)) + 1))
               for name, x, rate in chans]
    local = start.astimezone().replace(tzinfo=None)
    notes = [edfio.EdfAnnotation(a.onset, a.duration, a.label) for a in annotations]
    edfio.Edf(signals, patient=edfio.Patient(code=path.stem),
              recording=edfio.Recording(startdate=local.date()), starttime=local.time(),
              data_record_duration=1.0, annotations=notes).write(path)
    return path


def csv(path: Path, chans: list[tuple[str, np.ndarray, str]], rate: float, start=START) -> Path:
    rec = Recording([Channel(n, x, rate, m, "mV") for n, x, m in chans], start_time=start, subject=path.stem)
    return write_brainflow_csv(rec, path)


@pytest.fixture(scope="module")
def subject():
    """Three minutes of one simulated subject: ECG 250 Hz, PPG 64 Hz, labelled blocks."""
    return simulate_subject("stress", "S01", 3.0, seed=0)


def _ecg(rec):
    c = rec.channel("ECG")
    return c.data, c.rate


def _ppg(rec):
    c = rec.channel("PPG")
    return c.data, c.rate


# --- snapshots ----------------------------------------------------------------------------------------------
def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` -> sha256 of its bytes; a missing root is recorded as such."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = "<absent>"
            continue
        for p in sorted(root.rglob("*")):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def refused(argv: list[str], capsys, culprits: list[str], *roots: Path) -> str:
    """Run the CLI; assert exit 2, one stderr line naming every culprit, no traceback, ``roots`` unchanged."""
    before = snapshot(*roots)
    code = main(argv)
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr: {out.err[-1500:]}"
    assert "Traceback" not in out.err + out.out
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{out.err}"
    assert lines[0].startswith(f"edge-bridge {argv[0]}: error: "), lines[0]
    for c in culprits:
        assert c in lines[0], f"{c!r} not named in: {lines[0]}"
    assert snapshot(*roots) == before, "files changed"
    if os.environ.get("EDGE_BRIDGE_SHOW_REFUSALS"):  # to read every refusal: pytest -s with this set
        with capsys.disabled():
            print(f"\n  {lines[0]}")
    return lines[0]


# === calibrate --paired =====================================================================================
@pytest.fixture(scope="module")
def bundle_template(tmp_path_factory):
    return _load_calibrate_conftest().build_bundle(tmp_path_factory.mktemp("tpl") / "tiny.bundle")


@pytest.fixture
def bundle(tmp_path, bundle_template):
    dst = tmp_path / "tiny.bundle"
    shutil.copytree(bundle_template, dst)
    return dst


def _chest(d, rec, **kw):
    return edf(d / "chest.edf", [("ECG II", *_ecg(rec))], rec.annotations, **kw)


def _wrist(d, rec, **kw):
    x, rate = _ppg(rec)
    return csv(d / "wrist.csv", [("Wrist", x, "ppg")], rate, **kw)


def c_same_path(d, rec):
    c = _chest(d, rec)
    return [str(c), str(c)], [], ["chest.edf", "the same file"]


def c_same_bytes(d, rec):
    c = _chest(d, rec)
    shutil.copy(c, d / "chest-copy.edf")
    return [str(c), str(d / "chest-copy.edf")], [], ["chest-copy.edf", "chest.edf", "same recording"]


def c_no_overlap(d, rec):
    return ([str(_chest(d, rec)), str(_wrist(d, rec, start=START + dt.timedelta(hours=2)))], [],
            ["chest.edf", "wrist.csv", "do not overlap in time"])


def c_short_overlap(d, rec):
    return ([str(_chest(d, rec)), str(_wrist(d, rec, start=START + dt.timedelta(seconds=172)))], [],
            ["overlap by only"])


def c_one_modality(d, rec):
    return [str(_chest(d, rec))], [], ["chest.edf", "one modality missing"]


def c_map_missing_channel(d, rec):
    return [str(_chest(d, rec)), str(_wrist(d, rec))], ["--channels", "ppg=Finger"], ["--channels", "Finger"]


def c_map_bad_syntax(d, rec):
    return [str(_chest(d, rec)), str(_wrist(d, rec))], ["--channels", "ppg"], ["--channels", "KEY=VALUE"]


def c_map_not_modality(d, rec):
    return [str(_chest(d, rec)), str(_wrist(d, rec))], ["--channels", "spo2=Wrist"], ["--channels", "spo2"]


def c_flat_target(d, rec):
    x, rate = _ppg(rec)
    w = csv(d / "wrist.csv", [("Wrist", np.full_like(x, 0.5), "ppg")], rate)
    return [str(_chest(d, rec)), str(w)], [], ["wrist.csv", "quality gate", "flat"]


def c_nan_target(d, rec):
    x, rate = _ppg(rec)
    x = x.copy()
    x[::7] = np.nan
    w = csv(d / "wrist.csv", [("Wrist", x, "ppg")], rate)
    return [str(_chest(d, rec)), str(w)], [], ["wrist.csv", "non-finite"]


def c_wrong_columns(d, rec):
    w = _wrist(d, rec)
    lines = w.read_text().splitlines(keepends=True)
    lines[40] = "\t".join(lines[40].split("\t")[:-1]) + "\n"
    w.write_text("".join(lines))
    return [str(_chest(d, rec)), str(w)], [], ["wrist.csv", "line 41"]


def c_no_sidecar(d, rec):
    w = _wrist(d, rec)
    Path(f"{w}.json").unlink()
    return [str(_chest(d, rec)), str(w)], [], ["wrist.csv", "sidecar"]


def c_rate_too_low(d, rec):  # any rate above twice the band's edge is resampled; 16 Hz cannot carry 8 Hz
    from scipy.signal import resample_poly

    x, _ = _ppg(rec)
    w = csv(d / "wrist.csv", [("Wrist", resample_poly(x, 1, 4), "ppg")], 16.0)
    return [str(_chest(d, rec)), str(w)], [], ["wrist.csv", "16 Hz is too slow", "above 16 Hz"]


def c_empty_file(d, rec):
    (d / "wrist.csv").write_bytes(b"")
    Path(f"{d / 'wrist.csv'}.json").write_text(json.dumps(
        {"format": "edge-bridge/brainflow-csv", "version": 1, "sampling_rate": 64,
         "channels": [{"name": "Wrist", "row": 1, "modality": "ppg"}]}))
    return [str(_chest(d, rec)), str(d / "wrist.csv")], [], ["wrist.csv", "empty"]


def c_zero_byte_edf(d, rec):
    (d / "chest.edf").write_bytes(b"")
    return [str(d / "chest.edf"), str(_wrist(d, rec))], [], ["chest.edf", "empty (0 bytes)"]


def c_truncated_edf(d, rec):
    c = _chest(d, rec)
    c.write_bytes(c.read_bytes()[:300])  # cut inside the header
    return [str(c), str(_wrist(d, rec))], [], ["chest.edf", "EDF"]


def c_missing_file(d, rec):
    return [str(d / "nope.edf"), str(_wrist(d, rec))], [], ["nope.edf", "does not exist"]


def c_unsupported_suffix(d, rec):
    (d / "notes.txt").write_text("hello")
    return [str(_chest(d, rec)), str(d / "notes.txt")], [], ["notes.txt", "unsupported file type"]


def c_two_ppg_ambiguous(d, rec):
    x, rate = _ppg(rec)
    w = csv(d / "wrist.csv", [("PPG green", x, "ppg"), ("PPG red", x * 0.9, "ppg")], rate)
    return [str(_chest(d, rec)), str(w)], [], ["wrist.csv", "target"]


def c_target_only_twice(d, rec):
    w = _wrist(d, rec)
    w2 = csv(d / "wrist2.csv", [("Wrist", _ppg(rec)[0] * 1.01, "ppg")], 64.0)
    return [str(w), str(w2)], [], ["one modality missing"]


CALIBRATE_CASES: dict[str, Callable] = {
    "same file twice": c_same_path,
    "same bytes under two names": c_same_bytes,
    "no overlap in time": c_no_overlap,
    "overlap shorter than a window": c_short_overlap,
    "one modality missing": c_one_modality,
    "channel map names a missing channel": c_map_missing_channel,
    "channel map without =": c_map_bad_syntax,
    "channel map key not a modality": c_map_not_modality,
    "flat target channel": c_flat_target,
    "NaN in the target channel": c_nan_target,
    "CSV row of the wrong width": c_wrong_columns,
    "CSV without its sidecar": c_no_sidecar,
    "target too slow for the band": c_rate_too_low,
    "0-byte CSV": c_empty_file,
    "0-byte EDF": c_zero_byte_edf,
    "EDF cut inside its header": c_truncated_edf,
    "file does not exist": c_missing_file,
    "unsupported file type": c_unsupported_suffix,
    "two candidate target channels": c_two_ppg_ambiguous,
    "only target recordings": c_target_only_twice,
}


@pytest.mark.parametrize("case", sorted(CALIBRATE_CASES))
def test_calibrate_paired_refuses(case, tmp_path, bundle, subject, capsys):
    d = tmp_path / "site"
    d.mkdir()
    files, extra, culprits = CALIBRATE_CASES[case](d, subject.copy())
    refused(["calibrate", "-q", "--bundle", str(bundle), "--paired", *files, *extra], capsys, culprits,
            bundle, d)


def test_calibrate_pairs_edf_with_csv_across_time_zones(tmp_path, bundle, subject, capsys, monkeypatch):
    """The control: EDF+ (naive local start) with a CSV (unix time), on a machine east of UTC."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        d = tmp_path / "site"
        d.mkdir()
        chest, wrist = _chest(d, subject), _wrist(d, subject)
        code = main(["calibrate", "-q", "--bundle", str(bundle), "--paired", str(chest), str(wrist),
                     "--method", "closed-form", "--dry-run", "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        report = json.loads(out.out)
        assert report["windows"]["paired"] >= 20  # the whole 3 min overlap: aligned at 0 s, not 5.5 h apart
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# === the method verbs' --data ===============================================================================
def _good_edf(d: Path, rec, name="S01.edf"):
    return edf(d / name, [("ECG II", *_ecg(rec)), ("Pleth", *_ppg(rec))], rec.annotations)


def d_empty_folder(d, rec):
    return [], ["--data", str(d), "holds no recordings"]


def d_missing_folder(d, rec):
    return [], ["--data", "does not exist"], d / "absent"


def d_data_is_a_file(d, rec):
    return [], ["not a folder"], _good_edf(d, rec)


def d_only_unsupported(d, rec):
    (d / "notes.txt").write_text("x")
    (d / "S01.json").write_text("{}")
    return [], ["holds no recordings"]


def d_same_recording_twice(d, rec):
    shutil.copy(_good_edf(d, rec), d / "S01-copy.edf")
    return [], ["S01-copy.edf", "S01.edf", "same recording"]


def d_one_modality(d, rec):
    edf(d / "S01.edf", [("ECG II", *_ecg(rec))], rec.annotations)
    return [], ["S01.edf", "ppg", "--channels"]


def d_map_missing(d, rec):
    _good_edf(d, rec)
    return ["--channels", "ppg=Finger"], ["S01.edf", "--channels", "Finger"]


def d_map_unknown_key(d, rec):
    _good_edf(d, rec)
    return ["--channels", "spo2=Pleth"], ["--channels", "spo2"]


def d_map_file_not_json(d, rec):
    _good_edf(d, rec)
    (d.parent / "map.json").write_text("{ecg: ")
    return ["--channels", str(d.parent / "map.json")], ["--channels", "map.json", "not valid JSON"]


def d_label_unknown_class(d, rec):
    _good_edf(d, rec)
    return ["--label-map", "Rest=calm"], ["--label-map", "'calm'", "not a class"]


def d_label_bad_syntax(d, rec):
    _good_edf(d, rec)
    return ["--label-map", "Rest"], ["--label-map", "KEY=VALUE"]


def d_label_twice(d, rec):
    _good_edf(d, rec)
    return ["--label-map", "Rest=baseline,Rest=stress"], ["--label-map", "'Rest'", "twice"]


def _both_csv(d: Path, rec, ppg=lambda x: x, rate: float = 128.0) -> Path:
    """ECG and PPG of ``rec`` on one board rate (BrainFlow CSV has one), as a board would record them."""
    t = np.arange(round(rec.duration * rate)) / rate
    (e, er), (x, pr) = _ecg(rec), _ppg(rec)
    ecg = np.interp(t, np.arange(len(e)) / er, e)
    p = np.interp(t, np.arange(len(x)) / pr, x)
    return csv(d / "S01.csv", [("ECG", ecg, "ecg"), ("PPG", ppg(p), "ppg")], rate)


def d_wrong_columns(d, rec):
    p = _both_csv(d, rec)
    lines = p.read_text().splitlines(keepends=True)
    lines[9] = lines[9].rstrip("\n") + "\t1.0\n"
    p.write_text("".join(lines))
    return [], ["S01.csv", "line 10"]


def d_flat(d, rec):
    x, rate = _ppg(rec)
    edf(d / "S01.edf", [("ECG II", *_ecg(rec)), ("Pleth", np.zeros_like(x), rate)], rec.annotations)
    return [], ["S01.edf", "quality gate"]


def d_nan(d, rec):
    def holes(x):
        x = x.copy()
        x[::50] = np.nan
        return x

    _both_csv(d, rec, holes)
    return [], ["S01.csv", "quality gate"]


def d_rate_too_low(d, rec):
    n = 10 * 180
    t = np.arange(n) / 10
    csv(d / "S01.csv", [("ECG", np.sin(t * 7), "ecg"), ("PPG", np.sin(t * 6), "ppg")], 10.0)
    return [], ["S01.csv", "10 Hz", "band"]


def d_rate_no_whole_hop(d, rec):
    _both_csv(d, rec, rate=100.3)
    return [], ["S01.csv", "100.3 Hz", "hop"]


def d_ambiguous(d, rec):
    x, rate = _ppg(rec)
    edf(d / "S01.edf", [("ECG II", *_ecg(rec)), ("PPG green", x, rate), ("PPG red", x * 0.9, rate)],
        rec.annotations)
    return [], ["S01.edf", "ambiguous", "--channels"]


def d_too_short(d, rec):
    short = rec.copy().crop(0, 30)
    _good_edf(d, short)
    return [], ["no windows", "60 s"]


def d_zero_byte(d, rec):
    (d / "S01.edf").write_bytes(b"")
    return [], ["S01.edf", "empty (0 bytes)"]


def d_truncated_edf(d, rec):
    p = _good_edf(d, rec)
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # cut mid data record
    return [], ["S01.edf", "EDF"]


def d_bad_label_sidecar(d, rec):
    p = _both_csv(d, rec)
    Path(f"{p}.labels.json").write_text('{"annotations": [{"onset": 0}]}')
    return [], ["S01.csv.labels.json", "label sidecar"]


DATA_CASES: dict[str, Callable] = {
    "empty folder": d_empty_folder,
    "folder does not exist": d_missing_folder,
    "--data names a file": d_data_is_a_file,
    "only unsupported files": d_only_unsupported,
    "same recording twice": d_same_recording_twice,
    "one modality missing": d_one_modality,
    "channel map names a missing channel": d_map_missing,
    "channel map key unknown to the task": d_map_unknown_key,
    "channel map file not JSON": d_map_file_not_json,
    "label map to an unknown class": d_label_unknown_class,
    "label map without =": d_label_bad_syntax,
    "label map key twice": d_label_twice,
    "CSV with a row of the wrong width": d_wrong_columns,
    "flat channel": d_flat,
    "NaN channel": d_nan,
    "rate too low for the band": d_rate_too_low,
    "rate without a whole number of samples per hop": d_rate_no_whole_hop,
    "two candidate channels": d_ambiguous,
    "shorter than one window": d_too_short,
    "0-byte EDF": d_zero_byte,
    "EDF cut mid data record": d_truncated_edf,
    "broken label sidecar": d_bad_label_sidecar,
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_data_refused_and_no_run_left(case, tmp_path, subject, capsys):
    d = tmp_path / "data"
    d.mkdir()
    made = DATA_CASES[case](d, subject.copy())
    extra, culprits = made[0], made[1]
    data = made[2] if len(made) > 2 else d
    run = tmp_path / "run"
    refused(["pretrain", "-q", "--run", str(run), "--data", str(data), "--task", "stress", "--no-progress",
             "--epochs", "1", *extra], capsys, culprits, d, run)
    assert not run.exists()


@pytest.fixture(scope="module")
def ready_run(tmp_path_factory):
    """A run made from four good own-format subjects (windows cut), for the cases on an existing run."""
    root = tmp_path_factory.mktemp("ready")
    d = root / "data"
    d.mkdir()
    for k in range(1, 5):
        _good_edf(d, simulate_subject("stress", f"S{k:02d}", 3.0, seed=0), f"S{k:02d}.edf")
    run = root / "run"
    from edge_bridge.runs import Run

    Run.open(run, data=d, task="stress", label_map="baseline=baseline").windows(progress=False)
    assert (run / "windows.npz").is_file()
    return run, d


@pytest.mark.parametrize("extra, culprits", [
    (["--channels", "ppg=Other"], ["--channels", "ppg=Other", "another --run"]),
    (["--label-map", "Rest=stress"], ["--label-map", "Rest=stress", "another --run"]),
    (["--data", "/tmp"], ["/tmp", "another --run"]),  # exists: past preflight, refused by the run
    (["--task", "sleep"], ["sleep", "another --run"]),
], ids=["other channel map", "other label map", "other data", "other task"])
def test_existing_run_refuses_other_maps(extra, culprits, ready_run, capsys):
    run, d = ready_run
    refused(["pretrain", "-q", "--run", str(run), "--no-progress", "--epochs", "1", *extra], capsys, culprits,
            run, d)


def test_data_control_is_accepted(tmp_path, subject, capsys):
    """The same writers, nothing wrong: a run is made (the cases above fail for their culprit alone)."""
    d = tmp_path / "data"
    d.mkdir()
    for k in range(1, 5):
        _good_edf(d, subject, f"S{k:02d}.edf") if k == 1 else _good_edf(
            d, simulate_subject("stress", f"S{k:02d}", 3.0, seed=0), f"S{k:02d}.edf")
    run = tmp_path / "run"
    code = main(["pretrain", "-q", "--run", str(run), "--data", str(d), "--task", "stress", "--no-progress",
                 "--epochs", "1", "--backbone-config", TINY_TARGET, "--label-map", "Rest=baseline"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((run / "run.json").read_text())["label_map"] == {"Rest": "baseline"}
