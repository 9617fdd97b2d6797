"""The live physiological gate: a pulse-less PPG is skipped, counted by reason; --adapt-rate is gone."""

from __future__ import annotations

import argparse

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


def test_adapt_rate_is_a_deprecated_no_op(capsys):
    p = argparse.ArgumentParser()
    deploy_cmd.add_arguments(p)
    args = p.parse_args(["--adapt-rate"])
    assert "--adapt-rate is deprecated" in capsys.readouterr().err
    assert not hasattr(args, "adapt_rate") or args.adapt_rate in (True, False)
