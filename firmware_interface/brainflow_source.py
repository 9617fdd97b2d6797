"""BrainFlow boards as a :class:`~firmware_interface.source.Source`: real, synthetic and playback-file boards.

BrainFlow's lifecycle is prepare -> start -> read -> stop -> release. This class wraps it so that:

- boards are opened by name or id with ``BrainFlowInputParams`` fields, and always released (``with``, an
  ``atexit`` hook, and ``finally`` in the reader thread), also on Ctrl-C;
- the board's ring buffer is drained with ``get_board_data`` (which removes what it returns) every ``hop``
  seconds into our own bounded buffer, so BrainFlow never gets the chance to overwrite unread samples;
- gaps are counted from the package-number row, whose wrap (256 on most boards) is known from a profile or
  guessed;
- a board that errors or stops delivering is released and prepared again with exponential back-off;
- BrainFlow's native logger stays off unless ``verbose``.

Channel rows come from ``BoardShim.get_board_descr`` or a device profile, never from constants here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from firmware_interface import _brainflow as bf
from firmware_interface.buffer import SequenceTracker
from firmware_interface.channels import (
    ChannelInfo,
    DeviceProfile,
    channels_from_descr,
    load_profile,
    read_sidecar,
    sidecar_path,
)
from firmware_interface.errors import BoardError, ProfileError
from firmware_interface.source import StreamingSource

logger = logging.getLogger(__name__)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


class BrainFlowSource(StreamingSource):
    """A BrainFlow board behind the :class:`~firmware_interface.source.Source` interface.

    Parameters
    ----------
    board : str or int
        ``"SYNTHETIC_BOARD"``, ``"synthetic"``, ``"CYTON_BOARD"``, ``-1`` ...
    params : mapping, optional
        ``BrainFlowInputParams`` fields (``serial_port``, ``mac_address``, ``ip_address``, ``file``,
        ``master_board`` ...); string values are converted.
    profile : DeviceProfile or path, optional
        Which rows are which channels; else they come from the board description.
    channels : sequence of ChannelInfo, optional
        Overrides the profile (used for playback files whose sidecar lists them).
    sampling_rate : float, optional
        Overrides the rate BrainFlow states (playback files written at another rate).
    preset : int
        BrainFlow preset (0 default, 1 auxiliary, 2 ancillary).
    loop : bool
        Playback board only: start over at the end of the file instead of finishing.
    verbose : bool, optional
        Turn BrainFlow's native logger on (it is off otherwise).
    **kwargs
        Reader-thread settings of :class:`~firmware_interface.source.StreamingSource` (``hop``,
        ``stall_timeout``, ``max_reconnects``, ``backoff`` ...).

    Raises
    ------
    BoardError
        Unknown board, or a description BrainFlow cannot give.
    ProfileError
        A profile that does not fit the board.

    Examples
    --------
    >>> with BrainFlowSource("synthetic") as src:      # doctest: +SKIP
    ...     time.sleep(1.0)
    ...     chunk = src.read()                        # about 250 samples of 22 channels
    """

    def __init__(self, board: str | int = "SYNTHETIC_BOARD", params: Mapping[str, Any] | None = None, *,
                 profile: DeviceProfile | str | os.PathLike[str] | None = None,
                 channels: Sequence[ChannelInfo] | None = None, sampling_rate: float | None = None,
                 preset: int = 0, loop: bool = False, verbose: bool | None = None, **kwargs: Any) -> None:
        if verbose is not None:
            bf.set_brainflow_logging(bool(verbose))
        else:
            bf.ensure_quiet()
        self.board_id = bf.resolve_board(board)
        self.params = bf.make_params(params)
        self.preset = int(preset)
        self.loop = bool(loop)
        self.is_playback = self.board_id == int(bf.BoardIds.PLAYBACK_FILE_BOARD)
        if self.is_playback:
            if self.params.master_board == int(bf.BoardIds.NO_BOARD):
                raise BoardError("the playback board needs the board that recorded the file",
                                 board="PLAYBACK_FILE_BOARD", where=f"file={self.params.file or '(none)'}",
                                 hint="Pass master_board=SYNTHETIC_BOARD (or the recording board's name)")
            if not self.params.file or not Path(self.params.file).is_file():
                raise BoardError(f"playback file {self.params.file or '(none)'} does not exist",
                                 board="PLAYBACK_FILE_BOARD", hint="Pass file=PATH to a BrainFlow CSV")
            self.descr_board_id = int(self.params.master_board)
        else:
            self.descr_board_id = self.board_id
        self.board_name = bf.board_name(self.descr_board_id)
        self.descr = bf.board_descr(self.descr_board_id, self.preset)
        self.num_rows = int(self.descr["num_rows"])
        self.timestamp_row: int | None = self.descr.get("timestamp_channel")
        self.package_num_row: int | None = self.descr.get("package_num_channel")
        self.marker_row: int | None = self.descr.get("marker_channel")
        if self.timestamp_row is None:
            raise BoardError("the board description has no timestamp row", board=self.board_name,
                             hint="This board cannot be used as a source; report it to edge-bridge")

        prof = load_profile(profile) if isinstance(profile, str | os.PathLike) else profile
        if (prof is not None and prof.board.lower() != "frames"
                and bf.resolve_board(prof.board) != self.descr_board_id):
            raise ProfileError(f"device profile is for board {prof.board} but this source opens "
                               f"{self.board_name}; use a profile written for {self.board_name}")
        if channels is None:
            channels = list(prof.channels) if prof is not None else channels_from_descr(self.descr)
        self._channels = list(channels)
        reserved = {r for r in (self.timestamp_row, self.package_num_row, self.marker_row) if r is not None}
        for c in self._channels:
            if not 0 <= c.row < self.num_rows or c.row in reserved:
                raise ProfileError(f"channel {c.name!r} uses row {c.row}, which is not a data row of "
                                   f"{self.board_name} (rows 0..{self.num_rows - 1}; timestamp, package and "
                                   f"marker rows {sorted(reserved)} are not signals)")
        if not self._channels:
            raise ProfileError(f"{self.board_name} describes no signal rows; write a device profile that "
                               "names the rows to use")
        self._rows = np.array([c.row for c in self._channels], dtype=np.intp)

        stated = float(bf.BoardShim.get_sampling_rate(self.descr_board_id, self.preset))
        self.stated_rate = stated
        rate = sampling_rate if sampling_rate is not None else (prof.sampling_rate if prof else None)
        self._rate = float(rate) if rate is not None else stated
        if rate is not None and abs(float(rate) - stated) > 1e-9:
            logger.info("%s: using %g Hz from the profile or sidecar; BrainFlow states %g Hz for the board",
                        self.board_name, self._rate, stated)
        self._tracker = SequenceTracker(prof.package_modulus if prof else None)
        self._shim: Any = None
        self._file_samples = _count_lines(Path(self.params.file)) if self.is_playback else 0
        self._delivered = 0
        self._ts_before_reconnect: float | None = None
        label = f"playback {self.params.file}" if self.is_playback else f"board {self.board_name}"
        super().__init__(name=label, **kwargs)

    @classmethod
    def playback(cls, path: str | os.PathLike[str], *, loop: bool = False,
                 master_board: str | int | None = None,
                 profile: DeviceProfile | str | os.PathLike[str] | None = None,
                 **kwargs: Any) -> BrainFlowSource:
        """Replay a BrainFlow CSV in real time through BrainFlow's playback-file board.

        The sidecar ``<path>.json`` (written by the recorder and by
        :func:`~firmware_interface.playback.write_playback_file`) supplies the master board, the channels and
        the true sampling rate; without it, ``master_board`` (default the synthetic board) and its
        description are used.
        """
        path = Path(path)
        channels: list[ChannelInfo] | None = None
        rate: float | None = None
        if isinstance(profile, str | os.PathLike):
            profile = load_profile(profile)
        if sidecar_path(path).is_file():
            side = read_sidecar(path)
            master_board = master_board if master_board is not None else side["board_id"]
            if profile is None:
                channels = side["channels"]
            if profile is None or profile.sampling_rate is None:
                rate = float(side["sampling_rate"])
        params = {"file": str(path), "master_board": master_board if master_board is not None else -1}
        return cls("PLAYBACK_FILE_BOARD", params, profile=profile, channels=channels, sampling_rate=rate,
                   loop=loop, **kwargs)

    # --- Source properties ----------------------------------------------------------------------------
    @property
    def sampling_rate(self) -> float:
        return self._rate

    @property
    def channels(self) -> list[ChannelInfo]:
        return list(self._channels)

    @property
    def finite(self) -> bool:
        return self.is_playback and not self.loop

    @property
    def finished(self) -> bool:
        # the line count is exact for a checked file; the playback board going quiet (``_ended``) covers
        # lines BrainFlow skipped, so a file never waits for samples that will not come
        return self.finite and (self._ended or self._delivered >= self._file_samples)

    def insert_marker(self, value: float) -> None:
        """Write ``value`` into the marker row of the next sample (BrainFlow's ``insert_marker``)."""
        if self._shim is None:
            raise BoardError("cannot insert a marker: the board is not streaming", board=self.board_name)
        try:
            self._shim.insert_marker(float(value), self.preset)
        except bf.BrainFlowError as exc:
            raise bf.translate_error(exc, "insert a marker", self.board_id, self.params) from exc

    # --- hooks ----------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self.is_playback and not Path(self.params.file).is_file():
            raise BoardError(f"playback file {self.params.file} does not exist (any more)",
                             board="PLAYBACK_FILE_BOARD", hint="Check the path, or write the file again")
        shim = bf.BoardShim(self.board_id, self.params)
        action = "prepare the session"
        prepared = False
        try:
            shim.prepare_session()
            prepared = True
            if self.is_playback:
                action = "configure playback"
                shim.config_board("loopback_true" if self.loop else "loopback_false")
            action = "start streaming"
            # BrainFlow's ring buffer: room for the whole buffer window, far more than one hop
            shim.start_stream(max(int(self._rate * self.buffer_seconds), 1024))
        except bf.BrainFlowError as exc:
            # BrainFlow keys sessions by board and parameters: if prepare failed because another session with
            # the same key exists, releasing this shim would release that one, so only undo our own prepare
            if prepared:
                _release(shim)
            else:
                _defuse(shim)
            raise bf.translate_error(exc, action, self.board_id, self.params) from exc
        self._shim = shim
        self._tracker.reset()
        self._delivered = 0

    def _on_reconnected(self) -> None:
        self._ts_before_reconnect = self._ts_last

    def _poll(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self._shim is None:
            raise BoardError("board is not open", board=self.board_name)
        try:
            data = self._shim.get_board_data(preset=self.preset)
        except bf.BrainFlowError as exc:
            raise bf.translate_error(exc, "read data", self.board_id, self.params) from exc
        if data.ndim != 2 or data.shape[1] == 0:
            return None
        if data.shape[0] != self.num_rows:
            raise BoardError(f"expected {self.num_rows} rows per read, got {data.shape[0]}",
                             board=self.board_name,
                             hint="The board description and the board disagree; upgrade BrainFlow")
        data = np.ascontiguousarray(data, dtype=np.float64)
        ts = data[self.timestamp_row]
        gaps = lost = 0
        if self.package_num_row is not None:
            report = self._tracker.update(data[self.package_num_row])
            gaps, lost = report.gaps, report.lost
            with self._lock:
                self._stats.package_out_of_order = self._tracker.out_of_order
                self._stats.package_repeats = self._tracker.repeats
                self._stats.package_nonfinite = self._tracker.nonfinite
            if report.lost:
                logger.debug("%s: %d gap(s) in the package numbers, %d sample(s) lost", self.name,
                               report.gaps, report.lost)
        if self._ts_before_reconnect is not None:
            # package numbers restart with the session: estimate the outage from the timestamps instead
            missing = int(np.rint((ts[0] - self._ts_before_reconnect) * self._rate)) - 1
            if missing > 0:
                gaps += 1
                lost += missing
                logger.warning("%s: about %d sample(s) lost while reconnecting", self.name, missing)
            self._ts_before_reconnect = None
        self._count(gaps=gaps, lost=lost)
        self._delivered += data.shape[1]
        return data, ts.copy()

    def _close(self) -> None:
        shim, self._shim = self._shim, None
        if shim is not None:
            _release(shim)

    def _store_rows(self) -> int:
        return self.num_rows

    def _select(self, stored: np.ndarray) -> np.ndarray:
        return stored[self._rows]

    def _has_raw(self) -> bool:
        return True


def _release(shim: Any) -> None:
    """Stop and release a BoardShim, whatever state it is in (never raises)."""
    try:
        if shim.is_prepared():
            with contextlib.suppress(bf.BrainFlowError):  # not streaming: nothing to stop
                shim.stop_stream()
            shim.release_session()
    except bf.BrainFlowError as exc:
        logger.debug("releasing the board: %s", exc)
    _defuse(shim)


def _defuse(shim: Any) -> None:
    """Point a dead BoardShim at a session key nobody uses.

    BrainFlow keys sessions by board id and parameters, and ``BoardShim.__del__`` releases "its" session if
    that key is prepared. A shim whose prepare failed (another session holds the key) or that we already
    released would, when garbage-collected later, release whichever live session now has the same key: the
    other source, or our own reconnected session. Changing the shim's key makes its ``__del__`` harmless.
    """
    params = bf.BrainFlowInputParams()
    params.other_info = f"edge-bridge: released shim {id(shim)}"
    text = params.to_json()
    shim.input_json = text.encode() if isinstance(shim.input_json, bytes) else text
