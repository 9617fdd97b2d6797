"""Read one task file of the FOG dataset (``FilteredData/<patient>/task_<n>.txt``) as a :class:`Recording`.

The dataset: Zhang et al., "Multimodal Data for the Detection of Freezing of Gait in Parkinson's Disease",
Scientific Data 9, 606 (2022), doi:10.1038/s41597-022-01713-8, on Mendeley Data. Twelve patients walked
through tasks designed to trigger freezing of gait (FOG) while EEG, EMG, accelerometers/gyroscopes and skin
conductance were recorded; two physicians marked the freezes. Its FilteredData folder holds one comma
separated text file per patient and task, 500 Hz, no header row, one sample per line.

Column layout (numbers count from 0, as the dataset's description and its own scripts do). Source: the
dataset's official processing code, github.com/AccSrd/multimodal-Parkinson-data-processing (commit
98d5330): ``settings.toml`` (``PREP_COLNAME_EEG``, ``PREP_COLNAME_EMG``) and the "Data Format" docstrings of
``Scripts/prep2seg.py`` and ``Scripts/seg2label.py``, whose ``task_<n>.txt`` output this reader takes; its
``Sample Data/4-Labeled Data/task_1.txt`` has exactly these 61 columns.

========  ==========================================================================  ===================
column    content (names from the official scripts)                                   read as
========  ==========================================================================  ===================
0         row index                                                                   (skipped)
1         time stamp (``09:30:26.002``)                                               (skipped; 500 Hz)
2-26      EEG FP1 FP2 F3 F4 C3 C4 P3 P4 O1 O2 F7 F8 P7 P8 Fz Cz Pz FC1 FC2 CP1 CP2       25 ``eeg`` channels,
          FC5 FC6 CP5 CP6                                                             named as listed
27-31     EMG1 EMG2 IO EMG3 EMG4                                                      only when mapped
32-59     LShank, RShank, Waist, Arm: ACCX ACCY ACCZ GYROX GYROY GYROZ, then NC           only when mapped
          (not connected; SC, skin conductance, in column 59 for the Arm sensor)
60        label: 0 no FOG, 1 FOG                                                      annotations
========  ==========================================================================  ===================

Why columns 27-59 are read only when the user names them: the issue that asked for this reader reports that
the EMG columns differ by recording folder, and no description of which muscle or sensor sits in which
column per folder was found (neither the paper's text nor the official code states one; the code names the
EMG columns only ``EMG1``-``EMG4`` and ``IO``). Guessing would feed a model the wrong signal without a
word, so these columns are read by number through the ``--channels`` map (see
:mod:`edge_bridge.recordings.dataset`); the ``fog`` task's three EMG places, for example, by
``--channels EMG-A=col:27,EMG-B=col:28,EMG-C=col:30``. A task that needs an EMG channel and gets none is
refused with a message that says this (:func:`check_mapped`).

What is refused, and what is kept: a file whose first line does not have 61 columns is refused (file, count
found, count expected), as is any later line with another count, except a truncated last line (a copy cut
short), which is dropped with a warning. Empty or ``nan`` fields are read as NaN and kept: the windowing's
quality gate leaves out every window that holds one (never repaired), and a NaN label leaves its samples
unlabelled. A label other than 0, 1 or NaN is refused with its line.

The subject is the patient: the ``<subject>`` of a ``<subject>_task_<n>.txt`` name, else the name of the
folder the file sits in (``FilteredData/003/task_2.txt`` -> ``003``), so all tasks of one patient share one
subject and the splits by subject keep them together. The files state no physical units, so channels carry
none (``unit=""``).
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge_bridge.errors import RecordingError
from edge_bridge.recordings.recording import Annotation, Channel, Recording
from edge_bridge.signals.spec import MODALITIES, Preprocessing
from edge_bridge.tasks import FOG_EEG_CHANNELS

logger = logging.getLogger(__name__)

RATE = 500.0
N_COLUMNS = 61
EEG_COLUMNS = tuple(range(2, 27))
LABEL_COLUMN = 60
#: columns a user may map with ``col:NN`` (EMG, IO, accelerometers, gyroscopes, NC, skin conductance)
MAPPABLE = range(27, 60)
LABELS = {0: "no-fog", 1: "fog"}
#: ``task_1.txt``, ``task2.txt``, or with the subject in front: ``003_task_1.txt``, ``S03-task_2.txt``
FILE_NAME = re.compile(r"^(?:(?P<subject>.+?)[_-])?task_?(?P<task>\d+)\.txt$", re.IGNORECASE)
_COLUMN_REF = re.compile(r"^col:(\d+)$", re.IGNORECASE)
_EXAMPLE = "--channels EMG-A=col:27"


def is_fog_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a FOG task file (``task_<n>.txt``, optionally ``<subject>_`` first)."""
    return FILE_NAME.match(Path(path).name) is not None


