"""The ``Source`` interface the live loop reads from, the reader thread behind it, and ``open_source``.

A source is a context manager with ``start()``, a non-blocking ``read() -> Chunk`` and ``stop()``. Behind
it a reader thread drains the device on a fixed hop into a bounded :class:`~firmware_interface.buffer.
RingBuffer` (BrainFlow's own ring buffer overwrites silently, so nothing may sit there long), counts gaps and
out-of-order timestamps, and reconnects with exponential back-off when the device errors or goes quiet. The
consumer never blocks on the device and learns about trouble from the chunk (``reconnected``, ``gaps``)
and from :attr:`Source.stats`; when the reconnect attempts run out, the next ``read()`` raises
:class:`~firmware_interface.errors.SourceError` after handing over every sample that did arrive.

Source specs (:func:`firmware_interface.factory.open_source`, which lives beside the source classes rather
than in this base module so that no import goes in a circle)::

    synthetic                        BrainFlow's synthetic board
    playback:FILE                    BrainFlow's playback board on a BrainFlow CSV (sidecar FILE.json if any)
    board:NAME[,k=v...]              any BrainFlow board, with BrainFlowInputParams fields
    tcp:HOST:PORT                    frame-protocol device over TCP
    serial:PORT[,baud=N]             frame-protocol device over a serial port

Every spec also takes ``profile=FILE`` (a device profile JSON), e.g. ``synthetic,profile=ecg.json``.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from firmware_interface.buffer import RingBuffer
from firmware_interface.channels import ChannelInfo
from firmware_interface.errors import FirmwareError, ProfileError, SourceError

logger = logging.getLogger(__name__)


@dataclass
class Chunk:
    """What one ``read()`` returns: every sample that arrived since the previous read.

    Attributes
    ----------
    data : ndarray of float64, shape (n_channels, k)
        Channels in the order of :attr:`Source.channels`; k may be 0.
    timestamps : ndarray of float64, shape (k,)
        Seconds in the source's clock (host Unix time for BrainFlow, device time for frame devices).
    raw : ndarray of float64, shape (n_rows, k), or None
        Every row BrainFlow delivered (package number, timestamps, markers too); what the recorder writes.
        ``None`` for frame devices.
    gaps, lost_samples, out_of_order : int
        New since the previous read (totals are in :attr:`Source.stats`).
    reconnected : bool
        The device was lost and reconnected since the previous read; expect a gap in time.
    connected : bool
        The device is connected now.
    finished : bool
        A playback or recording source has delivered everything it has.
    """

    data: np.ndarray
    timestamps: np.ndarray
    raw: np.ndarray | None = None
    gaps: int = 0
    lost_samples: int = 0
    out_of_order: int = 0
    reconnected: bool = False
    connected: bool = True
    finished: bool = False

    @property
    def n_samples(self) -> int:
        return int(self.timestamps.shape[0])


@dataclass
class SourceStats:
    """Running totals of a source.

    Attributes
    ----------
    samples : int
        Samples delivered into the buffer.
    gaps, lost_samples : int
        Gaps found from package or sequence numbers (and across reconnects, from timestamps).
    out_of_order : int
        Samples whose timestamp is earlier than the one before.
    reconnects : int
        Successful reconnects.
    rejected : int
        Frames thrown away by the decoder (bad CRC, impossible header, torn); frame devices only.
    overflow : int
        Samples overwritten in our buffer before ``read()`` returned them (the consumer is too slow).
    duplicate_timestamps, nonfinite_timestamps : int
        Samples whose timestamp equals the one before, or is NaN or infinite.
    package_out_of_order, package_repeats, package_nonfinite : int
        Package numbers (BrainFlow boards) that step backwards, repeat the one before, or are NaN/infinite.
        A repeat is normal on boards that send several samples per package; the others are not.
    """

    samples: int = 0
    gaps: int = 0
    lost_samples: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    rejected: int = 0
    overflow: int = 0
    duplicate_timestamps: int = 0
    nonfinite_timestamps: int = 0
    package_out_of_order: int = 0
    package_repeats: int = 0
    package_nonfinite: int = 0


class Source(abc.ABC):
    """A stream of multi-channel samples; use as a context manager so it is always released.

    Examples
    --------
    >>> with open_source("synthetic") as src:   # doctest: +SKIP
    ...     time.sleep(0.5)
    ...     chunk = src.read()
    ...     chunk.data.shape                       # (n_channels, about 125)
    """

    @abc.abstractmethod
    def start(self) -> None:
        """Connect and begin streaming; raises if the device cannot be opened at all."""

    @abc.abstractmethod
    def read(self) -> Chunk:
        """Everything that arrived since the last call; never blocks on the device."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop streaming and release the device; safe to call twice."""

    def ready(self, min_samples: int = 1) -> bool:
        """Whether :meth:`read` has something for a caller that needs ``min_samples`` samples: that many,
        or news that cannot wait (a reconnect, a failure, the end of the data).

        A hub polling many wearables asks this first and reads a stream only when a window can be cut
        from it; the samples stay in the source's buffer meanwhile. The base class cannot tell, so it
        answers True: read to find out.
        """
        return True

    def request_stop(self) -> None:
        """Begin stopping without waiting; :meth:`stop` still releases the device.

        A hub stopping many sources asks them all first, so their reader threads wind down together
        instead of one after another. Sources without a thread of their own have nothing to begin.
        """
        return None

    @property
    @abc.abstractmethod
    def sampling_rate(self) -> float:
        """Samples per second per channel."""

    @property
    @abc.abstractmethod
    def channels(self) -> list[ChannelInfo]:
        """Name, modality, unit (and row) of each channel, in the order of ``Chunk.data``."""

    @property
    @abc.abstractmethod
    def stats(self) -> SourceStats:
        """A snapshot of the running totals."""

    @property
    def finished(self) -> bool:
        """True once a finite source (a playback file) has delivered everything."""
        return False

    @property
    def finite(self) -> bool:
        """True for a source that ends (a playback file): silence means its end, never a lost device."""
        return False

    def __enter__(self) -> Source:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


