"""The sleep task (ISRUC-like): six EEG channels and ECG at 200 Hz through a night, wake/sleep per 30 s epoch.

The night follows a hypnogram with the usual architecture: a sleep-onset latency in wake, then ~90 minute
cycles of N1 -> N2 -> N3 -> N2 -> REM, with N3 concentrated in the first cycles, REM lengthening towards
morning, and brief awakenings and stage shifts. Recordings shorter than a night compress the cycles so even
ten minutes hold wake and every sleep stage. Stages W/N1/N2/N3/REM are simulated and kept in
``dataset.json`` and ``Recording.meta``; the annotations carry only the task's classes, "wake" and "sleep".

The ECG is drawn on a beat train whose heart rate and variability follow the stage (lower, more regular
heart rate in deep sleep; variable in REM), so the ECG carries the sleep/wake information a bridged model
is meant to read.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_bridge.recordings.recording import Annotation, Channel, Recording
from edge_bridge.simulate.autonomic import breathing
from edge_bridge.simulate.cardiac import EcgMorphology, beat_times, heart_period, render_ecg
from edge_bridge.simulate.eeg import STAGES, EegSubject, render_eeg, stage_envelope
from edge_bridge.simulate.noise import band_noise, motion_bursts, poisson_events, powerline
from edge_bridge.tasks import EEG_CHANNELS, TASKS

logger = logging.getLogger(__name__)

CLASSES = TASKS["sleep"].classes  # ("wake", "sleep")
EPOCH_S = 30.0
EEG_RATE = TASKS["sleep"].source.input_rate
ECG_RATE = TASKS["sleep"].target.input_rate
GRID_RATE = 32.0
PAD_S = 3.0
NIGHT_EPOCHS = 960  # 8 h: the length at which cycles take their natural duration

# heart and breathing per stage (rows follow STAGES): HR change (bpm), variability, breathing rate change,
# breathing irregularity
HR_DELTA = (0.0, -3.0, -6.0, -9.0, -3.0)
HRV_SCALE = (1.0, 1.0, 1.1, 1.25, 0.9)
RESP_DELTA = (0.0, -0.5, -1.0, -1.5, 0.5)
RESP_IRREGULARITY = (0.12, 0.08, 0.05, 0.03, 0.25)
MOTION_PER_MIN = (1.0, 0.2, 0.05, 0.02, 0.05)


def min_epochs() -> int:
    """Shortest recording: one wake and one sleep epoch."""
    return 2


def hypnogram(n_epochs: int, rng: np.random.Generator) -> np.ndarray:
    """Stage index (into :data:`STAGES`) for each of ``n_epochs`` 30 s epochs.

    Cycle durations are drawn per cycle and scaled by ``n_epochs / 960`` (at least 0.08) for shorter
    recordings, so the structure survives compression; at least one epoch of wake opens the night and at
    least one of sleep follows.
    """
    if n_epochs < min_epochs():
        raise ValueError(f"a hypnogram needs at least {min_epochs()} epochs, got {n_epochs}")
    scale = float(np.clip(n_epochs / NIGHT_EPOCHS, 0.08, 1.0))
    w, n1, n2, n3, rem = range(len(STAGES))

    def epochs(minutes: float, at_least: int = 0) -> int:
        return max(at_least, round(minutes * 2 * scale))

    onset = min(max(2, round(rng.uniform(5.0, 25.0) * 2 * max(scale, 0.15))), n_epochs - 1)
    seq = [w] * onset
    cycle = 0
    while len(seq) < n_epochs:
        first = cycle == 0
        # a ~80-90 minute cycle; N3 fades over the night and later cycles fill with N2 and longer REM
        deep = rng.uniform(25.0, 45.0) * max(0.0, 1.0 - 0.35 * cycle)
        parts = [
            (n1, epochs(rng.uniform(2.0, 7.0) if first else rng.uniform(0.0, 3.0), 1 if first else 0)),
            (n2, epochs(rng.uniform(15.0, 30.0), 1)),
            (n3, epochs(deep, 1 if first else 0)),
            (n2, epochs(rng.uniform(5.0, 15.0) + 0.5 * max(0.0, 35.0 - deep), 1)),
            (rem, epochs(min(35.0, rng.uniform(5.0, 12.0) + 6.0 * cycle), 1)),
        ]
        if rng.random() < 0.4:
            parts.append((w, epochs(rng.uniform(0.5, 3.0), 1)))
        for stage, k in parts:
            seq.extend([stage] * k)
        cycle += 1
    stages = np.asarray(seq[:n_epochs], dtype=np.int64)
    # fragmentation: brief shifts to N1 or wake out of N2 (arousals), never in the opening wake
    draw = rng.random(n_epochs)
    in_n2 = stages == n2
    stages[in_n2 & (draw < 0.03)] = n1
    stages[in_n2 & (draw >= 0.03) & (draw < 0.04)] = w
    if n_epochs >= 300:  # a whole night ends in the morning awakening
        stages[-int(rng.integers(2, 20)):] = w
    return stages


@dataclass(frozen=True)
class SleepSubject:
    """Hidden per-subject parameters of the sleep task (heart at wake, ECG shape and noise, EEG)."""

    hr_wake_bpm: float
    rsa_s: float
    lf_s: float
    vlf_bpm: float
    jitter_s: float
    resp_rate_bpm: float
    inspiration_fraction: float
    ecg_emg_mv: float
    ecg_wander_mv: float
    ecg_powerline_mv: float
    ecg: EcgMorphology
    eeg: EegSubject

    @classmethod
    def draw(cls, rng: np.random.Generator) -> SleepSubject:
        return cls(
            hr_wake_bpm=float(np.clip(rng.normal(68.0, 8.0), 50.0, 92.0)), rsa_s=rng.uniform(0.015, 0.07),
            lf_s=rng.uniform(0.01, 0.035), vlf_bpm=rng.uniform(1.0, 3.0), jitter_s=rng.uniform(0.003, 0.008),
            resp_rate_bpm=rng.uniform(12.0, 17.0), inspiration_fraction=rng.uniform(0.35, 0.45),
            ecg_emg_mv=rng.uniform(0.003, 0.02), ecg_wander_mv=rng.uniform(0.03, 0.2),
            ecg_powerline_mv=rng.uniform(0.005, 0.06), ecg=EcgMorphology.draw(rng), eeg=EegSubject.draw(rng),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: round(v, 4) for k, v in asdict(self).items() if isinstance(v, float)}
        d["ecg_morphology"] = self.ecg.to_dict()
        d["eeg"] = self.eeg.to_dict()
        return d


def simulate_sleep(subject: str, n_epochs: int, rng: np.random.Generator) -> Recording:
    """One subject of the sleep task: EEG (6 channels) and ECG at 200 Hz, "wake"/"sleep" per 30 s epoch."""
    p = SleepSubject.draw(rng)
    stages = hypnogram(n_epochs, rng)
    seconds = n_epochs * EPOCH_S

    t_grid = -PAD_S + np.arange(int((seconds + 2 * PAD_S) * GRID_RATE)) / GRID_RATE
    t_env = np.clip(t_grid, 0.0, seconds - 1e-6)

    def env(table: tuple[float, ...], tau: float) -> np.ndarray:
        return stage_envelope(stages, table, EPOCH_S, t_env, tau, causal=True)

    resp = breathing(GRID_RATE, p.resp_rate_bpm + env(RESP_DELTA, 10.0), np.ones(len(t_grid)),
                     inspiration_fraction=p.inspiration_fraction, irregularity=env(RESP_IRREGULARITY, 5.0),
                     rng=rng)
    rr = heart_period(GRID_RATE, p.hr_wake_bpm + env(HR_DELTA, 30.0), resp, env(HRV_SCALE, 30.0),
                      rsa_s=p.rsa_s, lf_s=p.lf_s, vlf_bpm=p.vlf_bpm, rng=rng)
    beats = beat_times(GRID_RATE, -PAD_S, rr, p.jitter_s, rng)

    n_ecg = round(seconds * ECG_RATE)
    t_ecg = np.arange(n_ecg) / ECG_RATE
    ecg = render_ecg(n_ecg, ECG_RATE, beats, p.ecg, 1.0 + 0.06 * np.interp(beats, t_grid, resp), rng)
    wander = 0.5 * np.interp(t_ecg, t_grid, resp) + band_noise(n_ecg, ECG_RATE, 0.02, 0.5, rng)
    ecg += p.ecg_wander_mv * wander
    ecg += p.ecg_emg_mv * band_noise(n_ecg, ECG_RATE, 20.0, 0.45 * ECG_RATE, rng)
    ecg += 0.004 * rng.standard_normal(n_ecg)
    ecg += powerline(n_ecg, ECG_RATE, 50.0, p.ecg_powerline_mv, rng)
    # body movements (mostly in wake and arousals) disturb ECG and EEG together
    moves = poisson_events(np.asarray(MOTION_PER_MIN)[stages] / 60.0, 1.0 / EPOCH_S, rng)
    move_dur = rng.uniform(1.0, 6.0, len(moves))
    move_amp = rng.lognormal(np.log(0.3), 0.5, len(moves))
    ecg += motion_bursts(n_ecg, ECG_RATE, moves, move_dur, move_amp, rng, band=(0.5, 10.0))

    eeg = render_eeg(stages, EPOCH_S, EEG_RATE, p.eeg, rng)
    n_eeg = eeg.shape[1]
    eeg += motion_bursts(n_eeg, EEG_RATE, moves, move_dur, 150.0 * move_amp, rng, band=(0.3, 20.0))[None, :]

    labels = np.where(stages == STAGES.index("W"), CLASSES[0], CLASSES[1])
    annotations = [Annotation(k * EPOCH_S, EPOCH_S, str(lab)) for k, lab in enumerate(labels)]
    start = dt.datetime(2024, 3, 4, 22, 0) + dt.timedelta(days=int(rng.integers(0, 90)),
                                                          minutes=int(rng.integers(0, 90)))
    inside = (beats >= 0) & (beats < seconds)
    channels = [Channel(name, eeg[c], EEG_RATE, "eeg", "uV") for c, name in enumerate(EEG_CHANNELS)]
    channels.append(Channel("ECG", ecg, ECG_RATE, "ecg", "mV"))
    meta = {
        "simulated": True,
        "parameters": p.to_dict(),
        "stages": [STAGES[k] for k in stages],
        "r_peaks_s": beats[inside],
    }
    logger.debug("simulated %s: %d epochs, %d wake", subject, n_epochs, int((labels == CLASSES[0]).sum()))
    return Recording(channels, annotations, start_time=start, subject=subject, meta=meta)
