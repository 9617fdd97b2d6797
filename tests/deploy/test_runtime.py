"""The composite on a device: chaining, warm-up, the golden self-test, clear refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest

from deploy.engines import EngineError, load_engine
from deploy.runtime import CompositeRunner, softmax
from deploy.selftest import SelfTestError, check_part, golden_case
from edge_bridge.bundle import GOLDEN, Bundle, BundleError, read_golden, sha256_file, write_manifest


def test_chain_matches_golden_and_self_test_passes(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    golden = read_golden(bundle)
    with CompositeRunner(bundle, "cpu") as runner:
        assert runner.warm_up(2) > 0
        np.testing.assert_allclose(runner(golden["target_front.x_target"]), golden["source_back.logits"],
                                   rtol=1e-5, atol=1e-5)
        report = runner.self_test()
    assert report.passed and [c.part for c in report.checks] == ["target_front", "bridge", "source_back"]
    assert report.checks[-1].argmax_agreement == 1.0
    p = softmax(np.array([[1000.0, 0.0, -1000.0]]))
    assert np.isfinite(p).all() and p[0, 0] == pytest.approx(1.0)


def _rewrite_golden(bundle_dir, change):
    bundle = Bundle.load(bundle_dir)
    arrays = read_golden(bundle)
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (bundle_dir / GOLDEN).write_bytes(buf.getvalue())
    bundle.manifest.golden_sha256 = sha256_file(bundle_dir / GOLDEN)
    write_manifest(bundle_dir, bundle.manifest)
    return Bundle.load(bundle_dir)


def test_drifted_golden_fails_with_a_clear_message(bundle_dir):
    def drift(a):
        a["source_back.logits"] = a["source_back.logits"] + 0.5

    bundle = _rewrite_golden(bundle_dir, drift)
    with CompositeRunner(bundle, "cpu") as runner, pytest.raises(SelfTestError) as exc:
        runner.self_test()
    msg = str(exc.value)
    assert "source_back" in msg and "FAILED" in msg and "drift" in msg and "--device cpu" in msg
    assert "target_front ok" in msg  # the parts that agree are named as such
    assert "\n" not in msg and "bridge v0001" in msg  # one line, naming the version


def test_plain_golden_names_and_tolerance_keys(bundle_dir):
    golden = read_golden(Bundle.load(bundle_dir))
    plain = {"x_target": golden["target_front.x_target"], "h": golden["target_front.h"],
             "z": golden["bridge.z"], "logits": golden["source_back.logits"]}
    feeds, expected = golden_case(plain, "bridge")
    assert set(feeds) == {"h"} and set(expected) == {"z"}
    assert golden_case(plain, "source_front") is None  # plain "z" is the bridge's, never source_front's
    eng = load_engine(Bundle.load(bundle_dir).part_path("source_back"))
    off = dict(plain, logits=plain["logits"] + 0.05)
    assert not check_part(eng, "source_back", off, "fp32").passed
    off["source_back/atol"] = np.array(0.1)
    assert check_part(eng, "source_back", off, "fp32").passed


def test_corrupted_bundle_is_refused(bundle_dir):
    path = bundle_dir / "target_front.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="hashes to"):
        Bundle.load(bundle_dir)


def test_jetson_without_tensorrt_is_clear(bundle_dir):
    pytest.importorskip("onnxruntime")
    from deploy.engines import trt

    if trt.tensorrt_available() and trt.cuda_available():
        pytest.skip("TensorRT and a GPU are present here; the missing-runtime message cannot be provoked")
    with pytest.raises(EngineError) as exc:
        load_engine(Bundle.load(bundle_dir).part_path("source_back"), "jetson")
    msg = str(exc.value)
    assert "--device cpu" in msg and ("tensorrt" in msg.lower() or "cuda" in msg.lower())


def test_a_graph_that_does_not_match_its_manifest_entry_is_refused(bundle_dir):
    """Hashes and manifest shapes can agree while the file is another graph: the loaded engine tells."""
    import onnx

    from tests.deploy.conftest import bridge_model

    bundle = Bundle.load(bundle_dir)
    wrong = bridge_model(np.random.default_rng(5), tokens=3)  # fewer output tokens than declared
    path = bundle.bridge_path()
    onnx.save(wrong, path)
    bundle.current_bridge.onnx.sha256 = sha256_file(path)  # a consistent but wrong bundle
    write_manifest(bundle.root, bundle.manifest)
    with pytest.raises(BundleError, match="graph's outputs are"):
        CompositeRunner(Bundle.load(bundle_dir), "cpu")
