"""Drift detection and the paired watch: reference statistics in the bundle, the score on live BrainFlow
playback streams (unshifted, shifted mid-session, with bad-quality stretches), and the online agreement of
the composite with the source model against a hand computation with ONNX Runtime."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from deploy.drift import DriftMonitor, DriftReference, chi2_isf, drift_score, fit_threshold, normal_isf
from deploy.live import LiveConfig, LivePipeline
from deploy.runtime import CompositeRunner
from edge_bridge.bundle import REFERENCE, Bundle, BundleError, read_reference
from edge_bridge.export.reference import _principal_precision, block_for, reference_arrays, session_arrays

from .drift_helpers import RATE, SOURCE, TARGET, build_bundle, playback_file, run, simulated
from .list_sink import ListSink

linux = pytest.mark.skipif(sys.platform != "linux", reason="BrainFlow's wheel carries Linux x86-64 libraries")
SPEED = 20.0  # playback this many times faster than real time (the windows are the same at any speed)


@pytest.fixture(scope="module")
def paired_bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("drift") / "paired.bundle")


@pytest.fixture(scope="module")
def blind_bundle(tmp_path_factory):
    """Users differ from one another 50 times more than the reference subjects do: the population score's
    threshold is far out of reach, so only the within-session score can see a sensor change."""
    return build_bundle(tmp_path_factory.mktemp("drift") / "blind.bundle", population_spread=50.0)


@pytest.fixture(scope="module")
def signal_bundle(tmp_path_factory):
    """``h`` blind to a sensor change (population null widened 50x, no within-session statistics): only
    the signal descriptors' detectors can see it (their null widened 1.5x: the helper's six held-out
    subjects undersample how users differ, as a real export's dozen need not)."""
    return build_bundle(tmp_path_factory.mktemp("drift") / "signal.bundle", population_spread=50.0,
                        session=False, signal=True, signal_spread=1.5)


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


def _shifted_then_clean(root, tmp_path, change):
    """Stream user U3 with the PPG sensor changing at ``change`` s, then the same user unchanged:
    ``(summary, records)`` of each run."""
    runs = []
    for name, shift in (("shift", change), ("clean", None)):
        _ecg, ppg = simulated("U3", 4, 303, shift_at_s=shift)
        csv = playback_file(tmp_path / f"{name}.csv", None, ppg, speed=SPEED)
        _pipe, summary, records = _live(root, csv)
        runs.append((summary, records))
    return runs


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
    assert dr["session"]["max_score"] < dr["session"]["threshold"]
    # had they reached it, those windows would have been drift: the gate is what keeps the score still
    from edge_bridge.signals import process_windows

    mon_ref = DriftReference(read_reference(Bundle.load(paired_bundle)))
    tf = (paired_bundle / "target_front.onnx").read_bytes()
    k = round(125 * RATE)
    clipped = process_windows(bad[None, None, k:k + TARGET.window_samples], TARGET, check_quality=False)
    h = np.clip(run(tf, {"x_target": clipped}), mon_ref.low, mon_ref.high)
    assert drift_score(h[0], mon_ref.mean, mon_ref.precision) > dr["threshold"]