def subject_of(path: str | os.PathLike[str]) -> str:
    """The patient code of a FOG task file: its name's prefix, else its folder's name."""
    path = Path(path)
    m = FILE_NAME.match(path.name)
    if m and m.group("subject"):
        return m.group("subject")
    return path.parent.name or path.stem


def _column_of(ref: str, where: Path) -> int | None:
    """Column number of a ``col:NN`` reference; None for an EEG channel name (read anyway)."""
    m = _COLUMN_REF.match(ref.strip())
    if m is None:
        if ref in FOG_EEG_CHANNELS:
            return None
        raise RecordingError(
            f"{where}: --channels names {ref!r}, but a FOG file has no such channel; its EEG channels are "
            f"{', '.join(FOG_EEG_CHANNELS)} and every other column is named by number, col:NN with NN in "
            f"{MAPPABLE.start}-{MAPPABLE.stop - 1} (e.g. {_EXAMPLE})")
    col = int(m.group(1))
    if col in EEG_COLUMNS:
        raise RecordingError(f"{where}: column {col} is EEG, read as {FOG_EEG_CHANNELS[col - 2]}; map a "
                             f"column in {MAPPABLE.start}-{MAPPABLE.stop - 1} instead")
    if col not in MAPPABLE:
        what = {0: "the row index", 1: "the time stamp", LABEL_COLUMN: "the FOG label"}.get(
            col, "not a column")
        raise RecordingError(f"{where}: col:{col} is {what}; a channel can be read from columns "
                             f"{MAPPABLE.start}-{MAPPABLE.stop - 1} (e.g. {_EXAMPLE})")
    return col


def _lines(path: Path) -> list[str]:
    """The file's lines, the column count checked; a truncated last line is dropped."""
    try:
        text = path.read_text(encoding="latin1")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise RecordingError(f"{path}: empty; expected FOG FilteredData rows of {N_COLUMNS} columns")
    counts = np.array([ln.count(",") + 1 for ln in lines])
    if counts[0] != N_COLUMNS:
        raise RecordingError(
            f"{path}: {counts[0]} columns, expected {N_COLUMNS} (a FOG FilteredData task file: index, time, "
            "25 EEG, 33 EMG/ACC/SC, label); is this a file of another dataset, or another version of it?")
    bad = np.flatnonzero(counts != N_COLUMNS)
    if len(bad) and bad[0] == len(lines) - 1 and counts[-1] < N_COLUMNS:
        logger.warning("%s: the last line has %d of %d columns (the file was cut short); dropping it", path,
                       counts[-1], N_COLUMNS)
        lines, bad = lines[:-1], bad[:0]
    if len(bad):
        k = int(bad[0])
        raise RecordingError(f"{path}, line {k + 1}: {counts[k]} columns, expected {N_COLUMNS} like line 1; "
                             "the file is damaged (only a cut-short last line is tolerated)")
    return lines


