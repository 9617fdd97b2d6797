"""A bounded ring buffer of samples with timestamps, and gap counting from sequence numbers.

The live loop pushes every chunk a source delivers and cuts model windows from the newest samples. Memory
is fixed at construction; when the writer laps a reader that has not consumed its samples, the lost count is
recorded in :attr:`RingBuffer.overflow` and logged, never dropped silently (BrainFlow's own ring buffer
overwrites without a word, which is why this package drains it on a fixed hop).

Gaps are found two ways: from per-sample sequence numbers (BrainFlow's package-number row, frame sequence
numbers) with :class:`SequenceTracker`, which is exact, and from timestamps, which works for any source but
needs a tolerance because host timestamps jitter.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class SequenceReport:
    """What one batch of sequence numbers showed."""

    gaps: int = 0
    lost: int = 0
    out_of_order: int = 0


class SequenceTracker:
    """Count gaps and lost items from a counter that should step by one (and may wrap).

    Parameters
    ----------
    modulus : int, optional
        Where the counter wraps (256 for a uint8 package number, 2**32 for frame sequence numbers). ``None``
        guesses it at the first wrap: the smallest power of two (at least 256) above the largest value seen,
        which is right for the uint8 and uint16 counters real boards use.

    Notes
    -----
    A step of 0 (several samples sharing one package number, as some boards send) is neither a gap nor out of
    order. A step backwards by less than half the modulus counts as out of order, not as a huge gap, and
    the tracker follows the new value (a device that restarted its counter).
    """

    def __init__(self, modulus: int | None = None) -> None:
        if modulus is not None and modulus < 2:
            raise ValueError(f"modulus must be >= 2 or None, got {modulus!r}")
        self.modulus = modulus
        self.last: int | None = None
        self._max_seen = 0
        self.gaps = 0
        self.lost = 0
        self.out_of_order = 0
        self.repeats = 0  # steps of 0 (normal on boards that send several samples per package)
        self.nonfinite = 0  # NaN or infinite values, left out of the counting

    def reset(self) -> None:
        """Forget the last value (after a reconnect the counter restarts; that is not a gap)."""
        self.last = None

    def _guess_modulus(self) -> int:
        m = 256
        while m <= self._max_seen:
            m *= 2
        return m

    def update(self, seq: np.ndarray) -> SequenceReport:
        """Feed the next counter values in arrival order; returns this batch's counts (also accumulated)."""
        raw = np.asarray(seq, dtype=np.float64).ravel()
        report = SequenceReport()
        finite = np.isfinite(raw)
        if not finite.all():
            # a NaN package number says nothing about loss: the sample did arrive, so it stands for the
            # number after the one before it (counted, never a gap)
            self.nonfinite += int((~finite).sum())
            raw = raw.copy()
            known = np.ones(raw.size, dtype=bool)
            for i in np.flatnonzero(~finite):
                prev = raw[i - 1] if i > 0 and known[i - 1] else (self.last if i == 0 else None)
                if prev is None:
                    known[i] = False
                else:
                    raw[i] = prev + 1
            raw = raw[known]
        values = raw.astype(np.int64)
        if values.size == 0:
            return report
        if self.modulus is None:
            self._max_seen = max(self._max_seen, int(values.max()))
        full = values if self.last is None else np.concatenate(([self.last], values))
        steps = np.diff(full)
        if steps.size:
            m = self.modulus or self._guess_modulus()
            wrapped = np.mod(steps, m)
            half = m // 2
            forward_gap = (wrapped > 1) & (wrapped <= half)
            backward = (wrapped > half) | ((steps != 0) & (wrapped == 0))
            report.gaps = int(forward_gap.sum())
            report.lost = int((wrapped[forward_gap] - 1).sum())
            report.out_of_order = int(backward.sum())
            self.repeats += int((steps == 0).sum())
        self.last = int(values[-1])
        self.gaps += report.gaps
        self.lost += report.lost
        self.out_of_order += report.out_of_order
        return report


    def update_one(self, value: int) -> SequenceReport:
        """:meth:`update` for one finite counter value, in plain integers (the same counts, no arrays).

        A frame decoder calls this once per frame; the array form costs tens of microseconds per call on
        one-element arrays, which at many wearables is a real share of a hub's CPU.
        """
        value = int(value)
        report = SequenceReport()
        if self.modulus is None:
            self._max_seen = max(self._max_seen, value)
        if self.last is not None:
            step = value - self.last
            m = self.modulus or self._guess_modulus()
            wrapped = step % m  # Python's modulo of a positive m is non-negative, like np.mod
            if 1 < wrapped <= m // 2:
                report.gaps, report.lost = 1, wrapped - 1
            elif wrapped > m // 2 or (step != 0 and wrapped == 0):
                report.out_of_order = 1
            if step == 0:
                self.repeats += 1
        self.last = value
        self.gaps += report.gaps
        self.lost += report.lost
        self.out_of_order += report.out_of_order
        return report


