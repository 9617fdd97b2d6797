"""Six-channel sleep EEG (ISRUC montage) from a hypnogram: rhythms, graphoelements and artefacts per stage.

What a sleep-staging model keys on, and what this module therefore draws, per stage (AASM):

- W: posterior alpha (8-12 Hz, eyes closed), beta, muscle tone, blinks.
- N1: alpha fades, theta (4-7 Hz) and slow rolling eye movements.
- N2: sleep spindles (11-16 Hz bursts of 0.5-2 s) and K-complexes over a slower background.
- N3: high-amplitude slow waves (0.5-2 Hz, > 75 uV peak to peak), frontal maximum.
- REM: low-voltage mixed theta, sawtooth waves, rapid eye movements, no muscle tone.

Each rhythm is spatially correlated noise: channel ``i`` and ``j`` correlate by
``floor + (1 - floor) * exp(-distance_ij / length)`` over approximate 10-20 scalp positions (slow waves and
alpha are broad, beta and muscle local), weighted by region (alpha occipital, slow waves and K-complexes
frontal, spindles central). Graphoelements reach every channel with regional weights, and each channel adds
its own noise, drift and mains pickup. So neighbouring and homologous channels correlate more than distant
ones, as in a real montage, without being copies of each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import sawtooth

from edge_bridge.simulate.noise import (
    band_noise,
    lag,
    peak_noise,
    place_gaussians,
    place_kernels,
    poisson_events,
    power_law_noise,
    powerline,
    smooth,
)
from edge_bridge.tasks import EEG_CHANNELS

STAGES = ("W", "N1", "N2", "N3", "REM")
REGIONS = tuple(name.split("-")[0][0] for name in EEG_CHANNELS)  # F, C, O, F, C, O

# relative amplitude of each continuous rhythm per stage (rows follow STAGES)
RHYTHM_GAIN: dict[str, tuple[float, ...]] = {
    "background": (1.0, 1.1, 1.3, 1.5, 1.0),
    "alpha": (1.0, 0.3, 0.08, 0.05, 0.25),
    "theta": (0.3, 1.0, 0.7, 0.6, 0.9),
    "delta": (0.15, 0.3, 0.6, 1.6, 0.25),
    "beta": (1.0, 0.6, 0.4, 0.3, 0.7),
    "muscle": (1.0, 0.5, 0.3, 0.3, 0.08),
}
# spatial weight of each source per region, and the share of it that is common to all channels
RHYTHM_REGION: dict[str, dict[str, float]] = {
    "background": {"F": 1.0, "C": 1.0, "O": 1.0},
    "alpha": {"F": 0.35, "C": 0.6, "O": 1.0},
    "theta": {"F": 0.9, "C": 1.0, "O": 0.7},
    "delta": {"F": 1.0, "C": 0.85, "O": 0.6},
    "beta": {"F": 1.0, "C": 0.9, "O": 0.7},
    "muscle": {"F": 1.0, "C": 0.6, "O": 0.8},
}
# approximate 10-20 positions (x right, y front; head radius ~1) of F3, C3, O1, F4, C4, O2
POSITIONS = np.array([[-0.35, 0.55], [-0.4, 0.0], [-0.3, -0.85], [0.35, 0.55], [0.4, 0.0], [0.3, -0.85]])
# spatial correlation of each rhythm: (floor shared by all channels, decay length in head radii)
RHYTHM_SPREAD = {"background": (0.3, 0.6), "alpha": (0.5, 1.0), "theta": (0.35, 0.8), "delta": (0.6, 1.2),
                 "beta": (0.1, 0.4), "muscle": (0.0, 0.05)}
# event rates per minute per stage (rows follow STAGES)
EVENT_RATE: dict[str, tuple[float, ...]] = {
    "spindle": (0.0, 0.5, 6.0, 2.0, 0.0),
    "k_complex": (0.0, 0.2, 1.5, 0.5, 0.0),
    "sawtooth": (0.0, 0.0, 0.0, 0.0, 2.0),
    "blink": (6.0, 0.5, 0.0, 0.0, 0.0),
    "rapid_eye": (0.0, 0.0, 0.0, 0.0, 8.0),
    "slow_eye": (0.5, 2.5, 0.0, 0.0, 0.0),
}
EVENT_REGION: dict[str, dict[str, float]] = {
    "spindle": {"F": 0.7, "C": 1.0, "O": 0.4},
    "k_complex": {"F": 1.0, "C": 0.8, "O": 0.5},
    "sawtooth": {"F": 0.8, "C": 1.0, "O": 0.5},
    "blink": {"F": 1.0, "C": 0.25, "O": 0.05},
    "rapid_eye": {"F": 1.0, "C": 0.2, "O": 0.05},
    "slow_eye": {"F": 1.0, "C": 0.3, "O": 0.1},
}


@dataclass(frozen=True)
class EegSubject:
    """Per-subject EEG parameters (uV, Hz); people differ in alpha frequency, spindle frequency, amplitude."""

    background_uv: float
    alpha_uv: float
    alpha_hz: float
    theta_uv: float
    delta_uv: float
    beta_uv: float
    muscle_uv: float
    spindle_uv: float
    spindle_hz: float
    k_complex_uv: float
    channel_noise_uv: float
    powerline_uv: float
    drift_uv: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> EegSubject:
        return cls(
            background_uv=rng.uniform(8.0, 15.0),
            alpha_uv=rng.uniform(10.0, 30.0),
            alpha_hz=rng.uniform(8.5, 11.0),
            theta_uv=rng.uniform(6.0, 12.0),
            delta_uv=rng.uniform(22.0, 40.0),
            beta_uv=rng.uniform(2.0, 5.0),
            muscle_uv=rng.uniform(1.0, 5.0),
            spindle_uv=rng.uniform(15.0, 40.0),
            spindle_hz=rng.uniform(12.0, 14.0),
            k_complex_uv=rng.uniform(70.0, 150.0),
            channel_noise_uv=rng.uniform(1.0, 3.0),
            powerline_uv=rng.uniform(0.3, 3.0),
            drift_uv=rng.uniform(3.0, 12.0),
        )

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in asdict(self).items()}


def stage_envelope(stage_idx: np.ndarray, table: tuple[float, ...], epoch_s: float, times: np.ndarray,
                   tau: float = 2.0, causal: bool = False) -> np.ndarray:
    """A per-stage quantity at ``times``: the epoch's value, transitions smoothed over ``tau`` seconds.

    ``causal`` makes the quantity follow the stage after a lag (heart rate settling into deep sleep)
    instead of changing symmetrically around the boundary (an EEG rhythm).
    """
    per_second = np.repeat(np.asarray(table)[stage_idx], round(epoch_s))
    grid = np.arange(len(per_second)) + 0.5
    return np.interp(times, grid, (lag if causal else smooth)(per_second, 1.0, tau))


def spatial_mixing(floor: float, length: float) -> np.ndarray:
    """Lower-triangular ``L`` with ``L @ L.T`` the channels' correlation for a rhythm (unit diagonal)."""
    d = np.linalg.norm(POSITIONS[:, None, :] - POSITIONS[None, :, :], axis=-1)
    corr = floor + (1.0 - floor) * np.exp(-d / max(length, 1e-6))
    return np.linalg.cholesky(corr + 1e-9 * np.eye(len(corr)))


