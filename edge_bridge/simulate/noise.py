"""Random-process building blocks shared by the simulators: shaped noise, events, smoothing, artefacts.

Everything works on whole arrays (spectral shaping with one FFT, kernels placed with ``np.bincount``,
inhomogeneous Poisson events drawn per grid cell), because a Python loop per sample or per beat would make
ten subjects of ten minutes take minutes instead of seconds. Every function takes a
:class:`numpy.random.Generator`, so a whole dataset follows from one seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter

# a band-limited noise whose top frequency is below rate / (OVERSAMPLE * 2) is drawn at a lower rate and
# linearly interpolated: 8 samples per period of the top frequency keep the interpolation error < 3 %
OVERSAMPLE = 8.0


def shaped_noise(n: int, rate: float, gain: Callable[[np.ndarray], np.ndarray], rng: np.random.Generator,
                 fmax: float | None = None) -> np.ndarray:
    """White Gaussian noise filtered by an amplitude response ``gain(f)``, scaled to unit standard deviation.

    Shaping in the frequency domain gives any spectrum (1/f, a band, a peak) for the price of one inverse
    FFT (the white spectrum is drawn directly as complex Gaussians), and unit variance lets callers state
    amplitudes directly in physical units.

    Parameters
    ----------
    fmax : float, optional
        Highest frequency where ``gain`` is non-zero. Slow processes (drifts, delta waves) are then drawn at
        a few times ``fmax`` and interpolated, which makes an 8-hour drift cost milliseconds.
    """
    if n <= 1:
        return np.zeros(max(n, 0))
    q = int(rate // (OVERSAMPLE * fmax)) if fmax else 1
    q = max(1, min(q, n // 16))
    m = n if q == 1 else n // q + 2
    k = m // 2 + 1
    spectrum = rng.standard_normal(k) + 1j * rng.standard_normal(k)
    spectrum *= gain(np.fft.rfftfreq(m, q / rate))
    x = np.fft.irfft(spectrum, m)
    if q > 1:
        x = np.interp(np.arange(n) / q, np.arange(m), x)
    sd = x.std()
    return x / sd if sd > 0 else x


def band_noise(n: int, rate: float, lo: float, hi: float, rng: np.random.Generator,
               taper: float = 0.15) -> np.ndarray:
    """Unit-variance noise confined to ``[lo, hi]`` Hz with cosine-tapered edges (no ringing brick wall).

    ``taper`` is the width of each edge as a fraction of the band; wide tapers give the rounded spectral
    bumps of physiological rhythms rather than a plateau.
    """
    width = max(taper * (hi - lo), 1e-3)

    def gain(f: np.ndarray) -> np.ndarray:
        g = np.ones_like(f)
        g[(f < lo - width) | (f > hi + width)] = 0.0
        low = (f >= lo - width) & (f < lo)
        g[low] = 0.5 - 0.5 * np.cos(np.pi * (f[low] - (lo - width)) / width)
        high = (f > hi) & (f <= hi + width)
        g[high] = 0.5 + 0.5 * np.cos(np.pi * (f[high] - hi) / width)
        if lo <= 0:
            g[0] = 0.0
        return g

    return shaped_noise(n, rate, gain, rng, fmax=hi + width)


def peak_noise(n: int, rate: float, centre: float, bandwidth: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance narrow-band noise with a Gaussian spectral peak: a waxing and waning rhythm (alpha)."""
    return shaped_noise(n, rate, lambda f: np.exp(-0.5 * ((f - centre) / bandwidth) ** 2), rng,
                        fmax=centre + 4.0 * bandwidth)


def power_law_noise(n: int, rate: float, exponent: float, rng: np.random.Generator,
                    fmin: float = 0.2) -> np.ndarray:
    """Unit-variance ``1/f**exponent`` noise (power spectrum), flattened below ``fmin`` and without DC.

    The EEG background and slow sensor drifts are power-law processes; the floor at ``fmin`` keeps the
    variance from piling up at the lowest frequencies of a long recording.
    """

    def gain(f: np.ndarray) -> np.ndarray:
        g = np.maximum(f, fmin) ** (-exponent / 2.0)
        g[0] = 0.0
        return g

    return shaped_noise(n, rate, gain, rng)


def smooth(x: np.ndarray, rate: float, tau: float) -> np.ndarray:
    """Centred Gaussian smoothing with a standard deviation of ``tau`` seconds; edges hold their value.

    For transitions that should straddle a boundary symmetrically (EEG rhythms across a stage change, which
    scorers place where the pattern changes); responses to an event use the causal :func:`lag`.
    """
    if tau <= 0:
        return np.asarray(x, dtype=np.float64)
    return gaussian_filter1d(np.asarray(x, dtype=np.float64), sigma=tau * rate, mode="nearest")


