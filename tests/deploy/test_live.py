"""The live loop on an in-memory source: windows per hop, quality gate, gaps, smoothing, bridge swap."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from deploy.live import LabelTrack, LiveConfig, LiveError, LivePipeline, Smoother, _gap_index
from deploy.runtime import CompositeRunner
from deploy.sinks import JsonlSink
from deploy.stats import LatencyStats
from edge_bridge.bundle import Bundle, publish_bridge
from firmware_interface.source import Chunk, SourceStats

from .conftest import TARGET, bridge_model, ppg_like
from .list_sink import ListSink


class FakeSource:
    """A Source over an array: ``chunk`` samples per read, optionally paced, with injected gaps."""

    def __init__(self, data, rate=64.0, chunk=32, pace=0.0, gaps=None, name="PPG", modality="ppg"):
        self.data = np.atleast_2d(np.asarray(data, dtype=np.float64))
        self.sampling_rate = rate
        self.channels = [SimpleNamespace(name=name, modality=modality)]
        self.chunk, self.pace, self.gaps = chunk, pace, dict(gaps or {})
        self.pos, self.k, self.t_next = 0, 0, 0.0
        self.started = self.stopped = False
        self.stats = SourceStats()

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True

    def read(self):
        now = time.monotonic()
        n = self.data.shape[1]
        if self.pace and now < self.t_next:
            return Chunk(np.empty((1, 0)), np.empty(0), finished=False)
        self.t_next = now + self.pace
        lost = self.gaps.pop(self.k, 0)
        self.pos += lost
        sl = slice(self.pos, min(self.pos + self.chunk, n))
        data = self.data[:, sl]
        ts = np.arange(sl.start, sl.start + data.shape[1]) / self.sampling_rate
        self.pos = sl.stop
        self.k += 1
        self.stats.samples += data.shape[1]
        self.stats.lost_samples += lost
        self.stats.gaps += int(lost > 0)
        return Chunk(data, ts, gaps=int(lost > 0), lost_samples=lost, finished=self.pos >= n)


def _pipe(bundle_dir, source, **cfg):
    runner = CompositeRunner(Bundle.load(bundle_dir), "cpu")
    sink = ListSink()
    cfg.setdefault("watch_bridge", False)
    return LivePipeline(runner, source, [sink], LiveConfig(**cfg)), sink, runner


def test_windows_every_hop_with_the_right_fields(bundle_dir, tmp_path):
    secs = 12
    x = ppg_like(secs)
    pipe, sink, runner = _pipe(bundle_dir, FakeSource(x))
    jsonl = tmp_path / "p.jsonl"
    pipe.sinks.append(JsonlSink(jsonl))
    summary = pipe.run()
    expected = (len(x) - TARGET.window_samples) // TARGET.hop_samples + 1
    assert summary.windows == summary.predicted == expected == len(sink.records)
    assert pipe.source.started and pipe.source.stopped and summary.stop_reason == "end of the recording"
    r = sink.records[0]
    assert set(r) >= {"time", "window", "start_s", "end_s", "class", "probabilities", "quality", "latency_ms",
                      "bridge", "source_time"}
    assert r["class"] in ("baseline", "stress", "amusement") and r["quality"] == "ok"
    assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert [q["start_s"] for q in sink.records] == [float(k) for k in range(expected)]
    assert r["source_time"] == pytest.approx((TARGET.window_samples - 1) / 64.0)
    assert summary.latency["n"] == expected - 3 and summary.latency["p99_ms"] > 0
    assert 0 < summary.real_time_factor < 1 and summary.signal_seconds == pytest.approx(secs)
    assert len(jsonl.read_text().splitlines()) == expected
    runner.close()


def test_quality_gate_skips_nan_and_flat_windows(bundle_dir):
    x = ppg_like(20)
    x[64 * 2 : 64 * 2 + 10] = np.nan  # windows 0..2 contain NaN
    x[64 * 12 : 64 * 18] = 0.25  # 6 s flat: windows starting at 12, 13, 14 are entirely flat
    pipe, sink, runner = _pipe(bundle_dir, FakeSource(x))
    s = pipe.run()
    skipped = [r for r in sink.records if r.get("skipped")]
    assert s.skipped == len(skipped) and s.predicted + s.skipped == s.windows
    reasons = {r["quality"] for r in skipped}
    assert any("nonfinite" in q for q in reasons) and any("flat" in q for q in reasons)
    assert all(r["class"] is None and r["probabilities"] is None for r in skipped)
    assert {r["start_s"] for r in skipped} >= {0.0, 1.0, 2.0, 12.0, 13.0, 14.0}
    assert sum(s.skipped_reasons.values()) == s.skipped
    assert any("skipped" in line for line in s.lines())
    runner.close()


def test_a_window_never_straddles_a_gap(bundle_dir):
    x = ppg_like(30)
    pipe, sink, runner = _pipe(bundle_dir, FakeSource(x, chunk=32, gaps={10: 100}))
    s = pipe.run()
    assert s.gaps == 1 and s.lost_samples == 100 and s.windower_resets == 1
    gap_start, gap_end = 10 * 32 / 64, (10 * 32 + 100) / 64
    for r in sink.records:
        assert r["end_s"] <= gap_start + 1e-3 or r["start_s"] >= gap_end - 1e-3, r
    assert sink.records[-1]["end_s"] <= 30.0 + 1e-9  # the signal clock counts the lost samples
    runner.close()


def test_gap_index():
    ts = np.array([0.0, 0.1, 0.2, 1.0, 1.1])
    assert _gap_index(ts, None) == 3
    assert _gap_index(np.array([5.0, 5.1]), np.array([1.0])) == 0


def test_rate_and_channel_mismatch_are_clear(bundle_dir):
    with pytest.raises(LiveError, match=r"needs ppg above 16 Hz; the source delivers 12 Hz.*too slow"):
        _pipe(bundle_dir, FakeSource(np.zeros(10), rate=12.0))
    pipe, _, runner = _pipe(bundle_dir, FakeSource(ppg_like(8, rate=128), rate=128.0))  # resampled by default
    summary = pipe.run()
    assert pipe.spec.input_rate == 128 and summary.predicted == 5 and summary.source_rate_hz == 128
    assert "at 128 Hz" in "\n".join(summary.lines())
    runner.close()
    with pytest.raises(LiveError, match=r"needs channel 'PPG'.*ECG \(ecg\)"):
        _pipe(bundle_dir, FakeSource(np.zeros(10), name="ECG", modality="ecg"))
    pipe, _, runner = _pipe(bundle_dir, FakeSource(np.zeros(10), name="PPG1"))  # by modality
    assert pipe.rows == [0]
    runner.close()


def test_smoothing_and_labels_and_stats():
    sm = Smoother("ema", alpha=0.5)
    sm.update(np.array([1.0, 0.0]))
    p, k = sm.update(np.array([0.0, 1.0]))
    assert np.allclose(p, [0.5, 0.5]) and k == 0
    mj = Smoother("majority", n=3)
    for v in ([0.6, 0.4], [0.4, 0.6], [0.45, 0.55]):
        p, k = mj.update(np.array(v))
    assert k == 1
    with pytest.raises(ValueError, match="smoothing must be one of"):
        Smoother("median")
    track = LabelTrack([(0.0, 60.0, "baseline"), (60.0, 60.0, "stress")])
    assert track.label_at(10, 20) == "baseline" and track.label_at(55, 65) is None
    st = LatencyStats(warmup=2)
    for v in (1.0, 1.0, 0.001, 0.002, 0.003):
        st.add(v)
    s = st.summary()
    assert s["n"] == 3 and s["max_ms"] == 3.0 and s["p50_ms"] == 2.0


def _publish(bundle_dir, model, origin="calibrate"):
    publish_bridge(Bundle.load(bundle_dir), model.SerializeToString(), b"w-" + origin.encode(), origin=origin)


def test_live_bridge_swap_without_dropping_windows(bundle_dir):
    x = ppg_like(120)
    src = FakeSource(x, chunk=32, pace=0.01)
    pipe, sink, runner = _pipe(bundle_dir, src, watch_bridge=True, watch_interval=0.05)
    new = bridge_model(np.random.default_rng(42))

    def later():
        while len(sink.records) < 20:
            time.sleep(0.01)
        _publish(bundle_dir, new)

    t = threading.Thread(target=later)
    t.start()
    s = pipe.run()
    t.join()
    expected = (len(x) - TARGET.window_samples) // TARGET.hop_samples + 1
    assert s.windows == s.predicted == expected == len(sink.records)  # nothing dropped
    versions = [r["bridge"] for r in sink.records]
    assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions)
    assert s.bridge_versions == [1, 2] and "switched bridge v0001 -> v0002" in s.bridge_events[0]
    runner.close()


def test_broken_bridge_keeps_the_old_one(bundle_dir):
    x = ppg_like(60)
    pipe, sink, runner = _pipe(bundle_dir, FakeSource(x, chunk=32, pace=0.01), watch_bridge=True,
                               watch_interval=0.05)
    broken = bridge_model(np.random.default_rng(1), tokens=4, d_out=5)  # z of the wrong shape
    assert isinstance(broken, onnx.ModelProto)

    def later():
        while len(sink.records) < 10:
            time.sleep(0.01)
        _publish(bundle_dir, broken)

    t = threading.Thread(target=later)
    t.start()
    s = pipe.run()
    t.join()
    assert {r["bridge"] for r in sink.records} == {1} and s.predicted == s.windows
    assert s.bridge_versions == [1]
    assert any("v0002 failed its self-test" in e and "keeping bridge v0001" in e for e in s.bridge_events)
    runner.close()


def test_sinks(tmp_path, monkeypatch):
    import json

    from deploy import sinks

    path = tmp_path / "sub" / "p.jsonl"
    sink = JsonlSink(path)
    sink.write({"a": float("nan"), "b": [1.5, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None]}  # flushed per line, strict JSON
    sink.close()
    monkeypatch.setattr(sinks, "have_pylsl", lambda: False)
    with pytest.raises(sinks.SinkError, match="pip install pylsl"):
        sinks.make_sinks(None, lsl=True, classes=["a"], rate=1.0)
