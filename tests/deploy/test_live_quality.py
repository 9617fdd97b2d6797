"""The live physiological gate: a pulse-less PPG is skipped, counted by reason; --adapt-rate is gone."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np

from deploy.live import LiveConfig, LivePipeline
from deploy.runtime import CompositeRunner
from edge_bridge.bundle import Bundle
from edge_bridge.commands import deploy as deploy_cmd

from .conftest import ppg_like
from .test_live import FakeSource, ListSink


def test_windows_without_a_pulse_are_skipped_and_counted_by_reason(bundle_dir):
    rate, secs = 64.0, 12
    rng = np.random.default_rng(0)
    x = ppg_like(secs, rate)
    x[int(6 * rate):] = rng.standard_normal(x.size - int(6 * rate))  # pulse lost half way
    runner = CompositeRunner(Bundle.load(bundle_dir), "cpu")
    sink = ListSink()
    pipe = LivePipeline(runner, FakeSource(x, rate=rate), [sink], LiveConfig(watch_bridge=False))
    s = pipe.run()
    runner.close()
    assert s.windows == 9 and s.predicted >= 2 and s.skipped >= 5 and s.predicted + s.skipped == s.windows
    assert s.skipped_reasons == {"PPG: low_sqi": s.skipped}
    skipped = [r for r in sink.records if r.get("skipped")]
    assert all(r["quality"] == "PPG: low_sqi" and r["class"] is None for r in skipped)
    assert all(r["start_s"] + 4 > 6 for r in skipped)  # only windows that reach into the noise
    assert "PPG: low_sqi x" in "\n".join(s.lines())


class WristSource(FakeSource):
    """PPG plus a 3-axis accelerometer on the same board (rows PPG, ACC_X, ACC_Y, ACC_Z)."""

    def __init__(self, data, **kw):
        super().__init__(data, **kw)
        self.channels = [SimpleNamespace(name="PPG", modality="ppg")] + [
            SimpleNamespace(name=f"ACC_{a}", modality="acc") for a in "XYZ"]


def test_a_moving_wrist_is_skipped_as_motion(bundle_dir):
    rate, secs = 64.0, 12
    t = np.arange(int(secs * rate)) / rate
    ppg = ppg_like(secs, rate)
    acc = np.stack([0.01 * np.ones_like(t), np.zeros_like(t), np.ones_like(t)])  # gravity: still
    acc[0, t >= 6] += 0.3 * np.sin(2 * np.pi * 1.8 * t[t >= 6])  # arm swing from 6 s on
    runner = CompositeRunner(Bundle.load(bundle_dir), "cpu")
    sink = ListSink()
    pipe = LivePipeline(runner, WristSource(np.vstack([ppg, acc]), rate=rate), [sink],
                        LiveConfig(watch_bridge=False))
    s = pipe.run()
    runner.close()
    assert pipe.streams[0].acc_rows == [1, 2, 3] and pipe.streams[0].rows == [0]
    assert s.windows == 9 and s.skipped >= 5 and s.predicted >= 2
    assert set(s.skipped_reasons) == {"PPG: motion"}
    for r in sink.records:
        assert r.get("skipped", False) == (r["end_s"] > 6.0 + 0.5), r  # the windows the swing reaches


def test_adapt_rate_is_a_deprecated_no_op(capsys):
    p = argparse.ArgumentParser()
    deploy_cmd.add_arguments(p)
    args = p.parse_args(["--adapt-rate"])
    assert "--adapt-rate is deprecated" in capsys.readouterr().err
    assert not hasattr(args, "adapt_rate") or args.adapt_rate in (True, False)


def test_cli_deploy_serves_a_128_hz_playback_to_a_64_hz_bundle(bundle_dir, tmp_path, capsys):
    """BrainFlow's playback board at twice the spec's rate: resampled, the rate in the summary, no flag."""
    import json

    from edge_bridge.cli import main
    from firmware_interface import write_playback_file

    csv = tmp_path / "wrist128.csv"
    write_playback_file([("PPG", "ppg", "a.u.", ppg_like(7, rate=128.0))], 128.0, csv)
    summary = tmp_path / "summary.json"
    code = main(["deploy", "--bundle", str(bundle_dir), "--source", f"playback:{csv}", "--out",
                 str(tmp_path / "p.jsonl"), "--summary-json", str(summary), "--adapt-rate", "-q"])
    assert code == 0
    s = json.loads(summary.read_text())
    assert s["source_rate_hz"] == 128.0 and s["windows"] == 4 and s["predicted"] == 4
    captured = capsys.readouterr()
    assert "--adapt-rate is deprecated" in captured.err and "at 128 Hz" in captured.out
