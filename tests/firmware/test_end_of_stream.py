"""The end of a file is the end of the stream; a stall is a disconnect only for a live device.

Real BrainFlow playback boards on files written here; no mocks. Also the counters the summary reports:
duplicate and non-finite timestamps, and package numbers that repeat, go backwards or are NaN.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from firmware_interface import BrainFlowSource, RingBuffer, SequenceTracker, open_source, write_playback_file
from firmware_interface.errors import SourceError

RATE = 64.0


def _wave(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.sin(2 * np.pi * 1.2 * t)


def _drain(src, limit: float = 20.0) -> tuple[int, float]:
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < limit:
        chunk = src.read()
        n += chunk.n_samples
        if chunk.finished:
            return n, time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"the playback did not finish within {limit} s")


def test_lines_brainflow_skips_end_the_file_without_a_replay(tmp_path):
    """Blank lines count as lines but BrainFlow skips them: the file used to "stall", reconnect and replay."""
    path = write_playback_file([("PPG", "ppg", "au", _wave(3))], RATE, tmp_path / "blank.csv",
                               start_timestamp=1.7e9)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:100]) + "\n\n" + "".join(lines[100:]))
    with BrainFlowSource.playback(path, stall_timeout=1.0) as src:
        n, elapsed = _drain(src)
        stats = src.stats
    assert n == 192 and stats.samples == 192  # each sample once
    assert stats.reconnects == 0 and stats.lost_samples == 0 and stats.gaps == 0
    assert elapsed < 10


def test_a_file_that_delivers_nothing_fails_once_without_reconnecting(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("\n" * 100)
    src = BrainFlowSource.playback(path, startup_timeout=1.0, backoff=0.1)
    t0 = time.monotonic()
    with src, pytest.raises(SourceError, match=r"delivered no sample.*edge-bridge convert"):
        _drain(src)
    assert src.stats.reconnects == 0
    assert time.monotonic() - t0 < 10


def test_a_looping_playback_is_live_like_and_never_finishes(tmp_path):
    path = write_playback_file([("PPG", "ppg", "au", _wave(1))], RATE, tmp_path / "loop.csv",
                               start_timestamp=1.7e9)
    src = BrainFlowSource.playback(path, loop=True)
    assert src.finite is False and BrainFlowSource.playback(path).finite is True


@pytest.mark.parametrize("spec", ["synthetic", "tcp:127.0.0.1:5999", "serial:/dev/ttyNOPE,baud=9600"])
def test_every_kind_takes_the_same_open_options(spec):
    """deploy passes verbose= and reader settings to whatever the user named (tcp: used to TypeError)."""
    src = open_source(spec, verbose=False, stall_timeout=2.5, max_reconnects=1)
    assert src.stall_timeout == 2.5 and src.max_reconnects == 1


def test_ring_buffer_counts_duplicate_and_nonfinite_timestamps():
    buf = RingBuffer(1, 100, rate=10.0)
    buf.push(np.zeros((1, 5)), np.array([0.0, 0.1, 0.1, np.nan, 0.3]))
    buf.push(np.zeros((1, 3)), np.array([0.3, np.inf, 0.2]))
    assert buf.duplicates == 2  # 0.1 -> 0.1 and 0.3 -> 0.3 across the chunks
    assert buf.nonfinite == 2
    assert buf.out_of_order == 1  # 0.3 -> 0.2


def test_nan_package_numbers_are_counted_and_make_no_gap():
    tracker = SequenceTracker(256)
    report = tracker.update(np.array([250, 251, np.nan, np.nan, 254, 255, 0, 1]))
    assert (report.gaps, report.lost) == (0, 0)
    assert tracker.nonfinite == 2
    report = tracker.update(np.array([2, 2, 1, 5]))
    assert tracker.repeats == 1 and report.out_of_order == 1 and report.gaps == 1


def test_the_playback_counts_reach_the_source_stats(tmp_path):
    path = write_playback_file([("PPG", "ppg", "au", _wave(2))], RATE, tmp_path / "pkg.csv",
                               start_timestamp=1.7e9)
    side = Path(f"{path}.json").read_text()
    pkg = int(__import__("json").loads(side)["package_num_row"])
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    for i in (20, 21):
        rows[i][pkg] = "nan"
    rows[60][pkg] = rows[59][pkg]  # a repeat
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    with BrainFlowSource.playback(path) as src:
        _drain(src)
        stats = src.stats
    assert stats.package_nonfinite == 2 and stats.package_repeats == 1
    assert stats.reconnects == 0
