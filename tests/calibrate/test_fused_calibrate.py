"""On-site calibration of a fused (PPG + EDA) bundle: real export, real EDF recordings, real ONNX Runtime.

The bundle is the fused one of ``tests/export/test_fused_export.py`` (tiny PPG and EDA backbones, one
``PrototypeBridge(d_in=[d_ppg, d_eda])``, source weights shipped), exported once per module. The paired
recordings are simulated stress subjects (chest ECG 250 Hz, wrist PPG 64 Hz, wrist EDA 4 Hz) written as
EDF+, in one file or one per sensor. The tiny bundle's random backbones leave little to learn out of fold,
so the tests that publish use ``validation="holdout"`` (see tests/calibrate/test_calibrate.py).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibrate.core import calibrate, rollback
from calibrate.errors import CalibrationError
from calibrate.weights import PrototypeWeights, read_weights, save_bridge_dir
from deploy.runtime import CompositeRunner, run_windows
from edge_bridge.bundle import Bundle
from edge_bridge.cli import main
from edge_bridge.recordings import write_edf

torch = pytest.importorskip("torch")

HOLDOUT = {"validation": "holdout"}
# the writer as it was before fused bridges (the merge base of this work): K = 1 must give its bytes
BASE_COMMIT = "421582a"


def _tiny():
    from tests.export import conftest as c

    return SimpleNamespace(I=c.POS_I, J=c.POS_J, task=c.tiny_task, composite=c.tiny_composite,
                           windows=c.tiny_windows, export=c.export_tiny)


@pytest.fixture(scope="module")
def fused_template(tmp_path_factory) -> Path:
    from tests.export.test_fused_export import export_fused

    return export_fused(_tiny(), tmp_path_factory.mktemp("fused") / "fused.bundle").root


@pytest.fixture
def fused(fused_template, tmp_path) -> Path:
    dst = tmp_path / "fused.bundle"
    shutil.copytree(fused_template, dst)
    return dst


@pytest.fixture(scope="module")
def subject():
    """5 minutes of one simulated stress subject: ECG 250 Hz, PPG 64 Hz, RESP, and EDA at 16 Hz.

    Why EDA at 16 Hz (the simulator's 4 Hz upsampled): a sensor at another rate than the model's, so the
    one preprocessing path's resampling to the model's 4 Hz is part of what the fused calibrate reads.
    """
    from scipy.signal import resample_poly

    from edge_bridge.recordings.recording import Channel
    from edge_bridge.simulate import simulate_subject

    rec = simulate_subject("stress", "S01", minutes=5, seed=1)
    eda = rec.channel("EDA")
    rec.channels[rec.channel_names.index("EDA")] = Channel("EDA", resample_poly(eda.data, 4, 1), 4 * eda.rate,
                                                           "eda", eda.unit)
    return rec


@pytest.fixture(scope="module")
def paired_edf(subject, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "S01.edf"
    write_edf(subject, path)
    return path


def _fused_windows(bundle: Bundle, n: int, seed: int) -> dict[str, np.ndarray]:
    from tests.export.test_fused_export import eda_windows

    return {"target": _tiny().windows(n, seed).target, "eda": eda_windows(n, seed + 100)}


def _torch_bridge(dims, tokens=5, d_out=6, rank=2, prototypes=4, seed=0):
    from edge_bridge.bridge import PrototypeBridge

    torch.manual_seed(seed)
    b = PrototypeBridge(list(dims) if len(dims) > 1 else dims[0], tokens, d_out, rank=rank,
                        prototypes=prototypes)
    with torch.no_grad():
        b.B.normal_()  # a trained bridge, not the zero init
    return b


# --- 1. the refit of a fused bundle, end to end ----------------------------------------------------------
def test_fused_refit_publishes_a_version_that_runs_verifies_and_rolls_back(fused, paired_edf):
    before = Bundle.load(fused)
    x = _fused_windows(before, 6, 21)
    logits_v1 = run_windows(before, x)

    report = calibrate(fused, [paired_edf], method="auto", min_states=1, **HOLDOUT)
    assert report.accepted and report.new_version == 2, report.verdict
    assert set(report.input_rates_hz) == {"source", "target", "eda"}
    assert report.input_rates_hz["eda"] == [16.0]  # resampled to the model's 4 Hz
    assert any(n.startswith("fused bridge: 2 target modalities") for n in report.notes)
    assert "gradient" in report.candidates  # the gradient path ran through the source weights, fused too

    b = Bundle.load(fused)  # verifies hashes and that the new version's tensors fit the chain
    v = b.current_bridge
    assert b.manifest.current_bridge == 2 and v.origin == "calibrate"
    assert [t.name for t in v.onnx.inputs] == ["h", "h_eda"]
    # the safetensors layout is the exporter's (the torch bridge's state_dict), config with K widths
    from safetensors import safe_open

    with safe_open(str(fused / v.weights_file), framework="numpy") as f:
        keys, cfg = set(f.keys()), json.loads(f.metadata()["config"])
    with safe_open(str(fused / before.current_bridge.weights_file), framework="numpy") as f:
        assert keys == set(f.keys()) == {"A_0", "A_1", "B", "Pi"}
        assert cfg == json.loads(f.metadata()["config"])
    w = read_weights(fused / v.weights_file, ["h", "h_eda"])
    assert w.input_dims == (8, 4) and w.config["d_in"] == [8, 4]

    # the published ONNX runs in run_windows and gives the torch composite with those weights
    from edge_bridge.bridge import PrototypeBridge
    from tests.export.test_fused_export import fused_composite

    comp = fused_composite(_tiny()).eval()
    new = PrototypeBridge(**w.config)
    new.load_state_dict({k: torch.from_numpy(a) for k, a in w.tensors().items()})
    comp.bridge = new.eval()
    got = run_windows(b, x)
    with torch.no_grad():
        want = comp(torch.from_numpy(x["target"]), torch.from_numpy(x["eda"])).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert np.abs(got - logits_v1).max() > 1e-3  # a new bridge, not the old one re-published
    with CompositeRunner(b, "cpu") as runner:  # its own golden outputs, h_eda included: a fresh start passes
        assert runner.self_test().passed

    assert rollback(fused) == (2, 1)
    b1 = Bundle.load(fused)
    assert b1.manifest.current_bridge == 1
    np.testing.assert_array_equal(run_windows(b1, x), logits_v1)


def test_fused_closed_form_on_one_file_per_sensor(fused, subject, tmp_path):
    """Chest ECG in one EDF, wrist PPG + EDA in another starting 20 s later: aligned and cropped; the
    same again with one file per modality."""
    chest = subject.copy().pick(["ECG"])
    wrist = subject.copy().pick(["PPG", "EDA"]).crop(20)  # starts 20 s later (crop moves the start time)
    paths = []
    for name, rec in (("chest", chest), ("wrist", wrist)):
        paths.append(tmp_path / f"{name}.edf")
        write_edf(rec, paths[-1])
    report = calibrate(fused, paths, method="closed-form", dry_run=True, min_states=1, **HOLDOUT)
    late = calibrate(fused, [_write(subject.copy().crop(20), tmp_path / "late.edf")], method="closed-form",
                     dry_run=True, min_states=1, **HOLDOUT)  # the seconds both files cover, in one file
    assert report.windows == late.windows and report.skipped == late.skipped
    assert report.candidates["closed-form"].to_dict() == late.candidates["closed-form"].to_dict()
    whole = calibrate(fused, [_write(subject, tmp_path / "all.edf")], method="closed-form", dry_run=True,
                      min_states=1, **HOLDOUT)
    assert whole.windows["paired"] > report.windows["paired"]
    three = []
    for ch in ("ECG", "PPG", "EDA"):
        three.append(tmp_path / f"{ch}.edf")
        write_edf(subject.copy().pick([ch]), three[-1])
    by_modality = calibrate(fused, three, method="closed-form", dry_run=True, min_states=1, **HOLDOUT)
    assert by_modality.windows == whole.windows
    assert by_modality.candidates["closed-form"].to_dict() == whole.candidates["closed-form"].to_dict()


def _write(rec, path: Path) -> Path:
    write_edf(rec, path)
    return path


# --- 2. weights and ONNX for K inputs -----------------------------------------------------------------------
@pytest.mark.parametrize("dims", [(8, 4), (3, 1, 5), (6, 6, 2, 1)])
def test_fused_onnx_equals_the_torch_bridge(dims):
    b = _torch_bridge(dims)
    names = ("h", *(f"h_{k}" for k in ("eda", "acc", "resp")[:len(dims) - 1]))
    w = PrototypeWeights(b.input_matrix().detach().numpy(), b.B.detach().numpy(), b.Pi.detach().numpy(),
                         b.tokens, dims, names)
    assert [a.shape for a in w.input_maps()] == [(2, d) for d in dims]
    data = w.onnx_bytes({"method": "test"})
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == list(names)
    assert [i.type.tensor_type.shape.dim[1].dim_value for i in model.graph.input] == list(dims)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for n in (1, 9):
        rng = np.random.default_rng(n)
        hs = [rng.standard_normal((n, d)).astype(np.float32) for d in dims]
        with torch.no_grad():
            want = b([torch.from_numpy(h) for h in hs]).numpy()
        np.testing.assert_allclose(sess.run(None, dict(zip(names, hs, strict=True)))[0], want, atol=1e-5,
                                   rtol=0)
        np.testing.assert_allclose(w.forward(np.concatenate(hs, axis=1)), want, atol=1e-5, rtol=0)


def test_fused_safetensors_round_trip_with_the_torch_formats(tmp_path):
    from edge_bridge.bridge import load_bridge

    b = _torch_bridge((8, 4))
    b.save(tmp_path / "torch")  # the torch bridge's own file (the exporter writes the same state_dict)
    w = read_weights(tmp_path / "torch" / "bridge.safetensors", ["h", "h_eda"])
    assert w.config == b.config and w.input_dims == (8, 4)
    np.testing.assert_array_equal(w.A, b.input_matrix().detach().numpy())
    save_bridge_dir(w, tmp_path / "np", meta={"origin": "calibrate"})
    b2 = load_bridge(tmp_path / "np")  # a fused PrototypeBridge again, A_0 and A_1 exactly
    assert b2.config == b.config and set(b2.state_dict()) == set(b.state_dict()) == {"A_0", "A_1", "B", "Pi"}
    for k, v in b.state_dict().items():
        torch.testing.assert_close(b2.state_dict()[k], v, rtol=0, atol=0)
    # bytes alone, as a bundle keeps them; and a refit keeps the layout (dataclasses.replace)
    path = tmp_path / "v0002.safetensors"
    path.write_bytes(w.safetensors_bytes())
    again = read_weights(path, ["h", "h_eda"])
    assert again.input_dims == (8, 4) and np.array_equal(again.A, w.A)
    assert w.copy().input_names == ("h", "h_eda")


def test_fused_weights_that_do_not_fit_are_refused(tmp_path):
    b = _torch_bridge((8, 4))
    b.save(tmp_path / "torch")
    path = tmp_path / "torch" / "bridge.safetensors"
    with pytest.raises(CalibrationError, match=r"takes 1 input\(s\) \['h'\].*2 input map\(s\) \(A_0, A_1\)"):
        read_weights(path, ["h"])
    w = read_weights(path)  # no names: reads, but cannot be written as ONNX without the bundle's names
    with pytest.raises(CalibrationError, match="needs its bundle's input names"):
        w.onnx_bytes()
    with pytest.raises(CalibrationError, match="add up to A's 12 columns"):
        PrototypeWeights(w.A, w.B, w.Pi, w.tokens, (8, 5))
    with pytest.raises(CalibrationError, match="one distinct name per input"):
        PrototypeWeights(w.A, w.B, w.Pi, w.tokens, (8, 4), ("h", "h"))


def _base_weights_module():
    """``calibrate/weights.py`` as of BASE_COMMIT, imported as its own module (None if git cannot say)."""
    root = Path(__file__).resolve().parents[2]
    try:
        src = subprocess.run(["git", "-C", str(root), "show", f"{BASE_COMMIT}:calibrate/weights.py"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    spec = importlib.util.spec_from_loader("calibrate_weights_base", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        exec(compile(src, f"{BASE_COMMIT}:calibrate/weights.py", "exec"), module.__dict__)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_single_target_weights_and_onnx_bytes_are_unchanged():
    """K = 1 is the concatenation of one: the same ONNX bytes and the same safetensors (tensors and
    metadata; safetensors orders its metadata differently from call to call) as before fused bridges."""
    from safetensors.numpy import load

    base = _base_weights_module()
    if base is None:
        pytest.skip(f"git cannot show {BASE_COMMIT} here (not a checkout of the repository)")
    b = _torch_bridge((8,))
    arrays = (b.A.detach().numpy(), b.B.detach().numpy(), b.Pi.detach().numpy(), b.tokens)
    new, old = PrototypeWeights(*arrays), base.PrototypeWeights(*arrays)
    assert new.onnx_bytes({"method": "closed-form"}) == old.onnx_bytes({"method": "closed-form"})
    meta = {"origin": "calibrate", "based_on": "v0001"}
    a, c = new.safetensors_bytes(meta), old.safetensors_bytes(meta)
    ta, tc = load(a), load(c)
    assert sorted(ta) == sorted(tc) == ["A", "B", "Pi"]
    assert all(ta[k].dtype == tc[k].dtype and ta[k].tobytes() == tc[k].tobytes() for k in ta)
    assert _metadata(a) == _metadata(c)
    assert new.config == old.config and isinstance(new.config["d_in"], int)


def _metadata(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])["__metadata__"]


# --- 3. the gate, the report and a missing modality -----------------------------------------------------
def test_a_window_is_used_only_when_every_modality_passes(fused, subject, tmp_path):
    rec = subject.copy()
    eda = rec.channel("EDA")
    eda.data = eda.data.copy()
    eda.data[: int(40 * eda.rate)] = eda.data[0]  # a flat EDA (sensor off the skin) for the first 40 s
    path = _write(rec, tmp_path / "flat-eda.edf")
    whole = calibrate(fused, [_write(subject, tmp_path / "ok.edf")], method="closed-form", dry_run=True,
                      min_states=1, **HOLDOUT)
    report = calibrate(fused, [path], method="closed-form", dry_run=True, min_states=1, **HOLDOUT)
    lost = whole.windows["paired"] - report.windows["paired"]
    assert lost > 0 and report.skipped.get("quality", 0) - whole.skipped.get("quality", 0) == lost
    # the windows the flat EDA cost are flagged under its name (flat; clipped where the flat run is the
    # window's minimum); the other modalities' flags are as on the whole recording
    more = {k: v - whole.quality_flags.get(k, 0) for k, v in report.quality_flags.items()}
    new = {k: v for k, v in more.items() if v > 0}
    assert new and all(k.startswith("eda: EDA: ") for k in new), report.quality_flags
    assert "eda: EDA: flat" in new and sum(new.values()) >= lost


def test_a_recording_without_one_target_modality_is_refused_in_one_line(fused, subject, tmp_path, capsys,
                                                                           snapshot):
    path = _write(subject.copy().pick(["ECG", "PPG"]), tmp_path / "no-eda.edf")
    before = snapshot(fused)
    with pytest.raises(CalibrationError) as err:
        calibrate(fused, [path], **HOLDOUT)
    msg = str(err.value)
    assert "no eda signal" in msg and "['EDA']" in msg and "['ECG', 'PPG']" in msg and "\n" not in msg
    assert main(["calibrate", "--bundle", str(fused), "--paired", str(path)]) == 2
    out = capsys.readouterr().err.strip()
    assert "no eda signal" in out and "Traceback" not in out and len(out.splitlines()) == 1
    # a wrist file with PPG + EDA and no chest file beside it: the source is missing
    wrist = _write(subject.copy().pick(["PPG", "EDA"]), tmp_path / "wrist.edf")
    with pytest.raises(CalibrationError, match="no source signal"):
        calibrate(fused, [wrist], **HOLDOUT)
    assert snapshot(fused) == before


def test_cli_calibrates_a_fused_bundle_with_a_channel_map(fused, subject, tmp_path, capsys):
    """Channels named after the sensor's place, mapped per modality with --channels."""
    chest, wrist = subject.copy().pick(["ECG"]), subject.copy().pick(["PPG", "EDA"])
    for rec, names in ((chest, ("Chest",)), (wrist, ("Wrist", "GSR"))):
        for c, name in zip(rec.channels, names, strict=True):
            c.name = name
    paths = [str(_write(chest, tmp_path / "chest.edf")), str(_write(wrist, tmp_path / "wrist.edf"))]
    code = main(["calibrate", "--bundle", str(fused), "--paired", *paths, "--channels",
                 "ecg=Chest,ppg=Wrist,eda=GSR", "--method", "closed-form", "--validation", "holdout",
                 "--min-states", "1", "--dry-run", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["windows"]["paired"] > 0 and report["input_rates_hz"]["eda"] == [16.0]
    assert report["verdict"].startswith(("dry run", "kept v0001"))


def test_help_shows_a_fused_example(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    text = capsys.readouterr().out
    assert "fused" in text and "eda=" in text


def test_record_checks_every_modality_of_a_fused_bundle(fused, tmp_path, capsys, snapshot):
    """BrainFlow's synthetic board with ECG and PPG rows named (no EDA) cannot record for a PPG + EDA
    bridge: refused from the board description, before a session opens or a file is written."""
    pytest.importorskip("brainflow")
    profile = tmp_path / "chest-wrist.json"
    profile.write_text(json.dumps({"board": "SYNTHETIC_BOARD", "channels": [
        {"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"},
        {"name": "PPG", "row": 24, "modality": "ppg", "unit": "a.u."}]}))
    before = snapshot(fused)
    code = main(["calibrate", "--bundle", str(fused), "--record", "--duration", "30", "--board", "synthetic",
                 "--profile", str(profile), "--record-dir", str(tmp_path / "rec")])
    err = capsys.readouterr().err
    assert code == 2 and "gives no eda signal" in err and "Nothing was recorded" in err, err
    assert not (tmp_path / "rec").exists() and snapshot(fused) == before


def test_recordings_start_time_alignment_uses_the_source_clock(fused, subject, tmp_path):
    """An EDA file that starts before the chest file is cropped to the chest's span, not the reverse."""
    chest = subject.copy().pick(["ECG", "PPG"]).crop(30)
    eda = subject.copy().pick(["EDA"])
    assert chest.start_time - eda.start_time == dt.timedelta(seconds=30)
    paths = [_write(chest, tmp_path / "chest.edf"), _write(eda, tmp_path / "eda.edf")]
    report = calibrate(fused, paths, method="closed-form", dry_run=True, min_states=1, **HOLDOUT)
    solo = calibrate(fused, [_write(subject.copy().crop(30), tmp_path / "late.edf")], method="closed-form",
                     dry_run=True, min_states=1, **HOLDOUT)
    assert report.windows == solo.windows
