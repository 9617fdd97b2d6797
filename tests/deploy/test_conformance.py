"""One conformance check for every backend: the same golden.npz within the stated tolerance.

The CPU case always runs. CUDA and TensorRT run where their runtime and a GPU exist and are skipped
elsewhere with the reason printed (``pytest -ra`` shows it). The TensorRT case also checks that the plan
cache is keyed by device, TensorRT version and ONNX sha256 and is reused on the second load.
"""

from __future__ import annotations

import pytest

from deploy.engines import EngineError
from deploy.runtime import CompositeRunner
from edge_bridge.bundle import Bundle


def _skip_reason(device: str) -> str | None:
    if device == "cpu":
        return None
    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return f"no CUDA execution provider in this onnxruntime ({ort.get_available_providers()})"
        return None
    from deploy.engines import trt

    problem = trt.missing_runtime()
    if problem:
        return f"TensorRT backend unavailable here: {problem}"
    try:
        trt.device_name()
    except EngineError as exc:
        return f"no GPU: {exc}"
    return None


@pytest.mark.parametrize("device", ["cpu", "cuda", "jetson"])
def test_backend_matches_golden(device, bundle_dir, tmp_path, monkeypatch):
    reason = _skip_reason(device)
    if reason:
        print(f"SKIP {device}: {reason}")
        pytest.skip(reason)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle = Bundle.load(bundle_dir)
    with CompositeRunner(bundle, device) as runner:
        runner.warm_up(2)
        report = runner.self_test()
    assert report.passed, [c.line() for c in report.checks]
    if device == "jetson":
        from deploy.engines import trt

        plans = sorted((tmp_path / "cache" / "edge-bridge" / "trt").rglob("*.plan"))
        assert len(plans) == 3 and all(p.with_suffix(".json").is_file() for p in plans)
        stamps = [p.stat().st_mtime_ns for p in plans]
        with CompositeRunner(bundle, device) as runner:  # second load reuses the cached plans
            assert runner.self_test().passed
        assert [p.stat().st_mtime_ns for p in plans] == stamps
        assert plans[0].parent.parent.name == trt.device_name()
