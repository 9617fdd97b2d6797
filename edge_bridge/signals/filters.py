"""Filter designs shared by the preprocessing and the signal-quality indices, cached by their settings.

One place designs the Butterworth band-pass and powerline notch, so the model's preprocessing
(:mod:`edge_bridge.signals.processing`, :mod:`edge_bridge.signals.stream`) and the quality gate's
physiological indices (:mod:`edge_bridge.signals.physio`) never disagree about what a band means at a rate.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal as sps

NOTCH_Q = 30.0  # quality factor of the powerline notch: ~2 Hz wide at 50 Hz


@lru_cache(maxsize=64)
def filter_sos(
    rate: float, bandpass: tuple[float, float] | None, notch: float | None, order: int
) -> np.ndarray | None:
    """Second-order sections of the band-pass (and notch) at ``rate``; cached because specs repeat.

    A band whose low edge is 0 is a low-pass; ``None`` when there is nothing to filter.
    """
    sections = []
    if bandpass is not None:
        lo, hi = bandpass
        if lo > 0:
            sections.append(sps.butter(order, [lo, hi], btype="bandpass", fs=rate, output="sos"))
        else:
            sections.append(sps.butter(order, hi, btype="lowpass", fs=rate, output="sos"))
    if notch is not None:
        b, a = sps.iirnotch(notch, NOTCH_Q, fs=rate)
        sections.append(sps.tf2sos(b, a))
    if not sections:
        return None
    return np.concatenate(sections, axis=0)


def default_padlen(sos: np.ndarray) -> int:
    """The odd-extension length :func:`scipy.signal.sosfiltfilt` uses by default for ``sos`` (samples)."""
    return 3 * (2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum())))
