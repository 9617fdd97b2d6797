"""One beat train, and the ECG and PPG drawn on it.

Model bridging from ECG to PPG only makes sense if both signals see the same heart. So the simulator first
decides *when* the heart beats (a heart-period curve with respiratory sinus arrhythmia, low-frequency
Mayer waves and a slow drift, integrated into beat times), then draws an ECG complex at every beat and a PPG
pulse one pulse-transit time later. Heart rate read from either signal then agrees beat by beat, as it
does on a person, while waveform morphology, amplitude and noise differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edge_bridge.simulate.noise import band_noise, place_gaussians

RR_LIMITS = (0.33, 1.8)  # s: 33-180 bpm, what a resting-to-stressed adult can show


@dataclass(frozen=True)
class EcgMorphology:
    """Per-subject shape of the ECG complex as Gaussian waves (amplitude mV, centre s from R, width s).

    Electrode placement, heart axis and body build change these a lot between people, which is exactly what
    a source model must be robust to, so each subject draws its own.
    """

    p: tuple[float, float, float]
    q: tuple[float, float, float]
    r: tuple[float, float, float]
    s: tuple[float, float, float]
    t: tuple[float, float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator) -> EcgMorphology:
        r_amp = rng.uniform(0.7, 2.0)
        return cls(
            p=(rng.uniform(0.06, 0.2), -rng.uniform(0.14, 0.2), rng.uniform(0.018, 0.03)),
            q=(-r_amp * rng.uniform(0.03, 0.15), -rng.uniform(0.022, 0.032), rng.uniform(0.006, 0.01)),
            r=(r_amp, 0.0, rng.uniform(0.008, 0.013)),
            s=(-r_amp * rng.uniform(0.1, 0.4), rng.uniform(0.022, 0.034), rng.uniform(0.007, 0.012)),
            # T centre and width are given at RR = 1 s and scale with sqrt(RR) (QT shortens as HR rises)
            t=(r_amp * rng.uniform(0.12, 0.35), rng.uniform(0.24, 0.32), rng.uniform(0.035, 0.06)),
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [round(float(v), 4) for v in vals] for k, vals in asdict(self).items()}


@dataclass(frozen=True)
class PpgMorphology:
    """Per-subject PPG pulse: a systolic wave (fast rise, slower fall) and a dicrotic/diastolic wave.

    Attributes
    ----------
    rise, fall : float
        Widths (s) of the systolic wave before and after its peak.
    dicrotic_amp : float
        Height of the diastolic wave relative to the systolic one (stiffer arteries: smaller).
    dicrotic_delay : float
        Seconds from systolic to diastolic peak at RR = 1 s (scales with sqrt(RR)).
    dicrotic_width : float
        Width (s) of the diastolic wave.
    """

    rise: float
    fall: float
    dicrotic_amp: float
    dicrotic_delay: float
    dicrotic_width: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> PpgMorphology:
        return cls(rise=rng.uniform(0.05, 0.08), fall=rng.uniform(0.1, 0.15),
                   dicrotic_amp=rng.uniform(0.15, 0.5), dicrotic_delay=rng.uniform(0.26, 0.34),
                   dicrotic_width=rng.uniform(0.07, 0.11))

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def heart_period(grid_rate: float, hr_bpm: np.ndarray, resp: np.ndarray, hrv_scale: np.ndarray, *,
                 rsa_s: float, lf_s: float, vlf_bpm: float, rng: np.random.Generator) -> np.ndarray:
    """Instantaneous heart period (s) on a regular grid.

    ``RR(t) = 60 / (HR(t) + VLF(t)) + hrv_scale(t) * (LF(t) - RSA * resp(t))``: the class or sleep stage
    sets the mean heart rate and how much the heart varies; respiration shortens the period on inspiration
    (respiratory sinus arrhythmia, the HF band) and ~0.1 Hz baroreflex oscillations add the LF band.

    Parameters
    ----------
    grid_rate : float
        Rate of the control grid (Hz) on which all arrays are given.
    hr_bpm : ndarray
        Mean heart rate the state asks for.
    resp : ndarray
        Breathing waveform, -1 (end of expiration) .. +1 (end of inspiration).
    hrv_scale : ndarray
        Multiplier of the LF and HF variability (stress withdraws vagal tone: < 1).
    rsa_s, lf_s : float
        Subject's RSA half-amplitude and LF standard deviation, in seconds of RR.
    vlf_bpm : float
        Standard deviation of the slow (< 0.04 Hz) heart-rate drift, bpm.
    """
    n = len(hr_bpm)
    vlf = vlf_bpm * band_noise(n, grid_rate, 0.003, 0.04, rng)
    lf = lf_s * band_noise(n, grid_rate, 0.04, 0.15, rng)
    rr = 60.0 / np.clip(hr_bpm + vlf, 35.0, 175.0) + hrv_scale * (lf - rsa_s * resp)
    return np.clip(rr, *RR_LIMITS)


def beat_times(grid_rate: float, t0: float, rr: np.ndarray, jitter_s: float,
               rng: np.random.Generator) -> np.ndarray:
    """Beat times (s) from a heart-period curve: where the integrated beat phase crosses an integer.

    Integrating ``1/RR`` (an integral pulse frequency model) keeps successive intervals consistent with the
    curve at any heart rate; a little white timing jitter on top is the beat-to-beat noise that the curve
    alone would lack.
    """
    phase = rng.random() + np.concatenate([[0.0], np.cumsum(1.0 / rr[:-1])]) / grid_rate
    t = t0 + np.arange(len(rr)) / grid_rate
    k = np.arange(np.ceil(phase[0]), np.floor(phase[-1]) + 1)
    beats = np.interp(k, phase, t)
    beats = beats + rng.normal(0.0, jitter_s, len(beats))
    return np.sort(beats)


def preceding_intervals(beats: np.ndarray) -> np.ndarray:
    """RR interval ending at each beat (the first beat borrows the next one's)."""
    if len(beats) < 2:
        return np.ones(len(beats))
    rr = np.diff(beats)
    return np.concatenate([[rr[0]], rr])


def render_ecg(n: int, rate: float, beats: np.ndarray, morph: EcgMorphology, amp_mod: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Noise-free ECG (mV): the subject's P-QRS-T complex placed at every beat.

    Parameters
    ----------
    n, rate : int, float
        Output length in samples and sampling rate (Hz); sample ``i`` is at ``i / rate`` s.
    beats : ndarray
        R-peak times (s); beats slightly outside the recording still contribute their tails.
    amp_mod : ndarray
        Per-beat amplitude factor (breathing rotates the heart's electrical axis: QRS height follows it).
    """
    rr = preceding_intervals(beats)
    stretch = np.sqrt(np.clip(rr, *RR_LIMITS))
    amp = amp_mod * (1.0 + rng.normal(0.0, 0.02, len(beats)))
    out = np.zeros(n)
    for name in ("p", "q", "r", "s", "t"):
        a, centre, width = getattr(morph, name)
        if name == "t":
            out += place_gaussians(n, rate, beats + centre * stretch, a * amp, width * stretch)
        elif name == "p":
            out += place_gaussians(n, rate, beats + centre * np.minimum(stretch, 1.1), a * amp, width)
        else:
            out += place_gaussians(n, rate, beats + centre, a * amp, width)
    return out


def render_ppg(n: int, rate: float, arrivals: np.ndarray, rr: np.ndarray, morph: PpgMorphology,
               amplitudes: np.ndarray) -> np.ndarray:
    """Noise-free PPG (a.u.): a systolic plus a diastolic wave whose systolic peak is at each arrival time.

    Parameters
    ----------
    arrivals : ndarray
        Systolic-peak times (s): R-peak time plus the pulse-transit time.
    rr : ndarray
        RR interval ending at each beat (longer filling: larger pulse, later diastolic wave).
    amplitudes : ndarray
        Per-beat systolic height (class, respiration and subject scale it).
    """
    stretch = np.sqrt(np.clip(rr, *RR_LIMITS))
    out = place_gaussians(n, rate, arrivals, amplitudes, morph.rise, morph.fall * stretch)
    out += place_gaussians(n, rate, arrivals + morph.dicrotic_delay * stretch,
                           amplitudes * morph.dicrotic_amp, morph.dicrotic_width * stretch)
    return out
