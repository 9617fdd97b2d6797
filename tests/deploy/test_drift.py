"""Drift detection and the paired watch: reference statistics in the bundle, the score on live BrainFlow
playback streams (unshifted, shifted mid-session, with bad-quality stretches), and the online agreement of
the composite with the source model against a hand computation with ONNX Runtime."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from deploy.drift import DriftMonitor, DriftReference, chi2_isf, drift_score, normal_isf
from deploy.live import LiveConfig, LivePipeline
from deploy.runtime import CompositeRunner
from deploy.sinks import Sink
from edge_bridge.bundle import REFERENCE, Bundle, BundleError, read_reference
from edge_bridge.export.reference import block_for, reference_arrays

from .drift_helpers import RATE, SOURCE, TARGET, build_bundle, playback_file, run, simulated

linux = pytest.mark.skipif(sys.platform != "linux", reason="BrainFlow's wheel carries Linux x86-64 libraries")
SPEED = 20.0  # playback this many times faster than real time (the windows are the same at any speed)


class ListSink(Sink):
    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def paired_bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("drift") / "paired.bundle")


@pytest.fixture
def bundle_copy(paired_bundle, tmp_path):
    dst = tmp_path / "paired.bundle"
    shutil.copytree(paired_bundle, dst)
    return dst


def _live(root, csv, **cfg):
    from firmware_interface import open_source

    runner = CompositeRunner(Bundle.load(root), "cpu")
    sink = ListSink()
    cfg.setdefault("watch_bridge", False)
    pipe = LivePipeline(runner, open_source(f"playback:{csv}"), [sink], LiveConfig(**cfg))
    try:
        summary = pipe.run()
    finally:
        runner.close()
    return pipe, summary, sink.records


def _events(records, name):
    return [r for r in records if r.get("event") == name]


# --- the reference in the bundle ------------------------------------------------------------------------
def test_reference_is_written_hashed_and_loaded(bundle_copy):
    bundle = Bundle.load(bundle_copy)
    ref = bundle.manifest.reference
    assert ref["file"] == REFERENCE and len(ref["sha256"]) == 64
    arrays = read_reference(bundle)
    d = bundle.manifest.parts["target_front"].outputs[0].shape[1]
    assert arrays["mean"].shape == (d,) and arrays["precision"].shape == (d, d)
    assert arrays["prior"].sum() == pytest.approx(1.0)
    assert "x_target" not in " ".join(arrays)  # statistics, not windows
    with open(bundle_copy / REFERENCE, "r+b") as fh:  # one byte changed: the hash no longer matches
        fh.seek(200)
        b = fh.read(1)
        fh.seek(200)
        fh.write(bytes([b[0] ^ 1]))
    with pytest.raises(BundleError, match="reference"):
        Bundle.load(bundle_copy)


def test_signing_covers_the_reference(bundle_copy, tmp_path):
    from edge_bridge.signing import sign_bundle
    from edge_bridge.signing.keys import new_key

    priv, _pub = new_key("publisher", tmp_path / "keys")
    verified = sign_bundle(bundle_copy, priv)
    assert verified.files == len([p for p in bundle_copy.rglob("*") if p.is_file()
                                  and "signatures" not in p.parts and p.name != "manifest.json"])


def test_reference_arrays_by_hand():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((40, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]
    logits = rng.standard_normal((40, 2))
    a = reference_arrays(h, logits, gate_pass_rate=0.9, block=4)
    clipped = np.clip(h, a["clip_center"] - 4 * a["clip_spread"], a["clip_center"] + 4 * a["clip_spread"])
    np.testing.assert_allclose(a["mean"], clipped.mean(0))
    np.testing.assert_allclose(a["block_means"][5], clipped[5:9].mean(0), rtol=1e-6)
    assert a["block_means"].shape == (37, 3)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(a["prior"], p.mean(0))
    assert 0 <= float(a["shrinkage"]) <= 1 and float(a["gate_pass_rate"]) == 0.9
    assert block_for(5.0) == 12 and block_for(1.0) == 60 and block_for(30.0) == 4  # a minute of hops
    # the shrunk covariance keeps each feature's own scale (shrinkage acts on correlations)
    np.testing.assert_allclose(np.sqrt(np.diag(a["covariance"])), clipped.std(0), rtol=1e-6)


def test_old_bundle_without_reference_runs_with_drift_off(tmp_path):
    root = build_bundle(tmp_path / "old.bundle", reference=False)
    bundle = Bundle.load(root)
    assert bundle.manifest.reference is None and read_reference(bundle) is None
    from deploy.watch import LiveWatch

    runner = CompositeRunner(bundle, "cpu")
    try:
        watch = LiveWatch(runner, [], false_alarms_per_day=1.0, paired=False, autocal=None,
                          emit=lambda r: None, pairing=lambda st, spec: "none")
    finally:
        runner.close()
    assert not watch.monitors
    assert any("drift: off (this bundle has no drift reference" in line for line in watch.lines)


# --- the score and the threshold ------------------------------------------------------------------------
def test_threshold_quantiles_and_budget():
    from scipy.stats import chi2, norm

    for p in (0.05, 1e-3, 5.8e-5):
        assert normal_isf(p) == pytest.approx(norm.isf(p), rel=1e-6)
        for k in (1.5, 3.0, 20.0):
            assert chi2_isf(p, k) == pytest.approx(chi2.isf(p, k), rel=1e-6)
    rng = np.random.default_rng(1)
    d = 4
    ref = DriftReference({"mean": np.zeros(d), "precision": np.eye(d), "prior": np.full(2, 0.5),
                          "block": np.int64(5), "block_means": rng.standard_normal((300, d)) * 0.3})
    loose, strict = ref.threshold(24.0, 5.0), ref.threshold(0.1, 5.0)
    assert strict.value > loose.value >= loose.null_max == pytest.approx(ref.null_scores().max())
    assert loose.p_per_decision == pytest.approx(24 * 5 / 86400)


def test_nan_or_wrong_size_features_never_move_the_score():
    d = 3
    null = np.random.default_rng(2).normal(0, 0.1, (50, d))
    ref = DriftReference({"mean": np.zeros(d), "precision": np.eye(d), "prior": np.full(2, 0.5),
                          "block": np.int64(2), "block_means": null})
    mon = DriftMonitor(ref, ref.threshold(1.0, 5.0))
    probs = np.array([0.5, 0.5])
    mon.update(np.full(d, 0.1), probs)
    mon.update(np.full(d, 0.1), probs)
    before = mon.score
    assert before == pytest.approx(drift_score(np.full(d, 0.1), ref.mean, ref.precision))
    for bad in (np.array([np.nan, 0, 0]), np.array([np.inf, 0, 0]), np.zeros(d + 1)):
        assert mon.update(bad, probs) is None
    assert mon.update(np.zeros(d), np.array([np.nan, 1.0])) is None
    assert mon.score == before and mon.ignored == 4 and mon.updates == 2


# --- live, through BrainFlow's playback board -----------------------------------------------------------
@linux
def test_unshifted_user_no_drift_and_paired_agreement_by_hand(paired_bundle, tmp_path):
    ecg, ppg = simulated("U2", 3, 302)
    csv = playback_file(tmp_path / "clean.csv", ecg, ppg, speed=SPEED)
    _pipe, summary, records = _live(paired_bundle, csv)
    preds = [r for r in records if "class" in r and r.get("valid")]
    assert summary.windows == (len(ecg) // int(RATE) - 10) // 5 + 1 and len(preds) == summary.predicted
    assert summary.predicted + summary.skipped == summary.windows
    assert not _events(records, "drift")
    status = summary.watch["streams"]["0"]
    assert status["drift"]["windows"] == summary.predicted and status["drift"]["max_score"] < \
        status["drift"]["threshold"]

    # the paired agreement, by hand: cut both signals at each window, preprocess, run every part with ORT
    from edge_bridge.signals import assess_quality, process_windows

    parts = {p: (paired_bundle / f"{p}.onnx").read_bytes() for p in ("target_front", "source_front",
                                                                      "source_back")}
    bridge = (paired_bundle / "bridges" / "v0001.onnx").read_bytes()
    agree = n = 0
    for r in preds:
        k = round(r["start_s"] * RATE)
        rs, rt = ecg[None, None, k:k + SOURCE.window_samples], ppg[None, None, k:k + TARGET.window_samples]
        if assess_quality(rs, SOURCE).any():
            assert "source_class" not in r
            continue
        xs, xt = process_windows(rs, SOURCE), process_windows(rt, TARGET)
        src = int(np.argmax(run(parts["source_back"], {"z": run(parts["source_front"], {"x_source": xs})})))
        comp = run(parts["source_back"], {"z": run(bridge, {"h": run(parts["target_front"],
                                                                      {"x_target": xt})})})
        assert int(np.argmax(comp)) == TARGET_CLASSES.index(r["class"])
        assert r["source_class"] == TARGET_CLASSES[src]
        n += 1
        agree += int(src == int(np.argmax(comp)))
    paired = status["paired"]
    assert n >= 20 and paired["windows"] == n and paired["agreed"] == agree
    assert paired["agreement"] == pytest.approx(agree / n, abs=1e-4)
    assert _events(records, "paired_agreement")[0]["windows"] == 12
    assert any("paired watch: composite agrees with the source model on" in line for line in summary.lines())


TARGET_CLASSES = ["baseline", "stress", "amusement"]


@linux
def test_shifted_sensor_raises_drift_after_the_change(paired_bundle, tmp_path):
    change = 60.0
    _ecg, ppg = simulated("U2", 3, 302, shift_at_s=change)
    csv = playback_file(tmp_path / "shift.csv", None, ppg, speed=SPEED)  # no chest strap: drift only
    _pipe, summary, records = _live(paired_bundle, csv)
    drift = _events(records, "drift")
    assert len(drift) == 1 and drift[0]["end_s"] > change and drift[0]["score"] > drift[0]["threshold"]
    assert drift[0]["stream"] == "0" and summary.watch["streams"]["0"]["drift"]["alarms"] == 1
    assert "paired" not in summary.watch["streams"]["0"]  # no source modality on this stream
    assert any(line.startswith("drift: 1 alarm(s)") for line in summary.lines())


@linux
def test_flat_and_clipped_windows_never_move_the_score(paired_bundle, tmp_path):
    _ecg, ppg = simulated("U2", 3, 302)
    bad = ppg.copy()
    a, b = round(40 * RATE), round(100 * RATE)
    bad[a:b] = bad[a]  # a detached sensor: flat for a minute
    c, d = round(120 * RATE), round(160 * RATE)
    bad[c:d] = np.clip(bad[c:d], None, np.percentile(bad[c:d], 40))  # saturated: clipped at the rail
    csv = playback_file(tmp_path / "bad.csv", None, bad, speed=SPEED)
    _pipe, summary, records = _live(paired_bundle, csv)
    assert summary.skipped >= 15 and summary.predicted >= 10
    dr = summary.watch["streams"]["0"]["drift"]
    assert dr["windows"] == summary.predicted  # only the model's windows reach the monitor
    assert not _events(records, "drift") and dr["max_score"] < dr["threshold"]
    # had they reached it, those windows would have been drift: the gate is what keeps the score still
    from edge_bridge.signals import process_windows

    mon_ref = DriftReference(read_reference(Bundle.load(paired_bundle)))
    tf = (paired_bundle / "target_front.onnx").read_bytes()
    k = round(125 * RATE)
    clipped = process_windows(bad[None, None, k:k + TARGET.window_samples], TARGET, check_quality=False)
    h = np.clip(run(tf, {"x_target": clipped}), mon_ref.low, mon_ref.high)
    assert drift_score(h[0], mon_ref.mean, mon_ref.precision) > dr["threshold"]
