"""Streaming form of windowing: samples arrive in chunks of any size, windows leave every hop.

The device feeds this with whatever its source delivers; each emitted raw window is exactly what
:func:`edge_bridge.signals.cut_windows` would cut from the same samples stored in a file, so the
preprocessing downstream sees identical input.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from edge_bridge.errors import SignalError
from edge_bridge.signals.spec import Preprocessing


class StreamWindower:
    """Accumulate ``(n_channels, k)`` chunks and emit raw windows on the spec's hop.

    Memory is bounded: only the last ``window_samples`` samples are kept.

    Examples
    --------
    >>> sw = StreamWindower(spec)
    >>> for chunk in source:
    ...     for start, window in sw.push(chunk):
    ...         x = process_window(window, spec)
    """

    def __init__(self, spec: Preprocessing) -> None:
        self.spec = spec
        self._window = spec.window_samples  # asked on every poll of every stream: computed once
        self._buf = np.empty((spec.n_channels, 0), dtype=np.float64)
        self._buf_start = 0  # absolute index of _buf[:, 0]
        self._next_start = 0  # absolute index where the next window starts
        self.samples_seen = 0

    def push(self, chunk: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Append samples; return ``[(start_sample, window), ...]`` for every window now complete."""
        c = np.asarray(chunk, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != self.spec.n_channels:
            raise SignalError(
                f"expected a chunk of shape ({self.spec.n_channels}, k) for channels "
                f"{list(self.spec.channels)}, got {c.shape}"
            )
        self._buf = np.concatenate([self._buf, c], axis=1)
        self.samples_seen += c.shape[1]
        w, h = self.spec.window_samples, self.spec.hop_samples
        out = []
        while self._next_start + w <= self.samples_seen:
            i = self._next_start - self._buf_start
            out.append((self._next_start, self._buf[:, i : i + w].copy()))
            self._next_start += h
        # drop what no future window needs
        keep_from = min(self._next_start, self.samples_seen) - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[:, keep_from:]
            self._buf_start += keep_from
        return out

    @property
    def samples_to_next_window(self) -> int:
        """Samples still to push before :meth:`push` returns the next window (at least 1).

        A loop serving many streams reads a stream only once this many have arrived: reading sooner only
        buffers them here.
        """
        return max(self._next_start + self._window - self.samples_seen, 1)

    def reset(self) -> None:
        """Forget buffered samples (after a gap: a window must never straddle one)."""
        self._buf = np.empty((self.spec.n_channels, 0), dtype=np.float64)
        self._buf_start = self._next_start = self.samples_seen


# --- streaming preprocessing (causal, state carried between hops) ------------------------------------------
def resampling_filter(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR of :func:`scipy.signal.resample_poly` for ``up/down`` (same design, scaled).

    Kept equal to scipy's default (Kaiser beta 5, ``20 * max(up, down) + 1`` taps) so the causal stream and
    the zero-phase file path suppress aliasing identically; only the phase differs.
    """
    max_rate = max(up, down)
    return sps.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * up


class PolyphaseResampler:
    """Rational resampling of a stream, chunk by chunk, with the input history carried between chunks.

    Output sample ``m`` is ``sum_k h[k] u[m * down - k]`` where ``u`` is the input upsampled by ``up``
    (zeros between samples), i.e. exactly ``scipy.signal.upfirdn(h, x, up, down)`` on the whole stream,
    whatever the chunking. Each chunk costs its own samples plus ``len(h) / up`` samples of history, not a
    window: this is what makes a hop cheap. The output is causal, so it lags the input by the filter's
    half length (``10 * max(up, down) / up`` input samples).
    """

    def __init__(self, up: int, down: int, n_channels: int) -> None:
        self.up, self.down = int(up), int(down)
        self.h = resampling_filter(self.up, self.down)
        self._hist = np.empty((n_channels, 0))
        self._hist_start = 0  # input index of _hist[:, 0]
        self.n_in = 0  # input samples pushed
        self.n_out = 0  # output samples returned

    def _first_needed(self, m: int) -> int:
        """First input index output ``m`` depends on, rounded down to a multiple of ``down``.

        With a segment starting at such an index ``s``, ``s * up`` is a multiple of ``down`` and upfirdn's
        output ``j`` on the segment is the stream's output ``j + s * up / down``.
        """
        need = max(0, -(-(m * self.down - (len(self.h) - 1)) // self.up))
        return (need // self.down) * self.down

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed ``(n_channels, k)`` samples; return every output sample that is now complete."""
        buf = np.concatenate([self._hist, x], axis=1) if self._hist.shape[1] else np.asarray(x)
        self.n_in += x.shape[1]
        m0 = self.n_out
        m_end = -(-self.n_in * self.up // self.down)  # output m needs inputs n <= m * down / up
        out = np.empty((x.shape[0], 0))
        if m_end > m0:
            s = self._first_needed(m0)
            z = sps.upfirdn(self.h, buf[:, s - self._hist_start:], self.up, self.down, axis=-1)
            off = s * self.up // self.down
            out = z[:, m0 - off:m_end - off]
            self.n_out = m_end
        keep = min(self._first_needed(self.n_out), self.n_in)
        self._hist = buf[:, keep - self._hist_start:]
        self._hist_start = keep
        return out

    def restart(self, n_in: int) -> None:
        """Go on at input sample ``n_in`` as if every earlier input were zero (after a NaN stretch).

        The output clock stays the stream's: output ``m`` still corresponds to input ``m * down / up``.
        """
        self.n_in = n_in
        self.n_out = -(-n_in * self.up // self.down)
        keep = min(self._first_needed(self.n_out), n_in)
        self._hist = np.zeros((self._hist.shape[0], n_in - keep))
        self._hist_start = keep


class StreamPreprocessor:
    """The causal form of the preprocessing: band-pass/notch with carried ``sosfilt`` state, stateful
    polyphase resampling, then a z-scored window of the processed stream on every hop.

    The file path is this same class fed a whole recording at once (:func:`process_recording`), so a
    window from a file and the same samples arriving live in chunks of any size agree to float64 rounding
    (tested to 1e-9). Filtering is causal (forward only), unlike :func:`process_windows`' zero-phase
    per-window filter: a window's model input depends on the signal before it (since the last reset),
    and phases lag. Use it for bundles whose spec says ``filtering="causal"``; :mod:`edge_bridge.signals.
    processing` gives the measured effect of serving a zero-phase-trained bundle with it.

    A non-finite sample would poison the IIR state for good, so the filters restart (steady state at the
    next finite sample, as at a fresh start) after any NaN/inf; the outputs over the bad stretch are NaN,
    so the quality gate, which looks at the raw window, has already refused every window that covers it.
    """

    def __init__(self, spec: Preprocessing) -> None:
        from edge_bridge.signals.processing import _filter_sos

        self.spec = spec
        self.sos = _filter_sos(float(spec.input_rate), spec.bandpass, spec.notch, spec.filter_order)
        self.up, self.down = spec.resample_ratio
        self.reset()

    def reset(self) -> None:
        """Forget all state (after a gap or reconnect, like :meth:`StreamWindower.reset`)."""
        c = self.spec.n_channels
        self._zi: np.ndarray | None = None
        self._resampler = PolyphaseResampler(self.up, self.down, c) if (self.up, self.down) != (1, 1) \
            else None
        self._out = np.empty((c, 0))
        self._out_start = 0  # output index of _out[:, 0]
        self.n_in = 0

    def push(self, chunk: np.ndarray) -> None:
        """Feed ``(n_channels, k)`` raw samples; windows ending inside this chunk can be read next."""
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.spec.n_channels:
            raise SignalError(f"expected a chunk of shape ({self.spec.n_channels}, k), got {x.shape}")
        keep = self.spec.output_samples  # outputs older than one window are never read again
        if self._out.shape[1] > keep:
            drop = self._out.shape[1] - keep
            self._out = self._out[:, drop:]
            self._out_start += drop
        bad = ~np.isfinite(x).all(axis=0)
        if bad.any():  # restart the filters after the last bad sample; the bad part comes out as NaN
            last = int(np.flatnonzero(bad)[-1]) + 1
            self._emit(np.full((x.shape[0], self._n_out_for(last)), np.nan))
            self.n_in += last
            self._zi = None
            if self._resampler is not None:
                self._resampler.restart(self.n_in)
            x = x[:, last:]
        if x.shape[1] == 0:
            return
        y = x
        if self.sos is not None:
            if self._zi is None:  # steady state for the first sample: no start-up transient from a step
                self._zi = sps.sosfilt_zi(self.sos)[:, None, :] * x[None, :, :1]
            y, self._zi = sps.sosfilt(self.sos, x, axis=-1, zi=self._zi)
        self.n_in += x.shape[1]
        self._emit(self._resampler.push(y) if self._resampler is not None else y)

    def _n_out_for(self, n: int) -> int:
        if self._resampler is None:
            return n
        total = -(-(self.n_in + n) * self.up // self.down)
        return total - (self._out_start + self._out.shape[1])

    def _emit(self, y: np.ndarray) -> None:
        self._out = np.concatenate([self._out, y], axis=1) if self._out.shape[1] else y

    def window(self, start: int) -> np.ndarray:
        """Model input (float32, ``spec.input_shape``) for the raw window starting at input sample ``start``
        (counted since the last reset); its samples must have been pushed."""
        spec = self.spec
        if start + spec.window_samples > self.n_in:
            raise SignalError(f"window at sample {start} ends after the {self.n_in} samples pushed")
        a = start * self.up // self.down - self._out_start
        if a < 0:
            raise SignalError(f"window at sample {start} is older than the processed samples kept")
        x = self._out[:, a:a + spec.output_samples]
        if spec.normalise == "zscore":
            x = (x - x.mean(axis=-1, keepdims=True)) / np.maximum(x.std(axis=-1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)


def process_recording(data: np.ndarray, spec: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """The file path of the causal preprocessing: a whole ``(n_channels, n)`` recording -> model inputs.

    The recording runs through one :class:`StreamPreprocessor` exactly as it would stream, and the windows
    are those :func:`~edge_bridge.signals.cut_windows` cuts. Returns ``(x, starts)``, ``x`` float32 of shape
    ``(n_windows, *spec.input_shape)``. No quality gate here: run :func:`assess_quality` on the raw windows.
    """
    from edge_bridge.signals.processing import cut_windows

    raw = np.asarray(data, dtype=np.float64)
    _, starts = cut_windows(raw, spec)
    pre = StreamPreprocessor(spec)
    pre.push(raw)
    x = np.stack([pre.window(int(s)) for s in starts]) if len(starts) else \
        np.empty((0, *spec.input_shape), dtype=np.float32)
    return x, starts
