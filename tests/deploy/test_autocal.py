"""``--auto-calibrate`` end to end on a tiny paired bundle, with a real BrainFlow playback board (sped up)
and a real ``edge-bridge calibrate`` child process: drift -> durable recording -> child calibrate ->
publish -> hot swap -> judged by the paired watch -> rollback when worse; no window dropped. And the cases
where the cycle cannot run (no source modality on the stream, options that exclude it)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy.autocal import AutoCalibrateConfig
from deploy.live import LiveConfig, LiveError, LivePipeline
from deploy.runtime import CompositeRunner
from edge_bridge.bundle import Bundle

from .drift_helpers import RATE, build_bundle, playback_file, simulated
from .list_sink import ListSink

linux = pytest.mark.skipif(sys.platform != "linux", reason="BrainFlow's wheel carries Linux x86-64 libraries")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    # a source model that decides "baseline" throughout: calibrate then judges a refit on its alignment loss
    # (--min-states 1), which a refit of this random-feature model lowers, so a bridge gets published
    return build_bundle(tmp_path_factory.mktemp("autocal") / "paired.bundle", baseline_bias=50.0)


@pytest.fixture
def bundle(template, tmp_path):
    dst = tmp_path / "paired.bundle"
    shutil.copytree(template, dst)
    return dst


def _run(root, csv, auto):
    from firmware_interface import open_source

    runner = CompositeRunner(Bundle.load(root), "cpu")
    sink = ListSink()
    pipe = LivePipeline(runner, open_source(f"playback:{csv}"), [sink],
                        LiveConfig(watch_interval=0.2, auto_calibrate=auto))
    try:
        summary = pipe.run()
    finally:
        runner.close()
    return summary, sink.records, runner


def _steps(records):
    return [r["step"] for r in records if r.get("event") == "autocal"]


@linux
def test_drift_record_calibrate_swap_and_roll_back_when_worse(bundle, tmp_path):
    minutes = 11.0
    ecg, ppg = simulated("U2", minutes, 302, shift_at_s=60)  # the wrist sensor changes after a minute
    csv = playback_file(tmp_path / "session.csv", ecg, ppg, speed=12)
    # margin 1.01: no bridge can beat the old agreement by that, so the cycle must roll back by itself
    auto = AutoCalibrateConfig(minutes=4.0, margin=1.01, eval_windows=8, record_dir=tmp_path / "autocal",
                               min_states=1,  # this source model decides one class throughout
                               calibrate_args=("--method", "closed-form", "--min-states", "1", "--holdout",
                                               "0.3"))
    summary, records, runner = _run(bundle, csv, auto)

    steps = _steps(records)
    assert steps == ["recording", "calibrating", "published", "swapped", "rolling_back", "rolled_back"], \
        [(r.get("step"), r.get("detail")) for r in records if r.get("event") == "autocal"]
    ev = {r["step"]: r for r in records if r.get("event") == "autocal"}
    drift = [r for r in records if r.get("event") == "drift"]
    assert drift and drift[0]["end_s"] > 60 and drift[0]["time"] <= ev["recording"]["time"]
    # the durable recording: a BrainFlow CSV + sidecar with both modalities, 4 min of samples
    rec = ev["recording"]["file"]
    side = json.loads(Path(f"{rec}.json").read_text())
    assert {c["name"] for c in side["channels"]} == {"ECG", "PPG"} and side["sampling_rate"] == RATE
    with open(rec) as fh:
        assert sum(1 for _ in fh) == round(4.0 * 60 * RATE)
    assert ev["calibrating"]["nice"] == 10 and ev["calibrating"]["paired_windows_before"] > 0
    assert ev["published"]["version"] == 2 and ev["swapped"]["bridge"] == 2
    rb = ev["rolling_back"]
    assert rb["paired_windows_after"] == 8 and rb["agreement_after"] < rb["agreement_before"] + 1.01
    # the new bridge really ran between windows, and the old one is current again, in the bundle too
    bridges = [r["bridge"] for r in records if "class" in r and r.get("valid")]
    assert 2 in bridges and bridges[-1] == 1 and runner.bridge_version == 1
    assert Bundle.load(bundle).manifest.current_bridge == 1 and summary.bridge_versions == [1, 2, 1]
    # no window dropped while recording and calibrating: every hop of the file has its window
    assert summary.lost_samples == 0 and summary.windows == summary.predicted + summary.skipped
    assert summary.windows == (len(ecg) // int(RATE) - 10) // 5 + 1
    assert summary.watch["autocal"]["steps"] == steps
    assert any("auto-calibrate: 1 cycle(s)" in line for line in summary.lines())


@linux
def test_without_the_source_modality_the_event_says_what_to_do(bundle, tmp_path):
    _ecg, ppg = simulated("U2", 3, 302, shift_at_s=60)
    csv = playback_file(tmp_path / "wrist.csv", None, ppg, speed=20)
    summary, records, _ = _run(bundle, csv, AutoCalibrateConfig(record_dir=tmp_path / "autocal"))
    ev = [r for r in records if r.get("event") == "autocal"]
    assert [e["step"] for e in ev] == ["unavailable"]
    assert "edge-bridge calibrate --bundle" in ev[0]["detail"] and "--record" in ev[0]["detail"]
    assert not (tmp_path / "autocal").exists() and summary.bridge_versions == [1]


def test_auto_calibrate_needs_the_watcher_and_one_stream(bundle):
    from deploy.live import StreamInput

    runner = CompositeRunner(Bundle.load(bundle), "cpu")
    try:
        with pytest.raises(LiveError, match="--no-watch"):
            LivePipeline(runner, _NoSource(), [], LiveConfig(watch_bridge=False,
                                                             auto_calibrate=AutoCalibrateConfig()))
        with pytest.raises(LiveError, match="single stream"):
            LivePipeline(runner, [StreamInput("a", _NoSource()), StreamInput("b", _NoSource())], [],
                         LiveConfig(auto_calibrate=AutoCalibrateConfig()))
    finally:
        runner.close()


class _NoSource:
    """A wrist source that is never started: the option checks come before anything streams."""

    sampling_rate = 250.0
    channels = (SimpleNamespace(name="PPG", modality="ppg"),)

    def start(self):
        pass

    def stop(self):
        pass


def test_cli_refuses_auto_calibrate_with_no_watch(bundle, capsys):
    from edge_bridge.cli import main

    rc = main(["deploy", "--bundle", str(bundle), "--source", "synthetic", "--auto-calibrate", "--no-watch"])
    assert rc != 0 and "--no-watch" in capsys.readouterr().err


@pytest.mark.parametrize(("classes", "want_s"), [((0, 0, 0, 0, 0, 1), 7.5), ((0,) * 6, 18.0)])
def test_recording_runs_on_until_the_source_model_decided_enough_states(tmp_path, classes, want_s):
    """Past its minutes the recording goes on until the source model has decided ``min_states`` classes
    (calibrate cannot judge a refit on one state), and ends at ``max_minutes`` whatever it saw; calibrate
    then gets the same ``--min-states``. BrainFlow's synthetic board describes the rows."""
    import numpy as np

    from deploy.autocal import AutoCalibrator
    from firmware_interface import open_source

    source = open_source("synthetic")
    rate = 10.0
    config = AutoCalibrateConfig(minutes=0.1, max_minutes=0.3, min_states=2, record_dir=tmp_path / "rec")
    cal = AutoCalibrator(tmp_path / "b.bundle", config, lambda: 1)
    (ev,) = cal.on_drift("0", source, True, rate)
    assert ev["step"] == "recording" and ev["seconds"] == 6.0 and ev["max_seconds"] == 18.0
    chunk = np.zeros((int(source.num_rows), 15))  # 1.5 s of rows per hop
    for hop in range(20):
        cal.paired("0", 1, True, classes[min(hop, len(classes) - 1)])
        cal.feed("0", chunk)
    assert cal._rec is not None and cal._rec.finished
    assert cal._rec.samples == round(want_s * rate)
    cal._rec._thread.join(10)
    with open(ev["file"]) as fh:
        assert sum(1 for _ in fh) == round(want_s * rate)  # the durable file holds exactly that
    (started,) = cal.tick()  # a calibrate child on a bundle that does not exist: it fails, cleanly
    assert started["step"] == "calibrating" and started["recorded_s"] == want_s
    assert started["source_states"] == len(set(classes))
    assert "--min-states 2" in " ".join(cal._child.args)
    cal._child.wait(60)
    assert [e["step"] for e in cal.tick()] == ["failed"]


def test_auto_calibrate_config_refuses_a_shorter_maximum():
    with pytest.raises(ValueError, match="max_minutes"):
        AutoCalibrateConfig(minutes=3.0, max_minutes=2.0)
    with pytest.raises(ValueError, match="min_states"):
        AutoCalibrateConfig(min_states=0)


def test_keep_or_roll_back_compares_balanced_agreement_over_states():
    """A bridge that decides the majority state everywhere agrees often; over two states it tells apart
    nothing (balanced 0.5), and a refit that tells them apart at 0.8 each is the better one."""
    from deploy.autocal import _Tally, compare

    before, after = _Tally(), _Tally()
    for k in range(100):  # 90 windows of state 0, 10 of state 1; the old bridge says 0 always
        state = 0 if k < 90 else 1
        before.add(state == 0, state)
        after.add(k % 5 != 0, state)  # right on 4 of 5 windows of either state
    assert before.rate > after.rate  # plain agreement (0.9 vs 0.8) would roll the better bridge back
    assert compare(before, after) == ("balanced", 0.5, 0.8)
    one = _Tally()
    for _ in range(30):
        one.add(True, 0)
    one.add(False, 1)  # one flicker window is no state
    assert one.states() == [0] and compare(before, one)[0] == "plain"
