"""Record a BrainFlow board to disk durably, as it arrives: BrainFlow CSV plus a JSON sidecar.

This is how calibration data are collected on site, where power cuts and killed processes happen. The
sidecar (``rec.csv.json``: board, rate, which row is which channel) is written first and atomically, so the
data file is interpretable from its first byte. Each chunk of samples is formatted by BrainFlow's own writer
(``DataFilter.write_file``), appended to the CSV with a single ``write`` call and fsynced, so a crash, a
SIGKILL or a power loss keeps every chunk before the last one that was being written, and never leaves a
torn line in the middle of the file. The result opens as a ``Recording`` with
``edge_bridge.recordings.read_brainflow_csv``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from firmware_interface import _brainflow as bf
from firmware_interface.brainflow_source import BrainFlowSource
from firmware_interface.channels import fsync_dir, make_sidecar, sidecar_path, write_json_atomic
from firmware_interface.errors import ProfileError

logger = logging.getLogger(__name__)


class CsvRecorder:
    """Append-only, fsynced BrainFlow CSV with its sidecar.

    Parameters
    ----------
    path : path
        The ``.csv`` file; its sidecar is ``<path>.json``.
    sidecar : dict
        From :func:`~firmware_interface.channels.make_sidecar`.
    num_rows : int
        Rows every chunk must have (the board's ``num_rows``).
    overwrite : bool
        Replace an existing file instead of refusing.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """

    def __init__(self, path: str | os.PathLike[str], sidecar: dict[str, Any], num_rows: int, *,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        self.num_rows = int(num_rows)
        self.samples = 0
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; choose another output or pass overwrite=True "
                                  "(--overwrite) to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(sidecar_path(self.path), sidecar)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.fsync(self._fd)
        fsync_dir(self.path.parent)
        # BrainFlow writes to a path, not to a descriptor: format each chunk in a private scratch file in the
        # temp folder (removed by close(); a killed recorder leaves this one file of at most one chunk)
        fd, scratch = tempfile.mkstemp(prefix="edge-bridge-rec-", suffix=".csv")
        os.close(fd)
        self._scratch = scratch

    def append(self, raw: np.ndarray) -> None:
        """Append samples, shape (num_rows, k), and fsync before returning."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[0] != self.num_rows:
            raise ValueError(f"chunks must have shape ({self.num_rows}, k), got {raw.shape}")
        if raw.shape[1] == 0:
            return
        bf.DataFilter.write_file(np.ascontiguousarray(raw), self._scratch, "w")
        with open(self._scratch, "rb") as fh:
            text = fh.read()
        view = memoryview(text)
        while view:  # one write() in practice; loop only in case the kernel writes less
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.samples += raw.shape[1]

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        Path(self._scratch).unlink(missing_ok=True)

    def __enter__(self) -> CsvRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass
class RecordProgress:
    """Passed to the progress callback after each chunk."""

    seconds: float
    samples: int
    gaps: int
    lost_samples: int
    reconnects: int


@dataclass
class RecordResult:
    """Summary of a finished (or interrupted) recording."""

    path: Path
    sidecar: Path
    samples: int
    seconds: float
    sampling_rate: float
    gaps: int
    lost_samples: int
    reconnects: int
    interrupted: bool


def record(source: BrainFlowSource, path: str | os.PathLike[str], seconds: float, *, subject: str = "",
           chunk_seconds: float = 0.5, overwrite: bool = False,
           progress: Callable[[RecordProgress], None] | None = None) -> RecordResult:
    """Stream ``source`` into ``path`` for ``seconds`` (of samples), durably, chunk by chunk.

    Parameters
    ----------
    source : BrainFlowSource
        Not started yet, or started; it is stopped at the end.
    path : path
        Output ``.csv``; the sidecar goes to ``<path>.json``.
    seconds : float
        Length of the recording in seconds of samples; the file holds exactly ``round(seconds * rate)``
        samples unless the source finishes or fails first.
    chunk_seconds : float
        How often a chunk is appended and fsynced: at most this much is lost on a crash.
    progress : callable, optional
        Called with :class:`RecordProgress` after each chunk.

    Returns
    -------
    RecordResult
        ``interrupted`` is True after Ctrl-C; the file is kept either way.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    SourceError
        If the board is lost for good; everything received before is on disk.
    """
    if not seconds > 0:
        raise ProfileError(f"seconds must be positive, got {seconds!r}")
    if Path(path).suffix.lower() != ".csv":
        raise ProfileError(f"the recorder writes BrainFlow CSV; the output must end in .csv, got {path}")
    rate = source.sampling_rate
    target = int(np.rint(seconds * rate))
    sidecar = make_sidecar(
        board_id=source.descr_board_id, board_name=source.board_name, sampling_rate=rate,
        channels=source.channels, timestamp_row=source.timestamp_row, package_num_row=source.package_num_row,
        marker_row=source.marker_row, subject=subject,
        start_time=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    )
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another output or pass overwrite=True (--overwrite)")
    began = time.monotonic()
    interrupted = False
    source.start()  # first, so a board that cannot be opened leaves no empty file behind
    try:
        rec = CsvRecorder(path, sidecar, source.num_rows, overwrite=overwrite)
    except BaseException:
        source.stop()
        raise
    with rec:
        logger.debug("recording %s to %s: %g s at %g Hz", source.name, rec.path, seconds, rate)
        try:
            while rec.samples < target:
                time.sleep(chunk_seconds)
                chunk = source.read()
                if chunk.raw is not None:
                    rec.append(chunk.raw[:, : target - rec.samples])
                if progress is not None:
                    st = source.stats
                    progress(RecordProgress(time.monotonic() - began, rec.samples, st.gaps, st.lost_samples,
                                            st.reconnects))
                if chunk.finished:
                    logger.info("%s: source finished after %d samples", source.name, rec.samples)
                    break
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("recording interrupted; keeping the %d samples already written", rec.samples)
        finally:
            source.stop()
            try:  # whatever the reader thread drained before stopping
                rest = source.read()
                if rest.raw is not None and rec.samples < target:
                    rec.append(rest.raw[:, : target - rec.samples])
            except Exception as exc:  # a failed source: what is on disk stays valid
                logger.debug("final read: %s", exc)
        st = source.stats
        return RecordResult(rec.path, sidecar_path(rec.path), rec.samples, rec.samples / rate, rate, st.gaps,
                            st.lost_samples, st.reconnects, interrupted)
