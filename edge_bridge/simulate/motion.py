"""Sustained movement (walking, climbing stairs) over a simulated recording, with the wrist accelerometer.

The subjects' own motion bursts (:func:`edge_bridge.simulate.noise.motion_bursts`) are brief and rare, as at
rest. What defeats a wrist PPG is sustained rhythmic movement: the arm swings at the step cadence (1.5-2.3 Hz,
inside the heart-rate band), venous blood and sensor coupling follow, and the artefact can be larger than the
pulse itself. This module adds exactly that, so the quality gate's physiological indices can be measured on
windows that look right to the old checks (finite, not flat, not clipped) but carry no usable pulse.

The artefact is drawn from its own random stream and *added* to the recording, so the motion-corrupted
recording is the clean one plus the artefact: the same person, the same beats. The accelerometer channels
(``ACC_X``, ``ACC_Y``, ``ACC_Z`` in g at :data:`ACC_RATE`) carry gravity, a slowly turning wrist and the
same movement, so motion energy can be measured beside the signal it corrupts; with ``intensity=0`` they
are the accelerometer of a person sitting still.
"""

from __future__ import annotations

import numpy as np

from edge_bridge.recordings.recording import Channel, Recording
from edge_bridge.simulate.noise import band_noise

ACC_RATE = 32.0
#: artefact standard deviation per unit of intensity, relative to the channel's own standard deviation:
#: the wrist PPG suffers most; a chest ECG electrode moves less against the skin
RELATIVE_ARTEFACT = {"ppg": 1.5, "ecg": 0.3, "resp": 0.5}
ACC_G_PER_INTENSITY = 0.3  # dynamic acceleration (RMS, g) of brisk stair climbing at intensity 1


def _movement(seconds: float, rate: float, cadence_hz: float, phase: np.ndarray | None,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A step-locked waveform of unit standard deviation at ``rate``, and the step phase it followed."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    if phase is None:  # cadence wanders +-0.15 Hz over tens of seconds
        f = cadence_hz + 0.15 * band_noise(max(n, 2), rate, 0.01, 0.1, rng)[:n]
        phase = 2 * np.pi * np.cumsum(f) / rate
    else:
        phase = np.interp(t, np.arange(len(phase)) / ACC_RATE, phase)
    w = np.zeros(n)
    for k, a in enumerate((1.0, 0.5, 0.25), start=1):  # heel strike harmonics
        w += a * rng.uniform(0.6, 1.4) * np.cos(k * phase + rng.uniform(0, 2 * np.pi))
    w *= 1.0 + 0.3 * band_noise(max(n, 2), rate, 0.02, 0.2, rng)[:n]
    w += 0.5 * band_noise(max(n, 2), rate, 0.3, min(6.0, 0.45 * rate), rng)[:n]
    sd = w.std()
    return (w / sd if sd > 0 else w), phase


def add_motion(rec: Recording, intensity: float, rng: np.random.Generator) -> Recording:
    """Add sustained movement of ``intensity`` to every PPG/ECG/RESP channel and add a wrist accelerometer.

    Parameters
    ----------
    rec : Recording
        Changed in place (and returned).
    intensity : float
        0 = sitting still (accelerometer only), 1 = brisk stair climbing: the PPG artefact has 1.5 times the
        channel's standard deviation and the wrist ~0.3 g RMS of dynamic acceleration.
    rng : numpy.random.Generator
        The artefact's own stream (the recording's signals are not redrawn).
    """
    if not intensity >= 0:
        raise ValueError(f"motion intensity must be >= 0, got {intensity!r}")
    seconds = rec.duration
    cadence = rng.uniform(1.5, 2.3)
    acc_move, phase = _movement(seconds, ACC_RATE, cadence, None, rng)
    n_acc = len(acc_move)
    tilt = 0.2 * band_noise(max(n_acc, 2), ACC_RATE, 0.005, 0.05, rng)[:n_acc]  # the wrist turns slowly
    gravity = np.stack([np.sin(tilt), 0.1 * np.ones(n_acc), np.cos(tilt)])
    weights = rng.dirichlet(np.ones(3)) ** 0.5
    acc = gravity + ACC_G_PER_INTENSITY * intensity * weights[:, None] * acc_move[None, :]
    acc += 0.003 * rng.standard_normal(acc.shape)  # sensor noise and physiological tremor
    if intensity > 0:
        for ch in rec.channels:
            rel = RELATIVE_ARTEFACT.get(ch.modality)
            if rel is None:
                continue
            art, _ = _movement(len(ch.data) / ch.rate, ch.rate, cadence, phase, rng)
            ch.data = ch.data + intensity * rel * float(np.std(ch.data)) * art[: len(ch.data)]
    for axis, row in zip("XYZ", acc, strict=True):
        rec.channels.append(Channel(f"ACC_{axis}", row, ACC_RATE, "acc", "g"))
    rec.meta["motion"] = {"intensity": float(intensity), "cadence_hz": round(float(cadence), 3)}
    return rec
