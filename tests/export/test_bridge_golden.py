"""Every bridge version self-tests at start: export -> calibrate's publish -> fresh start -> rollback.

The bundle is a real export (tests/export/conftest.py); the new versions go through calibrate's real
publish (``publish_candidate``: lock, ORT golden outputs, atomic files, manifest), and the self-test runs
real ONNX Runtime sessions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibrate.core import publish_candidate, rollback
from calibrate.weights import read_weights
from deploy.runtime import CompositeRunner
from deploy.selftest import SelfTestError
from edge_bridge.bundle import BRIDGE_GOLDEN_KEYS, Bundle, BundleError, publish_bridge, read_golden


def _perturbed(bundle: Bundle, scale: float, seed: int = 0, nan: bool = False) -> tuple[bytes, bytes]:
    w = read_weights(bundle.root / bundle.current_bridge.weights_file)
    rng = np.random.default_rng(seed)
    w.B = (w.B + scale * rng.standard_normal(w.B.shape)).astype(np.float32)
    if nan:
        w.B[:] = np.nan
    return w.onnx_bytes(), w.safetensors_bytes()


def _fresh_self_test(root) -> tuple[int, list[str]]:
    bundle = Bundle.load(root)
    with CompositeRunner(bundle, "cpu") as runner:
        report = runner.self_test()
        return runner.bridge_version, [c.part for c in report.checks if c.passed]


def _snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_writes_v0001_golden(bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    g = m["bridges"]["versions"]["0001"]["golden"]
    assert g["file"] == "bridges/v0001.golden.npz" and (bundle_copy / g["file"]).is_file()
    with np.load(bundle_copy / g["file"], allow_pickle=False) as z:
        assert sorted(z.files) == sorted(BRIDGE_GOLDEN_KEYS)
        base = read_golden(Bundle.load(bundle_copy))
        np.testing.assert_array_equal(z["source_back.logits"], base["source_back.logits"])


def test_calibrated_bundle_starts_like_a_fresh_one_and_after_rollback(bundle_copy):
    b = Bundle.load(bundle_copy)
    onnx_bytes, weights = _perturbed(b, 0.5)
    v2 = publish_candidate(b.root, 1, onnx_bytes, weights, {"method": "test"})
    assert v2 == 2
    m = Bundle.load(bundle_copy).manifest
    assert m.bridges[2].golden_file == "bridges/v0002.golden.npz"
    # the new version's outputs differ from v0001's: golden.npz alone would fail the self-test
    own = read_golden(Bundle.load(bundle_copy))
    old = read_golden(Bundle.load(bundle_copy), 1)
    assert np.abs(own["bridge.z"] - old["bridge.z"]).max() > 1e-2
    assert _fresh_self_test(bundle_copy) == (2, ["target_front", "bridge", "source_back"])
    assert rollback(bundle_copy) == (2, 1)
    assert _fresh_self_test(bundle_copy)[0] == 1
    # roll forward again (a given version) and start fresh
    rollback(bundle_copy, 2)
    assert _fresh_self_test(bundle_copy)[0] == 2


def test_tampered_version_golden_is_refused_by_hash(bundle_copy):
    b = Bundle.load(bundle_copy)
    publish_candidate(b.root, 1, *_perturbed(b, 0.3), {"method": "test"})
    path = bundle_copy / "bridges" / "v0002.golden.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["bridge.z"] = arrays["bridge.z"] + 1.0
    np.savez(path, **arrays)
    with pytest.raises(BundleError, match=r"bridges/v0002\.golden\.npz.*hashes to"):
        Bundle.load(bundle_copy)


def test_a_nan_chain_is_never_published(bundle_copy):
    b = Bundle.load(bundle_copy)
    before = _snapshot(bundle_copy)
    with pytest.raises(BundleError, match="non-finite"):
        publish_candidate(b.root, 1, *_perturbed(b, 0.0, nan=True), {"method": "test"})
    after = _snapshot(bundle_copy)
    after.pop(".calibrate.lock", None)
    before.pop(".calibrate.lock", None)
    assert after == before  # no orphan files, manifest untouched
    assert Bundle.load(bundle_copy).manifest.current_bridge == 1


def test_old_bundles_still_load(bundle_copy):
    """A bundle from before per-version golden files: v0001 self-tests against golden.npz; a later
    version without its own file gives a clear error naming it."""
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["bridges"]["versions"]["0001"].pop("golden")
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    (bundle_copy / "bridges" / "v0001.golden.npz").unlink()
    assert _fresh_self_test(bundle_copy)[0] == 1
    b = Bundle.load(bundle_copy)
    publish_bridge(b, *_perturbed(b, 0.2), origin="calibrate")  # an old calibrate: no golden file
    with pytest.raises(SelfTestError, match=r"bridge v0002 has no expected outputs of its own"):
        _fresh_self_test(bundle_copy)
