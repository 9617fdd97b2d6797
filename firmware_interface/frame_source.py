"""Frame-protocol devices (custom wearable firmware) as a :class:`~firmware_interface.source.Source`.

The device sends :mod:`~firmware_interface.frames` over TCP or a serial port. Frames describe themselves
(rate, channel count, modality codes, scales), so the first valid frame fixes the stream's layout; a device
profile (``"board": "frames"``) adds channel names and units. Lost frames are counted from sequence numbers,
rejected ones (bad CRC, impossible header, torn) from the decoder, and a closed or silent link is reopened
with back-off. The device's sequence numbers keep running across a reconnect, so frames missed while the link
was down show up as a gap of exactly that many frames.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from firmware_interface.channels import DEFAULT_UNITS, ChannelInfo, DeviceProfile, load_profile
from firmware_interface.errors import ProfileError, SourceError
from firmware_interface.frames import FORMAT_NAMES, MODALITY_CODES, Frame, FrameDecoder
from firmware_interface.source import StreamingSource
from firmware_interface.transports import Transport

logger = logging.getLogger(__name__)

_RECV_BYTES = 65536
#: seconds a poll waits for bytes when the device is quiet. Data wake it at once, so this sets only how soon
#: a stop or stall is noticed; a short wait made every idle wearable wake its thread many times a frame
IDLE_WAIT = 0.25


class FrameSource(StreamingSource):
    """Read frames from a transport.

    Parameters
    ----------
    transport : Transport
        :class:`~firmware_interface.transports.TcpTransport` or
        :class:`~firmware_interface.transports.SerialTransport`.
    profile : DeviceProfile or path, optional
        ``"board": "frames"``; ``row`` is the channel's index in the frame.
    first_frame_timeout : float
        Seconds ``start()`` waits for the first valid frame (it fixes rate and channels).
    verbose : bool, optional
        Accepted so that every source takes the same options (:func:`~firmware_interface.open_source`);
        a frame device has no native logger to switch, its diagnostics are Python log records.
    **kwargs
        Reader-thread settings of :class:`~firmware_interface.source.StreamingSource`.

    Examples
    --------
    >>> with FrameSource(TcpTransport("127.0.0.1", 5555)) as src:   # doctest: +SKIP
    ...     chunk = src.read()
    """

    _poll_blocks = True

    def __init__(self, transport: Transport, *, profile: DeviceProfile | str | os.PathLike[str] | None = None,
                 first_frame_timeout: float = 5.0, verbose: bool | None = None, **kwargs: Any) -> None:
        self.verbose = verbose
        self.transport = transport
        prof = load_profile(profile) if isinstance(profile, str | os.PathLike) else profile
        if prof is not None and prof.board.lower() != "frames":
            raise ProfileError(f"a frame-protocol device needs a profile with \"board\": \"frames\", got "
                               f"{prof.board!r}")
        self.profile = prof
        self.first_frame_timeout = float(first_frame_timeout)
        self.decoder = FrameDecoder()
        self._layout: tuple[int, int, float, tuple[int, ...]] | None = None
        self._channels: list[ChannelInfo] = []
        self._rows = np.zeros(0, dtype=np.intp)
        self._rate = 0.0
        self._pending: list[Frame] = []
        self._mismatched = 0
        self._reported_rejected = 0
        self._reported_lost = 0
        self._reported_gaps = 0
        self._frame_samples = 1
        self._polled_at = 0.0  # when _poll last took bytes (the hop pacing)
        self._link_error: SourceError | None = None
        kwargs.setdefault("hop", 0.05)
        super().__init__(name=transport.description, **kwargs)

    # --- properties -----------------------------------------------------------------------------------
    @property
    def sampling_rate(self) -> float:
        if self._layout is None:
            raise SourceError(f"{self.name}: the sampling rate is known after the first frame; call start()")
        return self._rate

    @property
    def channels(self) -> list[ChannelInfo]:
        if self._layout is None:
            raise SourceError(f"{self.name}: channels are known after the first frame; call start()")
        return list(self._channels)

    @property
    def mismatched(self) -> int:
        """Frames dropped because their layout differs from the stream's first frame."""
        return self._mismatched

    # --- hooks ----------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._link_error = None
        self.transport.open()
        self.decoder.reset()
        if self._layout is not None:
            return
        deadline = time.monotonic() + self.first_frame_timeout
        while time.monotonic() < deadline:
            try:
                frames = self.decoder.feed(self.transport.recv(_RECV_BYTES, 0.2))
            except SourceError:
                self.transport.close()
                raise
            if frames:
                self._set_layout(frames[0])
                self._pending = frames
                return
        self.transport.close()
        st = self.decoder.stats
        raise SourceError(
            f"{self.name}: connected, but no valid frame arrived in {self.first_frame_timeout:g} s "
            f"({st.bytes_in} bytes received, {st.rejected} rejected). Check that the device sends "
            "edge-bridge frame protocol version 1 (firmware_interface/README.md) and, for serial, the baud "
            "rate"
        )

    def _set_layout(self, frame: Frame) -> None:
        self._layout = frame.layout()
        self._rate = float(frame.sampling_rate)
        self._frame_samples = frame.n_samples
        n = frame.n_channels
        if self.profile is not None:
            chans = list(self.profile.channels)
            bad = [c for c in chans if c.row >= n]
            if bad:
                raise ProfileError(f"device profile names frame channel {bad[0].row} ({bad[0].name}) but the "
                                   f"device sends {n} channel(s), indices 0..{n - 1}")
            if self.profile.sampling_rate is not None and abs(self.profile.sampling_rate - self._rate) > 1e-3:
                logger.warning("%s: the profile says %g Hz but the device states %g Hz; using the device's",
                               self.name, self.profile.sampling_rate, self._rate)
        else:
            counts: dict[str, int] = {}
            chans = []
            for i, code in enumerate(frame.modalities):
                modality = MODALITY_CODES.get(code, "")
                counts[modality] = counts.get(modality, 0) + 1
                name = f"{(modality or 'ch').upper()}{counts[modality]}"
                chans.append(ChannelInfo(name, modality, DEFAULT_UNITS.get(modality, ""), i))
        self._channels = chans
        self._rows = np.array([c.row for c in chans], dtype=np.intp)
        logger.info("%s: frames of %d channel(s) x %d samples, %s, %g Hz", self.name, n, frame.n_samples,
                    FORMAT_NAMES[frame.sample_format], self._rate)

    def _poll(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self._link_error is not None:  # found while draining the last hop, whose frames went out first
            exc, self._link_error = self._link_error, None
            raise exc
        frames, self._pending = self._pending, []
        data = self.transport.recv(_RECV_BYTES, max(self.hop, IDLE_WAIT))
        if data:
            # read on a fixed hop: a device that sends many small frames is drained once per hop, not once
            # per frame, so the decoder, the gap checks and the buffer push each run once for several
            # frames (a hub with many wearables pays per poll). A frame waits at most one hop for this.
            rest = self._polled_at + self.hop - time.monotonic()
            if rest > 0.002 and not self._stop_event.wait(rest):
                try:
                    data += self.transport.recv(_RECV_BYTES, 0.001)
                except SourceError as exc:  # the link went down: deliver what did arrive, then report it
                    self._link_error = exc
        self._polled_at = time.monotonic()
        frames += self.decoder.feed(data)
        st = self.decoder.stats
        rejected, self._reported_rejected = st.rejected - self._reported_rejected, st.rejected
        lost_frames, self._reported_lost = st.frames_lost - self._reported_lost, st.frames_lost
        good = []
        for f in frames:
            if f.layout() != self._layout:
                self._mismatched += 1
                if self._mismatched == 1 or self._mismatched % 100 == 0:
                    logger.warning("%s: frame seq %d has another layout (channels, format, rate or "
                                   "modalities) than the stream's first frame; dropped (%d so far). Restart "
                                   "the source after changing the firmware's settings", self.name, f.seq,
                                   self._mismatched)
                continue
            good.append(f)
            self._frame_samples = f.n_samples
        gaps, self._reported_gaps = st.seq_gaps - self._reported_gaps, st.seq_gaps
        self._count(gaps=gaps, lost=lost_frames * self._frame_samples, rejected=rejected)
        if not good:
            return None
        values = np.concatenate([f.values() for f in good], axis=1)
        ts = np.concatenate([f.timestamps() for f in good])
        return values, ts

    def _close(self) -> None:
        self.transport.close()

    def _store_rows(self) -> int:
        return self._layout[0] if self._layout is not None else 1

    def _select(self, stored: np.ndarray) -> np.ndarray:
        return stored[self._rows]
