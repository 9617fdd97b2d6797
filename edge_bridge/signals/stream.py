"""Streaming form of windowing: samples arrive in chunks of any size, windows leave every hop.

The device feeds this with whatever its source delivers; each emitted raw window is exactly what
:func:`edge_bridge.signals.cut_windows` would cut from the same samples stored in a file, so the
preprocessing downstream sees identical input.
"""

from __future__ import annotations

import numpy as np

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

    def reset(self) -> None:
        """Forget buffered samples (after a gap: a window must never straddle one)."""
        self._buf = np.empty((self.spec.n_channels, 0), dtype=np.float64)
        self._buf_start = self._next_start = self.samples_seen
