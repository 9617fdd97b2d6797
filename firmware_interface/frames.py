"""The edge-bridge frame protocol: how custom wearable firmware sends samples over serial or TCP.

Many wearables are not BrainFlow boards. Their firmware can send this small binary frame instead; the same
layout is in ``include/edge_bridge_frame.h`` for C. All multi-byte fields are little-endian. One frame::

    offset  size  field
    0       2     sync word, bytes 0xEB 0xB1
    2       1     protocol version (1)
    3       1     sample format: 1 = int16, 2 = int24 (two's complement, little-endian)
    4       4     sequence number, uint32, +1 per frame, wraps at 2**32
    8       8     device timestamp of the frame's first sample, uint64 microseconds
    16      4     sampling rate, float32 Hz
    20      1     channel count C (1..64)
    21      1     reserved, must be 0
    22      2     samples per channel S (1..1024), uint16
    24      4*C   scale per channel, float32: physical value = count * scale
    24+4C   C     modality code per channel (0 unknown, 1 ecg, 2 ppg, 3 eeg, 4 emg, 5 resp, 6 eda, 7 acc)
    24+5C   S*C*B samples, sample-major (s0c0, s0c1, ..., s1c0, ...), B = 2 (int16) or 3 (int24)
    end-4   4     CRC-32 of every byte before it (zlib.crc32: poly 0x04C11DB7 reflected, init and final
                  xor 0xFFFFFFFF)

A whole frame is at most :data:`MAX_FRAME_SIZE` bytes. :class:`FrameDecoder` takes bytes as they arrive,
finds frames again after garbage or a torn frame, rejects bad CRCs and impossible headers, counts frames lost
from sequence gaps, and never raises on any input.
"""

from __future__ import annotations

import logging
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from firmware_interface.buffer import SequenceTracker
from firmware_interface.errors import FrameError

logger = logging.getLogger(__name__)

SYNC = b"\xeb\xb1"
VERSION = 1
FMT_INT16 = 1
FMT_INT24 = 2
BYTES_PER_SAMPLE = {FMT_INT16: 2, FMT_INT24: 3}
FORMAT_NAMES = {FMT_INT16: "int16", FMT_INT24: "int24"}
_LIMITS = {FMT_INT16: (-(2**15), 2**15 - 1), FMT_INT24: (-(2**23), 2**23 - 1)}
HEADER_SIZE = 24
CRC_SIZE = 4
MAX_CHANNELS = 64
MAX_SAMPLES = 1024
MAX_FRAME_SIZE = 16384
MAX_RATE = 100_000.0
MODALITY_CODES: dict[int, str] = {0: "", 1: "ecg", 2: "ppg", 3: "eeg", 4: "emg", 5: "resp", 6: "eda",
                                  7: "acc"}
_CODE_OF = {name: code for code, name in MODALITY_CODES.items()}

# sync, version, format, seq, timestamp_us, rate, n_channels, reserved, n_samples
_HEADER = struct.Struct("<2sBBIQfBBH")

# feed() works through large inputs in pieces of this size, so memory stays bounded whatever arrives
_FEED_PIECE = 65536


def frame_size(n_channels: int, n_samples: int, sample_format: int) -> int:
    """Bytes of a whole frame with this layout."""
    return HEADER_SIZE + 5 * n_channels + n_samples * n_channels * BYTES_PER_SAMPLE[sample_format] + CRC_SIZE


def format_code(sample_format: int | str) -> int:
    """``"int16"``/``"int24"`` or 1/2 -> the format code; raises FrameError otherwise."""
    if isinstance(sample_format, str):
        for code, name in FORMAT_NAMES.items():
            if sample_format.lower() == name:
                return code
    elif sample_format in BYTES_PER_SAMPLE:
        return int(sample_format)
    raise FrameError(f"sample format must be 'int16' or 'int24' (codes 1 or 2), got {sample_format!r}")


