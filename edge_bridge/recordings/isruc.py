"""Read an ISRUC-Sleep (subgroup 1) night, ``N/N.rec`` plus a scorer's ``N/N_1.txt``, as a :class:`Recording`.

ISRUC-Sleep (Khalighi et al., 2016) stores each night as EDF with a ``.rec`` extension: 200 Hz channels
``LOC-A2, ROC-A1, F3-A2, C3-A2, O1-A2, F4-A1, C4-A1, O2-A1, X1 ... X8, SaO2, DC3, DC8``, where ``X1`` is the
chin EMG and ``X2`` the ECG. Two experts scored every 30 s epoch; ``N_1.txt`` and ``N_2.txt`` hold one AASM
stage code per line (0 = W, 1 = N1, 2 = N2, 3 = N3, 5 = REM).

The reader keeps the six EEG derivations under the names of :data:`edge_bridge.tasks.EEG_CHANNELS` (files that
spell the mastoid references ``M1``/``M2`` are renamed to ``A1``/``A2``), ``X2`` as ``ECG`` and ``X1`` as
``EMG``; EOG, leg EMG, SaO2 and DC channels are left out. Each scored epoch becomes one annotation.

Epoch count mismatches: the label file and the signal rarely agree to the epoch (an unscored partial epoch
at the end, a trailing line). Up to ``max_epoch_mismatch`` epochs of difference are accepted: surplus labels
at the end are dropped, and epochs without a label are left unannotated (so windows there get label -1 and
are never trained on). A larger difference means the wrong label file or a cut recording and is an error.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

from edge_bridge.errors import RecordingError
from edge_bridge.recordings.edf import read_edf
from edge_bridge.recordings.recording import Annotation, Recording
from edge_bridge.tasks import EEG_CHANNELS

logger = logging.getLogger(__name__)

EPOCH_S = 30.0
#: AASM stage of each ISRUC code (4 is unused: AASM merged R&K stages 3 and 4 into N3).
STAGES = {0: "W", 1: "N1", 2: "N2", 3: "N3", 5: "REM"}
_CODES_TEXT = ", ".join(f"{code}={stage}" for code, stage in STAGES.items())
LABEL_MAPS: dict[str, dict[int, str]] = {
    "wake-sleep": {code: "wake" if stage == "W" else "sleep" for code, stage in STAGES.items()},
    "stages": dict(STAGES),
}
#: ISRUC label -> (our name, modality); the EEG keys cover both reference spellings (A1/A2 and M1/M2).
_CHANNELS: dict[str, tuple[str, str]] = {"X2": ("ECG", "ecg"), "X1": ("EMG", "emg")}
for _name in EEG_CHANNELS:
    _CHANNELS[_name] = (_name, "eeg")
    _CHANNELS[_name.replace("-A1", "-M1").replace("-A2", "-M2")] = (_name, "eeg")


def _canonical(label: str) -> str:
    """``'EEG C3-M2 '`` -> ``'C3-M2'``: drop an EDF type prefix and padding, upper-case."""
    return re.sub(r"^(EEG|ECG|EMG)\s+", "", label.strip().upper())


def read_stage_file(path: str | os.PathLike[str]) -> list[int]:
    """Stage codes of an ISRUC scorer file, one per 30 s epoch; blank lines are skipped.

    Raises
    ------
    RecordingError
        If the file is missing, or a line is not one of the codes 0, 1, 2, 3, 5.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such label file")
    codes = []
    for lineno, line in enumerate(path.read_text(encoding="latin1").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            code = int(text)
        except ValueError:
            code = None
        if code not in STAGES:
            raise RecordingError(
                f"{path}, line {lineno}: expected a stage code ({_CODES_TEXT}), found {text!r}; is this an "
                "ISRUC scorer file?"
            )
        codes.append(code)
    return codes


def read_isruc(rec_path: str | os.PathLike[str], labels_path: str | os.PathLike[str] | None = None,
               scorer: int = 1, label_map: str = "wake-sleep", *, max_epoch_mismatch: int = 5) -> Recording:
    """Read one ISRUC-Sleep subgroup-1 night with one expert's scoring.

    Parameters
    ----------
    rec_path : path-like
        The night's ``N.rec`` (EDF).
    labels_path : path-like, optional
        The scorer file; default ``N_<scorer>.txt`` beside ``rec_path``.
    scorer : {1, 2}
        Which expert's scoring to read when ``labels_path`` is not given.
    label_map : {"wake-sleep", "stages"}
        ``"wake-sleep"`` (the paper's binary task) annotates each epoch ``wake`` or ``sleep``;
        ``"stages"`` annotates ``W``, ``N1``, ``N2``, ``N3`` or ``REM``.
    max_epoch_mismatch : int
        How many 30 s epochs the label count may differ from the signal's whole epochs (see the module
        docstring for what is done with the difference).

    Returns
    -------
    Recording
        Channels ``F3-A2, C3-A2, O1-A2, F4-A1, C4-A1, O2-A1`` (eeg), ``ECG`` and ``EMG`` at 200 Hz in the
        units of the file header, one annotation per labelled epoch, subject = the file's stem.
        ``meta["epoch_mismatch"]`` = number of labels minus number of whole epochs in the signal.

    Raises
    ------
    RecordingError
        If a file is missing or malformed, an EEG channel or X2 is absent, a stage code is unknown, or the
        label count is off by more than ``max_epoch_mismatch``.

    Examples
    --------
    >>> rec = read_isruc("ISRUC/subgroup1/1/1.rec")  # doctest: +SKIP
    >>> rec.labels
    ['sleep', 'wake']
    """
    rec_path = Path(rec_path)
    if label_map not in LABEL_MAPS:
        raise RecordingError(f"label_map must be one of {', '.join(LABEL_MAPS)}, got {label_map!r}")
    if labels_path is None:
        if scorer not in (1, 2):
            raise RecordingError(f"scorer must be 1 or 2 (ISRUC has two experts), got {scorer!r}")
        labels_path = rec_path.with_name(f"{rec_path.stem}_{scorer}.txt")
    codes = read_stage_file(labels_path)

    # read_edf looks labels up verbatim, so offer it every spelling seen in ISRUC files
    modalities = {label: modality for label, (_, modality) in _CHANNELS.items()}
    modalities.update({f"EEG {label}": "eeg" for label, (_, m) in _CHANNELS.items() if m == "eeg"})
    raw = read_edf(rec_path, modalities=modalities)
    found = [c.name for c in raw.channels]
    channels = []
    for ch in raw.channels:
        target = _CHANNELS.get(_canonical(ch.name))
        if target is None:
            logger.debug("%s: leaving out channel %r", rec_path, ch.name)
            continue
        ch.name, ch.modality = target
        channels.append(ch)
    missing = [n for n in (*EEG_CHANNELS, "ECG") if n not in {c.name for c in channels}]
    if missing:
        raise RecordingError(
            f"{rec_path}: expected ISRUC channels {', '.join(EEG_CHANNELS)} (A1/A2 or M1/M2 references) and "
            f"X2 (ECG); missing {missing}; the channels with a known modality are {found}"
        )

    duration = min(c.duration for c in channels)
    n_epochs = math.floor(duration / EPOCH_S + 1e-9)
    mismatch = len(codes) - n_epochs
    if abs(mismatch) > max_epoch_mismatch:
        what = "fewer" if mismatch < 0 else "more"
        raise RecordingError(
            f"{labels_path}: {len(codes)} labelled epochs, but {rec_path} holds {n_epochs} whole 30 s epochs "
            f"({abs(mismatch)} {what} labels than epochs; at most {max_epoch_mismatch} is tolerated); check "
            "that the label file belongs to this recording, or pass a larger max_epoch_mismatch"
        )
    if mismatch:
        logger.info("%s: %d labels for %d epochs; %s", rec_path, len(codes), n_epochs,
                    "dropping the surplus labels" if mismatch > 0 else "leaving the last epochs unannotated")
    names_of = LABEL_MAPS[label_map]
    epochs = [Annotation(k * EPOCH_S, EPOCH_S, names_of[c]) for k, c in enumerate(codes[:n_epochs])]
    meta = {**raw.meta, "dataset": "ISRUC-Sleep", "labels_file": str(labels_path), "label_map": label_map,
            "epoch_mismatch": mismatch}
    return Recording(channels, raw.annotations + epochs, start_time=raw.start_time, subject=rec_path.stem,
                     meta=meta)
