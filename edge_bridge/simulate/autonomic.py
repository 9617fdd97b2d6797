"""Breathing and skin conductance: the slower autonomic signals that accompany the heart.

Breathing is generated first because it drives others: it modulates heart period (respiratory sinus
arrhythmia), PPG pulse height and baseline, and ECG amplitude and baseline. Skin conductance is a tonic
level plus phasic responses (SCRs) whose rate rises with sympathetic arousal, the classic stress marker.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

from edge_bridge.simulate.noise import band_noise, place_kernels, poisson_events


def breathing(grid_rate: float, rate_bpm: np.ndarray, depth: np.ndarray, *, inspiration_fraction: float,
              irregularity: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised breathing waveform on a control grid: -1 at end of expiration, +1 at end of inspiration.

    The breathing phase is the integral of a rate that wanders breath to breath (``irregularity`` is the
    relative standard deviation of that wander); inspiration is shorter than expiration
    (``inspiration_fraction`` of each cycle, ~0.4), and each breath's depth varies.

    Parameters
    ----------
    rate_bpm : ndarray
        Breathing rate (breaths/min) the state asks for, on the grid.
    depth : ndarray
        Relative tidal volume on the grid (1 = the subject's usual breath).
    """
    n = len(rate_bpm)
    wander = 1.0 + irregularity * band_noise(n, grid_rate, 0.01, 0.3, rng)
    freq = np.clip(rate_bpm * wander, 4.0, 45.0) / 60.0
    cycles = rng.random() + np.concatenate([[0.0], np.cumsum(freq[:-1])]) / grid_rate
    frac = cycles % 1.0
    fi = inspiration_fraction
    wave = np.where(frac < fi, -np.cos(np.pi * frac / fi), np.cos(np.pi * (frac - fi) / (1.0 - fi)))
    # depth changes breath to breath: a smooth random factor, resampled slower than the breathing itself
    breath_depth = np.exp(0.15 * band_noise(n, grid_rate, 0.005, 0.1, rng))
    return wave * depth * breath_depth


def scr_kernel(rate: float, tau_rise: float, tau_decay: float) -> np.ndarray:
    """Bi-exponential skin-conductance response of unit peak height (fast rise, slow recovery)."""
    t = np.arange(int(np.ceil(8 * tau_decay * rate)) + 1) / rate
    k = np.exp(-t / tau_decay) - np.exp(-t / tau_rise)
    return k / k.max()


def skin_conductance(rate: float, tonic_us: np.ndarray, scr_per_min: np.ndarray, *, scr_amp_us: float,
                     tau_rise: float, tau_decay: float, noise_us: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Electrodermal activity (uS) sampled at ``rate``: tonic level + SCRs + a slow drift + sensor noise.

    SCRs are an impulse train (Poisson, rate from the state) convolved with the response kernel, with
    log-normal heights around ``scr_amp_us``, so a stressful block shows both a higher level and more
    frequent responses.

    Returns
    -------
    eda : ndarray
        The signal, kept above 0.05 uS (conductance is positive; a dry electrode reads near zero).
    onsets : ndarray
        SCR onset times (s), for the ground truth.
    """
    n = len(tonic_us)
    onsets = poisson_events(scr_per_min / 60.0, rate, rng)
    heights = scr_amp_us * rng.lognormal(0.0, 0.5, len(onsets))
    impulses = place_kernels(n, np.floor(onsets * rate).astype(np.int64), heights[:, None])
    phasic = fftconvolve(impulses, scr_kernel(rate, tau_rise, tau_decay))[:n]
    # the tonic level wanders a few percent over minutes (hydration, temperature, electrode gel)
    drift = 0.02 * float(np.mean(tonic_us)) * band_noise(n, rate, 0.0005, 0.01, rng)
    eda = tonic_us + phasic + drift + noise_us * rng.standard_normal(n)
    return np.maximum(eda, 0.05), onsets
