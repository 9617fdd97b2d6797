"""The embedded default: the demo recording for a bundle, and the demo-bundle cache (no build here)."""

from __future__ import annotations

import json
import shutil

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
