"""The embedded default: the demo recording for a bundle, and the demo-bundle cache (no build here)."""

from __future__ import annotations

import json
import shutil

import pytest

from deploy.demo_bundle import DEMO_MINUTES, DemoSettings, demo_bundle_dir, find_demo_bundle
from deploy.live import LabelTrack
from edge_bridge.bundle import Bundle
from edge_bridge.commands._demo_bundle import demo_recording


def test_demo_recording_has_the_models_channels_and_labels(bundle_dir, tmp_path):
    bundle = Bundle.load(bundle_dir)
    csv, labels = demo_recording(bundle, minutes=3, cache=tmp_path)
    side = json.loads(csv.with_name(csv.name + ".json").read_text())
    assert side["sampling_rate"] == 64.0 and [c["name"] for c in side["channels"]] == ["PPG"]
    assert len(csv.read_text().splitlines()) == 3 * 60 * 64
    track = LabelTrack.load(labels)
    assert {label for *_, label in track.spans} == {"baseline", "stress", "amusement"}
    assert demo_recording(bundle, minutes=3, cache=tmp_path) == (csv, labels)  # cached


def test_default_demo_recording_holds_pure_windows_of_every_class(bundle_dir, tmp_path):
    """What `make demo` streams (the whole default recording) covers every class of the task, each in a
    block long enough for many windows of the demo bundle's length that lie inside it (pure windows)."""
    bundle = Bundle.load(bundle_dir)
    csv, labels = demo_recording(bundle, cache=tmp_path)
    assert len(csv.read_text().splitlines()) == DEMO_MINUTES * 60 * 64
    track = LabelTrack.load(labels)
    window, hop = DemoSettings().window_s, DemoSettings().live_hop_s
    pure: dict[str, int] = {}
    t = 0.0
    while t + window <= DEMO_MINUTES * 60:
        label, straddles = track.classify(t, t + window)
        if label is not None and not straddles:
            pure[label] = pure.get(label, 0) + 1
        t += hop
    assert set(pure) == set(bundle.manifest.classes)
    assert min(pure.values()) >= 10, pure


def test_cached_demo_bundle_is_found_only_when_it_verifies(bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings = DemoSettings(roles=(1, 1, 1, 1))
    assert find_demo_bundle(settings) is None
    home = demo_bundle_dir(settings)
    assert home.parent == tmp_path / "edge-bridge" and home != demo_bundle_dir(DemoSettings())
    shutil.copytree(bundle_dir, home / "bundle")
    assert find_demo_bundle(settings) == home / "bundle"
    (home / "bundle" / "golden.npz").write_bytes(b"truncated")
    assert find_demo_bundle(settings) is None  # rebuilt on next use


def test_score_bundle_runs_what_the_device_runs(bundle_dir, tmp_path):
    """The build's held-out check and bench/demo.py score the shipped ONNX chain: the same decisions as
    the device's CompositeRunner on the same windows, per subject and pooled."""
    import dataclasses

    import numpy as np

    from deploy.runtime import CompositeRunner
    from edge_bridge.demo import heldout_line, score_bundle
    from edge_bridge.recordings.paired import windows_from_files
    from edge_bridge.simulate import simulate_dataset

    files = simulate_dataset(tmp_path / "unseen", "stress", subjects=2, minutes=3, seed=7)
    scored = score_bundle(bundle_dir, files)
    bundle = Bundle.load(bundle_dir)
    m = bundle.manifest
    w = windows_from_files(files, dataclasses.replace(m.source, hop_s=5.0),
                           dataclasses.replace(m.target, hop_s=5.0), m.classes)
    runner = CompositeRunner(bundle, "cpu")
    try:
        pred = runner(w.x["target"]).argmax(1)
    finally:
        runner.close()
    keep = w.labels >= 0
    for subj, got in scored["subjects"].items():
        mask = keep & (w.subjects == subj)
        recalls = [np.mean(pred[mask & (w.labels == c)] == c) for c in range(3)
                   if np.any(mask & (w.labels == c))]
        assert got["balanced_accuracy"] == pytest.approx(np.mean(recalls))
        assert got["n"] == mask.sum()
    per = scored["per_subject"]
    assert per["n"] == 2 and per["min"] <= per["mean"] <= per["max"]
    assert "source_model" in scored and "on 2 unseen simulated subjects" in heldout_line(scored)


def _held(scores: list[float], minutes: float = 5.0) -> dict:
    return {"subjects": {f"U{k:02d}": {"balanced_accuracy": v} for k, v in enumerate(scores)},
            "per_subject": {"n": len(scores)}, "minutes": minutes, "hop_s": 1.0}


def test_placement_counts_the_unseen_subjects_at_or_above_the_recording():
    from edge_bridge.demo import placement, placement_line

    p = placement(_held([0.3, 0.5, 0.9, 1.0]), 0.9)
    assert (p["subjects"], p["at_or_above"], p["inside_range"]) == (4, 2, True)
    assert p["mean"] == pytest.approx(0.675) and (p["min"], p["max"]) == (0.3, 1.0)
    assert "2 of 4 scored as well or better (inside their range 0.30-1.00)" in placement_line(p)
    top = placement(_held([0.3, 0.5, 0.9]), 1.0)
    assert (top["at_or_above"], top["inside_range"]) == (0, False)
    assert "outside their range" in placement_line(top)
    with pytest.raises(ValueError, match="no per-subject scores"):
        placement({"subjects": {}}, 0.5)


def test_demo_summary_places_the_recording_only_against_subjects_of_its_length(tmp_path, monkeypatch):
    """deploy's demo summary reads the build's check from the cache and compares like for like."""
    from deploy.report import WindowScores
    from edge_bridge.commands.deploy import _demo_placement

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    home = demo_bundle_dir(DemoSettings())
    home.mkdir(parents=True)
    (home / "settings.json").write_text(json.dumps({"heldout": _held([0.2, 0.6, 0.8])}))

    class Summary:
        scores = WindowScores(["baseline", "stress"])

    for k, (truth, pred) in enumerate([("baseline", "baseline"), ("stress", "baseline"),
                                       ("stress", "stress")]):
        Summary.scores.add(k, k + 60, truth, False, pred, {"baseline": 0.5, "stress": 0.5})
    got = _demo_placement(Summary(), 5.0)  # recall 1.0 and 0.5: balanced accuracy 0.75
    assert got is not None and got["balanced_accuracy"] == pytest.approx(0.75) and got["at_or_above"] == 1
    assert _demo_placement(Summary(), 3.0) is None  # a shorter demo is not compared with 5 min subjects
    Summary.scores = None
    assert _demo_placement(Summary(), 5.0) is None
