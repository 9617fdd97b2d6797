"""`edge-bridge deploy` end to end: BrainFlow playback, the frame emulator, signals, and no torch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from deploy.live import LiveConfig, LivePipeline
from deploy.runtime import CompositeRunner
from edge_bridge.bundle import Bundle
from edge_bridge.cli import main

from .conftest import ppg_like

REPO = Path(__file__).resolve().parents[2]
FIELDS = {"time", "window", "start_s", "end_s", "class", "probabilities", "quality", "latency_ms", "bridge"}


def _playback(tmp_path: Path, seconds: float, labels: bool = True) -> Path:
    from firmware_interface import write_playback_file

    csv = tmp_path / f"ppg{seconds:g}.csv"
    write_playback_file([("PPG", "ppg", "a.u.", ppg_like(seconds))], 64.0, csv)
    if labels:
        Path(f"{csv}.labels.json").write_text(json.dumps(
            {"annotations": [{"onset": 0, "duration": 1000, "label": "stress"}]}))
    return csv


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_playback_end_to_end_writes_jsonl_and_summary(bundle_dir, tmp_path, capsys):
    csv = _playback(tmp_path, 7)
    out = tmp_path / "pred.jsonl"
    summary_json = tmp_path / "summary.json"
    code = main(["deploy", "--bundle", str(bundle_dir), "--source", f"playback:{csv}", "--out", str(out),
                 "--summary-json", str(summary_json), "--smoothing", "ema", "-q"])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4  # (7 s - 4 s window) / 1 s hop + 1
    for r in records:
        assert set(r) >= FIELDS | {"label", "raw_class"} and r["label"] == "stress"
    captured = capsys.readouterr()
    assert re.search(r"self-test of bridge v0001 against \S+ passed", captured.err), captured.err
    assert "summary" in captured.out and "end of the recording" in captured.out
    assert "matched the simulated labels" in captured.out and "real-time factor" in captured.out
    s = json.loads(summary_json.read_text())
    assert s["windows"] == 4 and s["lost_samples"] == 0 and s["labelled"] == 4 and s["device"] == "cpu"


def test_refusals_are_one_clear_line(bundle_dir, tmp_path, capsys):
    from deploy.engines import trt

    if not (trt.tensorrt_available() and trt.cuda_available()):
        args = ["deploy", "--bundle", str(bundle_dir), "--device", "jetson", "--source", "synthetic"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "--device jetson needs" in err and "--device cpu" in err and "Traceback" not in err
    (bundle_dir / "source_back.onnx").write_bytes(b"garbage")
    assert main(["deploy", "--bundle", str(bundle_dir), "--source", "synthetic"]) == 2
    assert "hashes to" in capsys.readouterr().err


def test_no_torch_after_a_deploy_run(bundle_dir, tmp_path):
    csv = _playback(tmp_path, 5, labels=False)
    code = textwrap.dedent(f"""
        import sys
        from edge_bridge.cli import main
        rc = main(["deploy", "--bundle", {str(bundle_dir)!r}, "--source", "playback:{csv}", "-q"])
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("torch", "sklearn", "matplotlib", "onnxscript", "tqdm")
                       or m.startswith(("edge_bridge.models", "edge_bridge.export", "edge_bridge.pipeline")))
        print("HEAVY", heavy, file=sys.stderr)
        sys.exit(rc if not heavy else 99)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, (f"the device path imported heavy modules (move the import inside the "
                                  f"function that needs it): {proc.stderr[-2000:]}")
    assert len(proc.stdout.splitlines()) == 2  # two windows as JSON lines on stdout


def test_sigint_stops_cleanly_with_a_summary(bundle_dir, tmp_path):
    csv = _playback(tmp_path, 60, labels=False)
    proc = subprocess.Popen([sys.executable, "-m", "edge_bridge.cli", "deploy", "--bundle", str(bundle_dir),
                             "--source", f"playback:{csv}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=tmp_path)
    try:
        first = proc.stdout.readline()  # blocks until the first window (4 s of playback)
        assert json.loads(first)["window"] == 0
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and time.monotonic() - t0 < 10
    assert "stopped: SIGINT" in err and "latency" in err and "Traceback" not in err
    assert all(json.loads(line) for line in out.splitlines())


def test_frame_emulator_over_loopback(bundle_dir):
    from firmware_interface import FrameEmulator, open_source

    x = ppg_like(10)
    emu = FrameEmulator(x[None], 64.0, modalities=["ppg"], scales=[1e-3], samples_per_frame=16, speed=4.0)
    emu.start()
    try:
        runner = CompositeRunner(Bundle.load(bundle_dir), "cpu")
        records = []

        class Sink:
            def write(self, r):
                records.append(r)

            def close(self):
                pass

        src = open_source(f"tcp:127.0.0.1:{emu.port}")
        pipe = LivePipeline(runner, src, [Sink()], LiveConfig(duration=8, watch_bridge=False))
        deadline = time.monotonic() + 8

        def until_done():
            while time.monotonic() < deadline and not emu.done.is_set():
                time.sleep(0.05)
            time.sleep(0.5)
            pipe.stop("emulator done")

        import threading

        threading.Thread(target=until_done, daemon=True).start()
        s = pipe.run()
        runner.close()
    finally:
        emu.stop()
    assert s.windows == 7 and s.lost_samples == 0 and s.predicted == 7
    assert np.isfinite([r["latency_ms"] for r in records]).all()


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_bad_duration(bundle_dir, bad, capsys):
    assert main(["deploy", "--bundle", str(bundle_dir), "--duration", bad]) == 2
    assert "--duration must be" in capsys.readouterr().err


def test_synthetic_board_gets_the_basic_gate_unless_asked(bundle_dir, tmp_path, capsys):
    """BrainFlow's synthetic PPG is no pulse: the physiological gate would skip it all, so deploy says it uses
    the basic gate there; asked for the physiological gate, it skips windows for physiological reasons."""
    out = tmp_path / "s.json"
    assert main(["deploy", "--bundle", str(bundle_dir), "--source", "synthetic", "--duration", "7",
                 "--summary-json", str(out), "--no-watch", "--no-drift"]) == 0
    assert "quality gate: basic" in capsys.readouterr().err
    basic = json.loads(out.read_text())
    assert basic["predicted"] > 0
    assert not any("low_sqi" in r or "motion" in r for r in basic.get("skipped_reasons", {}))
    assert main(["deploy", "--bundle", str(bundle_dir), "--source", "synthetic", "--duration", "7",
                 "--summary-json", str(out), "--no-watch", "--no-drift", "--quality", "physiology"]) == 0
    assert "quality gate: basic" not in capsys.readouterr().err
    phys = json.loads(out.read_text())
    reasons = phys.get("skipped_reasons", {})
    assert phys["skipped"] > 0 and reasons and all("low_sqi" in r or "motion" in r for r in reasons), reasons
