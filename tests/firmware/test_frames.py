"""The frame protocol: encoding, decoding, resynchronisation, and a fuzzed decoder that never gives in."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_interface.errors import FrameError
from firmware_interface.frames import (
    _HEADER,
    FMT_INT16,
    FMT_INT24,
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    SYNC,
    FrameDecoder,
    encode_frame,
    frame_size,
)

RNG = np.random.default_rng(0)


def make_frame(seq: int, n_ch: int = 2, n_s: int = 10, fmt: int = FMT_INT16,
               seed: int | None = None) -> bytes:
    rng = np.random.default_rng(seq if seed is None else seed)
    lo, hi = (-(2**15), 2**15 - 1) if fmt == FMT_INT16 else (-(2**23), 2**23 - 1)
    counts = rng.integers(lo, hi + 1, size=(n_ch, n_s))
    return encode_frame(counts, seq=seq, timestamp_us=seq * 40_000, sampling_rate=250.0,
                        scales=np.linspace(0.001, 1.0, n_ch), modalities=["ecg", "ppg", "eeg"][:n_ch] +
                        [""] * max(0, n_ch - 3), sample_format=fmt)


# --- encoding ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "n_ch", "n_s"), [(FMT_INT16, 1, 1), (FMT_INT16, 2, 10), (FMT_INT24, 3, 7),
                                                  (FMT_INT24, 64, 80), (FMT_INT16, 8, 1000)])
def test_round_trip_is_exact(fmt: int, n_ch: int, n_s: int) -> None:
    lo, hi = (-(2**15), 2**15 - 1) if fmt == FMT_INT16 else (-(2**23), 2**23 - 1)
    counts = RNG.integers(lo, hi + 1, size=(n_ch, n_s))
    counts[0, 0], counts[-1, -1] = lo, hi  # the extremes survive
    scales = RNG.uniform(1e-4, 10, n_ch)
    data = encode_frame(counts, seq=2**32 - 1, timestamp_us=2**64 - 1, sampling_rate=128.0, scales=scales,
                        modalities=["ppg"] * n_ch, sample_format=fmt)
    assert len(data) == frame_size(n_ch, n_s, fmt)
    (frame,) = FrameDecoder().feed(data)
    np.testing.assert_array_equal(frame.counts, counts)
    np.testing.assert_array_equal(frame.scales, scales.astype(np.float32))
    assert (frame.seq, frame.timestamp_us, frame.sampling_rate) == (2**32 - 1, 2**64 - 1, 128.0)
    assert frame.modalities == (2,) * n_ch
    f32 = scales.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(frame.values(), counts * f32[:, None])
    assert frame.encode() == data


def test_layout_matches_the_documented_offsets() -> None:
    data = encode_frame(np.array([[1, -2]]), seq=7, timestamp_us=123, sampling_rate=250.0, scales=[0.5],
                        modalities=["ecg"])
    assert data[:2] == SYNC == b"\xeb\xb1"
    assert data[2] == 1 and data[3] == FMT_INT16
    assert struct.unpack_from("<I", data, 4)[0] == 7
    assert struct.unpack_from("<Q", data, 8)[0] == 123
    assert struct.unpack_from("<f", data, 16)[0] == 250.0
    assert (data[20], data[21], struct.unpack_from("<H", data, 22)[0]) == (1, 0, 2)
    assert struct.unpack_from("<f", data, 24)[0] == 0.5 and data[28] == 1
    assert struct.unpack_from("<2h", data, 29) == (1, -2)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"counts": np.array([[40000]])}, r"int16 samples must lie in \[-32768, 32767\]"),
    ({"counts": np.zeros((65, 1), int), "scales": [1.0] * 65}, "1..64 channels"),
    ({"counts": np.zeros((1, 1025), int)}, "1..1024 samples"),
    ({"counts": np.zeros((64, 100), int), "scales": [1.0] * 64, "sample_format": "int24"}, "limit is 16384"),
    ({"counts": np.array([[0.5]])}, "must be integers"),
    ({"sampling_rate": float("nan")}, "sampling rate"),
    ({"scales": [1.0, 2.0]}, "one scale per channel"),
    ({"sample_format": "float32"}, "'int16' or 'int24'"),
])
def test_encode_rejects_what_the_protocol_cannot_carry(kwargs: dict, match: str) -> None:
    args = {"counts": np.zeros((1, 4), int), "seq": 0, "timestamp_us": 0, "sampling_rate": 250.0,
            "scales": [1.0]}
    args.update(kwargs)
    with pytest.raises(FrameError, match=match):
        encode_frame(args.pop("counts"), **args)


# --- decoding ------------------------------------------------------------------------------------------
def test_resynchronises_after_garbage_torn_frames_and_bad_crc() -> None:
    frames = [make_frame(i) for i in range(6)]
    bad = bytearray(frames[3])
    bad[40] ^= 0x10
    stream = (b"\x00\xeb\xb1\x01junk" + frames[0] + frames[1][:17] + frames[2] + bytes(bad) + b"\xeb"
              + frames[4] + frames[5][:-1])
    dec = FrameDecoder()
    got = [f.seq for k in range(0, len(stream), 13) for f in dec.feed(stream[k:k + 13])]
    assert got == [0, 2, 4]
    assert dec.stats.crc_errors + dec.stats.torn + dec.stats.header_errors >= 2
    assert dec.stats.frames_lost == 2  # seq 1 and 3; 5 is still incomplete
    assert dec.pending_bytes == len(frames[5]) - 1
    assert [f.seq for f in dec.feed(frames[5][-1:])] == [5]


def test_corrupt_length_does_not_hold_back_good_frames() -> None:
    """A flipped bit in the sample count makes a frame claim 8 KB; the next frame must still come out now."""
    first = bytearray(make_frame(0))
    struct.pack_into("<H", first, 22, 1000)  # claims 1000 samples: about 4 KB
    dec = FrameDecoder()
    assert dec.feed(bytes(first)) == []
    out = dec.feed(make_frame(1))
    assert [f.seq for f in out] == [1]
    assert dec.stats.torn == 1
    assert dec.pending_bytes == 0


def test_sequence_wrap_is_not_a_gap_and_a_restart_is_out_of_order() -> None:
    dec = FrameDecoder()
    for seq in (2**32 - 2, 2**32 - 1, 0, 1):
        dec.feed(make_frame(seq % 2**32, seed=1))
    assert (dec.stats.frames, dec.stats.frames_lost, dec.stats.seq_out_of_order) == (4, 0, 0)
    dec.feed(make_frame(5, seed=1))
    assert dec.stats.frames_lost == 3
    dec.feed(make_frame(0, seed=1))  # the device rebooted
    assert dec.stats.seq_out_of_order == 1 and dec.stats.frames_lost == 3


def test_impossible_header_is_rejected_at_once() -> None:
    hostile = bytearray(_HEADER.pack(SYNC, 1, FMT_INT24, 0, 0, 250.0, 255, 0, 65535)) + bytes(100)
    dec = FrameDecoder()
    assert dec.feed(bytes(hostile)) == []
    assert dec.stats.header_errors == 1
    assert dec.pending_bytes < HEADER_SIZE


def test_other_protocol_versions_are_skipped() -> None:
    frame = bytearray(make_frame(0))
    frame[2] = 2
    frame[-4:] = struct.pack("<I", zlib.crc32(bytes(frame[:-4])))
    dec = FrameDecoder()
    assert [f.seq for f in dec.feed(bytes(frame) * 6 + make_frame(1))] == [1]
    assert dec.stats.versions_seen.get(2, 0) >= 6


# --- fuzzing -------------------------------------------------------------------------------------------
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096), st.integers(1, 512))
def test_random_bytes_never_raise_and_memory_stays_bounded(data: bytes, step: int) -> None:
    dec = FrameDecoder()
    for k in range(0, len(data), step):
        for f in dec.feed(data[k:k + step]):
            assert f.encode() in data  # anything accepted is a well-formed frame that was really there
        assert dec.pending_bytes < MAX_FRAME_SIZE


@FUZZ
@given(st.integers(0, 3), st.integers(0, 2**16 - 1), st.integers(0, 200_000))
def test_huge_or_hostile_headers_never_raise(n_prefix: int, n_samples: int, extra: int) -> None:
    header = _HEADER.pack(SYNC, 1, FMT_INT24, 9, 0, 250.0, 64, 0, n_samples)
    dec = FrameDecoder()
    dec.feed(b"\xeb" * n_prefix + header)
    dec.feed(bytes(min(extra, 100_000)))
    assert dec.pending_bytes < MAX_FRAME_SIZE
    assert dec.feed(make_frame(3))[-1].seq == 3


damage = st.one_of(
    st.tuples(st.just("flip"), st.integers(16, 10_000), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(1, 10_000), st.just(0)),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=200), st.just(0)),
    st.tuples(st.just("none"), st.just(0), st.just(0)),
)


@FUZZ
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 40), st.sampled_from([FMT_INT16, FMT_INT24]),
                          damage), min_size=1, max_size=12),
       st.integers(1, 300))
def test_exactly_the_intact_frames_come_out(plan: list, step: int) -> None:
    """Frames with bit flips (past the sync word), truncations and garbage between them: every intact frame
    is delivered, bit for bit, in order, and no damaged one is accepted, however the bytes are split."""
    stream = bytearray()
    intact = []
    for seq, (n_ch, n_s, fmt, (kind, where, bit)) in enumerate(plan):
        frame = make_frame(seq, n_ch, n_s, fmt)
        if kind == "flip":
            pos = 2 + where % (len(frame) - 2)
            frame = frame[:pos] + bytes([frame[pos] ^ (1 << bit)]) + frame[pos + 1:]
        elif kind == "truncate":
            frame = frame[: where % len(frame)]
        elif kind == "garbage":
            stream += where
            intact.append(frame)
        else:
            intact.append(frame)
        stream += frame
    dec = FrameDecoder()
    out = []
    for k in range(0, len(stream), step):
        out += dec.feed(bytes(stream[k:k + step]))
        assert dec.pending_bytes < MAX_FRAME_SIZE
    # a garbage run may end in a prefix of the sync word, or the final frame may still be incomplete
    assert [f.encode() for f in out] == intact
