"""Export writes the drift reference: statistics of the shipped target_front on the held-out windows."""

from __future__ import annotations

import numpy as np

from edge_bridge.bundle import REFERENCE, read_reference
from edge_bridge.export.onnx_export import ort_session, run_session
from edge_bridge.export.reference import block_for


def test_export_writes_the_reference_of_the_shipped_graphs(bundles, tiny):
    bundle = bundles["cpu"]
    m = bundle.manifest
    assert m.reference is not None and m.reference["file"] == REFERENCE
    assert REFERENCE in m.report["file_bytes"]  # a bundle file like the others, in the size report
    ref = read_reference(bundle)
    holdout = tiny.windows(48, 1)  # export_tiny's held-out windows
    h = run_session(ort_session(bundle.part_path("target_front")), "target_front", holdout.target)
    lo = ref["clip_center"] - ref["clip"] * ref["clip_spread"]
    hi = ref["clip_center"] + ref["clip"] * ref["clip_spread"]
    np.testing.assert_allclose(ref["mean"], np.clip(h, lo, hi).mean(0), rtol=1e-5, atol=1e-6)
    assert int(ref["windows"][0]) == len(holdout) and int(ref["block"][0]) == block_for(m.target.hop_s)
    assert ref["prior"].shape == (len(m.classes),) and np.isclose(ref["prior"].sum(), 1.0)


def test_held_out_subjects_give_the_within_session_null(bundles, tiny, tmp_path):
    from types import SimpleNamespace

    from edge_bridge.export.exporter import WindowSet
    from edge_bridge.export.reference import write_reference

    bundle = bundles["cpu"]
    holdout = tiny.windows(48, 1)
    subjects = np.repeat(["S1", "S2", "S3"], 16)
    w = SimpleNamespace(x={"target": holdout.target, "source": holdout.source}, labels=holdout.labels,
                        subjects=subjects)
    ws = WindowSet.from_windows(w, "test")  # what export's held-out set carries from the run's windows
    np.testing.assert_array_equal(ws.subjects, subjects)
    files = {"target_front": bundle.part_path("target_front"), "source_back": bundle.part_path("source_back"),
             "bridge": bundle.bridge_path()}
    assert write_reference(tmp_path, files, ws.target, hop_s=None, groups=ws.subjects) is not None
    ref = dict(np.load(tmp_path / REFERENCE, allow_pickle=False))
    one = {k: v.reshape(-1)[0] for k, v in ref.items() if v.size == 1}
    assert "session_diffs" not in ref and one["block"] == 12  # 16 windows: no later block after 12
    h = run_session(ort_session(files["target_front"]), "target_front", ws.target)
    lo = ref["clip_center"] - ref["clip"] * ref["clip_spread"]
    hi = ref["clip_center"] + ref["clip"] * ref["clip_spread"]
    hc = np.clip(h, lo, hi)
    two = np.repeat(["S1", "S2"], 24)  # two subjects of 24 windows: 1 later block each
    assert write_reference(tmp_path, files, ws.target, groups=two) is not None
    ref = dict(np.load(tmp_path / REFERENCE, allow_pickle=False))
    want = [hc[k * 24 + 12:k * 24 + 24].mean(0) - hc[k * 24:k * 24 + 12].mean(0) for k in (0, 1)]
    np.testing.assert_allclose(ref["session_diffs"], np.array(want), rtol=1e-4, atol=1e-5)
    one = {k: v.reshape(-1)[0] for k, v in ref.items() if v.size == 1}
    assert one["session_subjects"] == 2 and one["session_span"] == 24


def test_reference_uses_every_held_out_window_when_the_guard_sees_a_thinned_set(tiny, tmp_path):
    """The guard's held-out set may be thinned to bound its cost; the drift reference's minute means need
    the windows at the spec's hop, so export computes it from every held-out window it was given."""
    every = tiny.windows(80, 1)
    bundle = tiny.export(tmp_path / "b.bundle", precision="fp32", holdout=every.head(40),
                         reference_windows=every)
    ref = read_reference(bundle)
    assert int(ref["windows"][0]) == 80
    assert float(ref["hop_s"][0]) == bundle.manifest.target.hop_s
    h = run_session(ort_session(bundle.part_path("target_front")), "target_front", every.target)
    lo = ref["clip_center"] - ref["clip"] * ref["clip_spread"]
    hi = ref["clip_center"] + ref["clip"] * ref["clip_spread"]
    np.testing.assert_allclose(ref["mean"], np.clip(h, lo, hi).mean(0), rtol=1e-5, atol=1e-6)
    # the signal descriptors' statistics, of the same windows through the one descriptor function
    from edge_bridge.signals.descriptors import signal_descriptors

    d = signal_descriptors(every.target, bundle.manifest.target)
    lo = ref["signal_clip_center"] - ref["signal_clip"] * ref["signal_clip_spread"]
    hi = ref["signal_clip_center"] + ref["signal_clip"] * ref["signal_clip_spread"]
    np.testing.assert_allclose(ref["signal_mean"], np.clip(d, lo, hi).mean(0), rtol=1e-5, atol=1e-6)
    assert ref["signal_block_means"].shape[1] == d.shape[1]