def _event_kernels(kind: str, n_events: int, rate: float, p: EegSubject,
                   rng: np.random.Generator) -> np.ndarray:
    """Waveforms of ``n_events`` graphoelements of one kind, one row each, starting at the event onset."""
    if kind == "spindle":
        dur = rng.uniform(0.5, 2.0, n_events)[:, None]
        t = np.arange(int(2.0 * rate) + 1)[None, :] / rate
        freq = p.spindle_hz + rng.uniform(-0.7, 0.7, (n_events, 1))
        env = np.where(t < dur, 0.5 - 0.5 * np.cos(2 * np.pi * t / dur), 0.0)
        amp = p.spindle_uv * rng.lognormal(0.0, 0.25, (n_events, 1))
        return amp * env * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (n_events, 1)))
    if kind == "k_complex":
        t = np.arange(int(1.5 * rate) + 1)[None, :] / rate
        amp = p.k_complex_uv * rng.lognormal(0.0, 0.2, (n_events, 1))
        wave = -np.exp(-0.5 * ((t - 0.25) / 0.07) ** 2) + 0.55 * np.exp(-0.5 * ((t - 0.65) / 0.18) ** 2)
        return amp * wave
    if kind == "sawtooth":
        dur = rng.uniform(1.0, 3.0, n_events)[:, None]
        t = np.arange(int(3.0 * rate) + 1)[None, :] / rate
        freq = rng.uniform(2.0, 4.0, (n_events, 1))
        env = np.where(t < dur, 0.5 - 0.5 * np.cos(2 * np.pi * t / dur), 0.0)
        amp = rng.uniform(20.0, 40.0, (n_events, 1))
        return amp * env * sawtooth(2 * np.pi * freq * t, width=0.7)
    raise ValueError(f"unknown event kind {kind!r}")


