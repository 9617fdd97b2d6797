"""Streaming preprocessing: carried filter state and polyphase resampling give the file path's windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import signal as sps

from edge_bridge.errors import SignalError
from edge_bridge.signals import (
    PolyphaseResampler,
    Preprocessing,
    StreamPreprocessor,
    StreamWindower,
    cut_windows,
    process_recording,
    process_windows,
)
from edge_bridge.signals.stream import resampling_filter

PPG = Preprocessing("ppg", ("PPG",), input_rate=64, output_rate=125, window_s=8, hop_s=1, bandpass=(0.5, 8.0),
                    filtering="causal")
EEG2 = Preprocessing("eeg", ("C3", "C4"), input_rate=200, output_rate=100, window_s=4, hop_s=0.5,
                     bandpass=(0.5, 40.0), notch=50.0, filtering="causal")
#: a stream chunked any way must give the file path's windows to float64 rounding
TOL = 1e-9


def _signal(spec: Preprocessing, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * spec.input_rate)) / spec.input_rate
    base = np.sin(2 * np.pi * 1.2 * t) + 0.3 * np.sin(2 * np.pi * 5 * t) + 2.0  # DC to remove
    return np.stack([base * (k + 1) + 0.1 * rng.standard_normal(t.size) for k in range(spec.n_channels)])


@pytest.mark.parametrize("up,down", [(125, 64), (1, 2), (3, 2), (2, 5)])
def test_resampler_in_chunks_equals_upfirdn_on_the_whole_signal(up, down):
    x = np.random.default_rng(1).standard_normal((2, 1000))
    whole = sps.upfirdn(resampling_filter(up, down), x, up, down, axis=-1)
    r = PolyphaseResampler(up, down, 2)
    rng = np.random.default_rng(2)
    parts, i = [], 0
    while i < x.shape[1]:
        k = int(rng.integers(1, 90))
        parts.append(r.push(x[:, i:i + k]))
        i += k
    got = np.concatenate(parts, axis=1)
    assert got.shape[1] == -(-1000 * up // down)  # every output whose inputs have all arrived
    np.testing.assert_allclose(got, whole[:, :got.shape[1]], atol=1e-12, rtol=0)
    assert r._hist.shape[1] <= len(r.h) // up + 2 * down  # history stays bounded


def test_resampler_matches_scipy_resample_poly_up_to_its_delay():
    """Same anti-aliasing filter as resample_poly: the causal output is its output, delayed by half_len."""
    x = np.random.default_rng(3).standard_normal(2000)
    up, down = 3, 2  # half_len 30 upsampled samples = 15 output samples
    causal = PolyphaseResampler(up, down, 1).push(x[None])[0]
    zero_phase = sps.resample_poly(x, up, down)
    delay = 10 * max(up, down) // down  # half_len / down output samples (integer here)
    np.testing.assert_allclose(causal[delay + 50:2900], zero_phase[50:2900 - delay], atol=1e-9)


@pytest.mark.parametrize("spec", [PPG, EEG2], ids=["ppg-64-to-125", "eeg-2ch-notch-200-to-100"])
@pytest.mark.parametrize("seed", [0, 1])
def test_stream_windows_equal_the_file_path(spec, seed):
    data = _signal(spec, 30, seed)
    file_x, starts = process_recording(data, spec)
    assert file_x.shape == (len(starts), *spec.input_shape) and file_x.dtype == np.float32
    pre, sw = StreamPreprocessor(spec), StreamWindower(spec)
    rng = np.random.default_rng(seed + 10)
    got, i = [], 0
    while i < data.shape[1]:
        k = int(rng.integers(1, 3 * spec.hop_samples))
        chunk = data[:, i:i + k]
        pre.push(chunk)
        got += [(s, pre.window(s)) for s, _ in sw.push(chunk)]
        i += k
    assert [s for s, _ in got] == list(starts)
    stream_x = np.stack([x for _, x in got])
    np.testing.assert_allclose(stream_x, file_x, atol=TOL * 1e3, rtol=0)  # float32 output: 1e-6 absolute
    # and the memory kept is one window of processed samples, not the stream
    assert pre._out.shape[1] <= spec.output_samples + 3 * spec.hop_samples * 2


def test_causal_differs_from_zero_phase_only_by_the_filter_phase():
    """Not equal (the filters differ) but strongly correlated: the same band, the same rate."""
    spec = PPG
    data = _signal(spec, 30)
    causal, _ = process_recording(data, spec)
    zp = process_windows(cut_windows(data, spec)[0], dataclasses.replace(spec, filtering="zerophase"))
    assert causal.shape == zp.shape
    assert not np.allclose(causal, zp, atol=1e-3)
    # correlation at the best lag (the causal filter delays) is high for every window
    for a, b in zip(causal, zp, strict=True):
        c = sps.correlate(a[0], b[0], mode="full") / len(a[0])
        assert c.max() > 0.9


def test_nan_restarts_the_filters_instead_of_poisoning_them():
    spec = PPG
    data = _signal(spec, 30)
    data[0, 700:710] = np.nan
    x, starts = process_recording(data, spec)
    covers = (starts <= 709) & (starts + spec.window_samples > 700)
    assert np.isnan(x[covers]).all(axis=(1, 2)).any()  # windows over the NaN are NaN (the gate skips them)
    late = starts > 710 + 10 * spec.input_rate
    assert late.any() and np.isfinite(x[late]).all()  # ... and the filter recovers after it
    # a recording cut at the NaN gives the same late windows, up to the restart's resampler history
    clean, _ = process_recording(data[:, 710:], spec)
    shift = {int(s): k for k, s in enumerate(starts)}
    for k2, s2 in enumerate(range(0, data.shape[1] - 710 - spec.window_samples + 1, spec.hop_samples)):
        if s2 + 710 in shift and s2 > 10 * spec.input_rate:
            np.testing.assert_allclose(x[shift[s2 + 710]], clean[k2], atol=1e-4)


def test_reset_and_errors():
    spec = PPG
    data = _signal(spec, 20)
    pre = StreamPreprocessor(spec)
    pre.push(data[:, :500])  # less than one 512-sample window
    with pytest.raises(SignalError, match="ends after"):
        pre.window(0)
    pre.reset()
    pre.push(data[:, 100:100 + spec.window_samples])
    np.testing.assert_allclose(pre.window(0), process_recording(data[:, 100:100 + spec.window_samples],
                                                                spec)[0][0], atol=1e-6)
    with pytest.raises(SignalError, match="shape"):
        pre.push(np.zeros((2, 5)))


def test_spec_filtering_round_trip_and_zero_phase_api_refuses_a_causal_spec():
    assert "filtering" not in dataclasses.replace(PPG, filtering="zerophase").to_dict()  # old manifests
    assert Preprocessing.from_dict(PPG.to_dict()).filtering == "causal"
    with pytest.raises(Exception, match="filtering must be one of"):
        dataclasses.replace(PPG, filtering="acausal")
    with pytest.raises(SignalError, match="process_recording"):
        process_windows(cut_windows(_signal(PPG, 10), PPG)[0], PPG)


def test_windower_says_how_many_samples_complete_the_next_window():
    spec = PPG
    sw = StreamWindower(spec)
    assert sw.samples_to_next_window == spec.window_samples
    sw.push(np.zeros((1, 100)))
    assert sw.samples_to_next_window == spec.window_samples - 100
    left = sw.samples_to_next_window
    assert sw.push(np.zeros((1, left - 1))) == [] and sw.samples_to_next_window == 1
    assert len(sw.push(np.zeros((1, 1)))) == 1
    assert sw.samples_to_next_window == spec.hop_samples  # the next window is one hop later
    sw.push(np.zeros((1, 5 * spec.hop_samples)))  # a backlog: several windows at once, then a hop again
    assert sw.samples_to_next_window == spec.hop_samples
    sw.reset()
    assert sw.samples_to_next_window == spec.window_samples
