"""Simulated recordings replayed through BrainFlow's playback-file board come out exactly as written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_interface import BrainFlowSource, write_playback_file
from firmware_interface._brainflow import BoardShim, DataFilter
from firmware_interface.errors import ProfileError
from firmware_interface.source import concat_chunks

SIDECAR_KEYS = {"format", "version", "board_id", "board_name", "sampling_rate", "subject", "start_time",
                "timestamp_row", "package_num_row", "marker_row", "channels"}


def test_playback_of_a_simulated_recording_is_sample_exact(long_runs: dict) -> None:
    """Issue: playback of a simulated recording -> the samples that come out equal the file's."""
    run = long_runs["playback"].result(timeout=120)
    path, sim = run.extra["path"], run.extra["sim"]
    chunk = concat_chunks(run.chunks)
    file = DataFilter.read_file(str(path))
    n = file.shape[1]
    assert n == len(sim["ECG"]) and chunk.n_samples == n, "every sample comes out, none skipped"
    assert chunk.finished
    ts_row, marker_row = BoardShim.get_timestamp_channel(-1), BoardShim.get_marker_channel(-1)
    other = [r for r in range(file.shape[0]) if r not in (ts_row, marker_row)]
    np.testing.assert_array_equal(chunk.raw[other], file[other])  # bit for bit what the file holds
    assert [(c.name, c.row) for c in run.extra["channels"]] == [("ECG", 1), ("PPG", 24)]
    np.testing.assert_array_equal(chunk.data, file[[1, 24]])
    # against the simulated arrays: only the CSV's six decimals stand between them
    np.testing.assert_allclose(chunk.data[0], sim["ECG"], rtol=0, atol=5.0000001e-7)
    np.testing.assert_allclose(chunk.data[1], sim["PPG"], rtol=0, atol=5.0000001e-7)
    assert run.stats.gaps == 0 and run.stats.lost_samples == 0
    # real time: BrainFlow paces by the file's timestamps
    span = chunk.timestamps[-1] - chunk.timestamps[0]
    print(f"playback: {n} samples replayed over {span:.3f} s (file spans {(n - 1) / 250:.3f} s)")
    assert abs(span - (n - 1) / 250.0) < 0.05 * (n / 250.0)


def test_sidecar_and_rate_other_than_the_master_board(tmp_path: Path) -> None:
    """A 64 Hz PPG file replays at 64 Hz; the source reports the sidecar's rate, not the master board's."""
    ppg = np.round(np.sin(np.arange(48) / 5.0) * 100, 3)
    path = write_playback_file([("PPG", "ppg", "a.u.", ppg)], 64.0, tmp_path / "ppg64.csv", subject="s1")
    side = json.loads((tmp_path / "ppg64.csv.json").read_text())
    assert set(side) == SIDECAR_KEYS
    assert (side["format"], side["version"], side["board_id"], side["board_name"]) == (
        "edge-bridge/brainflow-csv", 1, -1, "SYNTHETIC_BOARD")
    assert (side["sampling_rate"], side["subject"], side["timestamp_row"], side["package_num_row"],
            side["marker_row"]) == (64.0, "s1", 30, 0, 31)
    assert side["channels"] == [{"name": "PPG", "row": 24, "modality": "ppg", "unit": "a.u."}]
    with BrainFlowSource.playback(path) as src:
        assert (src.sampling_rate, src.stated_rate) == (64.0, 250.0)
        chunks = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.1)
            chunks.append(src.read())
            if chunks[-1].finished:
                break
    chunk = concat_chunks(chunks)
    np.testing.assert_array_equal(chunk.data[0], ppg)
    assert abs(np.median(np.diff(chunk.timestamps)) - 1 / 64) < 0.003


def test_write_playback_file_refuses_what_one_file_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="resample to a common rate"):
        write_playback_file([("ECG", "ecg", "mV", np.zeros(250)), ("PPG", "ppg", "a.u.", np.zeros(64))],
                            250.0, tmp_path / "x.csv")
    with pytest.raises(ProfileError, match="no free row"):
        many = [(f"E{k}", "ecg", "mV", np.zeros(10)) for k in range(40)]
        write_playback_file(many, 250.0, tmp_path / "y.csv")
    with pytest.raises(ProfileError, match="modality must be one of"):
        write_playback_file([("X", "blood", "mV", np.zeros(10))], 250.0, tmp_path / "z.csv")
