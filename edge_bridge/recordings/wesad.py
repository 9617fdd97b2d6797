"""Read WESAD's per-subject ``S*.pkl`` files into a :class:`Recording`, without trusting the pickle.

WESAD (Schmidt et al., ICMI 2018) ships one pickle per subject, written by Python 2::

    {'subject': 'S2',
     'signal': {'chest': {'ACC': (n, 3), 'ECG': (n, 1), 'EMG': (n, 1), 'EDA': (n, 1), 'Temp': (n, 1),
                          'Resp': (n, 1)},                                   # all 700 Hz
                'wrist': {'ACC': (m, 3) 32 Hz, 'BVP': (k, 1) 64 Hz, 'EDA': (e, 1) 4 Hz, 'TEMP': (e, 1) 4 Hz}},
     'label': (n,) int at 700 Hz}   # 0 transient, 1 baseline, 2 stress, 3 amusement, 4 meditation, 5-7 ignore

A pickle can run any code when loaded, and these files come from a download. So they are read with an
unpickler that resolves only the handful of globals numpy needs to rebuild arrays; anything else
(``os.system``, ``builtins.eval``, ...) is refused before it can be called.

Channel mapping (names as in :mod:`edge_bridge.tasks`):

=========  ==========  ==========  ========  ======
WESAD      name        modality    rate      unit
=========  ==========  ==========  ========  ======
chest ECG  ``ECG``     ecg         700 Hz    mV
wrist BVP  ``PPG``     ppg         64 Hz     a.u.
chest Resp ``RESP``    resp        700 Hz    %
wrist EDA  ``EDA``     eda         4 Hz      uS
chest EMG  ``EMG``     emg         700 Hz    mV
=========  ==========  ==========  ========  ======

Accelerometers are added with ``include_acc=True``; temperatures are left out (no modality for them).
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.errors import RecordingError
from edge_bridge.recordings.recording import Annotation, Channel, Recording

logger = logging.getLogger(__name__)

#: WESAD protocol labels we annotate; 0 (transient) and 5/6/7 ("should be ignored") are left unannotated.
LABELS = {1: "baseline", 2: "stress", 3: "amusement", 4: "meditation"}

CHEST_RATE = 700.0
WRIST_RATES = {"ACC": 32.0, "BVP": 64.0, "EDA": 4.0, "TEMP": 4.0}

# (device, WESAD key) -> (our name, modality, rate, unit)
_CHANNELS: dict[tuple[str, str], tuple[str, str, float, str]] = {
    ("chest", "ECG"): ("ECG", "ecg", CHEST_RATE, "mV"),
    ("wrist", "BVP"): ("PPG", "ppg", WRIST_RATES["BVP"], "a.u."),
    ("chest", "Resp"): ("RESP", "resp", CHEST_RATE, "%"),
    ("wrist", "EDA"): ("EDA", "eda", WRIST_RATES["EDA"], "uS"),
    ("chest", "EMG"): ("EMG", "emg", CHEST_RATE, "mV"),
}
_ACC = {
    ("chest", "ACC"): ("ACC_chest", CHEST_RATE, "g"),
    ("wrist", "ACC"): ("ACC_wrist", WRIST_RATES["ACC"], "1/64 g"),
}


def _numpy_multiarray() -> Any:
    """numpy's multiarray module under its current name (``numpy._core``; ``numpy.core`` before numpy 2)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to store bytes in protocol-2 pickles, and only that use."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (only latin1 is allowed)")
    return codecs.encode(obj, "latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    ma = _numpy_multiarray()
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # a protocol-2 pickle written by Python 3 stores bytes as _codecs.encode(str, "latin1")
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = ma._reconstruct
        allowed[(module, "scalar")] = ma.scalar
    return allowed


class _ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, dicts, lists and strings, and nothing that runs code.

    ``find_class`` is the only way a pickle reaches a callable, so refusing every global but numpy's array
    reconstruction makes ``REDUCE`` harmless: there is nothing dangerous left for it to call.
    """

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def load_pickle_restricted(path: str | os.PathLike[str]) -> Any:
    """Load a (Python 2 or 3) pickle that may contain only builtin containers and numpy arrays.

    Raises
    ------
    RecordingError
        If the file is missing, truncated, not a pickle, or names any other global (the global is named
        in the message and never called).
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _ForbiddenGlobal as exc:
        raise RecordingError(
            f"{path}: refusing to load this pickle: it references {exc}, but a WESAD file holds only numpy "
            "arrays, so it was not written by WESAD (or was altered). Nothing from it was executed; "
            "download the file again from the WESAD site"
        ) from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError) as exc:
        raise RecordingError(
            f"{path}: not a readable pickle ({len(data)} bytes; {type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt: download it again"
        ) from None


