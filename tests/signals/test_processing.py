"""One preprocessing for host and device: file windows and live-buffer windows become identical tensors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from edge_bridge.errors import QualityError, SignalError
from edge_bridge.signals import (
    Preprocessing,
    Quality,
    StreamWindower,
    assess_quality,
    cut_windows,
    process_window,
    process_windows,
)

SPEC = Preprocessing("ecg", ("ECG", "ECG2"), input_rate=250, output_rate=100, window_s=4, hop_s=1,
                     bandpass=(0.5, 40.0), notch=50.0)


def _signal(seconds: float, rate: float = 250, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    ecg = np.sin(2 * np.pi * 1.2 * t) + 0.3 * np.sin(2 * np.pi * 50 * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([ecg, 0.5 * ecg + 0.1 * rng.standard_normal(t.size)])


def test_cut_windows_positions_and_shapes():
    x = _signal(10)
    w, starts = cut_windows(x, SPEC)
    assert w.shape == (7, 2, 1000)
    np.testing.assert_array_equal(starts, np.arange(7) * 250)
    np.testing.assert_array_equal(w[3], x[:, 750:1750])
    empty, s = cut_windows(x[:, :999], SPEC)
    assert empty.shape == (0, 2, 1000) and s.size == 0


def test_output_shape_dtype_and_zscore():
    w, _ = cut_windows(_signal(10), SPEC)
    x = process_windows(w, SPEC)
    assert x.shape == (7, 2, 400) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=-1), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=-1), 1, atol=1e-4)


def test_filter_removes_powerline_and_keeps_band():
    w, _ = cut_windows(_signal(10), SPEC)
    x = process_windows(w, SPEC)[2, 0]
    f, p = sps.periodogram(x, fs=100)
    # 50 Hz is the output Nyquist and notched; 1.2 Hz carries the power
    assert p[np.argmin(abs(f - 1.2))] > 100 * p[f > 45].max()


def test_stream_equals_file_path_to_1e6():
    """The device's streaming path and the host's file path give the same tensors (the issue's proof)."""
    x = _signal(20, seed=3)
    file_windows, file_starts = cut_windows(x, SPEC)
    host = process_windows(file_windows, SPEC)

    rng = np.random.default_rng(1)
    sw = StreamWindower(SPEC)
    live, starts, pos = [], [], 0
    while pos < x.shape[1]:
        k = int(rng.integers(1, 300))  # chunks of any size, as a board delivers them
        for start, window in sw.push(x[:, pos : pos + k]):
            starts.append(start)
            live.append(process_window(window, SPEC))
        pos += k
    np.testing.assert_array_equal(starts, file_starts)
    assert np.max(np.abs(np.stack(live) - host)) <= 1e-6


def test_stream_memory_is_bounded_and_reset_skips_gap():
    sw = StreamWindower(SPEC)
    for _ in range(50):
        sw.push(np.zeros((2, 333)))
        assert sw._buf.shape[1] <= SPEC.window_samples + 333
    sw.reset()
    assert sw.push(np.zeros((2, SPEC.window_samples - 1))) == []
    out = sw.push(np.zeros((2, 1)))
    assert len(out) == 1 and out[0][0] == 50 * 333


def test_wrong_shape_or_rate_is_refused_clearly():
    with pytest.raises(SignalError, match=r"4 s of \['ECG', 'ECG2'\] at 250 Hz"):
        process_windows(np.zeros((1, 2, 512)), SPEC)  # 4 s at 128 Hz: wrong rate
    with pytest.raises(SignalError, match=r"expected data of shape \(2, n_samples\)"):
        cut_windows(np.zeros((3, 5000)), SPEC)
    with pytest.raises(SignalError, match="chunk of shape"):
        StreamWindower(SPEC).push(np.zeros(10))


def test_nan_never_reaches_the_model():
    w, _ = cut_windows(_signal(10), SPEC)
    w = w.copy()
    w[4, 1, 100] = np.nan
    with pytest.raises(QualityError, match="window 4: ECG2: nonfinite") as info:
        process_windows(w, SPEC)
    assert info.value.flags[4, 1] & Quality.NONFINITE
    # even with the gate off, a NaN window is refused rather than filtered into NaN output
    with pytest.raises(QualityError):
        process_windows(w, SPEC, check_quality=False)
    flags = assess_quality(w, SPEC.quality)  # the broken-signal checks (a sine is no ECG for the beat index)
    good = (flags == 0).all(axis=1)
    assert good.sum() == 6 and np.isfinite(process_windows(w[good], SPEC)).all()


def test_empty_batch():
    assert process_windows(np.zeros((0, 2, 1000)), SPEC).shape == (0, 2, 400)
