"""Signal descriptors: a few numbers per window that describe how the sensor draws the signal.

Why (drift detection, :mod:`deploy.drift`): a foundation model's front is trained to be robust, so its
output ``h`` barely moves when a user changes sensor (``bench/drift.py``: an inverted, low-passed PPG from
another device moves the mean ``h`` by less than one user's minute-to-minute spread), yet the bridge behind
it loses accuracy and calibration wins it back. What the front absorbs is still plain in the model's input:
the waveform's shape and its spectrum. These descriptors are that, computed on the *processed* window (what
the model sees, after the one preprocessing path, so a change of gain that the z-score removes is no drift),
per channel:

========================  ===========================================================================
``skewness``              of the window (a pulse wave's upstroke is steep, its decay slow: skewed)
``kurtosis``              excess kurtosis (peakedness; spikes and clipping raise it)
``slope_skewness``        skewness of the first difference: polarity and the rise/fall asymmetry
``band_power_1..4``       share of the spec's band power in four log-spaced sub-bands of it
                          (the spectral envelope: a sensor's own analogue filter moves it)
========================  ===========================================================================

These are general descriptors of any sampled signal, not built for one kind of shift; the reference's
null (held-out users, states changing within their sessions) decides how far is unusual. numpy only: the
live loop computes them for every window it scores (about 0.2 ms for a 60 s window at 125 Hz).
"""

from __future__ import annotations

import itertools

import numpy as np

from edge_bridge.signals.spec import Preprocessing

N_BANDS = 4
PER_CHANNEL = ("skewness", "kurtosis", "slope_skewness", *(f"band_power_{k + 1}" for k in range(N_BANDS)))


def descriptor_names(spec: Preprocessing) -> list[str]:
    """``<channel>.<descriptor>`` for every column :func:`signal_descriptors` returns."""
    return [f"{ch}.{name}" for ch in spec.channels for name in PER_CHANNEL]


def sub_bands(spec: Preprocessing) -> np.ndarray:
    """Edges (Hz) of the :data:`N_BANDS` log-spaced sub-bands of the spec's band (or 0.5 Hz to Nyquist)."""
    nyq = 0.5 * float(spec.output_rate)
    lo, hi = spec.bandpass if spec.bandpass is not None else (0.0, nyq)
    lo, hi = max(float(lo), 0.5, 2.0 / spec.window_s), min(float(hi), 0.98 * nyq)
    return np.geomspace(lo, hi, N_BANDS + 1)


def _standardised_moment(x: np.ndarray, k: int) -> np.ndarray:
    c = x - x.mean(axis=-1, keepdims=True)
    var = (c * c).mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 1e-20, (c**k).mean(axis=-1) / np.maximum(var, 1e-20) ** (k / 2), 0.0)


def signal_descriptors(x: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Descriptors of processed windows ``x`` (n, C, L) or one window (C, L): (n, C * 7) float64.

    Column order: channel-major, :data:`PER_CHANNEL` within each (:func:`descriptor_names`). A window
    with no power in the band gets band shares of 0 (never NaN).
    """
    x = np.asarray(x, np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"descriptors need windows shaped (n, channels, samples), got {x.shape}")
    n, c, length = x.shape
    freqs = np.fft.rfftfreq(length, 1.0 / float(spec.output_rate))
    power = np.abs(np.fft.rfft(x - x.mean(axis=-1, keepdims=True), axis=-1)) ** 2
    edges = sub_bands(spec)
    bands = np.stack([power[..., (freqs >= a) & (freqs < b)].sum(axis=-1)
                      for a, b in itertools.pairwise(edges)], axis=-1)  # (n, c, N_BANDS)
    total = bands.sum(axis=-1, keepdims=True)
    shares = np.divide(bands, total, out=np.zeros_like(bands), where=total > 0)
    out = np.concatenate([_standardised_moment(x, 3)[..., None], _standardised_moment(x, 4)[..., None] - 3.0,
                          _standardised_moment(np.diff(x, axis=-1), 3)[..., None], shares], axis=-1)
    return out.reshape(n, c * len(PER_CHANNEL))


__all__ = ["N_BANDS", "PER_CHANNEL", "descriptor_names", "signal_descriptors", "sub_bands"]
