"""A tiny bundle for calibration tests, built in milliseconds with onnx.helper (no torch, no exporter).

The parts are fixed random feature extractors with the real tensor names and shapes of a stress-task bundle
on 10 s windows: ``target_front`` x_target (B, 1, 1250) -> h (B, 8); ``source_front`` x_source (B, 1, 1000)
-> z (B, 5, 6); ``source_back`` z -> logits (B, 3); bridge v0001 a random prototype bridge (r=2, P=4).
Paired data are simulated stress subjects written as EDF+.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibrate.weights import PrototypeWeights
from edge_bridge.bundle import (
    BridgeVersion,
    Manifest,
    TensorSpec,
    bridge_file,
    part_spec,
    write_manifest,
)
from edge_bridge.tasks import TASKS

TASK = TASKS["stress"].with_window(10, 5)
D_IN, T, D_OUT, RANK, P = 8, 5, 6, 2, 4
K = 25  # filter length (samples)


def _model(nodes, inputs, outputs, inits) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


def _front(name_in, name_out, length, segs, width, rng, tokens=None):
    """Reshape into filter-length frames, project, rectify, average (per token when ``tokens``)."""
    w = (rng.standard_normal((K, width)) / np.sqrt(K)).astype(np.float32)
    frames = length // K
    if tokens:
        shape = np.array([-1, tokens, frames // tokens, K], dtype=np.int64)
        axis, out_shape = 2, [tokens, width]
    else:
        shape = np.array([-1, frames, K], dtype=np.int64)
        axis, out_shape = 1, [width]
    nodes = [helper.make_node("Reshape", [name_in, "shape"], ["frames"]),
             helper.make_node("MatMul", ["frames", "W"], ["proj"]),
             helper.make_node("Abs", ["proj"], ["rect"]),
             helper.make_node("ReduceMean", ["rect"], [name_out], axes=[axis], keepdims=0)]
    inits = [numpy_helper.from_array(shape, "shape"), numpy_helper.from_array(w, "W")]
    data = _model(nodes, [_vi(name_in, [1, length])], [_vi(name_out, out_shape)], inits)
    return data, w


def numpy_front(x: np.ndarray, w: np.ndarray, tokens: int | None = None) -> np.ndarray:
    frames = x.shape[-1] // K
    if tokens:
        return np.abs(x.reshape(len(x), tokens, frames // tokens, K) @ w).mean(2)
    return np.abs(x.reshape(len(x), frames, K) @ w).mean(1)


def build_bundle(root: Path, *, seed: int = 0, with_source_front: bool = True) -> Path:
    """Write a verified tiny bundle at ``root``."""
    from edge_bridge.recordings.paired import paired_windows
    from edge_bridge.simulate import simulate_subject

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "bridges").mkdir()
    tf, _ = _front("x_target", "h", TASK.target.output_samples, None, D_IN, rng)
    sf, w_s = _front("x_source", "z", TASK.source.output_samples, None, D_OUT, rng, tokens=T)
    # centre the head on real tokens so the source model predicts all classes
    w = paired_windows(simulate_subject("stress", "REF", minutes=4, seed=99), TASK.source, TASK.target)
    z = numpy_front(w.x["source"], w_s, T)
    zf = z.reshape(len(z), -1)
    wb = rng.standard_normal((T * D_OUT, 3)).astype(np.float32)
    wb /= (zf - zf.mean(0)).std(0)[:, None] * np.sqrt(T * D_OUT) + 1e-6
    b = -(zf.mean(0) @ wb).astype(np.float32)
    sb = _model([helper.make_node("Reshape", ["z", "shape"], ["flat"]),
                 helper.make_node("MatMul", ["flat", "Wb"], ["mm"]),
                 helper.make_node("Add", ["mm", "b"], ["logits"])],
                [_vi("z", [T, D_OUT])], [_vi("logits", [3])],
                [numpy_helper.from_array(np.array([-1, T * D_OUT], dtype=np.int64), "shape"),
                 numpy_helper.from_array(wb, "Wb"), numpy_helper.from_array(b, "b")])
    parts = {"target_front": tf, "source_back": sb}
    if with_source_front:
        parts["source_front"] = sf
    for name, data in parts.items():
        (root / f"{name}.onnx").write_bytes(data)
    # the "exported" bridge: prototypes are real tokens, coefficients random (a bridge for another sensor)
    tokens = z.reshape(-1, D_OUT)
    Pi = tokens[rng.choice(len(tokens), P, replace=False)].T
    bridge = PrototypeWeights(rng.standard_normal((RANK, D_IN)), 0.3 * rng.standard_normal((P * T, RANK)),
                              Pi, T)
    onnx_bytes, st = bridge.onnx_bytes(), bridge.safetensors_bytes()
    (root / bridge_file(1, ".onnx")).write_bytes(onnx_bytes)
    (root / bridge_file(1, ".safetensors")).write_bytes(st)
    io = {"target_front": ([TensorSpec("x_target", [None, 1, TASK.target.output_samples])],
                           [TensorSpec("h", [None, D_IN])]),
          "source_front": ([TensorSpec("x_source", [None, 1, TASK.source.output_samples])],
                           [TensorSpec("z", [None, T, D_OUT])]),
          "source_back": ([TensorSpec("z", [None, T, D_OUT])], [TensorSpec("logits", [None, 3])])}
    specs = {name: part_spec(root, f"{name}.onnx", "fp32", *io[name]) for name in parts}
    bspec = part_spec(root, bridge_file(1, ".onnx"), "fp32", [TensorSpec("h", [None, D_IN])],
                      [TensorSpec("z", [None, T, D_OUT])])
    version = BridgeVersion(1, bspec, bridge_file(1, ".safetensors"), hashlib.sha256(st).hexdigest(),
                            "2026-01-01T00:00:00+00:00", "export")
    manifest = Manifest(task="stress", classes=list(TASK.classes), source=TASK.source, target=TASK.target,
                        positions={"i": 1, "j": 1}, parts=specs, bridges={1: version}, current_bridge=1)
    write_manifest(root, manifest)
    return root


@pytest.fixture(scope="session")
def bundle_template(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("tpl") / "tiny.bundle")


@pytest.fixture
def bundle(tmp_path, bundle_template) -> Path:
    """A fresh copy of the tiny bundle per test."""
    dst = tmp_path / "tiny.bundle"
    shutil.copytree(bundle_template, dst)
    return dst


@pytest.fixture(scope="session")
def paired_edf(tmp_path_factory) -> Path:
    """5 minutes of one simulated subject, ECG + PPG in one EDF+ file."""
    from edge_bridge.recordings import write_edf
    from edge_bridge.simulate import simulate_subject

    path = tmp_path_factory.mktemp("rec") / "S01.edf"
    write_edf(simulate_subject("stress", "S01", minutes=5, seed=1), path)
    return path


def _snapshot(root: Path) -> dict[str, str]:
    """Every file's sha256 (dotfiles included): 'changes nothing' means this is identical after."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".calibrate.lock"}


@pytest.fixture
def snapshot():
    """``snapshot(root)``: sha256 of every file of a bundle."""
    return _snapshot


@pytest.fixture
def tiny_bundle_factory():
    """``tiny_bundle_factory(root, with_source_front=...)`` builds a bundle at ``root``."""
    return build_bundle