# --- the within-session detector ------------------------------------------------------------------------
def test_session_arrays_by_hand():
    rng = np.random.default_rng(4)
    d, block = 3, 4
    a, b = rng.standard_normal((14, d)), rng.standard_normal((11, d)) + 2.0
    h = np.concatenate([a, b, rng.standard_normal((5, d))])  # a third subject too short for any diff
    groups = np.array(["A"] * 14 + ["B"] * 11 + ["C"] * 5)
    s = session_arrays(h, groups, block)
    assert int(s["session_baseline"]) == block and int(s["session_subjects"]) == 2
    assert int(s["session_span"]) == 12  # median of the two sessions used (14, 11) -> 12
    want = [x[block + k:2 * block + k].mean(0) - x[:block].mean(0) for x in (a, b)
            for k in range(len(x) - 2 * block + 1)]
    np.testing.assert_allclose(s["session_diffs"], np.array(want), rtol=1e-5, atol=1e-6)
    assert s["session_precision"].shape == (d, d)
    # the within-subject covariance ignores how far apart the subjects' means are
    far = session_arrays(np.concatenate([a, b + 100.0, h[25:]]), groups, block)
    np.testing.assert_allclose(far["session_precision"], s["session_precision"], rtol=1e-6)
    assert session_arrays(h[:14], groups[:14], block) is None  # one subject: no null
    full = reference_arrays(h, rng.standard_normal((len(h), 2)), block=block, groups=groups)
    assert "session_diffs" in full and "session_diffs" not in reference_arrays(h, h[:, :2], block=block)
    with pytest.raises(ValueError, match="subject ids"):
        reference_arrays(h, h[:, :2], block=block, groups=groups[:-1])
    np.testing.assert_allclose(_principal_precision(np.diag([4.0, 1.0]), 0.99), np.diag([0.25, 1.0]))


def _session_ref(d=3, block=2, baseline=2, span=8, seed=5):
    null = np.random.default_rng(seed).normal(0, 0.3, (200, d))
    return DriftReference({"mean": np.zeros(d), "precision": np.eye(d), "prior": np.full(2, 0.5),
                           "block": np.int64(block), "block_means": 100 * null,  # population: out of reach
                           "session_precision": np.eye(d), "session_diffs": null,
                           "session_baseline": np.int64(baseline), "session_span": np.int64(span)})


def test_session_threshold_comes_from_the_budget():
    ref = _session_ref()
    assert ref.has_session
    loose, strict = ref.session_threshold(24.0, 5.0), ref.session_threshold(0.1, 5.0)
    null = ref.session_null_scores()
    np.testing.assert_allclose(null, (ref.session_diffs ** 2).sum(1) / 3)
    assert strict.value > loose.value >= loose.null_max == pytest.approx(null.max())
    assert loose.detector == "session" and loose.p_per_decision == pytest.approx(24 * 5 / 86400)
    assert loose.value == fit_threshold(null, 24.0, 5.0).value
    budgets = [0.01, 0.1, 1.0, 10.0, 100.0]
    values = [ref.session_threshold(b, 5.0).value for b in budgets]
    assert values == sorted(values, reverse=True)  # a smaller budget never lowers the threshold
    with pytest.raises(ValueError, match="session statistics"):
        DriftReference({**{k: getattr(ref, k) for k in ("mean", "precision", "prior", "block_means")},
                        "block": np.int64(2), "session_precision": np.eye(2), "session_diffs": null})


def test_session_monitor_baseline_recent_and_sliding():
    ref = _session_ref()
    mon = DriftMonitor(ref, ref.threshold(1.0, 5.0), ref.session_threshold(1.0, 5.0))
    probs = np.array([0.5, 0.5])
    a, b = np.array([0.1, 0.0, 0.0]), np.array([2.0, 1.0, 0.0])
    for _ in range(3):
        mon.update(a, probs)
    assert mon.session_score is None  # the baseline (2) and one recent block (2) do not fit yet
    assert mon.update(np.full(3, np.nan), probs) is None and mon.session_score is None  # ignored
    mon.update(a, probs)
    assert mon.session_score == pytest.approx(0.0)
    mon.update(b, probs)
    mon.update(b, probs)
    assert mon.session_score == pytest.approx(drift_score(b, a, np.eye(3)))
    assert mon.alarms == 1 and mon.by_detector == {"session": 1} and mon.score < mon.threshold.value
    for _ in range(6):  # the history (span 8) now holds b only: the baseline slid forward
        mon.update(b, probs)
    assert mon.session_score == pytest.approx(0.0) and not mon.drifting
    mon.rebase()
    assert mon.session_score is None and mon.baseline is None


