"""The stress task (WESAD-like): chest ECG, wrist PPG, respiration and EDA of one subject through a protocol.

The protocol alternates baseline with stress and amusement blocks of a few minutes, in a per-subject
random order (WESAD used two orders). Each class moves heart rate, heart-rate variability, breathing rate
and depth, skin conductance and PPG pulse amplitude, by physiologically plausible amounts that differ between
subjects (stress: heart rate +10-25 bpm, RMSSD down, breathing 3-8 breaths/min faster; amusement: milder),
while subjects differ at rest by about as much as a class moves them (resting heart rate ~70 +- 9 bpm). A
window classifier that never sees the subject's own baseline therefore lands well below 100 % on held-out
subjects (heart rate and RMSSD from the true beats give about 65 % balanced accuracy), which is what makes
the task honest.

All signals hang off one state timeline (class levels, followed with a lag so that physiology ramps after a
block starts rather than switching) and one beat train (:mod:`edge_bridge.simulate.cardiac`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge_bridge.recordings.recording import Annotation, Channel, Recording
from edge_bridge.simulate.autonomic import breathing, skin_conductance
from edge_bridge.simulate.cardiac import (
    EcgMorphology,
    PpgMorphology,
    beat_times,
    heart_period,
    preceding_intervals,
    render_ecg,
    render_ppg,
)
from edge_bridge.simulate.noise import band_noise, lag, motion_bursts, poisson_events, powerline
from edge_bridge.tasks import TASKS

logger = logging.getLogger(__name__)

CLASSES = TASKS["stress"].classes  # ("baseline", "stress", "amusement")
ECG_RATE = TASKS["stress"].source.input_rate
PPG_RATE = TASKS["stress"].target.input_rate
RESP_RATE = 32.0
EDA_RATE = 4.0
GRID_RATE = 32.0  # control grid of the beat train and breathing (Hz)
SLOW_RATE = 1.0  # grid of the class levels before smoothing (Hz)
PAD_S = 3.0  # beats start before 0 s and end after the end, so edge complexes are whole
MIN_SEGMENT_S = 60  # every block fills at least one 60 s window of the preset
STEP_S = 5  # block boundaries on the preset's 5 s hop


@dataclass(frozen=True)
class Segment:
    """One labelled protocol block (seconds from the start)."""

    label: str
    onset: float
    duration: float


def min_seconds() -> int:
    """Shortest recording that still gives every class a whole block (one 60 s window each)."""
    return MIN_SEGMENT_S * len(CLASSES)


def protocol(total_s: int, rng: np.random.Generator) -> list[Segment]:
    """Block sequence covering ``total_s`` seconds: baseline first, then stress and amusement in random order
    with baseline (recovery) between them, repeated as the length allows.

    Block length grows with the recording (about a fifth of it, 90-300 s) so a 10 minute recording has
    five blocks and all three classes, and a long one still has blocks of a few minutes. Every block is at
    least 60 s and boundaries fall on 5 s steps, the preset's hop.
    """
    if total_s < min_seconds():
        raise ValueError(f"a stress protocol needs at least {min_seconds()} s, got {total_s}")
    target = float(np.clip(total_s / 5.0, 90.0, 300.0))
    n = max(3, round(total_s / target))
    n = min(n, total_s // MIN_SEGMENT_S)
    first, second = rng.permutation(["stress", "amusement"]).tolist()
    if n == 3:
        labels = ["baseline", first, second]
    else:
        labels = ["baseline" if i % 2 == 0 else (first if (i // 2) % 2 == 0 else second) for i in range(n)]
    spare_steps = (total_s - MIN_SEGMENT_S * n) // STEP_S
    extra = rng.multinomial(spare_steps, rng.dirichlet(np.full(n, 4.0))) * STEP_S
    lengths = (MIN_SEGMENT_S + extra).astype(float)
    lengths[-1] += total_s - lengths.sum()
    onsets = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    return [Segment(lab, float(o), float(d)) for lab, o, d in zip(labels, onsets, lengths, strict=True)]


@dataclass(frozen=True)
class ClassEffect:
    """How one class moves a subject's physiology away from its baseline."""

    hr_bpm: float = 0.0  # added to resting heart rate
    hrv_scale: float = 1.0  # multiplies LF and RSA variability (vagal withdrawal < 1)
    resp_bpm: float = 0.0  # added to the breathing rate
    resp_depth: float = 1.0  # relative tidal volume
    resp_irregularity: float = 0.08  # relative breath-to-breath rate wander (laughing: high)
    scl_us: float = 0.0  # added to the tonic skin conductance
    scr_factor: float = 1.0  # multiplies the SCR rate
    ppg_amp: float = 1.0  # multiplies pulse amplitude (vasoconstriction < 1)
    motion_per_min: float = 0.3  # motion-artefact bursts per minute
    emg: float = 1.0  # multiplies the ECG muscle noise
    arousal: float = 0.0  # 0..1, shortens the pulse-transit time (blood pressure rises)


