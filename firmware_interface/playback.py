"""Write signals as a file BrainFlow's playback-file board replays in real time.

BrainFlow's synthetic board is no stand-in for a wearable: its "ECG" rows are its EEG sines and its PPG is
white noise. For a realistic demo the simulated paired recordings are written here in the layout of a master
board (rows per ``BoardShim.get_board_descr``, package numbers and timestamps filled) and replayed through
``PLAYBACK_FILE_BOARD``; the live loop then reads them like any board.

Limits of BrainFlow's playback board, and what this module does about them:

- **Real time only.** It sleeps between samples according to the file's timestamp row.
- **One rate per file.** The playback board paces by the timestamps, so a file may use any rate (this module
  writes ``1 / rate`` steps), but all its channels share it, and BrainFlow still *states* the master board's
  rate (250 Hz for the synthetic board). The sidecar records the true rate, and
  :meth:`~firmware_interface.brainflow_source.BrainFlowSource.playback` reports that one. Data at two rates
  (ECG 250 Hz, PPG 64 Hz) either go to one file after resampling to a common rate (64 -> 250 Hz is the exact
  ratio 125/32, e.g. ``scipy.signal.resample_poly(x, 125, 32)``), or to one file per rate replayed by two
  playback sources side by side.
- **Six decimals.** BrainFlow's CSV writer prints ``%f``; values keep 1e-6 absolute precision, so store
  signals in units where that is fine (mV or uV, not V).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from firmware_interface import _brainflow as bf
from firmware_interface.channels import MODALITIES, ChannelInfo, make_sidecar, sidecar_path, write_json_atomic
from firmware_interface.errors import ProfileError

logger = logging.getLogger(__name__)

# which description rows a modality prefers on the master board; generic rows are the fallback
_PREFERRED = {"ecg": "ecg_channels", "ppg": "ppg_channels", "eeg": "eeg_channels", "emg": "emg_channels",
              "eda": "eda_channels", "acc": "accel_channels", "resp": "resp_channels"}
_GENERIC = ("exg_channels", "eeg_channels", "emg_channels", "ecg_channels", "eog_channels", "other_channels")


def _assign_rows(modalities: Sequence[str], descr: dict) -> list[int]:
    used: set[int] = set()
    rows: list[int] = []
    for k, modality in enumerate(modalities):
        candidates = list(descr.get(_PREFERRED[modality], []) or [])
        for key in _GENERIC:
            candidates += [r for r in descr.get(key, []) or [] if r not in candidates]
        free = [r for r in candidates if r not in used]
        if not free:
            raise ProfileError(
                f"channel {k} ({modality}): the master board {descr.get('name')} has no free row left for it "
                f"({len(modalities)} channels asked for); pick a master board with more rows or write fewer "
                "channels per file")
        used.add(free[0])
        rows.append(free[0])
    return rows


def write_playback_file(channels: Sequence[tuple[str, str, str, np.ndarray]], rate: float,
                        path: str | os.PathLike[str], *, board: str | int = "SYNTHETIC_BOARD",
                        start_timestamp: float | None = None, subject: str = "") -> Path:
    """Write ``channels`` as a BrainFlow CSV that ``PLAYBACK_FILE_BOARD`` replays, plus its sidecar.

    Parameters
    ----------
    channels : sequence of (name, modality, unit, data)
        ``data`` is 1-D float64 in ``unit``; all channels must have the same length (one rate).
    rate : float
        Hz; the timestamps step by ``1 / rate`` so the playback board replays at this rate.
    path : path
        Output ``.csv``; the sidecar goes to ``<path>.json``.
    board : str or int
        Master board whose row layout the file uses (the synthetic board: 16 biopotential rows, 2 PPG rows,
        EDA, accelerometer).
    start_timestamp : float, optional
        Unix time of the first sample (default: now). Must be positive: the playback board paces only
        between positive timestamps.
    subject : str

    Returns
    -------
    Path
        The CSV written.

    Raises
    ------
    ProfileError
        Channels of different lengths, an unknown modality, or more channels than the board has rows.

    Examples
    --------
    >>> t = np.arange(2500) / 250.0
    >>> ecg = np.sin(2 * np.pi * t)
    >>> write_playback_file([("ECG", "ecg", "mV", ecg)], 250.0, "demo.csv")  # doctest: +SKIP
    """
    if not channels:
        raise ProfileError("write_playback_file needs at least one channel")
    if not (np.isfinite(rate) and rate > 0):
        raise ProfileError(f"rate must be a positive number of Hz, got {rate!r}")
    arrays = [np.asarray(c[3], dtype=np.float64) for c in channels]
    lengths = {a.shape for a in arrays}
    if any(a.ndim != 1 for a in arrays) or len(lengths) != 1:
        detail = ", ".join(f"{c[0]}: {a.shape}" for c, a in zip(channels, arrays, strict=True))
        raise ProfileError(f"all channels must be 1-D arrays of one length (a playback file has one rate), "
                           f"got {detail}; resample to a common rate first")
    for (name, modality, _unit, _data), a in zip(channels, arrays, strict=True):
        if modality not in MODALITIES:
            raise ProfileError(f"channel {name!r}: modality must be one of {', '.join(MODALITIES)}, "
                               f"got {modality!r}")
        if not np.all(np.isfinite(a)):
            raise ProfileError(f"channel {name!r} contains NaN or infinity; BrainFlow CSV cannot keep gaps")
    n = arrays[0].shape[0]
    board_id = bf.resolve_board(board)
    descr = bf.board_descr(board_id)
    rows = _assign_rows([c[1] for c in channels], descr)
    ts_row, pkg_row = descr["timestamp_channel"], descr.get("package_num_channel")
    marker_row = descr.get("marker_channel")
    stated = float(bf.BoardShim.get_sampling_rate(board_id))
    if abs(stated - rate) > 1e-9:
        logger.info("playback file at %g Hz on master board %s (BrainFlow states %g Hz); the sidecar keeps "
                    "the true rate", rate, bf.board_name(board_id), stated)
    start = time.time() if start_timestamp is None else float(start_timestamp)
    if not start > 0:
        raise ProfileError(f"start_timestamp must be a positive Unix time, got {start_timestamp!r}")

    data = np.zeros((int(descr["num_rows"]), n), dtype=np.float64)
    for row, a in zip(rows, arrays, strict=True):
        data[row] = a
    data[ts_row] = start + np.arange(n) / rate
    if pkg_row is not None:
        data[pkg_row] = np.arange(n) % 256
    small = [c[0] for c, a in zip(channels, arrays, strict=True) if 0 < np.max(np.abs(a), initial=0) < 1e-2]
    if small:
        logger.warning("channels %s have amplitudes below 0.01; BrainFlow CSV keeps 6 decimals, so store "
                       "them in smaller units (mV, uV) to keep their shape", small)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    infos = [ChannelInfo(c[0], c[1], c[2], row) for c, row in zip(channels, rows, strict=True)]
    write_json_atomic(sidecar_path(path), make_sidecar(
        board_id=board_id, board_name=bf.board_name(board_id), sampling_rate=rate, channels=infos,
        timestamp_row=ts_row, package_num_row=pkg_row, marker_row=marker_row, subject=subject))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # atomic: a reader never sees half a file
    try:
        bf.DataFilter.write_file(data, str(tmp), "w")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s: %d samples of %d channel(s) at %g Hz", path, n, len(channels), rate)
    return path