def _get(mapping: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        have = sorted(map(str, mapping)) if isinstance(mapping, Mapping) else type(mapping).__name__
        raise RecordingError(f"{path}: expected key {where}[{key!r}] of the WESAD layout, found {have}")
    return mapping[key]


def _column(arr: Any, cols: int, where: str, path: Path) -> np.ndarray:
    """Check a WESAD array is (n, cols) (or (n,) for one column) and return it as float64 (n, cols)."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise RecordingError(f"{path}: {where} should be a numeric numpy array, found {type(arr).__name__}")
    a = arr.reshape(-1, 1) if arr.ndim == 1 and cols == 1 else arr
    if a.ndim != 2 or a.shape[1] != cols:
        raise RecordingError(f"{path}: {where} should have shape (n, {cols}), found {arr.shape}")
    return a.astype(np.float64, copy=False)


def label_annotations(labels: np.ndarray, rate: float, names: Mapping[int, str] = LABELS) -> list[Annotation]:
    """One annotation per contiguous run of a label in ``names``; other codes are left unannotated.

    Parameters
    ----------
    labels : ndarray of int, shape (n,)
        A label per sample.
    rate : float
        Label rate in Hz (700 for WESAD).
    """
    lab = np.asarray(labels).astype(np.int64).ravel()
    if lab.size == 0:
        return []
    edges = np.flatnonzero(np.diff(lab)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [lab.size]])
    return [Annotation(s / rate, (e - s) / rate, names[int(lab[s])])
            for s, e in zip(starts, stops, strict=True) if int(lab[s]) in names]


def read_wesad(path: str | os.PathLike[str], *, include_acc: bool = False) -> Recording:
    """Read one WESAD subject file (``S2.pkl`` ... ``S17.pkl``).

    Parameters
    ----------
    path : path-like
        The subject's ``S*.pkl``.
    include_acc : bool
        Also add the chest (700 Hz, g) and wrist (32 Hz) accelerometers as ``ACC_chest_x`` ... and
        ``ACC_wrist_x`` ... (modality ``acc``). Off by default: the paper's tasks do not use them and they
        triple the memory of a subject.

    Returns
    -------
    Recording
        Channels ``ECG``, ``PPG``, ``RESP``, ``EDA``, ``EMG`` at their own rates (the wrist and chest streams
        end at slightly different times, as in the published files), and annotations ``baseline``,
        ``stress``, ``amusement`` and ``meditation``, one per contiguous run of the 700 Hz label track.

    Raises
    ------
    RecordingError
        If the file is missing, truncated, not in the WESAD layout, or contains anything but numpy arrays
        and builtin containers (such a pickle is refused without running it).

    Examples
    --------
    >>> rec = read_wesad("WESAD/S2/S2.pkl")  # doctest: +SKIP
    >>> rec.channel("PPG").rate
    64.0
    """
    path = Path(path)
    obj = load_pickle_restricted(path)
    signal = _get(obj, "signal", "file", path)
    devices = {dev: _get(signal, dev, "['signal']", path) for dev in ("chest", "wrist")}
    channels = []
    for (dev, key), (name, modality, rate, unit) in _CHANNELS.items():
        arr = _column(_get(devices[dev], key, f"['signal'][{dev!r}]", path), 1, f"{dev} {key}", path)
        channels.append(Channel(name, arr[:, 0], rate, modality, unit))
    if include_acc:
        for (dev, key), (name, rate, unit) in _ACC.items():
            arr = _column(_get(devices[dev], key, f"['signal'][{dev!r}]", path), 3, f"{dev} {key}", path)
            channels += [Channel(f"{name}_{ax}", arr[:, k], rate, "acc", unit) for k, ax in enumerate("xyz")]
    labels = _get(obj, "label", "file", path)
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iuf" or labels.ndim != 1:
        raise RecordingError(f"{path}: 'label' should be a 1-D integer array, found "
                             f"{getattr(labels, 'shape', type(labels).__name__)}")
    n_chest = len(channels[0].data)
    if len(labels) != n_chest:
        raise RecordingError(
            f"{path}: the label track has {len(labels)} samples but the chest signals have {n_chest}; both "
            "are 700 Hz in WESAD, so the file is truncated or altered: download it again"
        )
    subject = obj.get("subject") if isinstance(obj, Mapping) else None
    rec = Recording(
        channels,
        label_annotations(labels, CHEST_RATE),
        subject=str(subject) if subject else path.stem,
        meta={"source_file": str(path), "dataset": "WESAD"},
    )
    logger.debug("read %s: %r", path, rec)
    return rec