@dataclass(frozen=True)
class StressSubject:
    """Hidden per-subject parameters: the ground truth that ``dataset.json`` reveals.

    Ranges are wide on purpose (resting heart rate alone spans ~50-90 bpm) so that between-subject
    differences are as large as the class effects, as in real cohorts.
    """

    hr_rest_bpm: float
    rsa_s: float
    lf_s: float
    vlf_bpm: float
    jitter_s: float
    resp_rate_bpm: float
    inspiration_fraction: float
    ptt_s: float  # R peak -> PPG systolic peak at rest
    ptt_arousal_drop_s: float
    ppg_amp: float
    scl_us: float
    scr_per_min: float
    scr_amp_us: float
    scr_decay_s: float
    ecg_emg_mv: float
    ecg_wander_mv: float
    ecg_powerline_mv: float
    ecg_saturation_per_min: float
    ppg_noise: float
    motion_factor: float
    ecg: EcgMorphology
    ppg: PpgMorphology
    effects: dict[str, ClassEffect] = field(default_factory=dict)

    @classmethod
    def draw(cls, rng: np.random.Generator) -> StressSubject:
        base_motion = rng.uniform(0.1, 0.5)
        effects = {
            "baseline": ClassEffect(motion_per_min=base_motion),
            "stress": ClassEffect(
                hr_bpm=rng.uniform(10.0, 25.0), hrv_scale=rng.uniform(0.4, 0.75),
                resp_bpm=rng.uniform(3.0, 8.0), resp_depth=rng.uniform(0.7, 0.95), resp_irregularity=0.12,
                scl_us=rng.uniform(0.5, 3.5),
                scr_factor=rng.uniform(2.0, 4.0), ppg_amp=rng.uniform(0.6, 0.9),
                motion_per_min=base_motion * rng.uniform(1.5, 3.0), emg=rng.uniform(1.3, 2.2), arousal=1.0),
            "amusement": ClassEffect(
                hr_bpm=rng.uniform(2.0, 9.0), hrv_scale=rng.uniform(0.75, 1.05),
                resp_bpm=rng.uniform(1.0, 4.0), resp_depth=rng.uniform(0.9, 1.3), resp_irregularity=0.25,
                scl_us=rng.uniform(0.0, 1.2),
                scr_factor=rng.uniform(1.2, 2.5), ppg_amp=rng.uniform(0.85, 1.05),
                motion_per_min=base_motion * rng.uniform(2.0, 4.0), emg=rng.uniform(1.0, 1.6), arousal=0.3),
        }
        return cls(
            hr_rest_bpm=float(np.clip(rng.normal(70.0, 9.0), 50.0, 95.0)),
            rsa_s=rng.uniform(0.012, 0.06), lf_s=rng.uniform(0.01, 0.035), vlf_bpm=rng.uniform(1.0, 3.0),
            jitter_s=rng.uniform(0.003, 0.008), resp_rate_bpm=rng.uniform(10.0, 18.0),
            inspiration_fraction=rng.uniform(0.35, 0.45), ptt_s=rng.uniform(0.19, 0.31),
            ptt_arousal_drop_s=rng.uniform(0.0, 0.035), ppg_amp=float(rng.lognormal(0.0, 0.35)),
            scl_us=rng.uniform(1.0, 10.0), scr_per_min=rng.uniform(1.0, 3.0),
            scr_amp_us=rng.uniform(0.1, 0.6), scr_decay_s=rng.uniform(2.0, 4.0),
            ecg_emg_mv=rng.uniform(0.004, 0.03), ecg_wander_mv=rng.uniform(0.03, 0.25),
            ecg_powerline_mv=rng.uniform(0.005, 0.08), ecg_saturation_per_min=rng.uniform(0.0, 0.05),
            ppg_noise=rng.uniform(0.005, 0.03), motion_factor=float(rng.lognormal(0.0, 0.5)),
            ecg=EcgMorphology.draw(rng), ppg=PpgMorphology.draw(rng), effects=effects,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if isinstance(v, float):
                d[k] = round(v, 4)
        d["ecg_morphology"] = self.ecg.to_dict()
        d["ppg_morphology"] = self.ppg.to_dict()
        d["class_effects"] = {c: {k: round(float(v), 4) for k, v in asdict(e).items()}
                              for c, e in self.effects.items()}
        return d


def _levels(segments: list[Segment], times: np.ndarray, values: dict[str, float], tau: float) -> np.ndarray:
    """A class-dependent quantity along ``times``: the block's value, reached with a lag of ~``tau`` s."""
    level = np.full(len(times), values[segments[0].label])
    for seg in segments[1:]:
        level[times >= seg.onset] = values[seg.label]
    return lag(level, SLOW_RATE, tau)


def simulate_stress(subject: str, seconds: int, rng: np.random.Generator) -> Recording:
    """One subject of the stress task: ECG 250 Hz, PPG 64 Hz, RESP 32 Hz, EDA 4 Hz, labelled blocks.

    Parameters
    ----------
    subject : str
        Subject code written into the recording.
    seconds : int
        Length; whole seconds so the EDF data records come out whole.
    rng : numpy.random.Generator
        Source of every random draw (subject parameters, protocol, noise).
    """
    p = StressSubject.draw(rng)
    segments = protocol(seconds, rng)
    eff = p.effects

    def by_class(attr: str) -> dict[str, float]:
        return {c: float(getattr(eff[c], attr)) for c in CLASSES}

    # --- state timeline: class levels on a 1 Hz grid, lagged, then read wherever needed -----------------
    t_slow = np.arange(-PAD_S, seconds + PAD_S + 1.0, 1.0 / SLOW_RATE)
    hr = _levels(segments, t_slow, by_class("hr_bpm"), 12.0) + p.hr_rest_bpm
    hrv = _levels(segments, t_slow, by_class("hrv_scale"), 15.0)
    resp_rate = _levels(segments, t_slow, by_class("resp_bpm"), 8.0) + p.resp_rate_bpm
    depth = _levels(segments, t_slow, by_class("resp_depth"), 8.0)
    irregular = _levels(segments, t_slow, by_class("resp_irregularity"), 4.0)
    scl = _levels(segments, t_slow, by_class("scl_us"), 30.0) + p.scl_us
    scr = _levels(segments, t_slow, by_class("scr_factor"), 8.0) * p.scr_per_min
    ppg_gain = _levels(segments, t_slow, by_class("ppg_amp"), 15.0) * p.ppg_amp
    motion = _levels(segments, t_slow, by_class("motion_per_min"), 2.0) * p.motion_factor
    emg = _levels(segments, t_slow, by_class("emg"), 8.0)
    arousal = _levels(segments, t_slow, by_class("arousal"), 20.0)

    def at(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.interp(t, t_slow, x)

    # --- breathing and the beat train on the control grid ----------------------------------------------
    t_grid = -PAD_S + np.arange(int((seconds + 2 * PAD_S) * GRID_RATE)) / GRID_RATE
    resp = breathing(GRID_RATE, at(resp_rate, t_grid), at(depth, t_grid),
                     inspiration_fraction=p.inspiration_fraction, irregularity=at(irregular, t_grid), rng=rng)
    rr = heart_period(GRID_RATE, at(hr, t_grid), resp, at(hrv, t_grid), rsa_s=p.rsa_s, lf_s=p.lf_s,
                      vlf_bpm=p.vlf_bpm, rng=rng)
    beats = beat_times(GRID_RATE, -PAD_S, rr, p.jitter_s, rng)
    resp_at_beats = np.interp(beats, t_grid, resp)
    rr_beats = preceding_intervals(beats)

    # motion episodes are shared: the same movement disturbs the wrist PPG, the chest ECG and the belt
    motion_on = poisson_events(motion / 60.0, SLOW_RATE, rng) + t_slow[0]
    motion_dur = rng.uniform(1.5, 8.0, len(motion_on))
    motion_amp = rng.lognormal(np.log(1.5), 0.5, len(motion_on))
    ecg_hit = rng.random(len(motion_on)) < 0.5

    # --- ECG -------------------------------------------------------------------------------------------
    n_ecg = int(seconds * ECG_RATE)
    t_ecg = np.arange(n_ecg) / ECG_RATE
    ecg = render_ecg(n_ecg, ECG_RATE, beats, p.ecg, 1.0 + 0.06 * resp_at_beats, rng)
    wander = 0.5 * np.interp(t_ecg, t_grid, resp) + band_noise(n_ecg, ECG_RATE, 0.02, 0.5, rng)
    ecg += p.ecg_wander_mv * wander
    ecg += p.ecg_emg_mv * at(emg, t_ecg) * band_noise(n_ecg, ECG_RATE, 20.0, 0.45 * ECG_RATE, rng)
    ecg += 0.004 * rng.standard_normal(n_ecg)  # amplifier noise
    ecg += powerline(n_ecg, ECG_RATE, 50.0, p.ecg_powerline_mv, rng)
    ecg += motion_bursts(n_ecg, ECG_RATE, motion_on[ecg_hit], motion_dur[ecg_hit], 0.25 * motion_amp[ecg_hit],
                         rng, band=(0.5, 10.0))
    # rarely the amplifier saturates (a tugged lead): a second or more pinned at the rail, which the
    # quality gate must catch
    sat_on = poisson_events(np.full(seconds, p.ecg_saturation_per_min / 60.0), SLOW_RATE, rng)
    sat_dur = rng.uniform(1.0, 3.0, len(sat_on))
    rail = 8.0 * float(np.sign(rng.standard_normal()) or 1.0)
    for onset, dur in zip(sat_on, sat_dur, strict=True):
        ecg[int(onset * ECG_RATE): int((onset + dur) * ECG_RATE)] = rail

    # --- PPG -------------------------------------------------------------------------------------------
    n_ppg = int(seconds * PPG_RATE)
    t_ppg = np.arange(n_ppg) / PPG_RATE
    ptt = p.ptt_s - p.ptt_arousal_drop_s * at(arousal, beats) + rng.normal(0.0, 0.004, len(beats))
    amp = (at(ppg_gain, beats) * (1.0 + 0.12 * resp_at_beats) * np.sqrt(rr_beats / np.median(rr_beats))
           * rng.lognormal(0.0, 0.04, len(beats)))
    ppg = render_ppg(n_ppg, PPG_RATE, beats + ptt, rr_beats, p.ppg, amp)
    gain_t = at(ppg_gain, t_ppg)
    # respiration and vasomotion move the baseline (RIIV; ~0.1 Hz Mayer waves), plus slow drift
    ppg += gain_t * (-0.15 * np.interp(t_ppg, t_grid, resp)
                     + 0.1 * band_noise(n_ppg, PPG_RATE, 0.05, 0.15, rng)
                     + 0.2 * band_noise(n_ppg, PPG_RATE, 0.005, 0.05, rng))
    ppg += p.ppg_noise * rng.standard_normal(n_ppg)
    ppg += motion_bursts(n_ppg, PPG_RATE, motion_on, motion_dur, motion_amp * p.ppg_amp, rng, band=(0.3, 6.0))

    # --- respiration belt ------------------------------------------------------------------------------
    n_resp = int(seconds * RESP_RATE)
    t_resp = np.arange(n_resp) / RESP_RATE
    belt = np.interp(t_resp, t_grid, resp) + 0.1 * band_noise(n_resp, RESP_RATE, 0.005, 0.05, rng)
    belt += 0.02 * rng.standard_normal(n_resp)
    belt += motion_bursts(n_resp, RESP_RATE, motion_on, motion_dur, 0.4 * motion_amp, rng, band=(0.3, 3.0))

    # --- skin conductance ------------------------------------------------------------------------------
    t_eda = np.arange(int(seconds * EDA_RATE)) / EDA_RATE
    eda, scr_onsets = skin_conductance(EDA_RATE, at(scl, t_eda), at(scr, t_eda), scr_amp_us=p.scr_amp_us,
                                       tau_rise=0.75, tau_decay=p.scr_decay_s, noise_us=0.005, rng=rng)

    start = dt.datetime(2024, 3, 4, 9, 0) + dt.timedelta(days=int(rng.integers(0, 90)),
                                                         minutes=int(rng.integers(0, 6 * 60)))
    inside = (beats >= 0) & (beats < seconds)
    meta = {
        "simulated": True,
        "parameters": p.to_dict(),
        "segments": [asdict(s) for s in segments],
        "r_peaks_s": beats[inside],
        "ppg_peaks_s": (beats + ptt)[inside],
        "scr_onsets_s": scr_onsets,
        "motion_s": np.stack([motion_on, motion_dur], axis=1),
        "ecg_saturation_s": np.stack([sat_on, sat_dur], axis=1),
    }
    channels = [
        Channel("ECG", ecg, ECG_RATE, "ecg", "mV"),
        Channel("PPG", ppg, PPG_RATE, "ppg", "a.u."),
        Channel("RESP", belt, RESP_RATE, "resp", "a.u."),
        Channel("EDA", eda, EDA_RATE, "eda", "uS"),
    ]
    annotations = [Annotation(s.onset, s.duration, s.label) for s in segments]
    logger.debug("simulated %s: %d s, %d beats, blocks %s", subject, seconds, int(inside.sum()),
                 [s.label for s in segments])
    return Recording(channels, annotations, start_time=start, subject=subject, meta=meta)