def read_fog(path: str | os.PathLike[str], modalities: Mapping[str, str] | None = None) -> Recording:
    """Read one FOG FilteredData task file: 25 EEG channels, mapped columns, and the FOG label.

    Parameters
    ----------
    path : path-like
        A ``task_<n>.txt`` file of the FOG dataset's FilteredData folder.
    modalities : dict of str -> str, optional
        Column -> modality for the columns beyond the EEG, e.g. ``{"col:27": "emg"}``; each becomes a
        channel named like its key, at 500 Hz. The ``--channels`` map arrives here through
        :func:`edge_bridge.recordings.dataset.read_labelled`. EEG channel names are accepted and ignored
        (the EEG is always read).

    Returns
    -------
    Recording
        Channels ``FP1`` ... ``CP6`` (eeg) and the mapped ones, all at 500 Hz; one ``"no-fog"`` or
        ``"fog"`` annotation per run of equal labels; subject = the patient (see the module docstring);
        ``meta["task"]`` = the task number.

    Raises
    ------
    RecordingError
        Naming the file: unreadable, a wrong column count, a non-numeric value in a read column, a label
        other than 0/1, or a mapped column that does not exist or is not mappable.

    Examples
    --------
    >>> rec = read_fog("FilteredData/001/task_1.txt", {"col:27": "emg"})  # doctest: +SKIP
    >>> rec.labels
    ['fog', 'no-fog']
    """
    path = Path(path)
    mapped: dict[int, tuple[str, str]] = {}
    for ref, modality in (modalities or {}).items():
        col = _column_of(ref, path)
        if col is None:
            continue
        if modality not in MODALITIES:
            raise RecordingError(f"{path}: {ref} mapped to {modality!r}, which is not a modality; use one of "
                                 f"{', '.join(MODALITIES)}")
        if col in mapped and mapped[col][0] != ref:
            raise RecordingError(f"{path}: column {col} is named twice ({mapped[col][0]}, {ref})")
        mapped[col] = (ref, modality)
    lines = _lines(path)
    cols = [*EEG_COLUMNS, *sorted(mapped), LABEL_COLUMN]
    # an empty field is a missing value (pandas writes NaN that way): make it "nan" for the parser
    text = re.sub(r"(?<=,)(?=,|$)", "nan", "\n".join(lines), flags=re.MULTILINE)
    try:
        data = np.loadtxt(io.StringIO(text), delimiter=",", usecols=cols, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise RecordingError(f"{path}: not a FOG FilteredData file, a value is not a number ({exc})"
                             ) from None
    label = data[:, -1]
    odd = np.flatnonzero(~np.isnan(label) & ~np.isin(label, list(LABELS)))
    if len(odd):
        k = int(odd[0])
        raise RecordingError(f"{path}, line {k + 1}: label (column {LABEL_COLUMN}) is {label[k]:g}; "
                             "expected 0 (no FOG) or 1 (FOG), or empty for unlabelled")
    channels = [Channel(name, data[:, k], RATE, "eeg") for k, name in enumerate(FOG_EEG_CHANNELS)]
    for k, col in enumerate(sorted(mapped), start=len(EEG_COLUMNS)):
        name, modality = mapped[col]
        channels.append(Channel(name, data[:, k], RATE, modality))
    n_nan = int(np.isnan(data[:, :-1]).any(axis=1).sum())
    if n_nan:
        logger.info("%s: %d of %d rows hold missing values; windows over them fail the quality gate", path,
                    n_nan, len(data))
    m = FILE_NAME.match(path.name)
    meta = {"dataset": "FOG (Zhang et al., Sci. Data 2022)", "columns": {name: col for col, (name, _) in
                                                                        mapped.items()},
            "rows_with_nan": n_nan, **({"task": int(m.group("task"))} if m else {})}
    return Recording(channels, _label_runs(label), subject=subject_of(path), meta=meta)


def _label_runs(label: np.ndarray) -> list[Annotation]:
    """One annotation per run of equal, non-NaN labels (onset and duration in seconds at 500 Hz)."""
    out: list[Annotation] = []
    if not len(label):
        return out
    code = np.where(np.isnan(label), -1, label).astype(np.int64)
    edges = np.flatnonzero(np.diff(code)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(code)]])
    for a, b in zip(starts, ends, strict=True):
        if code[a] >= 0:
            out.append(Annotation(float(a) / RATE, float(b - a) / RATE, LABELS[int(code[a])]))
    return out


def check_mapped(rec: Recording, specs: Sequence[Preprocessing]) -> None:
    """Refuse a FOG recording that lacks a channel the task needs beyond the EEG, saying how to map it.

    Raises
    ------
    RecordingError
        For each modality of ``specs`` other than EEG with no channel in ``rec``: the FOG columns beyond
        the EEG are read only when ``--channels`` names them by number (see the module docstring).
    """
    missing = [s for s in specs if s.modality != "eeg" and not rec.modality_channels(s.modality)]
    if not missing:
        return
    where = rec.meta.get("source_file") or rec.subject or "FOG recording"
    names = ", ".join(f"{s.modality} ({', '.join(s.channels)})" for s in missing)
    example = ",".join(f"{c}=col:NN" for c in missing[0].channels)
    raise RecordingError(
        f"{where}: the task needs {names}, but a FOG file's columns beyond the EEG (2-26) and the label "
        f"(60) differ by recording folder and no description of them per folder was found, so they are "
        f"read only when you name them: --channels {example} with NN the column (counted from 0, "
        f"{MAPPABLE.start}-{MAPPABLE.stop - 1}; the official scripts write EMG1 EMG2 IO EMG3 EMG4 in "
        "27-31)")
