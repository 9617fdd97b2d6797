"""Physiological signal-quality indices: is there a heartbeat in this window, and is the wrist still?

The basic gate (:mod:`edge_bridge.signals.quality`) catches broken signals: NaN, flat, clipped, out of
range. A wrist PPG during stair climbing is none of these; it is a fine-looking signal that carries the
arm swing instead of the pulse. Two indices catch that, both small numpy/scipy so the live loop can afford
them on every window (cost: ``bench/quality.py``):

- :func:`beat_template_sqi` (ECG and PPG): detect beats (ECG: on QRS energy, the slope squared over 80 ms;
  PPG: pulse peaks), average them into a template, and take the mean
  correlation of the beats with it (template matching; Orphanidou et al. 2015, IEEE JBHI 19(3), and
  NeuroKit2's ``ppg_quality(method="templatematch")``). A beat train that is physiologically infeasible
  (heart rate outside 40-180 bpm, a pause over 3 s, or longest/shortest interval over 2.2, Orphanidou's
  rules) scores 0. Clean beats repeat their shape (index near 1); motion, missed and extra beats do not.
- :func:`motion_energy` (accelerometer): RMS of the dynamic acceleration (each axis band-passed 0.3-10 Hz),
  in g, when the source carries an accelerometer. It needs no model of the artefact. By default it gates
  the wrist PPG only (``QualityLimits.max_motion``): a chest ECG's beats survive movement that a wrist
  PPG's do not.

Elgendi's skewness SQI (2016) was measured too (:func:`skewness_sqi`, reported by ``bench/quality.py``);
it separates clean from moving wrists less well on the simulated windows than template matching, so the
gate does not use it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal as sps

from edge_bridge.signals.filters import filter_sos

#: analysis band per modality (Hz): the pulse wave, and the QRS complex
SQI_BANDS = {"ppg": (0.5, 8.0), "ecg": (5.0, 30.0)}
SQI_MODALITIES = tuple(SQI_BANDS)
HR_RANGE_BPM = (40.0, 180.0)
MAX_PAUSE_S = 3.0
MAX_RR_RATIO = 2.2
MOTION_BAND = (0.3, 10.0)
#: the template index is taken on segments of this length and the window gets their median, so a short
#: burst (a 4 s scratch in a 60 s window) costs one segment, not the window; sustained movement spoils all
SEGMENT_S = 10.0


@lru_cache(maxsize=32)
def _band(modality: str, rate: float) -> np.ndarray:
    lo, hi = SQI_BANDS[modality]
    return filter_sos(float(rate), (lo, min(hi, 0.45 * rate)), None, 2)  # type: ignore[return-value]


def _filtered(x: np.ndarray, rate: float, modality: str) -> np.ndarray:
    return sps.sosfiltfilt(_band(modality, float(rate)), np.asarray(x, dtype=np.float64), axis=-1)


def _template_one(y: np.ndarray, rate: float, modality: str) -> float:
    """Template-matching index of one band-passed 1-D signal (see the module docstring)."""
    min_rr = 60.0 / 220.0  # refractory: no two beats closer than at 220 bpm
    if modality == "ecg":  # QRS energy (slope squared over ~80 ms): T waves and the lead's polarity drop out
        k = max(1, int(0.08 * rate))
        env = np.convolve(np.gradient(y) ** 2, np.ones(k) / k, mode="same")
        top = np.percentile(env, 99.5)
        if not top > 0:
            return 0.0
        peaks, _ = sps.find_peaks(env, distance=max(1, int(min_rr * rate)), height=0.3 * top)
    else:
        span = np.percentile(y, 98) - np.percentile(y, 2)
        if not span > 0:
            return 0.0
        peaks, _ = sps.find_peaks(y, distance=max(1, int(min_rr * rate)), prominence=0.3 * span)
    if len(peaks) < 4:
        return 0.0
    rr = np.diff(peaks) / rate
    hr = 60.0 / np.median(rr)
    if not HR_RANGE_BPM[0] <= hr <= HR_RANGE_BPM[1] or rr.max() > MAX_PAUSE_S \
            or rr.max() / rr.min() > MAX_RR_RATIO:
        return 0.0
    half = int(0.5 * np.median(rr) * rate)
    peaks = peaks[(peaks >= half) & (peaks + half < len(y))]
    if len(peaks) < 3 or half < 2:
        return 0.0
    beats = y[peaks[:, None] + np.arange(-half, half)[None, :]]  # (n_beats, 2 * half)
    beats = beats - beats.mean(axis=1, keepdims=True)
    template = beats.mean(axis=0)
    denom = np.linalg.norm(beats, axis=1) * np.linalg.norm(template)
    corr = beats @ template / np.maximum(denom, 1e-12)
    return float(np.mean(corr))


def beat_template_sqi(x: np.ndarray, rate: float, modality: str) -> np.ndarray:
    """Mean correlation of each beat with the window's average beat, per window and channel.

    Parameters
    ----------
    x : ndarray, shape (..., n_samples)
        Raw windows (finite) of one modality, in any unit.
    rate : float
        Sampling rate in Hz.
    modality : {"ecg", "ppg"}

    Returns
    -------
    sqi : ndarray of float64, shape (...)
        In [-1, 1]: the median over the window's :data:`SEGMENT_S` segments of the segment's index, which is
        0 where fewer than four beats are found or the beat train is infeasible.
    """
    if modality not in SQI_BANDS:
        raise ValueError(f"beat_template_sqi works on {', '.join(SQI_MODALITIES)}, got {modality!r}")
    a = np.asarray(x, dtype=np.float64)
    flat = a.reshape(-1, a.shape[-1])
    n = flat.shape[-1]
    seg = min(n, int(SEGMENT_S * rate))
    k = max(1, n // seg)
    y = _filtered(flat, rate, modality) if flat.size else flat
    out = [np.median([_template_one(row[i * seg:(i + 1) * seg], rate, modality) for i in range(k)])
           for row in y]
    return np.array(out, dtype=np.float64).reshape(a.shape[:-1])


def skewness_sqi(x: np.ndarray, rate: float) -> np.ndarray:
    """Elgendi's skewness SQI of PPG windows ``(..., n_samples)``: skewness of the band-passed pulse wave."""
    y = _filtered(x, rate, "ppg")
    y = y - y.mean(axis=-1, keepdims=True)
    sd = y.std(axis=-1)
    return (y ** 3).mean(axis=-1) / np.maximum(sd, 1e-12) ** 3


def motion_energy(acc: np.ndarray, rate: float) -> np.ndarray:
    """RMS of the dynamic acceleration, in the accelerometer's unit (g), per window.

    Parameters
    ----------
    acc : ndarray, shape (..., n_axes, n_samples)
        Raw accelerometer windows (1 to 3 axes).
    rate : float
        Their sampling rate in Hz.

    Returns
    -------
    energy : ndarray of float64, shape (...)
        Each axis is band-passed (0.3-10 Hz) first, removing gravity and slow tilt, so a still wrist reads
        ~0 whatever its orientation; the RMS is of the vector norm, so movement across gravity (which
        barely changes the magnitude of the acceleration) counts in full.
    """
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] < 16:
        raise ValueError(f"accelerometer windows must have shape (..., n_axes, n_samples >= 16), got "
                         f"{a.shape}")
    lo, hi = MOTION_BAND
    sos = filter_sos(float(rate), (lo, min(hi, 0.45 * rate)), None, 2)
    dyn = sps.sosfiltfilt(sos, a, axis=-1)  # per axis: a swing across gravity changes no magnitude
    return np.sqrt((dyn ** 2).sum(axis=-2).mean(axis=-1))