def render_eeg(stage_idx: np.ndarray, epoch_s: float, rate: float, p: EegSubject,
               rng: np.random.Generator) -> np.ndarray:
    """EEG of the six ISRUC channels (uV) for a hypnogram.

    Parameters
    ----------
    stage_idx : ndarray of int
        Index into :data:`STAGES` for each epoch.
    epoch_s : float
        Epoch length (30 s).
    rate : float
        Sampling rate (Hz).

    Returns
    -------
    ndarray, shape (6, n_epochs * epoch_s * rate)
    """
    n = round(len(stage_idx) * epoch_s * rate)
    t = np.arange(n) / rate
    out = np.zeros((len(EEG_CHANNELS), n))
    ch_gain = rng.uniform(0.85, 1.15, len(EEG_CHANNELS))  # electrode impedance, skull thickness

    sources = {
        "background": lambda: power_law_noise(n, rate, 1.6, rng, fmin=0.5),
        "alpha": lambda: peak_noise(n, rate, p.alpha_hz, 0.7, rng),
        "theta": lambda: peak_noise(n, rate, 5.5, 1.0, rng),
        "delta": lambda: band_noise(n, rate, 0.5, 2.0, rng, taper=0.4),
        "beta": lambda: band_noise(n, rate, 15.0, 30.0, rng, taper=0.4),
        "muscle": lambda: band_noise(n, rate, 25.0, 0.45 * rate, rng),
    }
    scale = {"background": p.background_uv, "alpha": p.alpha_uv, "theta": p.theta_uv, "delta": p.delta_uv,
             "beta": p.beta_uv, "muscle": p.muscle_uv}
    for name, make in sources.items():
        envelope = scale[name] * stage_envelope(stage_idx, RHYTHM_GAIN[name], epoch_s, t)
        weight = ch_gain * np.array([RHYTHM_REGION[name][r] for r in REGIONS])
        mixing = spatial_mixing(*RHYTHM_SPREAD[name])
        # mixing is linear, so draw one independent source at a time and add its column to every channel:
        # memory stays at the output plus one signal, even for a whole night
        for j in range(len(EEG_CHANNELS)):
            source = envelope * make()
            for c in range(j, len(EEG_CHANNELS)):  # mixing is lower-triangular
                out[c] += (weight[c] * mixing[c, j]) * source

    # graphoelements: the same event reaches every channel, weighted by region
    epoch_rate = 1.0 / epoch_s
    for kind in ("spindle", "k_complex", "sawtooth"):
        per_s = np.asarray(EVENT_RATE[kind])[stage_idx] / 60.0
        onsets = poisson_events(per_s, epoch_rate, rng)
        if len(onsets) == 0:
            continue
        kernels = _event_kernels(kind, len(onsets), rate, p, rng)
        signal = place_kernels(n, np.round(onsets * rate).astype(np.int64), kernels)
        for c, region in enumerate(REGIONS):
            out[c] += ch_gain[c] * EVENT_REGION[kind][region] * signal

    # eye artefacts: blinks (wake), rapid eye movements (REM), slow rolling movements (drowsiness)
    for kind, width, amp_uv, signed in (("blink", 0.1, 80.0, False), ("rapid_eye", 0.08, 60.0, True),
                                        ("slow_eye", 1.0, 40.0, True)):
        per_s = np.asarray(EVENT_RATE[kind])[stage_idx] / 60.0
        onsets = poisson_events(per_s, epoch_rate, rng)
        amps = amp_uv * rng.lognormal(0.0, 0.3, len(onsets))
        if signed:
            amps *= rng.choice([-1.0, 1.0], len(onsets))
        signal = place_gaussians(n, rate, onsets, amps, width)
        for c, region in enumerate(REGIONS):
            # horizontal eye movements reach the two hemispheres with opposite sign
            side = -1.0 if signed and c >= 3 else 1.0
            out[c] += side * EVENT_REGION[kind][region] * signal

    for c in range(len(EEG_CHANNELS)):
        out[c] += p.channel_noise_uv * rng.standard_normal(n)
        out[c] += p.drift_uv * band_noise(n, rate, 0.01, 0.3, rng)
        out[c] += powerline(n, rate, 50.0, p.powerline_uv, rng)
    return out
