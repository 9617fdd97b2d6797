"""The ONNX Runtime engine on a real graph: named feeds, shape checks, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy.engines import EngineError, load_engine


@pytest.fixture
def matmul_onnx(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["h", "W"], ["z"])],
        "tiny",
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    return path, w


def test_runs_and_reports_io(matmul_onnx):
    path, w = matmul_onnx
    with load_engine(path, "cpu") as eng:
        assert [t.name for t in eng.inputs] == ["h"] and eng.inputs[0].shape == (None, 4)
        h = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
        np.testing.assert_allclose(eng.run({"h": h})["z"], h @ w, rtol=1e-6)


def test_bad_feeds_and_devices_are_clear(matmul_onnx, tmp_path):
    path, _ = matmul_onnx
    eng = load_engine(path)
    with pytest.raises(EngineError, match=r"expected inputs \['h'\]"):
        eng.run({"x": np.zeros((1, 4))})
    with pytest.raises(EngineError, match=r"must have shape \[None, 4\]"):
        eng.run({"h": np.zeros((1, 5))})
    with pytest.raises(EngineError, match="did you mean 'cuda'"):
        load_engine(path, "cdua")
    with pytest.raises(EngineError, match="no such model file"):
        load_engine(tmp_path / "absent.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(path.read_bytes()[:40])
    with pytest.raises(EngineError, match="cannot load"):
        load_engine(broken)
