"""A tiny real bundle for the deploy tests: ONNX graphs built with onnx.helper, golden outputs from ORT.

The graphs are small linear maps with the bundle's tensor names and shapes (only the batch axis dynamic),
so every test runs real ONNX Runtime sessions in milliseconds. The target spec is wrist PPG at 64 Hz with
4 s windows every 1 s, so a few seconds of playback give several windows.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_bridge.bundle import (
    GOLDEN,
    BridgeVersion,
    Bundle,
    Manifest,
    TensorSpec,
    bridge_file,
    part_spec,
    write_manifest,
)
from edge_bridge.signals import Preprocessing

CLASSES = ["baseline", "stress", "amusement"]
TARGET = Preprocessing("ppg", ("PPG",), input_rate=64, output_rate=32, window_s=4, hop_s=1,
                       bandpass=(0.5, 8.0))
SOURCE = Preprocessing("ecg", ("ECG",), input_rate=250, output_rate=100, window_s=4, hop_s=1,
                       bandpass=(0.5, 40.0))
D_IN, T, D_OUT = 8, 4, 6


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "part", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _vi(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


def target_front_model(rng: np.random.Generator) -> onnx.ModelProto:
    c, n = TARGET.input_shape
    w = (rng.standard_normal((c * n, D_IN)) / np.sqrt(c * n)).astype(np.float32)
    return _model([helper.make_node("Reshape", ["x_target", "shape"], ["flat"]),
                   helper.make_node("MatMul", ["flat", "W"], ["pre"]),
                   helper.make_node("Tanh", ["pre"], ["h"])],
                  [_vi("x_target", [c, n])], [_vi("h", [D_IN])],
                  [numpy_helper.from_array(np.array([-1, c * n], np.int64), "shape"),
                   numpy_helper.from_array(w, "W")])


def bridge_model(rng: np.random.Generator, tokens: int = T, d_out: int = D_OUT) -> onnx.ModelProto:
    w = rng.standard_normal((D_IN, tokens * d_out)).astype(np.float32)
    return _model([helper.make_node("MatMul", ["h", "W"], ["flat"]),
                   helper.make_node("Reshape", ["flat", "shape"], ["z"])],
                  [_vi("h", [D_IN])], [_vi("z", [tokens, d_out])],
                  [numpy_helper.from_array(w, "W"),
                   numpy_helper.from_array(np.array([-1, tokens, d_out], np.int64), "shape")])


def source_back_model(rng: np.random.Generator) -> onnx.ModelProto:
    w = rng.standard_normal((D_OUT, len(CLASSES))).astype(np.float32)
    return _model([helper.make_node("ReduceMean", ["z"], ["pooled"], axes=[1], keepdims=0),
                   helper.make_node("MatMul", ["pooled", "W"], ["logits"])],
                  [_vi("z", [T, D_OUT])], [_vi("logits", [len(CLASSES)])],
                  [numpy_helper.from_array(w, "W")])


def source_front_model(rng: np.random.Generator) -> onnx.ModelProto:
    c, n = SOURCE.input_shape
    w = (rng.standard_normal((c * n, T * D_OUT)) / np.sqrt(c * n)).astype(np.float32)
    return _model([helper.make_node("Reshape", ["x_source", "s1"], ["flat"]),
                   helper.make_node("MatMul", ["flat", "W"], ["y"]),
                   helper.make_node("Reshape", ["y", "s2"], ["z"])],
                  [_vi("x_source", [c, n])], [_vi("z", [T, D_OUT])],
                  [numpy_helper.from_array(np.array([-1, c * n], np.int64), "s1"),
                   numpy_helper.from_array(w, "W"),
                   numpy_helper.from_array(np.array([-1, T, D_OUT], np.int64), "s2")])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def build_bundle(root: Path, seed: int = 0) -> Bundle:
    """Write a complete, verifiable bundle (all four parts, bridge v0001, golden.npz) to ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "bridges").mkdir()
    models = {"target_front": target_front_model(rng), "source_back": source_back_model(rng),
              "source_front": source_front_model(rng)}
    bridge = bridge_model(rng)
    for name, model in models.items():
        onnx.save(model, root / f"{name}.onnx")
    onnx.save(bridge, root / bridge_file(1, ".onnx"))
    (root / bridge_file(1, ".safetensors")).write_bytes(b"weights v1")

    x = rng.standard_normal((3, *TARGET.input_shape)).astype(np.float32)
    xs = rng.standard_normal((3, *SOURCE.input_shape)).astype(np.float32)
    h = _run(models["target_front"], {"x_target": x})
    z = _run(bridge, {"h": h})
    logits = _run(models["source_back"], {"z": z})
    zs = _run(models["source_front"], {"x_source": xs})
    np.savez(root / GOLDEN, **{"target_front.x_target": x, "target_front.h": h, "bridge.h": h, "bridge.z": z,
                               "source_back.z": z, "source_back.logits": logits,
                               "source_front.x_source": xs, "source_front.z": zs})

    def ts(name: str, shape: tuple[int, ...]) -> list[TensorSpec]:
        return [TensorSpec(name, [None, *shape])]

    io = {"target_front": (ts("x_target", TARGET.input_shape), ts("h", (D_IN,))),
          "source_back": (ts("z", (T, D_OUT)), ts("logits", (len(CLASSES),))),
          "source_front": (ts("x_source", SOURCE.input_shape), ts("z", (T, D_OUT)))}
    parts = {name: part_spec(root, f"{name}.onnx", "fp32", *io[name]) for name in models}
    bspec = part_spec(root, bridge_file(1, ".onnx"), "fp32", ts("h", (D_IN,)), ts("z", (T, D_OUT)))
    weights = hashlib.sha256(b"weights v1").hexdigest()
    manifest = Manifest(task="stress", classes=list(CLASSES), source=SOURCE, target=TARGET,
                        positions={"i": 1, "j": 1}, parts=parts,
                        bridges={1: BridgeVersion(1, bspec, bridge_file(1, ".safetensors"), weights, "now")},
                        current_bridge=1,
                        golden_sha256=hashlib.sha256((root / GOLDEN).read_bytes()).hexdigest())
    write_manifest(root, manifest)
    return Bundle.load(root)


@pytest.fixture(scope="session")
def master_bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle") / "tiny.bundle").root


@pytest.fixture
def bundle_dir(master_bundle, tmp_path) -> Path:
    """A private copy (tests change bundles: new bridges, corrupted files)."""
    dst = tmp_path / "tiny.bundle"
    shutil.copytree(master_bundle, dst)
    return dst


def ppg_like(seconds: float, rate: float = 64.0, seed: int = 0) -> np.ndarray:
    """A pulse-like signal at about 70 bpm with a little noise (passes the quality gate)."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * 1.17 * t
    return np.sin(phase) + 0.3 * np.sin(2 * phase + 0.5) + 0.02 * rng.standard_normal(t.size)


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
