"""On-site recording: durable BrainFlow CSV + sidecar, survives SIGKILL, stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_interface import BrainFlowSource, record
from firmware_interface._brainflow import DataFilter
from firmware_interface.buffer import SequenceTracker
from firmware_interface.errors import ProfileError

REPO = Path(__file__).resolve().parents[2]
SIDECAR_KEYS = {"format", "version", "board_id", "board_name", "sampling_rate", "subject", "start_time",
                "timestamp_row", "package_num_row", "marker_row", "channels"}


def check_file(path: Path) -> np.ndarray:
    """The recording is whole lines only, BrainFlow reads it, and its package numbers have no hole."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "no torn last line"
    data = DataFilter.read_file(str(path))
    assert data.shape == (32, raw.count(b"\n"))
    tracker = SequenceTracker(256)
    tracker.update(data[0])
    assert tracker.lost == 0 and tracker.out_of_order == 0
    assert np.all(np.diff(data[30]) >= 0)
    return data


def read_with_edge_bridge(path: Path) -> object:
    from edge_bridge.recordings.brainflow_csv import read_brainflow_csv

    return read_brainflow_csv(path)


def test_record_writes_exactly_the_requested_samples(tmp_path: Path) -> None:
    profile = tmp_path / "chest.json"
    profile.write_text(json.dumps({"board": "SYNTHETIC_BOARD", "channels": [
        {"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"},
        {"name": "PPG", "row": 24, "modality": "ppg", "unit": "a.u."}]}))
    src = BrainFlowSource("synthetic", {"other_info": "test:record"}, profile=profile)
    seen = []
    result = record(src, tmp_path / "rec.csv", 1.2, subject="S01", chunk_seconds=0.2, progress=seen.append)
    assert (result.samples, result.interrupted, result.gaps) == (300, False, 0)
    assert seen and seen[-1].samples == 300
    data = check_file(result.path)
    assert data.shape[1] == 300
    side = json.loads(result.sidecar.read_text())
    assert result.sidecar.name == "rec.csv.json" and set(side) == SIDECAR_KEYS
    assert (side["format"], side["version"], side["board_id"], side["board_name"], side["sampling_rate"],
            side["subject"], side["timestamp_row"], side["package_num_row"], side["marker_row"]) == (
        "edge-bridge/brainflow-csv", 1, -1, "SYNTHETIC_BOARD", 250.0, "S01", 30, 0, 31)
    assert side["channels"] == [{"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"},
                                {"name": "PPG", "row": 24, "modality": "ppg", "unit": "a.u."}]
    rec = read_with_edge_bridge(result.path)
    assert rec.channel_names == ["ECG", "PPG"] and rec.channel("ECG").rate == 250.0
    np.testing.assert_array_equal(rec.channel("ECG").data, data[1])
    assert rec.meta["gaps"] == 0


def test_record_refuses_to_overwrite_and_wants_csv(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("keep me")
    src = BrainFlowSource("synthetic", {"other_info": "test:refuse"})
    with pytest.raises(FileExistsError, match="--overwrite"):
        record(src, tmp_path / "a.csv", 1.0)
    assert (tmp_path / "a.csv").read_text() == "keep me"
    with pytest.raises(ProfileError, match=r"must end in \.csv"):
        record(src, tmp_path / "a.edf", 1.0)


def _wait_for_data(path: Path, proc: subprocess.Popen, min_lines: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"recorder exited early: {proc.communicate()}")
        if path.exists():
            lines = path.read_bytes().count(b"\n")
            if lines >= min_lines:
                return lines
        time.sleep(0.05)
    pytest.fail("the recorder wrote nothing in 60 s")


def test_sigkill_mid_recording_keeps_every_flushed_sample(tmp_path: Path) -> None:
    """Issue: a recorder killed with SIGKILL mid-recording leaves a readable file with all flushed samples."""
    out = tmp_path / "killed.csv"
    code = ("from firmware_interface import BrainFlowSource, record\n"
            f"record(BrainFlowSource('synthetic'), {str(out)!r}, 60.0, chunk_seconds=0.2)\n")
    scratch = tmp_path / "scratch"  # a killed recorder leaves its one-chunk scratch file there
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)})
    try:
        _wait_for_data(out, proc, 250)
        time.sleep(0.33)  # somewhere between two chunks, or in the middle of one
        flushed = out.read_bytes().count(b"\n")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    data = check_file(out)
    print(f"SIGKILL: {flushed} samples flushed before the kill, {data.shape[1]} in the file")
    assert data.shape[1] >= flushed
    rec = read_with_edge_bridge(out)
    assert len(rec.channels[0].data) == data.shape[1]


def test_record_command_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "cli.csv"
    proc = subprocess.Popen([sys.executable, "-m", "edge_bridge.cli", "record", "--board", "synthetic",
                             "--seconds", "60", "-o", str(out), "--chunk-seconds", "0.2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        _wait_for_data(out, proc, 100)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted:" in stdout and f"wrote {out}" in stdout
    data = check_file(out)
    assert str(data.shape[1]) in stdout
    assert "[board_logger]" not in stderr  # BrainFlow's own logger stays off without --verbose
