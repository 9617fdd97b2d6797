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
