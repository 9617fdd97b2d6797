"""EDF+ read and write for :class:`Recording`, through edfio.

Why edfio: pyedflib 0.1.42's ``writeSamples`` breaks on channels of different rates under numpy 2 and
truncates instead of rounding when it converts to digital values; MNE resamples mixed-rate files to the
highest rate on read. edfio keeps every channel at its own rate and writes EDF+ annotations cleanly.

The channel's modality is stored in the EDF "transducer type" field, so a file we write reads back with the
same modalities; files from elsewhere get their modality from the label (EDF+ convention: "ECG ...").
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import edfio
import numpy as np

from edge_bridge.errors import RecordingError
from edge_bridge.fileio import atomic_path
from edge_bridge.recordings.recording import Annotation, Channel, Recording
from edge_bridge.signals.spec import MODALITIES

logger = logging.getLogger(__name__)

# label prefixes of other tools, mapped to our modality names
_LABEL_HINTS = {"ecg": "ecg", "ekg": "ecg", "ppg": "ppg", "bvp": "ppg", "pleth": "ppg", "eeg": "eeg",
                "emg": "emg", "resp": "resp", "eda": "eda", "gsr": "eda", "acc": "acc"}


def guess_modality(label: str, transducer: str = "") -> str | None:
    """Modality from our transducer field, else from the label's first word; None if neither tells."""
    t = transducer.strip().lower()
    if t in MODALITIES:
        return t
    first = label.strip().lower().replace("-", " ").split(" ")[0] if label.strip() else ""
    for prefix, modality in _LABEL_HINTS.items():
        if first.startswith(prefix):
            return modality
    return None


def _record_duration(rates: list[float], duration: float) -> float:
    """Shortest data-record length (s) that holds a whole number of samples of every channel."""
    # 1 s records suit integer rates; shorter or longer ones cover fractional rates and durations
    for d in (1.0, 0.5, 0.25, 0.2, 0.1, 2.0, 5.0, 10.0):
        whole_samples = all(abs(r * d - round(r * d)) < 1e-9 for r in rates)
        if whole_samples and abs(duration / d - round(duration / d)) < 1e-9:
            return d
    raise RecordingError(
        f"cannot fit channels at {rates} Hz and {duration:g} s into whole EDF data records; "
        "crop the recording to a whole number of seconds"
    )


def write_edf(recording: Recording, path: str | os.PathLike[str]) -> Path:
    """Write ``recording`` as EDF+ with its annotations, atomically.

    Every channel must span the same duration (EDF stores fixed-length data records).

    Raises
    ------
    RecordingError
        If channel durations differ or cannot be split into whole data records.
    """
    path = Path(path)
    if not recording.channels:
        raise RecordingError(f"{path}: refusing to write a recording without channels")
    durations = {round(c.duration, 9) for c in recording.channels}
    if len(durations) != 1:
        detail = ", ".join(f"{c.name}={c.duration:g} s" for c in recording.channels)
        raise RecordingError(f"{path}: EDF needs channels of equal duration, got {detail}; crop() first")
    duration = durations.pop()
    record = _record_duration([c.rate for c in recording.channels], duration)
    signals = []
    for c in recording.channels:
        if not np.isfinite(c.data).all():
            raise RecordingError(
                f"{path}: channel {c.name!r} contains NaN or inf, which EDF cannot store; "
                "mark the span with an annotation instead"
            )
        lo, hi = float(c.data.min()), float(c.data.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 1.0, hi + 1.0
        signals.append(
            edfio.EdfSignal(c.data, c.rate, label=c.name[:16], transducer_type=c.modality,
                            physical_dimension=c.unit[:8], physical_range=(lo, hi))
        )
    start = recording.start_time or dt.datetime(2000, 1, 1)
    edf = edfio.Edf(
        signals,
        patient=edfio.Patient(code=(recording.subject or "X").replace(" ", "_")[:40]),
        recording=edfio.Recording(startdate=start.date()),
        starttime=start.time().replace(microsecond=0),
        data_record_duration=record,
        annotations=[edfio.EdfAnnotation(a.onset, a.duration, a.label) for a in recording.annotations],
    )
    with atomic_path(path) as tmp:
        edf.write(tmp)
    logger.debug("wrote %s (%d channels, %.1f s)", path, len(signals), duration)
    return path


def read_edf(path: str | os.PathLike[str], *, modalities: Mapping[str, str] | None = None) -> Recording:
    """Read an EDF/EDF+ file (any extension, e.g. ISRUC's ``.rec``) into a :class:`Recording`.

    Parameters
    ----------
    path : path-like
    modalities : mapping of label -> modality, optional
        Overrides for channels whose modality cannot be read from the file. Channels with no known
        modality are skipped with a log line.

    Raises
    ------
    RecordingError
        If the file is missing, truncated or not EDF.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise RecordingError(f"{path}: the file is empty (0 bytes); copy or record it again")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            edf = edfio.read_edf(path, lazy_load_data=False)
        except Exception as exc:  # edfio raises ValueError/IndexError/UnicodeDecodeError on broken files
            size = path.stat().st_size
            raise RecordingError(f"{path}: not a readable EDF file ({size} bytes: cut short, or not EDF at "
                                 f"all): {exc}; copy or export it again") from None
    # edfio repairs a short file by shrinking its header and only warns; for us a short file is an error,
    # because training silently on a fraction of a recording is worse than stopping.
    for w in caught:
        if "data record" in str(w.message).lower():
            raise RecordingError(f"{path}: truncated or inconsistent EDF: {w.message}")
    modalities = dict(modalities or {})
    channels = []
    for s in edf.signals:
        modality = modalities.get(s.label) or guess_modality(s.label, s.transducer_type)
        if modality is None:
            logger.info("%s: skipping channel %r (unknown modality; pass modalities={...})", path, s.label)
            continue
        channels.append(Channel(s.label, np.asarray(s.data, dtype=np.float64), float(s.sampling_frequency),
                                modality, s.physical_dimension))
    annotations = [Annotation(float(a.onset), float(a.duration or 0.0), a.text) for a in edf.annotations]
    try:
        start = dt.datetime.combine(edf.startdate, edf.starttime)
    except Exception:  # anonymised start date
        start = None
    code = edf.patient.code if hasattr(edf, "patient") else ""
    return Recording(channels, annotations, start_time=start, subject="" if code == "X" else code,
                     meta={"source_file": str(path)})


def has_edf_header(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts as EDF and EDF+ files do: ``"0"`` and seven spaces.

    Only a regular file is opened: a FIFO or a device named by mistake would block the read forever.
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"0       "
    except OSError:
        return False
