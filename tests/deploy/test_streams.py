"""One live loop, many streams: batched engine calls, per-stream state and figures, isolation of failures."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from deploy.live import LiveConfig, LiveError, LivePipeline, StreamInput
from deploy.runtime import CompositeRunner, softmax
from edge_bridge.bundle import Bundle
from edge_bridge.signals import process_recording
from firmware_interface.errors import SourceError

from .conftest import TARGET, ppg_like
from .test_live import FakeSource, ListSink


class CountingRunner(CompositeRunner):
    """The real runner; counts engine calls and the batch sizes they carried."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.batches: list[int] = []

    def __call__(self, x):
        self.batches.append(len(x))
        return super().__call__(x)


class DeadSource(FakeSource):
    """A device that is not there: start() fails."""

    def start(self):
        raise SourceError("cannot connect to 10.0.0.9:5555 (connection refused)")


class FailingSource(FakeSource):
    """Delivers ``fail_after`` reads, then fails for good (reconnects ran out)."""

    def __init__(self, *a, fail_after: int, **kw) -> None:
        super().__init__(*a, **kw)
        self.fail_after = fail_after

    def read(self):
        if self.k >= self.fail_after:
            raise SourceError("device lost for good after 5 reconnect attempts")
        return super().read()


def _run(bundle_dir, streams, **cfg):
    runner = CountingRunner(Bundle.load(bundle_dir), "cpu")
    sink = ListSink()
    cfg.setdefault("watch_bridge", False)
    pipe = LivePipeline(runner, streams, [sink], LiveConfig(**cfg))
    try:
        summary = pipe.run()
    finally:
        runner.close()
    return summary, sink.records, runner


def _by_stream(records):
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r["stream"], []).append(r)
    return out


def test_streams_share_one_engine_call_per_hop_and_match_running_alone(bundle_dir):
    secs = 10
    data = {f"bed{k}": ppg_like(secs, seed=k) * (1 + 0.2 * k) for k in range(4)}
    summary, records, runner = _run(bundle_dir, [StreamInput(k, FakeSource(v, chunk=64)) for k, v in
                                                  data.items()])
    expected = (64 * secs - TARGET.window_samples) // TARGET.hop_samples + 1
    per = _by_stream(records)
    assert sorted(per) == sorted(data) and all(len(v) == expected for v in per.values())
    assert summary.windows == summary.predicted == 4 * expected
    # one call per hop carrying every stream's window, not one call per window
    assert len(runner.batches) == expected and set(runner.batches) == {4}
    # the batch changes nothing: each stream alone gives the same classes and probabilities
    for key, x in data.items():
        _, alone, _ = _run(bundle_dir, FakeSource(x, chunk=64))
        a = np.array([list(r["probabilities"].values()) for r in alone])
        b = np.array([list(r["probabilities"].values()) for r in per[key]])
        np.testing.assert_allclose(a, b, atol=2e-5)
        assert [r["class"] for r in alone] == [r["class"] for r in per[key]]
        assert all(r["stream"] == "0" for r in alone)
    d = summary.to_dict()
    assert set(d["streams"]) == set(data)
    assert all(s["windows"] == expected and s["latency"]["n"] == expected - 3 for s in d["streams"].values())
    assert d["latency"]["n"] == 4 * (expected - 3)  # the total takes each stream after its own warm-up
    lines = summary.lines()
    assert lines[0].startswith("streams: 4 in one process") and sum("stream bed" in x for x in lines) == 4


def test_a_stream_that_fails_gaps_or_goes_bad_affects_only_itself(bundle_dir):
    clean = ppg_like(12)
    noisy = ppg_like(12, seed=3)
    noisy[64 * 2: 64 * 2 + 10] = np.nan
    streams = [StreamInput("clean", FakeSource(clean, chunk=32)),
               StreamInput("nan-and-gap", FakeSource(noisy, chunk=32, gaps={12: 100})),
               StreamInput("dies", FailingSource(ppg_like(12, seed=5), chunk=32, fail_after=10)),
               StreamInput("absent", DeadSource(ppg_like(12)))]
    summary, records, _ = _run(bundle_dir, streams)
    per = _by_stream(records)
    s = summary.streams
    expected = (len(clean) - TARGET.window_samples) // TARGET.hop_samples + 1
    assert len(per["clean"]) == expected and all(r["valid"] for r in per["clean"])
    assert s["clean"].skipped == s["clean"].gaps == s["clean"].windower_resets == 0
    assert s["clean"].stop_reason == "end of the recording"
    bad = s["nan-and-gap"]
    assert bad.skipped > 0 and bad.gaps == 1 and bad.lost_samples == 100
    assert s["nan-and-gap"].windower_resets == 1
    assert s["dies"].stop_reason.startswith("source failed: device lost for good")
    assert s["absent"].stop_reason.startswith("source failed to start: cannot connect")
    assert s["absent"].windows == 0 and streams[3].source.stopped  # released like the others
    assert summary.stop_reason == "every stream ended"
    assert summary.lost_samples == 100 and summary.windows == sum(len(v) for v in per.values())
    assert summary.skipped == s["nan-and-gap"].skipped


def test_causal_filtering_in_the_loop_equals_the_file_path(bundle_dir):
    """The stream path (state carried, chunks of 23 samples) gives the file path's model inputs."""
    x = ppg_like(14, seed=7)
    summary, records, _ = _run(bundle_dir, [StreamInput("a", FakeSource(x, chunk=23))], filtering="causal")
    spec = dataclasses.replace(TARGET, filtering="causal")
    xs, starts = process_recording(x[None], spec)
    runner = CompositeRunner(Bundle.load(bundle_dir), "cpu")
    try:
        probs = softmax(runner(xs).astype(np.float64))
    finally:
        runner.close()
    assert summary.predicted == len(starts) == len(records)
    for r, p in zip(records, probs, strict=True):
        assert list(r["probabilities"].values()) == pytest.approx(list(p), abs=2e-5)


def test_stream_ids_must_be_distinct(bundle_dir):
    runner = CompositeRunner(Bundle.load(bundle_dir), "cpu")
    try:
        with pytest.raises(LiveError, match="distinct ids"):
            LivePipeline(runner, [StreamInput("a", FakeSource(ppg_like(5))),
                                  StreamInput("a", FakeSource(ppg_like(5)))], [])
    finally:
        runner.close()


@pytest.mark.skipif(sys.platform != "linux", reason="BrainFlow's wheel carries Linux x86-64 libraries")
def test_two_brainflow_playback_boards_in_one_loop(bundle_dir, tmp_path):
    from firmware_interface import open_source, write_playback_file

    streams = []
    for k in range(2):
        csv = write_playback_file([("PPG", "ppg", "au", ppg_like(6.5, seed=k))], 64.0, tmp_path / f"r{k}.csv")
        streams.append(StreamInput(f"wrist{k}", open_source(f"playback:{csv}")))
    summary, records, runner = _run(bundle_dir, streams)
    per = _by_stream(records)
    assert sorted(per) == ["wrist0", "wrist1"] and all(len(v) >= 2 for v in per.values())
    assert all(r["valid"] for r in records) and summary.lost_samples == 0
    # every window went through an engine call, never more calls than windows (the boards' hops meet in
    # one call when they fall in the same turn of the loop, which real-time timing does not promise)
    assert sum(runner.batches) == len(records) and len(runner.batches) <= len(records)