def modality_code(modality: str | int) -> int:
    """``"ppg"`` -> 2; unknown or empty -> 0."""
    if isinstance(modality, int):
        return modality if modality in MODALITY_CODES else 0
    return _CODE_OF.get(modality, 0)


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame.

    Attributes
    ----------
    seq : int
    timestamp_us : int
        Device clock at the first sample, microseconds.
    sampling_rate : float
        Hz, as the device states it (float32 precision).
    sample_format : int
        :data:`FMT_INT16` or :data:`FMT_INT24`.
    scales : ndarray of float32, shape (n_channels,)
    modalities : tuple of int
        Modality codes (:data:`MODALITY_CODES`).
    counts : ndarray of int32, shape (n_channels, n_samples)
        Raw integer samples.
    """

    seq: int
    timestamp_us: int
    sampling_rate: float
    sample_format: int
    scales: np.ndarray
    modalities: tuple[int, ...]
    counts: np.ndarray

    @property
    def n_channels(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.counts.shape[1])

    def values(self) -> np.ndarray:
        """Physical values, float64, shape (n_channels, n_samples): counts times the float32 scale."""
        return self.counts.astype(np.float64) * self.scales.astype(np.float64)[:, None]

    def timestamps(self) -> np.ndarray:
        """Device time of each sample in seconds, shape (n_samples,)."""
        return self.timestamp_us / 1e6 + np.arange(self.n_samples) / float(self.sampling_rate)

    def layout(self) -> tuple[int, int, float, tuple[int, ...]]:
        """What must stay constant within one stream: channel count, format, rate, modalities."""
        return (self.n_channels, self.sample_format, float(self.sampling_rate), self.modalities)

    def encode(self) -> bytes:
        """The frame's bytes (equal to what the firmware sent)."""
        return encode_frame(self.counts, seq=self.seq, timestamp_us=self.timestamp_us,
                            sampling_rate=self.sampling_rate, scales=self.scales, modalities=self.modalities,
                            sample_format=self.sample_format)


