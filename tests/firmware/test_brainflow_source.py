"""BrainFlow boards as sources, on BrainFlow's own synthetic and playback boards (no mocks).

BrainFlow allows one session per (board, parameters) in a process, and the session runs of conftest.py hold
the synthetic board with default parameters; tests here give their synthetic boards a distinct
``other_info`` so they get their own session.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_interface import BrainFlowSource, open_source, parse_spec, write_playback_file
from firmware_interface._brainflow import BoardShim
from firmware_interface.buffer import SequenceTracker
from firmware_interface.errors import BoardError, ProfileError, SourceError
from firmware_interface.source import concat_chunks


def own(name: str) -> dict[str, str]:
    """Parameters that give a test its own synthetic-board session."""
    return {"other_info": f"test:{name}"}


def test_synthetic_board_ten_seconds(long_runs: dict) -> None:
    """Issue: synthetic board for 10 s -> sample count within 1 % of rate x time, zero gaps."""
    run = long_runs["synthetic"].result(timeout=120)
    chunk = concat_chunks(run.chunks)
    rate = run.extra["rate"]
    by_wall = rate * run.seconds  # wall clock from start() to stop()
    by_stamps = rate * (chunk.timestamps[-1] - chunk.timestamps[0]) + 1  # the span the samples cover
    print(f"synthetic: {chunk.n_samples} samples; wall {run.seconds:.3f} s -> {by_wall:.0f} expected "
          f"({100 * (chunk.n_samples / by_wall - 1):+.2f} %); timestamps -> {by_stamps:.0f} "
          f"({100 * (chunk.n_samples / by_stamps - 1):+.2f} %); {run.stats}")
    # rate x time, with time the span the board stamped on its samples: within 1 % (the bound)
    assert abs(chunk.n_samples - by_stamps) <= 0.01 * by_stamps
    # against our wall clock (start() returning to stop() returning) the bound is looser: on a loaded
    # machine those calls take long enough that the board streams outside that interval (seen: +1.6 %
    # by wall clock, -0.02 % by the board's own time stamps, no gap). Losses are ruled out below.
    assert abs(chunk.n_samples - by_wall) <= 0.03 * by_wall
    assert run.stats.gaps == 0 and run.stats.lost_samples == 0 and run.stats.out_of_order == 0
    assert run.stats.samples == chunk.n_samples
    # the package-number row of what we delivered has no hole (it wraps at 256)
    tracker = SequenceTracker(256)
    tracker.update(chunk.raw[BoardShim.get_package_num_channel(-1)])
    assert tracker.lost == 0
    assert np.all(np.diff(chunk.timestamps) >= 0)


def test_channels_come_from_the_board_description() -> None:
    src = BrainFlowSource("synthetic")
    names = BoardShim.get_eeg_names(-1)
    eeg = [c for c in src.channels if c.modality == "eeg"]
    assert [c.name for c in eeg] == names
    assert [c.row for c in eeg] == BoardShim.get_eeg_channels(-1)
    assert [c.row for c in src.channels if c.modality == "ppg"] == BoardShim.get_ppg_channels(-1)
    assert [c.row for c in src.channels if c.modality == "acc"] == BoardShim.get_accel_channels(-1)
    reserved = {BoardShim.get_timestamp_channel(-1), BoardShim.get_package_num_channel(-1),
                BoardShim.get_marker_channel(-1)}
    assert not reserved & {c.row for c in src.channels}
    assert src.sampling_rate == BoardShim.get_sampling_rate(-1) == 250


def test_device_profile_names_the_rows(tmp_path: Path) -> None:
    profile = tmp_path / "chest.json"
    profile.write_text(json.dumps({"board": "SYNTHETIC_BOARD", "channels": [
        {"name": "ECG", "row": 1, "modality": "ecg", "unit": "mV"},
        {"name": "PPG", "row": 24, "modality": "ppg", "unit": "a.u."}]}))
    with BrainFlowSource("synthetic", own("profile"), profile=profile) as src:
        time.sleep(0.4)
        chunk = src.read()
    assert [(c.name, c.modality, c.unit, c.row) for c in src.channels] == [
        ("ECG", "ecg", "mV", 1), ("PPG", "ppg", "a.u.", 24)]
    assert chunk.data.shape[0] == 2 and chunk.n_samples > 50
    np.testing.assert_array_equal(chunk.data, chunk.raw[[1, 24]])


SYN = "SYNTHETIC_BOARD"


@pytest.mark.parametrize(("profile", "match"), [
    ({"board": "CYTON_BOARD", "channels": [{"name": "E", "row": 1, "modality": "ecg"}]}, "profile is for"),
    ({"board": SYN, "channels": [{"name": "E", "row": 30, "modality": "ecg"}]}, "not a data row"),
    ({"board": SYN, "channels": [{"name": "E", "row": 1, "modality": "heart"}]}, "modality must"),
    ({"board": SYN, "channels": [{"name": "E", "modality": "ecg"}]}, "lacks row"),
    ({"board": SYN, "channels": []}, "non-empty list"),
])
def test_bad_profiles_say_what_is_wrong(tmp_path: Path, profile: dict, match: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    with pytest.raises(ProfileError, match=match):
        BrainFlowSource("synthetic", profile=path)


def test_unknown_board_and_parameter_get_suggestions() -> None:
    with pytest.raises(BoardError, match="SYNTHETIC_BOARD"):
        BrainFlowSource("synthetc")
    with pytest.raises(ProfileError, match="did you mean 'serial_port'"):
        BrainFlowSource("synthetic", {"serialport": "/dev/ttyUSB0"})


def test_board_error_keeps_exit_code_and_names_the_port() -> None:
    src = BrainFlowSource("CYTON_BOARD", {"serial_port": "/dev/edge-bridge-no-such-port"})
    with pytest.raises(BoardError) as info:
        src.start()
    err = info.value
    assert err.exit_code == 2  # UNABLE_TO_OPEN_PORT_ERROR
    text = str(err)
    assert "CYTON_BOARD" in text and "/dev/edge-bridge-no-such-port" in text and "dialout" in text


def test_second_session_with_same_key_fails_clearly_and_spares_the_first() -> None:
    """BrainFlow keys sessions by board and parameters; a refused second one must not release the first."""
    with BrainFlowSource("synthetic", own("dup")) as first:
        second = BrainFlowSource("synthetic", own("dup"))
        with pytest.raises(BoardError, match=r"ANOTHER_BOARD_IS_CREATED_ERROR.*other_info"):
            second.start()
        del second
        time.sleep(0.3)
        first.read()
        time.sleep(0.3)
        assert first.read().n_samples > 30
        assert first.stats.reconnects == 0


def test_reconnects_after_the_session_is_released_behind_its_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="firmware_interface")
    chunks = []
    with BrainFlowSource("synthetic", own("reconnect"), backoff=0.2) as src:
        time.sleep(0.5)
        chunks.append(src.read())
        src._shim.release_session()  # the board goes away under the reader thread
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not any(c.reconnected for c in chunks):
            time.sleep(0.1)
            chunks.append(src.read())
        time.sleep(0.5)
        chunks.append(src.read())
        stats = src.stats
    assert any(c.reconnected for c in chunks)
    assert stats.reconnects == 1
    assert chunks[-1].n_samples > 50  # data flow again
    assert "connection lost" in caplog.text and "reconnected after 1 attempt" in caplog.text
    assert stats.gaps >= 1 and stats.lost_samples > 0  # the outage is counted from the timestamps


def test_gives_up_after_bounded_attempts_with_a_clear_error(tmp_path: Path) -> None:
    """A source whose device is gone for good raises from read() after its attempts; it does not hang."""
    path = write_playback_file([("ECG", "ecg", "mV", np.zeros(250))], 250.0, tmp_path / "gone.csv")
    with BrainFlowSource.playback(path, loop=True, backoff=0.1, backoff_max=0.2, max_reconnects=2) as src:
        time.sleep(0.2)
        src.read()
        path.unlink()  # the device will not come back ...
        src._shim.release_session()  # ... and the current session dies
        deadline = time.monotonic() + 5
        with pytest.raises(SourceError, match=r"could not reconnect in 2 attempt.*playback file .* does not"):
            while time.monotonic() < deadline:
                src.read()
                time.sleep(0.05)
        assert time.monotonic() < deadline


def test_brainflow_logger_is_quiet_by_default(tmp_path: Path) -> None:
    code = ("import time; from firmware_interface import open_source\n"
            "with open_source('synthetic') as s:\n    time.sleep(0.3); s.read()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and out.stdout == ""


@pytest.mark.parametrize(("spec", "expected"), [
    ("synthetic", ("synthetic", "", {})),
    ("playback:/data/rec.csv", ("playback", "/data/rec.csv", {})),
    ("board:CYTON_BOARD,serial_port=/dev/ttyUSB0,profile=p.json",
     ("board", "CYTON_BOARD", {"serial_port": "/dev/ttyUSB0", "profile": "p.json"})),
    ("tcp:127.0.0.1:5555", ("tcp", "127.0.0.1:5555", {})),
    ("serial:/dev/ttyACM0,baud=921600", ("serial", "/dev/ttyACM0", {"baud": "921600"})),
])
def test_source_specs(spec: str, expected: tuple) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(("spec", "match"), [
    ("usb:0", "unknown source kind"), ("tcp:localhost", "tcp:HOST:PORT"), ("playback:", "needs a target"),
    ("synthetic,speed=2", "no options"), ("serial:/dev/x,baud=fast", "baud must be an integer"),
])
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ProfileError, match=match):
        open_source(spec)


def test_a_stopped_source_keeps_its_data_and_can_start_again() -> None:
    src = BrainFlowSource("synthetic", own("restart"))
    with src:
        time.sleep(0.3)
    first = src.read()  # what was drained before stop() is still there
    assert first.n_samples > 30 and not src.connected
    with src:
        time.sleep(0.3)
        assert src.read().n_samples > 30
    assert src.stats.reconnects == 0
