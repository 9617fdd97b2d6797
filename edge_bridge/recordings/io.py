"""One entry point that reads any supported recording file, chosen by its suffix.

==================  ===========================================  ==========================
suffix              format                                       reader
==================  ===========================================  ==========================
``.edf``, ``.bdf``  EDF / EDF+ (edfio reads no 24-bit BDF)       :func:`read_edf`
``.rec``            ISRUC-Sleep night (EDF) + scorer file        :func:`read_isruc`
``.pkl``            WESAD subject pickle (restricted unpickler)  :func:`read_wesad`
``.csv``            BrainFlow CSV + ``<file>.json`` sidecar      :func:`read_brainflow_csv`
``.txt``            FOG FilteredData task file (``task_<n>``)    :func:`read_fog`
==================  ===========================================  ==========================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_bridge.errors import RecordingError
from edge_bridge.recordings.brainflow_csv import read_brainflow_csv
from edge_bridge.recordings.edf import read_edf
from edge_bridge.recordings.fog import is_fog_file, read_fog
from edge_bridge.recordings.isruc import read_isruc
from edge_bridge.recordings.recording import Recording
from edge_bridge.recordings.wesad import read_wesad

_BDF_MAGIC = b"\xffBIOSEMI"


def _read_bdf(path: str | os.PathLike[str], **kwargs: Any) -> Recording:
    """:func:`read_edf` for a ``.bdf`` file that holds EDF; a real 24-bit BDF gets a clear error.

    edfio reads only 16-bit EDF, and on a BDF file it fails with a misleading message about data records.
    """
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as fh:
            magic = fh.read(len(_BDF_MAGIC))
        if magic == _BDF_MAGIC:
            raise RecordingError(
                f"{path}: this is a 24-bit BDF file (its header starts with 0xFF 'BIOSEMI'), which edfio "
                "cannot read; convert it to EDF first (e.g. mne.io.read_raw_bdf, then "
                "mne.export.export_raw(..., fmt='edf'))"
            )
    return read_edf(path, **kwargs)


READERS: dict[str, Callable[..., Recording]] = {
    ".edf": read_edf,
    ".bdf": _read_bdf,
    ".rec": read_isruc,
    ".pkl": read_wesad,
    ".csv": read_brainflow_csv,
    ".txt": read_fog,
}


def read_recording(path: str | os.PathLike[str], **kwargs: Any) -> Recording:
    """Read a recording with the reader its suffix (case-insensitive) calls for.

    Parameters
    ----------
    path : path-like
    **kwargs
        Passed to the reader (e.g. ``scorer=2, label_map="stages"`` for ISRUC, ``include_acc=True`` for
        WESAD, ``modalities={...}`` for EDF and FOG, e.g. ``{"col:27": "emg"}``).

    Raises
    ------
    RecordingError
        If the suffix is not one of :data:`READERS` (the message lists them), or the reader fails.

    Examples
    --------
    >>> rec = read_recording("WESAD/S2/S2.pkl")  # doctest: +SKIP
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is read_fog and not is_fog_file(path):  # a .txt is a recording only when named like FOG's
        reader = None
    if reader is None:
        raise RecordingError(
            f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; supported are "
            f"{', '.join(READERS)} (EDF, ISRUC .rec, WESAD .pkl, BrainFlow .csv with a .csv.json sidecar, "
            "FOG task_<n>.txt; a .txt of another name is not read)"
        )
    return reader(path, **kwargs)
