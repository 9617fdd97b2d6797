"""The numpy prototype bridge: its hand-written ONNX and safetensors equal the torch PrototypeBridge's."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibrate.errors import CalibrationError
from calibrate.weights import PrototypeWeights, read_weights, save_bridge_dir

torch = pytest.importorskip("torch")

# name -> (d_in, tokens, d_out, rank, prototypes)
SIZES = {"tiny": (3, 1, 2, 1, 1), "square": (8, 5, 6, 2, 4), "wide-P": (16, 12, 4, 3, 10),
         "paper-ish": (64, 60, 64, 8, 16)}


def _torch_bridge(d_in, tokens, d_out, rank, prototypes):
    from edge_bridge.bridge import PrototypeBridge

    torch.manual_seed(0)
    b = PrototypeBridge(d_in, tokens, d_out, rank=rank, prototypes=prototypes)
    with torch.no_grad():
        b.B.normal_()  # a trained bridge, not the zero init
    return b


def _weights(b) -> PrototypeWeights:
    return PrototypeWeights(b.A.detach().numpy(), b.B.detach().numpy(), b.Pi.detach().numpy(), b.tokens)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_numpy_onnx_equals_torch_bridge(name):
    b = _torch_bridge(*SIZES[name])
    w = _weights(b)
    data = w.onnx_bytes({"method": "test"})
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["h"] and [o.name for o in model.graph.output] == ["z"]
    dims = [d.dim_value or d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", b.tokens, b.d_out]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["edge_bridge.part"] == "bridge" and props["edge_bridge.method"] == "test"
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for n in (1, 7):
        h = np.random.default_rng(n).standard_normal((n, b.d_in)).astype(np.float32)
        want = b(torch.from_numpy(h)).detach().numpy()
        np.testing.assert_allclose(sess.run(None, {"h": h})[0], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(w.forward(h), want, rtol=1e-4, atol=1e-4)


def test_safetensors_round_trip_with_torch_formats(tmp_path):
    from edge_bridge.bridge import load_bridge

    b = _torch_bridge(*SIZES["square"])
    # torch -> numpy: the file PrototypeBridge.save writes
    b.save(tmp_path / "torch")
    w = read_weights(tmp_path / "torch" / "bridge.safetensors")
    assert w.config == b.config
    # numpy -> torch: our directory loads with load_bridge, weights equal
    save_bridge_dir(w, tmp_path / "np", meta={"origin": "calibrate"})
    b2 = load_bridge(tmp_path / "np")
    for k, v in b.state_dict().items():
        torch.testing.assert_close(b2.state_dict()[k], v)
    assert b2.meta == {"origin": "calibrate"}
    # a bundle's vNNNN.safetensors (bytes alone) carries its config in the metadata
    path = tmp_path / "v0002.safetensors"
    path.write_bytes(w.safetensors_bytes())
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        assert json.loads(f.metadata()["config"]) == b.config
    assert read_weights(path).config == b.config


def test_read_weights_refuses_other_bridges(tmp_path):
    from edge_bridge.bridge import LinearBridge

    LinearBridge(4, 2, 3).save(tmp_path / "lin")
    with pytest.raises(CalibrationError, match="prototype"):
        read_weights(tmp_path / "lin" / "bridge.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CalibrationError, match="cannot read"):
        read_weights(tmp_path / "junk.safetensors")


def test_weights_shape_and_value_checks():
    with pytest.raises(CalibrationError, match="do not fit"):
        PrototypeWeights(np.ones((2, 3)), np.ones((7, 2)), np.ones((4, 2)), 3)
    with pytest.raises(CalibrationError, match="non-finite"):
        PrototypeWeights(np.full((2, 3), np.nan), np.ones((6, 2)), np.ones((4, 2)), 3)
