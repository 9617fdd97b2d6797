"""Emulator -> TCP on 127.0.0.1 -> decoder -> buffer, with damage on the way, reconnects, and the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_interface import FrameEmulator, FrameSource, TcpTransport
from firmware_interface.errors import SourceError
from firmware_interface.source import concat_chunks

REPO = Path(__file__).resolve().parents[2]


def _runs(missing: list[int]) -> int:
    return sum(1 for k, s in enumerate(missing) if k == 0 or missing[k - 1] != s - 1)


def test_emulator_stream_with_corruption_delivers_every_good_frame(long_runs: dict) -> None:
    """Issue: 10 s with bit flips, dropped frames and garbage: every good frame delivered, every bad one
    rejected and counted."""
    run = long_runs["emulator"].result(timeout=120)
    emu, log, dec = run.extra["emu"], run.extra["emu"].log, run.extra["decoder"]
    chunk = concat_chunks(run.chunks)
    spf = emu.spf
    good = sorted(log.sent)
    print(f"emulator: {len(good)} good, {len(log.corrupted)} bit-flipped, {len(log.dropped)} dropped frames, "
          f"{log.garbage_bytes} garbage bytes; decoder {dec}; source {run.stats}")
    assert len(log.corrupted) >= 5 and len(log.dropped) >= 5 and log.garbage_bytes > 0  # the test bites
    assert not log.unsent and len(good) + len(log.corrupted) + len(log.dropped) == emu.n_frames
    # every good frame, bit for bit, in order, and nothing else
    expected = np.concatenate([emu.values[:, s * spf:(s + 1) * spf] for s in good], axis=1)
    assert chunk.data.shape == expected.shape
    np.testing.assert_array_equal(chunk.data, expected)
    expected_ts = np.concatenate([(s * spf + np.arange(spf)) / 250.0 for s in good])
    np.testing.assert_allclose(chunk.timestamps, expected_ts, rtol=0, atol=1e-9)
    # every bad frame between the first and the last good one is counted as lost, and each was rejected
    missing = [s for s in range(good[0], good[-1] + 1) if s not in set(good)]
    assert run.stats.lost_samples == len(missing) * spf
    assert run.stats.gaps == _runs(missing)
    bad_in_range = [s for s in log.corrupted if good[0] < s < good[-1]]
    assert dec.rejected >= len(bad_in_range)
    assert run.stats.rejected == dec.rejected
    assert run.stats.out_of_order == 0 and run.stats.reconnects == 0


def test_reconnects_when_the_device_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="firmware_interface")
    data = np.vstack([np.sin(np.arange(1500) / 9.0), np.cos(np.arange(1500) / 4.0)])
    first = FrameEmulator(data, 250.0, modalities=["ecg", "ppg"]).start()
    port = first.port
    chunks = []
    with FrameSource(TcpTransport("127.0.0.1", port), backoff=0.2) as src:
        time.sleep(0.6)
        chunks.append(src.read())
        first.stop()  # the device goes away ...
        time.sleep(0.3)
        skipped = 5  # ... and comes back 5 frames later, as a device that kept sampling would
        second = FrameEmulator(data, 250.0, modalities=["ecg", "ppg"], port=port,
                               start_seq=first.next_seq + skipped,
                               timestamp_start_us=(first.next_seq + skipped) * 40_000).start()
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and not any(c.reconnected for c in chunks):
                time.sleep(0.1)
                chunks.append(src.read())
            time.sleep(0.4)
            chunks.append(src.read())
            stats = src.stats
        finally:
            second.stop()
    assert any(c.reconnected for c in chunks) and stats.reconnects == 1
    assert stats.lost_samples == skipped * 10 and stats.gaps == 1
    assert chunks[-1].n_samples > 0
    assert "connection lost" in caplog.text and "reconnected after" in caplog.text
    assert np.all(np.diff(concat_chunks(chunks).timestamps) > 0)


def test_profile_names_frame_channels(tmp_path: Path) -> None:
    profile = tmp_path / "wrist.json"
    profile.write_text(json.dumps({"board": "frames", "channels": [
        {"name": "wrist-PPG", "row": 1, "modality": "ppg", "unit": "a.u."}]}))
    data = np.vstack([np.zeros(500), np.arange(500.0)])
    with FrameEmulator(data, 250.0, modalities=["ecg", "ppg"]) as emu, \
            FrameSource(TcpTransport("127.0.0.1", emu.port), profile=profile) as src:
        time.sleep(0.4)
        chunk = src.read()
    assert [(c.name, c.modality, c.unit, c.row) for c in src.channels] == [("wrist-PPG", "ppg", "a.u.", 1)]
    np.testing.assert_allclose(chunk.data[0], emu.values[1, :chunk.n_samples])


def test_no_valid_frame_is_a_clear_error() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def talk_nonsense() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"AT+OK\r\n" * 50)
            time.sleep(1.0)

    threading.Thread(target=talk_nonsense, daemon=True).start()
    src = FrameSource(TcpTransport("127.0.0.1", port), first_frame_timeout=0.5)
    with pytest.raises(SourceError, match=r"no valid frame arrived in 0.5 s \(350 bytes received"):
        src.start()
    server.close()
    with pytest.raises(SourceError, match=r"could not connect to 127\.0\.0\.1"):
        FrameSource(TcpTransport("127.0.0.1", port)).start()


def test_emulator_serves_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        FrameEmulator(np.zeros((1, 100)), 250.0, host="0.0.0.0")


def test_emulate_command_streams_an_edf_file(tmp_path: Path) -> None:
    from edge_bridge.recordings import Channel, Recording, write_edf

    t = np.arange(2500) / 250.0
    rec = Recording([Channel("PPG", 100 * np.sin(2 * np.pi * 1.1 * t), 250.0, "ppg", "a.u."),
                     Channel("ACC", np.cos(t), 250.0, "acc", "g")], subject="s1")
    edf = write_edf(rec, tmp_path / "s1.edf")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "edge_bridge.cli", "emulate", "--recording", str(edf),
                             "--port", "0", "--channels", "PPG", "--profile-out", str(tmp_path / "p.json")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "connect with" not in line:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
        found = re.search(r"tcp:127\.0\.0\.1:(\d+)", line)
        assert found, f"no port announced: {line!r}, {proc.stderr.read() if proc.poll() is not None else ''}"
        with FrameSource(TcpTransport("127.0.0.1", int(found.group(1))),
                         profile=tmp_path / "p.json") as src:
            time.sleep(0.5)
            chunk = src.read()
        assert [c.name for c in src.channels] == ["PPG"] and src.sampling_rate == 250.0
        assert chunk.n_samples >= 50
        np.testing.assert_allclose(chunk.data[0], rec.channel("PPG").data[:chunk.n_samples], atol=0.01)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "frame(s) intact" in out
