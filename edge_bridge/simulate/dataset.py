"""Entry points: one simulated subject as a :class:`Recording`, or a whole dataset as EDF+ files.

Each subject's random stream is seeded from ``(seed, task, subject code)``, so a subject is the same person
whichever dataset size it is part of, and a dataset is reproduced exactly from its seed. The ground truth
(every hidden per-subject parameter, the protocol blocks or hypnogram, the heart rate per class) goes to
``dataset.json`` beside the recordings, so a user can check what a model should have found.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge import __version__
from edge_bridge.errors import SpecError
from edge_bridge.fileio import atomic_write_text
from edge_bridge.recordings.edf import write_edf
from edge_bridge.recordings.recording import Recording
from edge_bridge.simulate import sleep, stress

logger = logging.getLogger(__name__)


class SimulationError(SpecError):
    """The simulator was asked for something it cannot produce (unknown task, too few subjects or minutes)."""


def _stress(subject: str, minutes: float, rng: np.random.Generator) -> Recording:
    return stress.simulate_stress(subject, round(minutes * 60), rng)


def _sleep(subject: str, minutes: float, rng: np.random.Generator) -> Recording:
    return sleep.simulate_sleep(subject, math.floor(minutes * 60 / sleep.EPOCH_S + 1e-9), rng)


# task -> (simulator, shortest recording in minutes, why)
SIMULATORS: dict[str, tuple[Callable[[str, float, np.random.Generator], Recording], float, str]] = {
    "stress": (_stress, stress.min_seconds() / 60.0,
               f"one {stress.MIN_SEGMENT_S} s window for each of its {len(stress.CLASSES)} classes"),
    "sleep": (_sleep, sleep.min_epochs() * sleep.EPOCH_S / 60.0,
              f"one {sleep.EPOCH_S:g} s epoch of wake and one of sleep"),
}

NOTES = {
    "ptt_s": "pulse-transit time, R peak to PPG systolic peak, at rest; stress subtracts ptt_arousal_drop_s",
    "rsa_s": "respiratory sinus arrhythmia: half-amplitude of the breathing-locked RR oscillation, seconds",
    "lf_s": "standard deviation of the 0.04-0.15 Hz RR oscillation, seconds",
    "class_effects": "how each class moves the subject away from its resting values",
    "stages": "sleep stages per 30 s epoch (W, N1, N2, N3, REM); annotations carry wake/sleep only",
}


def _check(task: str, minutes: float, *, subjects: int = 1, seed: int = 0) -> None:
    if task not in SIMULATORS:
        raise SimulationError(f"no simulator for task {task!r}; choose one of: {', '.join(SIMULATORS)}")
    if isinstance(subjects, bool) or not isinstance(subjects, int | np.integer) or subjects < 1:
        raise SimulationError(f"subjects must be a whole number >= 1, got {subjects!r}; ask for at least one")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SimulationError(f"seed must be a whole number >= 0, got {seed!r}; pick 0 or a positive integer")
    _, shortest, why = SIMULATORS[task]
    number = isinstance(minutes, int | float | np.number) and not isinstance(minutes, bool)
    if not number or not math.isfinite(minutes) or minutes < shortest - 1e-9:
        raise SimulationError(
            f"minutes={minutes!r} is too short for the {task} task: it needs at least {shortest:g} min "
            f"({why}); pass --minutes {math.ceil(shortest)} or more"
        )


def subject_rng(task: str, subject: str, seed: int) -> np.random.Generator:
    """The random stream of one subject: seeded by the dataset seed, the task and the subject code.

    ``zlib.crc32`` rather than ``hash()``, because Python salts string hashes per process.
    """
    return np.random.default_rng([int(seed), zlib.crc32(task.encode()), zlib.crc32(subject.encode())])


def simulate_subject(task: str, subject: str, minutes: float, seed: int, *,
                     motion: float | None = None) -> Recording:
    """Simulate one subject of a task.

    Parameters
    ----------
    task : str
        ``"stress"`` (ECG 250 Hz, PPG 64 Hz, RESP 32 Hz, EDA 4 Hz; baseline/stress/amusement blocks) or
        ``"sleep"`` (six EEG channels and ECG at 200 Hz; wake/sleep per 30 s epoch).
    subject : str
        Subject code; with ``seed`` it decides the person (their resting heart rate, waveforms, noise).
    minutes : float
        Length, rounded to whole seconds (stress) or down to whole 30 s epochs (sleep).
    seed : int
        Dataset seed (>= 0). Same arguments, same arrays.
    motion : float or None
        ``None`` (default): the recording as always, no accelerometer. A number adds sustained movement of
        that intensity (0 = still, 1 = brisk stair climbing) and three wrist accelerometer channels
        (:func:`edge_bridge.simulate.motion.add_motion`); the artefact has its own random stream, so the
        signals underneath are the ``motion=None`` recording's.

    Returns
    -------
    Recording
        With ``subject``, ``start_time`` and one annotation per labelled block or epoch; ``meta`` holds
        the ground truth (``"parameters"``, ``"r_peaks_s"``, and ``"segments"`` or ``"stages"``).

    Raises
    ------
    SimulationError
        For an unknown task, a negative seed or a recording too short to label.
    """
    _check(task, minutes, seed=seed)
    make = SIMULATORS[task][0]
    rec = make(subject, float(minutes), subject_rng(task, subject, seed))
    if motion is not None:
        from edge_bridge.simulate.motion import add_motion

        if not (isinstance(motion, int | float) and math.isfinite(motion) and motion >= 0):
            raise SimulationError(f"motion must be an intensity >= 0 (0 = still, 1 = stair climbing), "
                                  f"got {motion!r}")
        rng = np.random.default_rng([int(seed), zlib.crc32(task.encode()), zlib.crc32(subject.encode()),
                                     zlib.crc32(b"motion")])
        add_motion(rec, float(motion), rng)
    return rec


def _heart_rate_per_class(rec: Recording) -> dict[str, float]:
    """Mean heart rate (bpm) of each labelled class from the true R peaks: the ground truth a model sees."""
    beats = np.asarray(rec.meta.get("r_peaks_s", []))
    if len(beats) < 2:
        return {}
    rr, mid = np.diff(beats), beats[1:]
    out: dict[str, list[float]] = {}
    for a in rec.annotations:
        sel = rr[(mid >= a.onset) & (mid < a.onset + a.duration)]
        out.setdefault(a.label, []).extend(sel.tolist())
    return {k: round(60.0 / float(np.mean(v)), 1) for k, v in sorted(out.items()) if v}


def _describe(rec: Recording, file: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "subject": rec.subject,
        "file": file,
        "start_time": rec.start_time.isoformat() if rec.start_time else None,
        "seconds": round(rec.duration, 3),
        "class_seconds": {},
        "heart_rate_bpm_per_class": _heart_rate_per_class(rec),
        "parameters": rec.meta.get("parameters", {}),
    }
    for a in rec.annotations:
        entry["class_seconds"][a.label] = entry["class_seconds"].get(a.label, 0.0) + a.duration
    if "segments" in rec.meta:
        entry["segments"] = rec.meta["segments"]
    if "stages" in rec.meta:
        entry["stages"] = rec.meta["stages"]
    return entry


def simulate_dataset(out_dir: str | os.PathLike[str], task: str = "stress", subjects: int = 10,
                     minutes: float = 10, seed: int = 0, progress: bool = False, *,
                     motion: float | None = None) -> list[Path]:
    """Write ``subjects`` simulated recordings as EDF+ (``S01.edf``, ``S02.edf``, ...) and ``dataset.json``.

    Parameters
    ----------
    out_dir : path-like
        Created if missing. Files of the same names are replaced (atomically).
    task, minutes, seed, motion
        As in :func:`simulate_subject`.
    subjects : int
        Number of subjects (>= 1).
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    list of Path
        The EDF files, in subject order.

    Raises
    ------
    SimulationError
        For an unknown task, ``subjects < 1``, a negative seed or too few minutes; nothing is written then.
    """
    _check(task, minutes, subjects=subjects, seed=seed)
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(subjects)))
    paths: list[Path] = []
    described: list[dict[str, Any]] = []
    channels: list[dict[str, Any]] = []
    classes: list[str] = []
    for k in tqdm(range(1, subjects + 1), desc=f"simulate {task}", unit="subject", disable=not progress):
        code = f"S{k:0{width}d}"
        rec = simulate_subject(task, code, minutes, seed, motion=motion)
        path = write_edf(rec, out / f"{code}.edf")
        paths.append(path)
        described.append(_describe(rec, path.name))
        if not channels:
            channels = [{"name": c.name, "modality": c.modality, "rate": float(c.rate), "unit": c.unit}
                        for c in rec.channels]
            from edge_bridge.tasks import TASKS

            classes = list(TASKS[task].classes)
    info = {
        "generator": "edge_bridge.simulate",
        "version": __version__,
        "task": task,
        "classes": classes,
        "seed": int(seed),
        "minutes": float(minutes),
        **({"motion": float(motion)} if motion is not None else {}),
        "channels": channels,
        "notes": NOTES,
        "subjects": described,
    }
    atomic_write_text(out / "dataset.json", json.dumps(info, indent=1))
    stale = sorted(set(out.glob("S*.edf")) - set(paths))
    if stale:
        logger.warning("%s also holds %d recording(s) not from this run (%s ...); dataset.json does not list "
                       "them: remove them before reading the folder as one dataset",
                       out, len(stale), stale[0].name)
    logger.debug("wrote %d %s recordings of %g min to %s", len(paths), task, minutes, out)
    return paths