class RingBuffer:
    """Fixed-size store of the newest ``capacity`` samples of ``n_channels`` channels, with timestamps.

    Thread-safe: one thread may push while another reads.

    Parameters
    ----------
    n_channels : int
    capacity : int
        Samples kept; the oldest are overwritten.
    rate : float, optional
        Sampling rate in Hz, enables gap detection from timestamps.
    gap_tolerance : float
        A timestamp step longer than ``gap_tolerance / rate`` seconds counts as a gap (default 2.5 sample
        periods: host timestamps jitter by about a period, real gaps are longer).

    Examples
    --------
    >>> buf = RingBuffer(2, capacity=1000, rate=250.0)
    >>> buf.push(np.zeros((2, 10)), np.arange(10) / 250.0)
    >>> data, ts = buf.latest(5)
    >>> data.shape
    (2, 5)
    """

    def __init__(self, n_channels: int, capacity: int, *, rate: float | None = None,
                 gap_tolerance: float = 2.5) -> None:
        if int(n_channels) < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels!r}")
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1 sample, got {capacity!r}")
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be a positive number of Hz or None, got {rate!r}")
        self.n_channels = int(n_channels)
        self.capacity = int(capacity)
        self.rate = rate
        self.gap_tolerance = float(gap_tolerance)
        self._data = np.zeros((self.n_channels, self.capacity), dtype=np.float64)
        self._ts = np.zeros(self.capacity, dtype=np.float64)
        self._lock = threading.Lock()
        self.total = 0  # samples ever pushed; the write position is total % capacity
        self._read_upto = 0  # absolute index of the first sample read() has not returned
        self._valid_from = 0  # absolute index of the first sample kept after clear()
        self.overflow = 0  # samples overwritten before read() returned them
        self.gaps = 0
        self.gap_samples = 0  # estimated samples missing inside timestamp gaps
        self.out_of_order = 0
        self.duplicates = 0  # timestamps equal to the one before
        self.nonfinite = 0  # NaN or infinite timestamps
        self.last_timestamp: float | None = None

    # --- writing ------------------------------------------------------------------------------------
    def push(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        """Append samples, oldest first.

        Parameters
        ----------
        data : ndarray, shape (n_channels, k)
        timestamps : ndarray, shape (k,)
            Seconds in the source's clock.
        """
        data = np.asarray(data, dtype=np.float64)
        ts = np.asarray(timestamps, dtype=np.float64).ravel()
        if data.ndim != 2 or data.shape[0] != self.n_channels:
            raise ValueError(f"data must have shape ({self.n_channels}, k), got {data.shape}")
        if ts.shape[0] != data.shape[1]:
            raise ValueError(f"timestamps must have {data.shape[1]} entries (one per sample), "
                             f"got {ts.shape[0]}")
        k = data.shape[1]
        if k == 0:
            return
        with self._lock:
            self._check_timestamps(ts)
            if k > self.capacity:  # only the newest capacity samples can be kept
                dropped = k - self.capacity
                self.total += dropped
                data, ts, k = data[:, dropped:], ts[dropped:], self.capacity
            start = self.total % self.capacity
            first = min(k, self.capacity - start)
            self._data[:, start:start + first] = data[:, :first]
            self._ts[start:start + first] = ts[:first]
            if first < k:
                self._data[:, : k - first] = data[:, first:]
                self._ts[: k - first] = ts[first:]
            self.total += k
            oldest = self.total - self.capacity
            if self._read_upto < oldest:
                lost = oldest - self._read_upto
                self.overflow += lost
                self._read_upto = oldest
                logger.warning("ring buffer overflow: %d unread samples overwritten (%d in total); the "
                               "reader is slower than the source, read more often or enlarge the buffer",
                               lost, self.overflow)

    def _check_timestamps(self, ts: np.ndarray) -> None:
        bad = ~np.isfinite(ts)
        if bad.any():  # counted, and left out of the step checks (a NaN step compares false anyway)
            self.nonfinite += int(bad.sum())
            logger.warning("%d non-finite timestamp(s) in a chunk of %d samples", int(bad.sum()), ts.size)
            ts = ts[~bad]
            if ts.size == 0:
                return
        full = ts if self.last_timestamp is None else np.concatenate(([self.last_timestamp], ts))
        steps = np.diff(full)
        back = int((steps < 0).sum())
        if back:
            self.out_of_order += back
            logger.warning("%d out-of-order timestamp(s) in a chunk of %d samples", back, ts.size)
        self.duplicates += int((steps == 0).sum())
        if self.rate is not None and steps.size:
            period = 1.0 / self.rate
            big = steps > self.gap_tolerance * period
            n = int(big.sum())
            if n:
                missing = int(np.round(steps[big] / period).sum()) - n
                self.gaps += n
                self.gap_samples += max(missing, 0)
                logger.info("timestamp gap: %d gap(s), about %d samples missing", n, missing)
        self.last_timestamp = float(ts[-1])

    def clear(self) -> None:
        """Drop every sample (counters are kept)."""
        with self._lock:
            self._read_upto = self.total
            self._valid_from = self.total
            self.last_timestamp = None

    # --- reading ------------------------------------------------------------------------------------
    @property
    def available(self) -> int:
        """Samples held now (at most ``capacity``)."""
        return min(self.total - self._valid_from, self.capacity)

    @property
    def unread(self) -> int:
        """Samples :meth:`read` has not returned yet."""
        return self.total - self._read_upto

    def _slice(self, start_abs: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        i = start_abs % self.capacity
        if i + n <= self.capacity:  # no wrap (nearly always): two plain copies, no index array
            return self._data[:, i:i + n].copy(), self._ts[i:i + n].copy()
        idx = (np.arange(start_abs, start_abs + n) % self.capacity)
        return self._data[:, idx], self._ts[idx]

    def latest(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Copy of the newest ``n`` samples, oldest first; does not move the read cursor.

        Raises
        ------
        ValueError
            If fewer than ``n`` samples are held (wait for more) or ``n`` exceeds the capacity.
        """
        if n > self.capacity:
            raise ValueError(f"asked for the last {n} samples but the buffer keeps only {self.capacity}; "
                             "create it with a larger capacity")
        with self._lock:
            if n > self.available:
                raise ValueError(f"asked for the last {n} samples but only {self.available} have arrived; "
                                 "wait for more data")
            return self._slice(self.total - n, n)

    def read(self, max_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Samples pushed since the last read (oldest first), at most ``max_samples``; moves the cursor."""
        with self._lock:
            n = self.total - self._read_upto
            if max_samples is not None:
                n = min(n, max(int(max_samples), 0))
            out = self._slice(self._read_upto, n)
            self._read_upto += n
            return out