def lag(x: np.ndarray, rate: float, tau: float) -> np.ndarray:
    """Causal response of two cascaded first-order lags (time constant ``tau / 2`` each): an S-shaped ramp.

    Physiology does not switch at a label boundary, and does not anticipate it either: heart rate climbs
    over tens of seconds *after* a stressor starts, skin conductance more slowly. A centred smoother would
    let a block's physiology leak into the windows before its label; this one only looks back.
    """
    x = np.asarray(x, dtype=np.float64)
    if tau <= 0 or len(x) == 0:
        return x.copy()
    a = float(np.exp(-2.0 / (tau * rate)))
    y = x
    for _ in range(2):
        y, _ = lfilter([1.0 - a], [1.0, -a], y, zi=[a * y[0]])
    return y


def poisson_events(rate_per_s: np.ndarray, grid_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Event times (s) of an inhomogeneous Poisson process whose rate is given on a regular grid.

    One Poisson draw per grid cell and a uniform position inside it: exact for a rate that is constant
    within a cell, and fully vectorised.
    """
    rate_per_s = np.maximum(np.asarray(rate_per_s, dtype=np.float64), 0.0)
    counts = rng.poisson(rate_per_s / grid_rate)
    cells = np.repeat(np.arange(len(rate_per_s)), counts)
    return np.sort((cells + rng.random(len(cells))) / grid_rate)


def place_kernels(n: int, starts: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Sum of ``kernels[k]`` placed at sample ``starts[k]`` into a length-``n`` array (parts outside dropped).

    Parameters
    ----------
    n : int
        Output length.
    starts : ndarray of int, shape (n_events,)
        First sample of each kernel; may be negative.
    kernels : ndarray, shape (n_events, kernel_length)
        One row per event (rows may differ in shape and amplitude).
    """
    out = np.zeros(n)
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        return out
    idx = starts[:, None] + np.arange(kernels.shape[1])[None, :]
    keep = (idx >= 0) & (idx < n)
    out += np.bincount(idx[keep], weights=kernels[keep], minlength=n)[:n]
    return out


def place_gaussians(n: int, rate: float, centres: np.ndarray, amplitudes: np.ndarray,
                    sigma_left: np.ndarray, sigma_right: np.ndarray | None = None) -> np.ndarray:
    """Sum of (optionally asymmetric) Gaussian bumps centred at ``centres`` seconds, sampled at ``rate``.

    This is how ECG waves (P, Q, R, S, T) and PPG pulses are drawn: one bump per beat per wave, each with its
    own time, width and height, placed in one ``bincount`` call instead of a loop over beats. An asymmetric
    bump (different width before and after its peak) gives the PPG's fast upstroke and slow decay.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if len(centres) == 0:
        return np.zeros(n)
    sl = np.broadcast_to(np.asarray(sigma_left, dtype=np.float64), centres.shape)
    sr = sl if sigma_right is None else np.broadcast_to(np.asarray(sigma_right, dtype=np.float64),
                                                        centres.shape)
    amps = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), centres.shape)
    half = int(np.ceil(4.0 * max(float(sl.max()), float(sr.max())) * rate)) + 1
    offsets = np.arange(-half, half + 1)
    first = np.round(centres * rate).astype(np.int64)
    idx = first[:, None] + offsets[None, :]
    dt = idx / rate - centres[:, None]
    sigma = np.where(dt < 0, sl[:, None], sr[:, None])
    values = amps[:, None] * np.exp(-0.5 * (dt / sigma) ** 2)
    keep = (idx >= 0) & (idx < n)
    return np.bincount(idx[keep], weights=values[keep], minlength=n)[:n]


def hann_envelope(n: int, rate: float, onsets: np.ndarray, durations: np.ndarray,
                  amplitudes: np.ndarray) -> np.ndarray:
    """Sum of Hann-shaped envelopes (one per burst), for bursts of artefact or rhythm."""
    if len(onsets) == 0:
        return np.zeros(n)
    length = int(np.ceil(float(np.max(durations)) * rate)) + 1
    t = np.arange(length)[None, :] / rate
    d = np.asarray(durations)[:, None]
    kernels = np.where(t < d, 0.5 - 0.5 * np.cos(2 * np.pi * t / d), 0.0) * np.asarray(amplitudes)[:, None]
    return place_kernels(n, np.round(np.asarray(onsets) * rate).astype(np.int64), kernels)


def powerline(n: int, rate: float, freq: float, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Mains interference: a sinusoid at ``freq`` Hz whose amplitude drifts slowly (cables and people move).

    The drift factor is kept above 0.2 so the hum never vanishes, as it does not on a real recording.
    """
    t = np.arange(n) / rate
    drift = 1.0 + 0.3 * band_noise(n, rate, 0.0, 0.05, rng)
    return amplitude * np.clip(drift, 0.2, None) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))


def motion_bursts(n: int, rate: float, onsets: np.ndarray, durations: np.ndarray, amplitudes: np.ndarray,
                  rng: np.random.Generator, band: tuple[float, float] = (0.3, 4.0)) -> np.ndarray:
    """Band-limited artefact bursts (a wrist moving under a PPG sensor, an electrode tugged on the chest)."""
    if len(onsets) == 0 or n <= 1:
        return np.zeros(n)
    hi = min(band[1], 0.45 * rate)
    return band_noise(n, rate, band[0], hi, rng) * hann_envelope(n, rate, onsets, durations, amplitudes)
