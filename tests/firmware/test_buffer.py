"""The ring buffer the live loop reads windows from, and gap counting from sequence numbers."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from firmware_interface.buffer import RingBuffer, SequenceTracker


def ramp(start: int, k: int, n_ch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(start, start + k, dtype=float)
    return np.stack([idx + 1000 * c for c in range(n_ch)]), idx / 100.0


def test_latest_and_read_across_the_wrap() -> None:
    buf = RingBuffer(2, capacity=10, rate=100.0)
    for start in range(0, 25, 5):
        buf.push(*ramp(start, 5))
        buf.read()
    data, ts = buf.latest(10)
    np.testing.assert_array_equal(data, ramp(15, 10)[0])
    np.testing.assert_array_equal(ts, ramp(15, 10)[1])
    assert (buf.total, buf.available, buf.unread, buf.overflow, buf.gaps) == (25, 10, 0, 0, 0)
    with pytest.raises(ValueError, match="keeps only 10"):
        buf.latest(11)


def test_overflow_is_counted_never_silent(caplog: pytest.LogCaptureFixture) -> None:
    buf = RingBuffer(2, capacity=10)
    buf.push(*ramp(0, 8))
    with caplog.at_level(logging.WARNING, logger="firmware_interface.buffer"):
        buf.push(*ramp(8, 7))  # 15 pushed, 10 kept, 5 never read
    assert buf.overflow == 5 and "5 unread samples overwritten" in caplog.text
    data, _ = buf.read()
    np.testing.assert_array_equal(data, ramp(5, 10)[0])
    buf.push(*ramp(15, 25))  # a chunk bigger than the buffer
    assert buf.overflow == 20
    np.testing.assert_array_equal(buf.read()[0], ramp(30, 10)[0])


def test_gaps_and_out_of_order_from_timestamps() -> None:
    buf = RingBuffer(1, capacity=100, rate=100.0)
    buf.push(np.zeros((1, 5)), np.arange(5) / 100)
    buf.push(np.zeros((1, 5)), (np.arange(5) + 15) / 100)  # 10 samples missing
    assert (buf.gaps, buf.gap_samples) == (1, 10)
    buf.push(np.zeros((1, 2)), np.array([0.10, 0.11]))  # earlier than the last one
    assert buf.out_of_order == 1


def test_not_enough_samples_yet() -> None:
    buf = RingBuffer(3, capacity=50)
    buf.push(np.ones((3, 4)), np.arange(4.0))
    with pytest.raises(ValueError, match="only 4 have arrived"):
        buf.latest(5)
    buf.clear()
    assert buf.available == 0 and buf.unread == 0


@pytest.mark.parametrize(("modulus", "batches", "gaps", "lost", "ooo"), [
    (256, [[250, 251, 252, 253, 254, 255, 0, 1]], 0, 0, 0),  # wrap is not a gap
    (256, [[250, 251], [255, 2]], 2, 5, 0),  # 3 lost before the wrap, 2 across it
    (None, [list(range(200, 256)), [0, 1, 2]], 0, 0, 0),  # wrap at 256 guessed
    (None, [[10, 11, 11, 12]], 0, 0, 0),  # repeated package number: several samples per package
    (None, [[10, 11, 5, 6]], 0, 0, 1),  # backwards: out of order, followed
    (2**32, [[2**32 - 1, 0, 3]], 1, 2, 0),
])
def test_sequence_tracker(modulus: int | None, batches: list, gaps: int, lost: int, ooo: int) -> None:
    tr = SequenceTracker(modulus)
    for b in batches:
        tr.update(np.array(b))
    assert (tr.gaps, tr.lost, tr.out_of_order) == (gaps, lost, ooo)
