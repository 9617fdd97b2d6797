"""Any sensor rate the band can use gives the model the same windows: file and stream paths, 128-500 Hz.

The signal is one simulated heartbeat train rendered by the simulator's own ECG and PPG models
(:func:`edge_bridge.simulate.cardiac.render_ecg` / ``render_ppg``) at each rate, so every rate samples the
same continuous signal. The ECG complex is a wide one (waves >= 15 ms) so that it is band-limited below the
lowest rate's Nyquist frequency, as a real 128 Hz sensor's anti-aliasing filter would make it.

Stated tolerances, on z-scored windows (unit standard deviation), against the 250 Hz windows:

- zero-phase (every bundle so far): RMS difference <= 0.05 and per-window correlation >= 0.99 at 128, 256
  and 500 Hz, ECG and PPG (measured: ECG RMS 0.042 at 128 Hz, 0.004 at 256, 0.017 at 500; PPG <= 0.008).
  What remains is the per-window filter's edge transient, which depends on the samples at the window's
  edge, and the Butterworth's bilinear warping near the 40 Hz edge at 128 Hz.
- causal: PPG RMS <= 0.05; ECG RMS <= 0.05 at 256 and 500 Hz, and <= 0.15 at 128 Hz (measured 0.136: a
  causal Butterworth's phase near its 40 Hz edge, at 0.6 of the 64 Hz Nyquist frequency, is not the
  phase it has at 250 Hz), correlation >= 0.99 everywhere.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_bridge.errors import SpecError
from edge_bridge.signals import (
    StreamPreprocessor,
    StreamWindower,
    cut_windows,
    process_recording,
    process_window,
    process_windows,
)
from edge_bridge.simulate.cardiac import EcgMorphology, PpgMorphology, render_ecg, render_ppg
from edge_bridge.tasks import TASKS

TASK = TASKS["stress"].with_window(10, 5)  # ECG 250 Hz -> 100 Hz, band 0.5-40 Hz; PPG 64 -> 125 Hz, 0.5-8 Hz
RATES = (128, 250, 256, 500)
SECONDS = 40
WIDE_QRS = EcgMorphology(p=(0.15, -0.17, 0.025), q=(-0.1, -0.04, 0.015), r=(1.2, 0.0, 0.016),
                         s=(-0.3, 0.04, 0.016), t=(0.3, 0.28, 0.05))
BEATS = np.cumsum(0.8 + 0.05 * np.random.default_rng(1).standard_normal(60)) - 1.0


def _signal(modality: str, rate: float) -> np.ndarray:
    """The same simulated ECG or PPG, sampled at ``rate``: (1, n)."""
    n = round(SECONDS * rate)
    wander = 0.05 * np.sin(2 * np.pi * 0.23 * np.arange(n) / rate)
    if modality == "ecg":
        x = render_ecg(n, rate, BEATS, WIDE_QRS, np.ones(len(BEATS)), np.random.default_rng(2))
    else:
        morph = PpgMorphology.draw(np.random.default_rng(3))
        x = render_ppg(n, rate, BEATS + 0.25, np.full(len(BEATS), 0.8), morph,
                       1.0 + 0.1 * np.sin(np.arange(len(BEATS))))
    return (x + wander)[None]


def _file_and_stream(spec, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs from the file path and from the stream path (chunks of random size)."""
    if spec.filtering == "zerophase":
        file = process_windows(cut_windows(x, spec)[0], spec)
        sw, live, pos = StreamWindower(spec), [], 0
        while pos < x.shape[1]:
            k = int(rng.integers(1, 400))
            live += [process_window(w, spec) for _, w in sw.push(x[:, pos:pos + k])]
            pos += k
        return file, np.stack(live)
    file, _ = process_recording(x, spec)
    pre, sw, live, pos = StreamPreprocessor(spec), StreamWindower(spec), [], 0
    while pos < x.shape[1]:  # as the live loop does: read each window once its samples are in
        k = int(rng.integers(1, 400))
        pre.push(x[:, pos:pos + k])
        live += [pre.window(start) for start, _ in sw.push(x[:, pos:pos + k])]
        pos += k
    return file, np.stack(live)


@pytest.mark.parametrize("filtering", ["zerophase", "causal"])
@pytest.mark.parametrize("role", ["source", "target"])
def test_same_windows_at_128_250_256_500_hz(role, filtering):
    base = dataclasses.replace(getattr(TASK, role), filtering=filtering)
    rng = np.random.default_rng(0)
    got = {}
    for rate in RATES:
        spec = base.at_rate(rate)
        assert spec.output_rate == base.output_rate and spec.input_shape == base.input_shape
        file, live = _file_and_stream(spec, _signal(base.modality, rate), rng)
        assert np.max(np.abs(live - file)) <= 1e-5, rate  # stream == file at every rate
        got[rate] = file
    ref = got[250]
    for rate in (128, 256, 500):
        x = got[rate]
        assert x.shape == ref.shape
        rms = float(np.sqrt(np.mean((x - ref) ** 2)))
        corr = min(np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(x, ref, strict=True))
        limit = 0.15 if (base.modality, filtering, rate) == ("ecg", "causal", 128) else 0.05
        assert rms <= limit, (rate, rms)
        assert corr >= 0.99, (rate, corr)


def test_at_rate_keeps_the_model_input_and_pads_the_same_seconds():
    spec = TASK.source
    assert spec.at_rate(spec.input_rate) is spec
    fast = spec.at_rate(500)
    assert (fast.input_rate, fast.output_rate, fast.window_s, fast.bandpass) == (500, 100, 10, (0.5, 40.0))
    assert fast.window_samples == 5000 and fast.resample_ratio == (1, 5)
    assert abs(fast.filter_padding() / 500 - spec.filter_padding() / 250) < 1 / 500
    assert spec.at_rate(90).notch is None  # mains above the new Nyquist: the sensor removed it
    # a re-based spec survives the manifest round trip, and specs never re-based keep their old form
    assert type(fast).from_dict(fast.to_dict()) == fast
    assert "pad_s" not in spec.to_dict()


@pytest.mark.parametrize(("role", "rate", "minimum"), [("source", 64, 80), ("source", 80, 80),
                                                         ("target", 16, 16), ("target", 12, 16)])
def test_too_low_a_rate_is_refused_naming_the_minimum(role, rate, minimum):
    spec = getattr(TASK, role)
    with pytest.raises(SpecError, match=rf"at {rate} Hz is too slow.*above {minimum} Hz"):
        spec.at_rate(rate)


def test_a_rate_without_whole_samples_per_hop_is_refused_clearly():
    with pytest.raises(SpecError, match=r"64\.1 Hz cannot be brought to this model's 125 Hz input: hop_s"):
        TASK.target.at_rate(64.1)
