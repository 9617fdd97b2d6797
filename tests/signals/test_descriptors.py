"""Signal descriptors: the numbers the signal drift detectors watch react to what a sensor changes
(polarity, its analogue filter) and not to the gain the z-score removes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, lfilter

from edge_bridge.signals import Preprocessing, process_windows
from edge_bridge.signals.descriptors import PER_CHANNEL, descriptor_names, signal_descriptors, sub_bands

SPEC = Preprocessing("ppg", ("PPG",), input_rate=125.0, output_rate=125.0, window_s=20.0, hop_s=5.0,
                     bandpass=(0.5, 8.0))


def _pulse(seconds: float = 20.0, rate: float = 125.0, hr_hz: float = 1.2, seed: int = 0) -> np.ndarray:
    """A skewed pulse wave: a fast upstroke and a slow decay per beat, with a little noise."""
    t = np.arange(round(seconds * rate)) / rate
    phase = (t * hr_hz) % 1.0
    wave = np.where(phase < 0.15, phase / 0.15, np.exp(-(phase - 0.15) * 5.0))
    return wave + 0.01 * np.random.default_rng(seed).standard_normal(t.size)


def _processed(raw: np.ndarray) -> np.ndarray:
    return process_windows(raw[None, None, :], SPEC, check_quality=False)


def test_shape_names_and_band_shares():
    x = np.stack([_processed(_pulse(seed=k))[0] for k in range(3)])
    d = signal_descriptors(x, SPEC)
    assert d.shape == (3, len(PER_CHANNEL)) and np.isfinite(d).all()
    assert descriptor_names(SPEC)[:3] == ["PPG.skewness", "PPG.kurtosis", "PPG.slope_skewness"]
    assert len(descriptor_names(SPEC)) == d.shape[1]
    np.testing.assert_allclose(d[:, 3:].sum(axis=1), 1.0, rtol=1e-9)  # shares of the band's power
    edges = sub_bands(SPEC)
    assert edges[0] == pytest.approx(0.5) and edges[-1] == pytest.approx(8.0) and np.all(np.diff(edges) > 0)
    np.testing.assert_allclose(signal_descriptors(x[0], SPEC), d[:1])  # one window (C, L) as (1, k)


def test_polarity_and_filter_move_the_descriptors_but_gain_does_not():
    raw = _pulse()
    base = signal_descriptors(_processed(raw), SPEC)[0]
    np.testing.assert_allclose(signal_descriptors(_processed(3.0 * raw), SPEC)[0], base, rtol=1e-6, atol=1e-9)
    inverted = signal_descriptors(_processed(-raw), SPEC)[0]
    assert base[2] > 0.5 and inverted[2] == pytest.approx(-base[2], rel=1e-6)  # slope skewness flips
    b, a = butter(2, 2.5, fs=125.0)
    smooth = signal_descriptors(_processed(lfilter(b, a, raw)), SPEC)[0]
    assert smooth[-1] < 0.5 * base[-1]  # the top sub-band loses most of its share


def test_flat_window_gives_finite_values_and_bad_shapes_are_refused():
    d = signal_descriptors(np.zeros((1, 1, 500)), SPEC)
    assert np.isfinite(d).all() and np.all(d[0, 3:] == 0.0)
    with pytest.raises(ValueError, match="channels, samples"):
        signal_descriptors(np.zeros(500), SPEC)
