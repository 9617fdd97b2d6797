"""The C header encodes the same bytes as Python, and the Python decoder reads them back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from firmware_interface.frames import FMT_INT16, FMT_INT24, FrameDecoder, encode_frame

INCLUDE = Path(__file__).resolve().parents[2] / "firmware_interface" / "include"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def pattern(fmt: int, seq: int, n_s: int, n_ch: int) -> np.ndarray:
    """The test pattern of edge_bridge_frame_example.c, shape (n_channels, n_samples)."""
    s, c = np.meshgrid(np.arange(n_s, dtype=np.int64), np.arange(n_ch, dtype=np.int64), indexing="xy")
    if fmt == FMT_INT16:
        return (s * 1103 + c * 7919 + seq * 31) % 65536 - 32768
    return (s * 1103515 + c * 12345 + seq * 777) % 16777216 - 8388608


def python_frames() -> list[bytes]:
    out = [encode_frame(pattern(FMT_INT16, seq, 5, 2), seq=seq, timestamp_us=1_000_000 + 20_000 * seq,
                        sampling_rate=250.0, scales=[0.001, 2.5], modalities=["ecg", "ppg"],
                        sample_format="int16")
           for seq in range(3)]
    for k in range(2):
        seq = (2**32 - 1 + k) % 2**32
        out.append(encode_frame(pattern(FMT_INT24, seq, 4, 3), seq=seq,
                                timestamp_us=0xFFFFFFFF00000000 + 31250 * k, sampling_rate=128.0,
                                scales=[0.0625, 1e-4, 3.0], modalities=["eeg", "emg", ""],
                                sample_format="int24"))
    return out


@pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on PATH")
def test_c_encoder_matches_python_byte_for_byte(tmp_path: Path) -> None:
    exe = tmp_path / "eb_example"
    build = subprocess.run([CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion",
                            f"-I{INCLUDE}", str(INCLUDE / "edge_bridge_frame_example.c"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, f"{CC} failed:\n{build.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, timeout=30)
    assert run.returncode == 0
    expected = python_frames()
    assert run.stdout == b"".join(expected)
    frames = FrameDecoder().feed(run.stdout)
    assert [f.encode() for f in frames] == expected
    assert [f.seq for f in frames] == [0, 1, 2, 2**32 - 1, 0]
    np.testing.assert_array_equal(frames[3].counts, pattern(FMT_INT24, 2**32 - 1, 4, 3))
    assert frames[3].modalities == (3, 4, 0) and frames[0].sampling_rate == 250.0


def test_the_compiler_check_reports_its_reason() -> None:
    if CC is None:
        print("no C compiler found: the byte-for-byte C test is skipped", file=sys.stderr)
    assert INCLUDE.joinpath("edge_bridge_frame.h").is_file()