@linux
def test_session_detector_sees_a_mid_session_change_the_population_cannot(blind_bundle, tmp_path):
    change = 90.0
    (summary, records), (clean_summary, clean_records) = _shifted_then_clean(blind_bundle, tmp_path, change)
    drift = _events(records, "drift")
    dr = summary.watch["streams"]["0"]["drift"]
    assert dr["max_score"] < dr["threshold"]  # the population score is blind here
    assert len(drift) == 1 and drift[0]["detector"] == "session" and drift[0]["end_s"] > change
    assert drift[0]["scores"]["session"] > drift[0]["thresholds"]["session"]
    assert dr["alarms_by_detector"] == {"session": 1}
    assert "drift_session_threshold" in summary.watch
    assert any(line.startswith("drift within session:") for line in summary.lines())

    ss = clean_summary.watch["streams"]["0"]["drift"]["session"]
    assert not _events(clean_records, "drift") and ss["baseline_ready"] and ss["max_score"] < ss["threshold"]


@linux
def test_bad_quality_stretches_never_move_the_session_score(blind_bundle, tmp_path):
    _ecg, ppg = simulated("U3", 4, 303)
    bad = ppg.copy()
    a, b = round(100 * RATE), round(150 * RATE)
    bad[a:b] = bad[a]  # detached for 50 s after the baseline
    c, d = round(170 * RATE), round(200 * RATE)
    bad[c:d] = np.clip(bad[c:d], None, np.percentile(bad[c:d], 40))  # then saturated
    csv = playback_file(tmp_path / "bad.csv", None, bad, speed=SPEED)
    _pipe, summary, records = _live(blind_bundle, csv)
    dr = summary.watch["streams"]["0"]["drift"]
    assert summary.skipped >= 10 and dr["windows"] == summary.predicted
    assert not _events(records, "drift") and dr["session"]["max_score"] < dr["session"]["threshold"]


def test_reference_at_another_hop_averages_the_same_seconds():
    """A bundle exported at 5 s hops and run at 1 s (the demo) averages 5x the windows per estimate, so its
    means span the minute the null's did; a reference without a recorded hop stays as it is."""
    rng = np.random.default_rng(3)
    h = rng.standard_normal((60, 4))
    groups = np.repeat([0, 1], 30)
    arrays = reference_arrays(h, h[:, :2], block=6, groups=groups, hop_s=5.0)
    assert float(arrays["hop_s"]) == 5.0
    ref = DriftReference(arrays)
    fast = ref.at_hop(1.0)
    assert (fast.block, fast.session_baseline, fast.hop_s) == (30, 30, 1.0)
    assert fast.session_span == max(round(ref.session_span * 5), 60)
    np.testing.assert_array_equal(fast.null_scores(), ref.null_scores())  # the null itself is unchanged
    assert (ref.block, ref.hop_s) == (6, 5.0)  # a copy: the bundle's reference is not changed
    assert ref.at_hop(5.0) is ref
    old = DriftReference({k: v for k, v in arrays.items() if k != "hop_s"})
    assert old.hop_s is None and old.at_hop(1.0).block == 6


# --- the signal descriptors' detectors --------------------------------------------------------------------
def _signal_ref(d=3, k=2, block=2, seed=6):
    rng = np.random.default_rng(seed)
    base = {"mean": np.zeros(d), "precision": np.eye(d), "prior": np.full(2, 0.5), "block": np.int64(block),
            "block_means": 100 * rng.normal(0, 0.3, (200, d)), "hop_s": np.float64(5.0)}  # h: out of reach
    return DriftReference({**base, "signal_mean": np.zeros(k), "signal_precision": np.eye(k),
                           "signal_block": np.int64(block),
                           "signal_block_means": rng.normal(0, 0.3, (200, k))})


def test_signal_reference_parsed_rescaled_and_optional():
    ref = _signal_ref()
    assert ref.signal is not None and ref.signal.mean.size == 2 and ref.signal.prior.size == 2
    assert ref.signal.signal is None and not ref.signal.has_session
    assert ref.at_hop(1.0).signal.block == 10 and ref.signal.block == 2  # the same seconds as h's block
    pop, ses = ref.signal_thresholds(1.0, 5.0)
    assert pop.detector == "signal" and ses is None
    assert pop.value == fit_threshold(ref.signal.null_scores(), 1.0, 5.0).value
    arrays = {k: getattr(ref, k) for k in ("mean", "precision", "prior", "block_means")}
    assert DriftReference({**arrays, "block": np.int64(2)}).signal is None  # older references: no signal
    with pytest.raises(ValueError, match="signal_precision"):
        DriftReference({**arrays, "block": np.int64(2), "signal_mean": np.zeros(2)})