def encode_frame(counts: np.ndarray, *, seq: int, timestamp_us: int, sampling_rate: float,
                 scales: Sequence[float] | np.ndarray, modalities: Sequence[str | int] | None = None,
                 sample_format: int | str = FMT_INT16) -> bytes:
    """Encode one frame; the Python twin of ``eb_frame_encode`` in ``edge_bridge_frame.h``.

    Parameters
    ----------
    counts : ndarray of int, shape (n_channels, n_samples)
        Integer samples, within the format's range.
    seq : int
        Sequence number (taken modulo 2**32).
    timestamp_us : int
        Device time of the first sample, microseconds, 0 <= t < 2**64.
    sampling_rate : float
        Hz.
    scales : sequence of float, length n_channels
        Physical units per count.
    modalities : sequence of str or int, optional
        ``"ecg"``, ``"ppg"``, ... or codes; unknown when left out.
    sample_format : {"int16", "int24"} or 1, 2

    Returns
    -------
    bytes

    Raises
    ------
    FrameError
        If a value does not fit the protocol (the message says which and the allowed range).
    """
    fmt = format_code(sample_format)
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise FrameError(f"counts must have shape (n_channels, n_samples), got {counts.shape}")
    n_ch, n_s = counts.shape
    if not 1 <= n_ch <= MAX_CHANNELS:
        raise FrameError(f"a frame carries 1..{MAX_CHANNELS} channels, got {n_ch}")
    if not 1 <= n_s <= MAX_SAMPLES:
        raise FrameError(f"a frame carries 1..{MAX_SAMPLES} samples per channel, got {n_s}")
    size = frame_size(n_ch, n_s, fmt)
    if size > MAX_FRAME_SIZE:
        raise FrameError(f"{n_ch} channels x {n_s} samples of {FORMAT_NAMES[fmt]} make a {size}-byte frame; "
                         f"the limit is {MAX_FRAME_SIZE} bytes, send fewer samples per frame")
    if (counts.size and not np.issubdtype(counts.dtype, np.integer)
            and (not np.all(np.isfinite(counts)) or not np.array_equal(counts, np.round(counts)))):
        raise FrameError("counts must be integers; quantise with np.round(values / scale) first")
    lo, hi = _LIMITS[fmt]
    c64 = counts.astype(np.int64)
    if c64.size and (c64.min() < lo or c64.max() > hi):
        raise FrameError(f"{FORMAT_NAMES[fmt]} samples must lie in [{lo}, {hi}], got [{c64.min()}, "
                         f"{c64.max()}]; use a larger scale or int24")
    if not (math.isfinite(sampling_rate) and 0 < sampling_rate <= MAX_RATE):
        raise FrameError(f"sampling rate must be in (0, {MAX_RATE:g}] Hz, got {sampling_rate!r}")
    if not 0 <= int(timestamp_us) < 2**64:
        raise FrameError(f"timestamp_us must fit an unsigned 64-bit integer, got {timestamp_us!r}")
    sc = np.asarray(scales, dtype="<f4").ravel()
    if sc.shape != (n_ch,):
        raise FrameError(f"need one scale per channel ({n_ch}), got {sc.shape[0]}")
    codes = [0] * n_ch if modalities is None else [modality_code(m) for m in modalities]
    if len(codes) != n_ch:
        raise FrameError(f"need one modality per channel ({n_ch}), got {len(codes)}")
    header = _HEADER.pack(SYNC, VERSION, fmt, int(seq) % 2**32, int(timestamp_us), float(sampling_rate),
                          n_ch, 0, n_s)
    inter = c64.T.ravel()
    if fmt == FMT_INT16:
        payload = inter.astype("<i2").tobytes()
    else:
        payload = (inter & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    body = header + sc.tobytes() + bytes(codes) + payload
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


@dataclass
class DecoderStats:
    """What a :class:`FrameDecoder` has seen.

    ``rejected`` (crc + header + torn) counts candidates thrown away; a frame whose sync word was destroyed
    never becomes a candidate, so ``frames_lost`` (from sequence gaps) is the number to watch for loss.
    """

    frames: int = 0
    bytes_in: int = 0
    bytes_skipped: int = 0
    crc_errors: int = 0
    header_errors: int = 0
    torn: int = 0
    frames_lost: int = 0
    seq_gaps: int = 0
    seq_out_of_order: int = 0
    versions_seen: dict[int, int] = field(default_factory=dict)  # other versions -> times seen

    @property
    def rejected(self) -> int:
        return self.crc_errors + self.header_errors + self.torn


class FrameDecoder:
    """Turn a byte stream into frames; resynchronises, never raises, keeps bounded memory.

    Feed it whatever the transport returns (any split, any garbage). Between calls it holds less than
    ``max_frame_size`` bytes: at most one incomplete frame.

    Examples
    --------
    >>> dec = FrameDecoder()
    >>> data = encode_frame(np.zeros((1, 4), int), seq=0, timestamp_us=0, sampling_rate=250.0, scales=[1.0])
    >>> [f.seq for f in dec.feed(b"junk" + data[:10]) + dec.feed(data[10:])]
    [0]
    """

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.max_frame_size = int(max_frame_size)
        self._buf = bytearray()
        self.stats = DecoderStats()
        self._seq = SequenceTracker(modulus=2**32)
        self._warned_version = False

    @property
    def pending_bytes(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop a half-received frame (after a reconnect the next bytes start afresh); counters are kept."""
        self._buf.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return the frames completed by them, in order."""
        frames: list[Frame] = []
        view = memoryview(bytes(data)) if not isinstance(data, bytes | bytearray) else memoryview(data)
        self.stats.bytes_in += len(view)
        for start in range(0, len(view), _FEED_PIECE):
            self._buf += view[start:start + _FEED_PIECE]
            frames.extend(self._parse())
        return frames

    # --- parsing ------------------------------------------------------------------------------------
    def _header_size(self, buf: bytearray, pos: int) -> int:
        """Frame size announced by a plausible header at ``pos``; 0 if the header is impossible."""
        _sync, version, fmt, _seq, _ts, rate, n_ch, reserved, n_s = _HEADER.unpack_from(buf, pos)
        if version != VERSION:
            # garbage can look like a sync word followed by any byte; a version that keeps coming back is real
            self.stats.versions_seen[version] = self.stats.versions_seen.get(version, 0) + 1
            if self.stats.versions_seen[version] == 5 and not self._warned_version:
                logger.warning("frames with protocol version %d keep arriving; this decoder reads version %d "
                               "only. If the firmware was updated, update edge-bridge", version, VERSION)
                self._warned_version = True
            return 0
        if fmt not in BYTES_PER_SAMPLE or reserved != 0:
            return 0
        if not (1 <= n_ch <= MAX_CHANNELS and 1 <= n_s <= MAX_SAMPLES):
            return 0
        if not (math.isfinite(rate) and 0 < rate <= MAX_RATE):
            return 0
        size = frame_size(n_ch, n_s, fmt)
        return size if size <= self.max_frame_size else 0

    def _crc_ok(self, buf: bytearray, pos: int, size: int) -> bool:
        body = memoryview(buf)[pos:pos + size - CRC_SIZE]
        (crc,) = struct.unpack_from("<I", buf, pos + size - CRC_SIZE)
        return (zlib.crc32(body) & 0xFFFFFFFF) == crc

    def _valid_frame_after(self, buf: bytearray, start: int, end: int) -> bool:
        """Is there a complete, CRC-valid frame beginning in ``buf[start:end]``?

        Used while waiting for a long candidate: frames never overlap, so a valid frame inside the span the
        candidate claims proves the candidate is torn or its length field corrupt. Without this check a
        corrupt length would hold back good frames until enough bytes arrived to fail its CRC.
        """
        i = buf.find(SYNC, start, end)
        while i >= 0:
            if len(buf) - i >= HEADER_SIZE:
                size = self._header_size(buf, i)
                if size and len(buf) - i >= size and self._crc_ok(buf, i, size):
                    return True
            i = buf.find(SYNC, i + 1, end)
        return False

    def _parse(self) -> list[Frame]:
        buf = self._buf
        frames: list[Frame] = []
        pos = 0
        n = len(buf)
        while True:
            i = buf.find(SYNC, pos)
            if i < 0:
                keep = 1 if n > pos and buf[n - 1] == SYNC[0] else 0
                self.stats.bytes_skipped += n - pos - keep
                pos = n - keep
                break
            self.stats.bytes_skipped += i - pos
            pos = i
            if n - pos < HEADER_SIZE:
                break
            size = self._header_size(buf, pos)
            if not size:
                self.stats.header_errors += 1
                self.stats.bytes_skipped += 1
                pos += 1
                continue
            if n - pos < size:
                if self._valid_frame_after(buf, pos + 1, n):
                    self.stats.torn += 1
                    self.stats.bytes_skipped += 1
                    pos += 1
                    continue
                break
            if not self._crc_ok(buf, pos, size):
                self.stats.crc_errors += 1
                self.stats.bytes_skipped += 1
                pos += 1
                continue
            frames.append(self._build(buf, pos, size))
            pos += size
        del buf[:pos]
        return frames

    def _build(self, buf: bytearray, pos: int, size: int) -> Frame:
        _sync, _v, fmt, seq, ts, rate, n_ch, _r, n_s = _HEADER.unpack_from(buf, pos)
        off = pos + HEADER_SIZE
        scales = np.frombuffer(bytes(buf[off:off + 4 * n_ch]), dtype="<f4").astype(np.float32)
        off += 4 * n_ch
        codes = tuple(buf[off:off + n_ch])
        off += n_ch
        raw = bytes(buf[off:pos + size - CRC_SIZE])
        if fmt == FMT_INT16:
            inter = np.frombuffer(raw, dtype="<i2").astype(np.int32)
        else:
            b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            inter = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            inter = np.where(inter & 0x800000, inter - 0x1000000, inter).astype(np.int32)
        counts = inter.reshape(n_s, n_ch).T.copy()
        report = self._seq.update_one(seq)
        self.stats.frames += 1
        if report.lost:
            self.stats.frames_lost += report.lost
            self.stats.seq_gaps += report.gaps
            logger.debug("frame sequence gap: %d frame(s) lost before seq %d", report.lost, seq)
        if report.out_of_order:
            self.stats.seq_out_of_order += report.out_of_order
            logger.warning("frame seq %d is behind the last one; the device restarted or reordered frames",
                           seq)
        return Frame(int(seq), int(ts), float(rate), int(fmt), scales, codes, counts)
