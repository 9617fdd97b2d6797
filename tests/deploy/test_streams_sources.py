"""Wearables over TCP as a hub sees them: cheap polling, per-hop draining, and the loop's results.

Everything here is real: :class:`~firmware_interface.FrameEmulator` serves frames on 127.0.0.1,
:class:`~firmware_interface.FrameSource` receives them, and the live loop runs the tiny test bundle in
ONNX Runtime. The emulators play faster than real time so each test takes a second or two.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from deploy.live import LiveConfig, LivePipeline, StreamInput
from deploy.runtime import CompositeRunner, softmax
from edge_bridge.bundle import Bundle
from edge_bridge.signals import cut_windows, process_windows
from firmware_interface import Corruption, FrameEmulator, FrameSource, TcpTransport, open_source
from firmware_interface.buffer import SequenceTracker
from firmware_interface.errors import SourceError
from firmware_interface.source import concat_chunks

from .conftest import TARGET, ppg_like
from .test_live import ListSink


@pytest.mark.parametrize("modulus", [2**32, 256, None])
def test_scalar_sequence_count_equals_the_array_form(modulus):
    """The frame decoder's per-frame form must count exactly what the array form counts."""
    rng = np.random.default_rng(4)
    m = modulus or 65536
    steps = rng.choice([1, 1, 1, 1, 0, 2, 5, -3, m // 2 + 7], size=3000)
    values = np.mod(np.cumsum(steps) + m - 10, m)  # starts near the wrap, so it wraps
    one, many = SequenceTracker(modulus), SequenceTracker(modulus)
    for v in values:
        r1 = one.update_one(int(v))
    for part in np.array_split(values, 37):
        r2 = many.update(part)
    assert (one.gaps, one.lost, one.out_of_order, one.repeats, one.last) == \
        (many.gaps, many.lost, many.out_of_order, many.repeats, many.last)
    assert one.gaps > 10 and one.out_of_order > 10 and one.repeats > 10  # the sequence exercises each case
    assert isinstance(r1.lost, int) and r2.gaps >= 0


def _emulator(seconds: float, *, spf: int = 10, rate: float = 64.0, speed: float = 4.0, seed: int = 0,
              corruption: Corruption | None = None) -> FrameEmulator:
    return FrameEmulator(ppg_like(seconds, rate, seed)[None], rate, modalities=["ppg"], samples_per_frame=spf,
                         speed=speed, corruption=corruption).start()


def test_polling_a_quiet_source_often_returns_empty_chunks_and_loses_no_count():
    """A hub polls each wearable far more often than frames come; the empty answers must not drop the
    gap counts or samples that the next real chunk carries."""
    emu = _emulator(6, speed=3, corruption=Corruption(drop=0.15, seed=3))
    chunks, empty = [], 0
    try:
        with FrameSource(TcpTransport("127.0.0.1", emu.port), hop=0.05) as src:
            while not emu.done.is_set():
                c = src.read()
                if c.n_samples:
                    chunks.append(c)
                else:
                    empty += 1
                    assert c.data.shape == (1, 0) and c.timestamps.shape == (0,) and c.connected
                time.sleep(0.002)
            time.sleep(0.2)
            chunks.append(src.read())
            stats = src.stats
    finally:
        emu.stop()
    got = concat_chunks(chunks)
    good = sorted(emu.log.sent)
    spf = emu.spf
    assert empty > 10 * len(chunks) / 2  # most polls found nothing new
    np.testing.assert_array_equal(got.data, np.concatenate([emu.values[:, s * spf:(s + 1) * spf]
                                                            for s in good], axis=1))
    missing = [s for s in range(good[0], good[-1] + 1) if s not in set(good)]
    assert len(missing) >= 3  # the test bites
    assert sum(c.lost_samples for c in chunks) == stats.lost_samples == len(missing) * spf
    assert sum(c.gaps for c in chunks) == stats.gaps > 0


def test_a_fast_device_is_drained_once_per_hop_not_once_per_frame():
    """125 frames/s of 2 samples: with a 0.1 s hop each drain carries about 12 frames; a device switched
    off right after its last frame still delivers every frame before the source reports it gone."""
    emu = _emulator(3, spf=2, rate=250.0, speed=1.0)
    sizes = []
    src = FrameSource(TcpTransport("127.0.0.1", emu.port), hop=0.1, max_reconnects=0)
    try:
        src.start()
        while True:
            if emu.done.is_set():
                emu.stop()  # closes the connection at once, frames still in flight
            try:
                c = src.read()
            except SourceError as exc:
                assert "could not reconnect" in str(exc)
                break
            if c.n_samples:
                sizes.append(c.n_samples)
            time.sleep(0.004)
    finally:
        src.stop()
        emu.stop()
    assert sum(sizes) == len(emu.log.sent) * 2 == emu.n_frames * 2 and src.stats.lost_samples == 0
    # read every 4 ms, frames every 8 ms: per-frame draining would give chunks of one frame (2 samples)
    assert np.median(sizes) >= 10, sizes


class CountingFrameSource(FrameSource):
    """The real frame source; counts the reads that handed over samples."""

    reads_with_samples = 0

    def read(self):
        chunk = super().read()
        self.reads_with_samples += bool(chunk.n_samples)
        return chunk


def test_tcp_wearables_in_one_loop_give_the_file_path_results(bundle_dir):
    """Three emulated wearables over TCP, one loop: every window of each, equal to the file path on what
    the wearable sent (the frames' int16 values), each stream read about once per hop, not per frame."""
    emus = [_emulator(8, seed=k, speed=4.0) for k in range(3)]

    def stop_when_sent(e: FrameEmulator) -> None:  # a wearable switched off after its recording
        e.done.wait(30)
        time.sleep(0.3)
        e.stop()

    threads = [threading.Thread(target=stop_when_sent, args=(e,), daemon=True) for e in emus]
    for t in threads:
        t.start()
    runner = CompositeRunner(Bundle.load(bundle_dir), "cpu")
    sink = ListSink()
    try:
        streams = [StreamInput(f"w{k}", open_source(f"tcp:127.0.0.1:{e.port}", max_reconnects=0))
                   for k, e in enumerate(emus[:2])]
        counted = CountingFrameSource(TcpTransport("127.0.0.1", emus[2].port), max_reconnects=0)
        streams.append(StreamInput("w2", counted))
        summary = LivePipeline(runner, streams, [sink], LiveConfig(watch_bridge=False)).run()
        for k, e in enumerate(emus):
            recs = [r for r in sink.records if r["stream"] == f"w{k}"]
            sent = e.values[:, :e.n_frames * e.spf]  # whole frames only
            raw, _ = cut_windows(sent, TARGET)
            expected = softmax(runner(process_windows(raw, TARGET)).astype(np.float64))
            assert len(recs) == len(expected) == (sent.shape[1] - TARGET.window_samples) // 64 + 1
            got = np.array([list(r["probabilities"].values()) for r in recs])
            np.testing.assert_allclose(got, expected, atol=2e-5)
    finally:
        runner.close()
        for e in emus:
            e.stop()
    assert summary.lost_samples == 0 and summary.predicted == len(sink.records)
    # 51 frames arrived; the loop read when a window could be cut (4 hops to fill the first, then one per
    # window) and once more at the end, not once per frame
    windows = summary.streams["w2"].windows
    assert counted.reads_with_samples <= windows + TARGET.window_samples // TARGET.hop_samples + 3
    assert all(s.stop_reason.startswith("source failed") for s in summary.streams.values())


def test_request_stop_winds_the_reader_down_without_waiting_and_stop_releases():
    """A hub asks every source to stop first (they wind down together), then releases each."""
    emus = [_emulator(30, seed=k, speed=1.0) for k in range(3)]
    srcs = [FrameSource(TcpTransport("127.0.0.1", e.port)) for e in emus]
    try:
        for s in srcs:
            s.start()
        threads = [s._thread for s in srcs]
        for s in srcs:
            s.request_stop()  # returns at once; the threads finish on their own
        for t in threads:
            t.join(timeout=5)
        assert not any(t.is_alive() for t in threads)
        for s in srcs:
            s.stop()
            assert not s.connected
    finally:
        for e in emus:
            e.stop()