def test_signal_detector_alarms_where_h_is_still_and_rebases():
    ref = _signal_ref()
    mon = DriftMonitor(ref, ref.threshold(1.0, 5.0), None, ref.signal_thresholds(1.0, 5.0))
    probs, h = np.array([0.5, 0.5]), np.zeros(3)
    for _ in range(4):
        assert mon.update(h, probs, np.array([0.05, -0.05])) is None
    assert mon.update(h, probs) is None and mon.ignored == 1  # no descriptors: the window is left out whole
    assert mon.update(h, probs, np.array([np.nan, 0.0])) is None and mon.ignored == 2
    assert mon.updates == 4
    events = [mon.update(h, probs, np.array([3.0, 3.0])) for _ in range(2)]
    ev = next(e for e in events if e is not None)
    assert ev["event"] == "drift" and ev["detector"] == "signal" and mon.score == pytest.approx(0.0)
    assert ev["scores"]["signal"] > ev["thresholds"]["signal"]
    st = mon.status()
    assert st["alarms_by_detector"] == {"signal": 1} and st["signal"]["max_score"] > st["signal"]["threshold"]
    mon.rebase()  # a calibration kept a bridge for this sensor: its descriptors are the new normal
    np.testing.assert_allclose(mon.signal.mean, [3.0, 3.0])
    for _ in range(3):
        assert mon.update(h, probs, np.array([3.0, 3.0])) is None
    assert mon.signal.score == pytest.approx(0.0) and not mon.drifting


def test_reference_arrays_with_signal_descriptors():
    rng = np.random.default_rng(3)
    h, sig = rng.standard_normal((40, 4)), rng.standard_normal((40, 2))
    groups = np.repeat([0, 1], 20)
    a = reference_arrays(h, h[:, :2], block=4, groups=groups, signal=sig)
    b = reference_arrays(h, h[:, :2], block=4, groups=groups)
    for key, v in b.items():  # the h statistics are exactly as without descriptors
        np.testing.assert_array_equal(a[key], v)
    np.testing.assert_allclose(a["signal_mean"], sig.mean(0))
    assert a["signal_block_means"].shape == (37, 2) and a["signal_session_diffs"].shape[1] == 2
    bad = sig.copy()
    bad[5] = np.nan  # that window is left out of every statistic, h's included
    assert int(reference_arrays(h, h[:, :2], block=4, signal=bad)["windows"]) == 39
    with pytest.raises(ValueError, match="descriptor rows"):
        reference_arrays(h, h[:, :2], block=4, signal=sig[:-1])


@linux
def test_signal_detector_sees_a_sensor_change_h_cannot(signal_bundle, tmp_path):
    change = 90.0
    (summary, records), (clean_summary, clean_records) = _shifted_then_clean(signal_bundle, tmp_path, change)
    drift = _events(records, "drift")
    dr = summary.watch["streams"]["0"]["drift"]
    assert dr["max_score"] < dr["threshold"] and "session" not in dr  # h's detectors are blind here
    assert len(drift) == 1 and drift[0]["detector"] == "signal" and drift[0]["end_s"] > change
    assert any(line.startswith("drift (signal):") for line in summary.watch["notes"])
    sg = dr["signal"]
    assert (f"drift of the signal's descriptors: last score {sg['score']}, max {sg['max_score']} "
            f"(threshold {sg['threshold']})") in "\n".join(summary.lines())

    dr = clean_summary.watch["streams"]["0"]["drift"]
    assert not _events(clean_records, "drift") and dr["signal"]["max_score"] < dr["signal"]["threshold"]