_LIVE: weakref.WeakSet[StreamingSource] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # a forgotten source still releases its device when Python exits
    for src in list(_LIVE):
        with contextlib.suppress(Exception):  # best effort at exit; the device is being released anyway
            src.stop()


class StreamingSource(Source):
    """Base class: a reader thread, a bounded buffer, gap counting and reconnect with back-off.

    Subclasses supply ``_open`` (connect; raise on failure), ``_poll`` (return newly arrived rows and
    timestamps, or ``None``; raise when the device failed), ``_close`` (never raises) and ``_select``
    (the channel rows of the stored rows).

    Parameters
    ----------
    name : str
        Named in every log line ("board SYNTHETIC_BOARD", "tcp 127.0.0.1:5555").
    hop : float
        Seconds between drains of the device.
    buffer_seconds : float
        How much unread data our buffer holds before it overwrites (counted in ``stats.overflow``).
    stall_timeout : float
        Seconds without data after which a connected device counts as lost.
    startup_timeout : float
        Seconds a freshly (re)connected device may take to deliver its first sample.
    max_reconnects : int
        Attempts per outage before giving up (0 disables reconnecting).
    backoff, backoff_max : float
        First delay between attempts and its cap; it doubles each attempt.
    """

    #: whether _poll blocks by itself (a socket read with timeout) or the thread must sleep one hop
    _poll_blocks = False

    def __init__(self, *, name: str, hop: float = 0.1, buffer_seconds: float = 60.0,
                 stall_timeout: float = 3.0, startup_timeout: float = 10.0, max_reconnects: int = 5,
                 backoff: float = 0.5, backoff_max: float = 8.0) -> None:
        for label, value in (("hop", hop), ("buffer_seconds", buffer_seconds),
                             ("stall_timeout", stall_timeout), ("startup_timeout", startup_timeout),
                             ("backoff", backoff), ("backoff_max", backoff_max)):
            if not value > 0:
                raise ProfileError(f"{label} must be a positive number of seconds, got {value!r}")
        if max_reconnects < 0:
            raise ProfileError(f"max_reconnects must be >= 0, got {max_reconnects!r}")
        self.name = name
        self.hop = float(hop)
        self.buffer_seconds = float(buffer_seconds)
        self.stall_timeout = float(stall_timeout)
        self.startup_timeout = float(startup_timeout)
        self.max_reconnects = int(max_reconnects)
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer: RingBuffer | None = None
        self._stats = SourceStats()
        self._reported = SourceStats()  # totals at the previous read(), for the per-chunk deltas
        self._reconnected_flag = False
        self._connected = False
        self._failure: FirmwareError | None = None
        self._started = False
        self._ts_last: float | None = None
        self._last_reason = "unknown"
        self._gaps_logged = 0
        self._gaps_logged_at = -1e9
        self._ended = False  # a finite source went quiet: the end of its data
        self._empty: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.empty((0, 0)), np.empty(0),
                                                                 np.empty((0, 0)))

    # --- hooks ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _poll(self) -> tuple[np.ndarray, np.ndarray] | None: ...

    @abc.abstractmethod
    def _close(self) -> None: ...

    @abc.abstractmethod
    def _store_rows(self) -> int: ...

    @abc.abstractmethod
    def _select(self, stored: np.ndarray) -> np.ndarray: ...

    def _has_raw(self) -> bool:
        return False

    def _on_reconnected(self) -> None:
        """Called in the reader thread after a successful reconnect."""

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self._stop_event.clear()
        self._failure = None
        self._ended = False
        self._open()
        self._connected = True
        capacity = max(int(np.ceil(self.sampling_rate * self.buffer_seconds)), 1)
        self._buffer = RingBuffer(self._store_rows(), capacity)
        none = np.empty((self._store_rows(), 0))
        self._empty = (self._select(none), np.empty(0), none)  # what a read with nothing new returns
        self._started = True
        _LIVE.add(self)
        self._thread = threading.Thread(target=self._run, name=f"edge-bridge source {self.name}", daemon=True)
        self._thread.start()
        logger.info("%s: streaming at %g Hz, %d channel(s)", self.name, self.sampling_rate,
                    len(self.channels))

    def ready(self, min_samples: int = 1) -> bool:
        buf = self._buffer
        # never wait for more than half the buffer: the rest is the margin before it overwrites
        need = min(max(int(min_samples), 1), max(buf.capacity // 2, 1)) if buf is not None else 1
        return (buf is None or buf.unread >= need or self._reconnected_flag or self._failure is not None
                or self.finished)

    def request_stop(self) -> None:
        self._stop_event.set()

    def stop(self) -> None:
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, 4 * self.hop))
            if thread.is_alive():
                logger.warning("%s: reader thread did not stop within 5 s; releasing the device anyway",
                               self.name)
        self._thread = None
        if self._connected:
            self._connected = False
            self._close()
        self._started = False  # read() still returns what was buffered; start() opens the device again
        _LIVE.discard(self)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def finished(self) -> bool:
        return self._ended

    @property
    def stats(self) -> SourceStats:
        with self._lock:
            out = dataclasses.replace(self._stats)
        if self._buffer is not None:
            out.overflow = self._buffer.overflow
            out.out_of_order = self._buffer.out_of_order
            out.duplicate_timestamps = self._buffer.duplicates
            out.nonfinite_timestamps = self._buffer.nonfinite
        return out

    def read(self) -> Chunk:
        buf = self._buffer
        if buf is None:
            raise SourceError(f"{self.name}: read() before start(); use `with source:` or call start() first")
        if not self.ready(1):
            # nothing new: a live loop polling many wearables asks far more often than samples arrive, so
            # this answer costs no lock, no stats snapshot and no copy. Counters that moved without data
            # (none do in practice: gaps are found when the samples after them arrive) come with the next
            # chunk that has samples, as deltas against the last full read.
            return Chunk(data=self._empty[0], timestamps=self._empty[1],
                         raw=self._empty[2] if self._has_raw() else None, connected=self._connected)
        stored, ts = buf.read()
        raw = stored if self._has_raw() else None
        stats = self.stats
        with self._lock:
            prev = self._reported
            self._reported = dataclasses.replace(stats)
            reconnected, self._reconnected_flag = self._reconnected_flag, False
            failure = self._failure
        if failure is not None and ts.size == 0:
            raise failure
        return Chunk(
            data=self._select(stored), timestamps=ts, raw=raw,
            gaps=stats.gaps - prev.gaps, lost_samples=stats.lost_samples - prev.lost_samples,
            out_of_order=stats.out_of_order - prev.out_of_order, reconnected=reconnected,
            connected=self._connected, finished=self.finished and self._buffer.unread == 0,
        )

    # --- reader thread --------------------------------------------------------------------------------
    def _count(self, *, gaps: int = 0, lost: int = 0, rejected: int = 0) -> None:
        if gaps or lost or rejected:
            with self._lock:
                self._stats.gaps += gaps
                self._stats.lost_samples += lost
                self._stats.rejected += rejected

    def _ingest(self, stored: np.ndarray, ts: np.ndarray) -> None:
        if self._buffer is None:  # start() creates it before the thread runs
            return
        self._buffer.push(stored, ts)
        self._ts_last = float(ts[-1])
        with self._lock:
            self._stats.samples += int(ts.shape[0])

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a bug, not a device failure: report it through read(), never die silently
            logger.exception("%s: reader thread failed", self.name)
            with self._lock:
                self._failure = SourceError(f"{self.name}: the reader thread failed ({type(exc).__name__}: "
                                            f"{exc}); this is a bug, please report it with the log above")
            if self._connected:
                self._connected = False
                self._close()

    def _loop(self) -> None:
        last_data = time.monotonic()
        grace = self.startup_timeout
        while not self._stop_event.is_set():
            if not self._connected:
                if not self._reconnect():
                    break
                last_data, grace = time.monotonic(), self.startup_timeout
                continue
            try:
                got = self._poll()
            except Exception as exc:  # any device failure: log it and reconnect, never kill the thread
                if self.finite:  # reopening a file replays it from the start: fail instead
                    self._fail(f"{self.name}: reading failed ({type(exc).__name__}: {exc})")
                    break
                self._lost(f"{type(exc).__name__}: {exc}")
                continue
            now = time.monotonic()
            self._log_gaps(now)
            if got is not None and got[1].shape[0]:
                self._ingest(*got)
                last_data, grace = now, self.stall_timeout
            elif self.finished:
                last_data = now
            elif now - last_data > grace:
                if self.finite:  # a file that went quiet has ended; a live device that did is lost
                    self._end_of_data(now - last_data)
                    break
                self._lost(f"no data for {now - last_data:.1f} s")
                continue
            if not self._poll_blocks:
                self._stop_event.wait(self.hop)
        if self._connected:
            try:  # what arrived since the last hop would be lost with the session
                got = self._poll()
                if got is not None and got[1].shape[0]:
                    self._ingest(*got)
            except Exception as exc:  # the device is being closed anyway
                logger.debug("%s: final drain failed: %s", self.name, exc)
            self._connected = False
            self._close()

    def _log_gaps(self, now: float) -> None:
        """One warning per 5 s at most while gaps keep appearing, with the running totals."""
        with self._lock:
            gaps, lost = self._stats.gaps, self._stats.lost_samples
        if gaps > self._gaps_logged and now - self._gaps_logged_at >= 5.0:
            logger.warning("%s: %d new gap(s) in the stream; %d gap(s), %d sample(s) lost so far",
                           self.name, gaps - self._gaps_logged, gaps, lost)
            self._gaps_logged, self._gaps_logged_at = gaps, now

    def _fail(self, message: str) -> None:
        logger.error("%s", message)
        with self._lock:
            self._failure = SourceError(message)

    def _end_of_data(self, quiet: float) -> None:
        """A finite source delivered nothing for ``quiet`` seconds: its data ended (or never began).

        Never a reconnect: reopening a playback file starts it over, which would replay samples already
        seen and count the replay as lost samples.
        """
        with self._lock:
            samples = self._stats.samples
        if samples == 0:
            self._fail(f"{self.name}: delivered no sample in {quiet:.1f} s; check that the file is a "
                       "BrainFlow CSV of its master board (edge-bridge convert writes one)")
            return
        logger.info("%s: no more data after %d sample(s): end of the recording", self.name, samples)
        self._ended = True

    def _lost(self, reason: str) -> None:
        logger.warning("%s: connection lost (%s); reconnecting with back-off", self.name, reason)
        self._connected = False
        self._close()
        self._last_reason = reason

    def _reconnect(self) -> bool:
        reason = self._last_reason
        began = time.monotonic()
        last_exc: Exception | None = None
        for attempt in range(1, self.max_reconnects + 1):
            delay = min(self.backoff * 2 ** (attempt - 1), self.backoff_max)
            logger.warning("%s: reconnect attempt %d/%d in %.1f s", self.name, attempt, self.max_reconnects,
                           delay)
            if self._stop_event.wait(delay):
                return False
            try:
                self._open()
            except Exception as exc:  # keep trying until the attempts run out
                last_exc = exc
                logger.warning("%s: reconnect attempt %d/%d failed: %s", self.name, attempt,
                               self.max_reconnects, exc)
                continue
            self._connected = True
            with self._lock:
                self._stats.reconnects += 1
                self._reconnected_flag = True
            self._on_reconnected()
            logger.warning("%s: reconnected after %d attempt(s), %.1f s without data", self.name, attempt,
                           time.monotonic() - began)
            return True
        message = (f"{self.name}: lost the device ({reason}) and could not reconnect in "
                   f"{self.max_reconnects} attempt(s) over {time.monotonic() - began:.1f} s"
                   + (f"; last error: {last_exc}" if last_exc else "")
                   + ". Check power, cable or network, then open the source again")
        logger.error("%s", message)
        with self._lock:
            self._failure = SourceError(message)
        return False


def concat_chunks(chunks: Sequence[Chunk]) -> Chunk:
    """Join chunks in order (tests and the recorder use it); counters are summed."""
    if not chunks:
        raise ValueError("concat_chunks needs at least one chunk")
    raws = [c.raw for c in chunks]
    return Chunk(
        data=np.concatenate([c.data for c in chunks], axis=1),
        timestamps=np.concatenate([c.timestamps for c in chunks]),
        raw=None if any(r is None for r in raws) else np.concatenate(raws, axis=1),  # type: ignore[arg-type]
        gaps=sum(c.gaps for c in chunks), lost_samples=sum(c.lost_samples for c in chunks),
        out_of_order=sum(c.out_of_order for c in chunks), reconnected=any(c.reconnected for c in chunks),
        connected=chunks[-1].connected, finished=chunks[-1].finished,
    )
