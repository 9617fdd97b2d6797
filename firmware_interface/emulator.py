"""A wearable on loopback: stream arrays as frames over TCP at real time, with optional corruption.

For tests and demos without hardware. :class:`FrameEmulator` quantises each channel to int16 or int24 with
its own scale, cuts the samples into frames and sends one frame whenever its samples would have been
measured, to one TCP client at a time on 127.0.0.1. Like a real device it keeps sampling while nobody is
connected (those frames are never sent, and the sequence numbers show the gap), and it can damage the stream
on purpose: flip bits, drop frames, insert garbage. Every decision is logged in :attr:`FrameEmulator.log` so a
test can check that exactly the good frames came through.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from firmware_interface.errors import FrameError
from firmware_interface.frames import _LIMITS, SYNC, encode_frame, format_code

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corruption:
    """What to do to the stream, per frame, with probabilities.

    Attributes
    ----------
    bit_flip : float
        Probability that a frame gets 1 to 3 flipped bits (never in its sync word, so the damage is caught
        by the CRC or the header checks rather than silently merging into the previous frame's garbage).
    drop : float
        Probability that a frame is not sent at all.
    garbage : float
        Probability that 1 to 64 random bytes are sent before a frame.
    seed : int
        Random seed, so a test run is repeatable.
    """

    bit_flip: float = 0.0
    drop: float = 0.0
    garbage: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("bit_flip", "drop", "garbage"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


@dataclass
class EmulatorLog:
    """What the emulator did, by sequence number."""

    sent: list[int] = field(default_factory=list)  # intact frames sent
    corrupted: list[int] = field(default_factory=list)  # sent with flipped bits
    dropped: list[int] = field(default_factory=list)  # deliberately not sent
    unsent: list[int] = field(default_factory=list)  # due while no client was connected
    garbage_bytes: int = 0
    connections: int = 0


def quantise(data: np.ndarray, sample_format: int | str = "int16",
             scales: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer counts and float32 scales such that ``counts * scale`` approximates ``data``.

    Without ``scales`` each channel's largest magnitude maps to 90 % of the format's range.

    Returns
    -------
    counts : ndarray of int32, shape (n_channels, n_samples)
    scales : ndarray of float32, shape (n_channels,)
    """
    fmt = format_code(sample_format)
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2:
        raise FrameError(f"data must have shape (n_channels, n_samples), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise FrameError("data contain NaN or infinity; frames carry finite integers only")
    lo, hi = _LIMITS[fmt]
    if scales is None:
        peak = np.max(np.abs(x), axis=1) if x.shape[1] else np.zeros(x.shape[0])
        sc = np.where(peak > 0, peak / (0.9 * hi), 1.0).astype(np.float32)
    else:
        sc = np.asarray(scales, dtype=np.float32).ravel()
        if sc.shape != (x.shape[0],) or not np.all(sc > 0):
            raise FrameError(f"need {x.shape[0]} positive scales, got {scales!r}")
    counts = np.clip(np.round(x / sc.astype(np.float64)[:, None]), lo, hi).astype(np.int32)
    return counts, sc


def _check_loopback(host: str) -> None:
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"the emulator serves on loopback only (127.0.0.1, ::1, localhost), got {host!r}; "
                         "it is a test device, not a server to expose on a network")


class FrameEmulator:
    """Serve ``data`` as frames on ``host:port`` in real time.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Physical values.
    sampling_rate : float
        Hz.
    modalities : sequence of str, optional
        One per channel (``"ecg"``, ``"ppg"`` ...).
    sample_format : {"int16", "int24"}
    scales : sequence of float, optional
        Units per count; chosen from the data when left out.
    samples_per_frame : int
    port : int
        0 picks a free port (see :attr:`port` after :meth:`start`).
    corruption : Corruption, optional
    loop : bool
        Start over at the end instead of finishing.
    start_seq : int
        Sequence number of the first frame (a restarted emulator continues where the old one stopped).
    speed : float
        1.0 is real time; larger values are for quick tests only.
    wait_for_client : bool
        Start the clock when the first client connects, so no frame is missed at the start.

    Examples
    --------
    >>> with FrameEmulator(np.zeros((1, 2500)), 250.0, modalities=["ppg"]) as emu:   # doctest: +SKIP
    ...     print(emu.port)
    """

    def __init__(self, data: np.ndarray, sampling_rate: float, *, modalities: Sequence[str] | None = None,
                 sample_format: str | int = "int16", scales: Sequence[float] | None = None,
                 samples_per_frame: int = 10, host: str = "127.0.0.1", port: int = 0,
                 corruption: Corruption | None = None, loop: bool = False, start_seq: int = 0,
                 timestamp_start_us: int = 0, speed: float = 1.0, wait_for_client: bool = True) -> None:
        _check_loopback(host)
        if not sampling_rate > 0:
            raise ValueError(f"sampling_rate must be positive, got {sampling_rate!r}")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed!r}")
        self.sample_format = format_code(sample_format)
        self.counts, self.scales = quantise(data, self.sample_format, scales)
        n_ch, n = self.counts.shape
        if n < samples_per_frame:
            raise ValueError(f"need at least one frame of data ({samples_per_frame} samples), got {n}")
        self.rate = float(sampling_rate)
        self.modalities = list(modalities) if modalities is not None else [""] * n_ch
        if len(self.modalities) != n_ch:
            raise ValueError(f"need one modality per channel ({n_ch}), got {len(self.modalities)}")
        self.spf = int(samples_per_frame)
        self.n_frames = n // self.spf
        self.host = host
        self._port = int(port)
        self.corruption = corruption or Corruption()
        self.loop = bool(loop)
        self.start_seq = int(start_seq)
        self.timestamp_start_us = int(timestamp_start_us)
        self.speed = float(speed)
        self.wait_for_client = bool(wait_for_client)
        self.log = EmulatorLog()
        self.done = threading.Event()
        self._stop = threading.Event()
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._rng = np.random.default_rng(self.corruption.seed)
        self._next_index = 0  # frames emitted so far (sent, damaged, dropped or unsent)
        # check once that the frames fit the protocol, so errors surface here and not in the thread
        self.frame(0)

    @property
    def port(self) -> int:
        return self._port

    @property
    def values(self) -> np.ndarray:
        """What an ideal receiver decodes: counts times the float32 scales, float64."""
        return self.counts.astype(np.float64) * self.scales.astype(np.float64)[:, None]

    def frame(self, index: int) -> bytes:
        """Bytes of frame ``index`` (counting from the first, across loops)."""
        k = index % self.n_frames
        block = self.counts[:, k * self.spf:(k + 1) * self.spf]
        ts = self.timestamp_start_us + int(np.rint(index * self.spf * 1e6 / self.rate))
        return encode_frame(block, seq=self.start_seq + index, timestamp_us=ts, sampling_rate=self.rate,
                            scales=self.scales, modalities=self.modalities, sample_format=self.sample_format)

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> FrameEmulator:
        srv = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind((self.host, self._port))
        except OSError as exc:
            srv.close()
            raise OSError(f"emulator could not listen on {self.host}:{self._port}: {exc}; "
                          "pick another --port") from exc
        srv.listen(1)
        self._server = srv
        self._port = srv.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=f"frame emulator :{self._port}", daemon=True)
        self._thread.start()
        logger.info("emulator: %d channel(s) at %g Hz, %d-sample frames, on %s:%d", self.counts.shape[0],
                    self.rate, self.spf, self.host, self._port)
        return self

    def stop(self) -> None:
        """Stop sending and close every socket (a client sees the connection close)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._drop_client()
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> FrameEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def next_seq(self) -> int:
        """Sequence number the next frame would carry (for a restarted emulator's ``start_seq``)."""
        return self.start_seq + self._next_index

    # --- thread ---------------------------------------------------------------------------------------
    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()

    def _accept(self, timeout: float) -> None:
        srv = self._server
        if srv is None:
            return
        ready, _, _ = select.select([srv], [], [], timeout)
        if not ready:
            return
        try:
            client, addr = srv.accept()
        except OSError:
            return
        client.settimeout(2.0)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._drop_client()
        self._client = client
        self.log.connections += 1
        logger.info("emulator: client %s:%d connected", addr[0], addr[1])

    def _send(self, payload: bytes) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            client.sendall(payload)
            return True
        except OSError as exc:
            logger.info("emulator: client gone (%s); waiting for another", exc)
            self._drop_client()
            return False

    def _damage(self, frame: bytes) -> bytes:
        out = bytearray(frame)
        for _ in range(int(self._rng.integers(1, 4))):
            bit = int(self._rng.integers(len(SYNC) * 8, len(out) * 8))
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)

    def _emit(self, index: int) -> None:
        seq = self.start_seq + index
        if self._client is None:
            self.log.unsent.append(seq)
            return
        c = self.corruption
        if c.garbage and self._rng.random() < c.garbage:
            junk = self._rng.integers(0, 256, int(self._rng.integers(1, 65)), dtype=np.uint8).tobytes()
            if self._send(junk):
                self.log.garbage_bytes += len(junk)
        if c.drop and self._rng.random() < c.drop:
            self.log.dropped.append(seq)
            return
        frame = self.frame(index)
        damaged = bool(c.bit_flip) and self._rng.random() < c.bit_flip
        if self._send(self._damage(frame) if damaged else frame):
            (self.log.corrupted if damaged else self.log.sent).append(seq)
        else:
            self.log.unsent.append(seq)

    def _run(self) -> None:
        frame_period = self.spf / self.rate / self.speed
        t0: float | None = None if self.wait_for_client else time.monotonic()
        try:
            while not self._stop.is_set():
                if self._client is None:
                    self._accept(0.05 if t0 is not None else 0.2)
                    if t0 is None:
                        if self._client is None:
                            continue
                        t0 = time.monotonic()
                elif self._server is not None:
                    self._accept(0.0)  # a new client replaces the old one
                due = int((time.monotonic() - t0) / frame_period) + 1
                if not self.loop:
                    due = min(due, self.n_frames)
                while self._next_index < due and not self._stop.is_set():
                    self._emit(self._next_index)
                    self._next_index += 1
                if not self.loop and self._next_index >= self.n_frames:
                    if not self.done.is_set():
                        logger.info("emulator: all %d frames sent", self.n_frames)
                        self.done.set()
                    self._stop.wait(0.05)
                    continue
                # sleep until the next frame is due (stop() wakes it at once); the cap only bounds how
                # late a client that replaces the current one is noticed. Waking on every 50 ms instead
                # made hundreds of emulators a CPU load of their own.
                wait = t0 + self._next_index * frame_period - time.monotonic()
                self._stop.wait(min(max(wait, 0.0), 0.25))
        except Exception:  # a test device must not die silently
            logger.exception("emulator: stopped by an error")

