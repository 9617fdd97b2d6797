"""The prototype bridge as plain numpy arrays: forward pass, safetensors bytes and an ONNX graph, no torch.

A device refits the bridge without torch (and without the ``onnx`` package), so this module rebuilds what
:class:`edge_bridge.bridge.PrototypeBridge` computes, with the same weights and the same file formats::

    c = reshape(B (A h), (P, T))     # (N, P, T)
    z = (Pi c)^T                     # (N, T, D_out)

Files, the same as ``PrototypeBridge.save`` writes (so :func:`edge_bridge.bridge.load_bridge` reads them):

- ``*.safetensors``: float32 tensors ``A`` (r, d_in), ``B`` (P*T, r), ``Pi`` (D_out, P); metadata
  ``{"kind": "prototype", "config": "<json of the bridge config>"}``. The config is also implied by the
  shapes (d_in, rank, prototypes, d_out from A and Pi; tokens = rows of B / P), so a weights file written
  by the exporter without the ``config`` entry reads just as well. A fused bridge (K target modalities,
  ``PrototypeBridge(d_in=[d_1, ..., d_K])``) has ``A_0`` ... ``A_{K-1}`` (each (r, d_k)) instead of ``A``,
  the tensor names of its ``state_dict``, and ``d_in`` is the list of widths in its config.
- ``bridge_config.json`` (only in a directory written by :func:`save_bridge_dir`, for host tools):
  ``schema_version``, ``tool_version``, ``kind``, ``config``, ``meta``, ``parameters``.

In a bundle each version is ``bridges/vNNNN.onnx`` + ``bridges/vNNNN.safetensors``; the config travels in
the safetensors metadata, not in a third file, so a version is always exactly the two files the manifest
hashes.

The ONNX graph (``h -> MatMul A^T -> MatMul B^T -> Reshape (N, P, T) -> MatMul Pi -> Transpose``) is
serialised by a minimal protocol-buffers writer (:func:`bridge_onnx_bytes`): the device has onnxruntime but
not necessarily the ``onnx`` package. A test checks the bytes with ``onnx.checker`` and against the torch
bridge.

Fused bridges are held as one bridge over the concatenated input: ``A = [A_0 | ... | A_{K-1}]``
(r, sum d_k), because ``sum_k A_k h_k = A concat(h_k)``. So the refits (closed form and gradient steps)
work on the concatenation exactly as on a single input (K = 1 is the concatenation of one), and only the
files split ``A`` back into the ``A_k``. The fused ONNX graph takes the bundle's inputs ``h, h_<key>, ...``
(the names the exporter gives them), concatenates them and runs the single-input graph.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibrate.errors import CalibrationError
from edge_bridge import __version__

logger = logging.getLogger(__name__)

KIND = "prototype"
CONFIG_NAME = "bridge_config.json"  # as edge_bridge.bridge
WEIGHTS_NAME = "bridge.safetensors"
CONFIG_SCHEMA_VERSION = 1  # edge_bridge.models.io.SCHEMA_VERSION
OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.14 (older Jetson images)
METADATA_PREFIX = "edge_bridge."
_FUSED_A = re.compile(r"^A_[0-9]+$")  # a fused bridge's input maps, as PrototypeBridge names them


@dataclass
class PrototypeWeights:
    """Weights of a prototype bridge (float32 arrays).

    Attributes
    ----------
    A : ndarray, shape (r, d_in)
        For a fused bridge ``[A_0 | ... | A_{K-1}]``, d_in = sum of the ``input_dims``.
    B : ndarray, shape (P*T, r)
    Pi : ndarray, shape (D_out, P)
    tokens : int
        T, output tokens.
    input_dims : tuple of int
        The K input widths ``d_k`` (default: one input of width d_in, the paper's bridge).
    input_names : tuple of str
        The ONNX graph's input names, one per input, in order (default ``("h",)`` for one input; a fused
        bridge takes the bundle's ``("h", "h_<key>", ...)``, which only the bundle knows).

    Refits build their results with :func:`dataclasses.replace` on the bridge they start from, so a fused
    bridge's input layout travels through the one (concatenated) code path unchanged.
    """

    A: np.ndarray
    B: np.ndarray
    Pi: np.ndarray
    tokens: int
    input_dims: tuple[int, ...] = ()
    input_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.A = np.ascontiguousarray(self.A, dtype=np.float32)
        self.B = np.ascontiguousarray(self.B, dtype=np.float32)
        self.Pi = np.ascontiguousarray(self.Pi, dtype=np.float32)
        r, d = self.A.shape
        _, p = self.Pi.shape
        if self.B.shape != (p * self.tokens, r):
            raise CalibrationError(
                f"prototype bridge weights do not fit: A {self.A.shape}, B {self.B.shape}, "
                f"Pi {self.Pi.shape} "
                f"with T={self.tokens}; expected B of shape ({p * self.tokens}, {r})")
        for name in ("A", "B", "Pi"):
            if not np.isfinite(getattr(self, name)).all():
                raise CalibrationError(f"bridge weight {name} has non-finite values; refusing to use it")
        self.input_dims = tuple(int(k) for k in self.input_dims) or (d,)
        if sum(self.input_dims) != d or min(self.input_dims) < 1:
            raise CalibrationError(f"a fused bridge's input widths {list(self.input_dims)} must be positive "
                                   f"and add up to A's {d} columns")
        self.input_names = tuple(self.input_names) or (("h",) if len(self.input_dims) == 1 else ())
        if self.input_names and (len(self.input_names) != len(self.input_dims)
                                 or len(set(self.input_names)) != len(self.input_names)):
            raise CalibrationError(f"the bridge has {len(self.input_dims)} inputs (widths "
                                   f"{list(self.input_dims)}) but input names {list(self.input_names)}; give "
                                   "one distinct name per input, in order")

    # --- sizes ----------------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.A.shape[1])

    @property
    def prototypes(self) -> int:
        return int(self.Pi.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.Pi.shape[0])

    @property
    def n_inputs(self) -> int:
        """K, the target modalities feeding the bridge (1 for the paper's bridge)."""
        return len(self.input_dims)

    @property
    def config(self) -> dict[str, Any]:
        """The ``PrototypeBridge`` constructor arguments (``d_in`` the list of K widths when fused)."""
        d_in: int | list[int] = self.d_in if self.n_inputs == 1 else list(self.input_dims)
        return {"d_in": d_in, "tokens": self.tokens, "d_out": self.d_out, "rank": self.rank,
                "prototypes": self.prototypes}

    @property
    def n_parameters(self) -> int:
        return int(self.A.size + self.B.size + self.Pi.size)

    def input_maps(self) -> list[np.ndarray]:
        """``[A]`` for one input, else ``[A_0, ..., A_{K-1}]`` (each (r, d_k)): ``A`` split by input."""
        edges = np.cumsum(self.input_dims)[:-1]
        return np.split(self.A, edges, axis=1) if self.n_inputs > 1 else [self.A]

    def tensors(self) -> dict[str, np.ndarray]:
        """The weights by their torch ``state_dict`` names: ``A`` (fused: ``A_0..A_{K-1}``), ``B``, ``Pi``.

        Why those names: ``Bundle.load``, ``load_bridge`` and rollback read a published version like an
        exported one, and the exporter writes the torch bridge's ``state_dict``.
        """
        maps = self.input_maps()
        named = {"A": maps[0]} if self.n_inputs == 1 else {f"A_{k}": np.ascontiguousarray(a)
                                                            for k, a in enumerate(maps)}
        return {**named, "B": self.B, "Pi": self.Pi}

    def copy(self) -> PrototypeWeights:
        return dataclasses.replace(self, A=self.A.copy(), B=self.B.copy(), Pi=self.Pi.copy())

    # --- compute --------------------------------------------------------------------------------------
    def coefficients(self, h: np.ndarray) -> np.ndarray:
        """Mixture weights ``(N, P, T)``."""
        c = (np.asarray(h, dtype=np.float64) @ self.A.T.astype(np.float64)) @ self.B.T.astype(np.float64)
        return c.reshape(-1, self.prototypes, self.tokens)

    def forward(self, h: np.ndarray) -> np.ndarray:
        """``z`` of shape ``(N, T, D_out)`` in float64 (the reference the ONNX graph must match)."""
        c = self.coefficients(h)  # (N, P, T)
        return np.einsum("dp,npt->ntd", self.Pi.astype(np.float64), c)

    # --- files ----------------------------------------------------------------------------------------
    def safetensors_bytes(self, meta: dict[str, Any] | None = None) -> bytes:
        """The weights as a safetensors file (:meth:`tensors`: ``A`` or ``A_k``, ``B``, ``Pi``), config in the
        metadata."""
        from safetensors.numpy import save

        metadata = {"kind": KIND, "config": json.dumps(self.config, sort_keys=True)}
        if meta:
            metadata["meta"] = json.dumps(meta, sort_keys=True, default=str)
        return save(self.tensors(), metadata=metadata)

    def onnx_bytes(self, metadata: dict[str, str] | None = None) -> bytes:
        return bridge_onnx_bytes(self, metadata)


def read_weights(path: str | os.PathLike[str], input_names: Sequence[str] | None = None) -> PrototypeWeights:
    """Read a prototype bridge's safetensors (from a bundle or a ``PrototypeBridge.save`` directory).

    Parameters
    ----------
    path : path-like
    input_names : sequence of str, optional
        The bridge graph's input names (a bundle's ``h, h_<key>, ...``); given, the file must hold one
        input map per name (``A`` for one, ``A_0..A_{K-1}`` for K).

    Raises
    ------
    CalibrationError
        Not a readable safetensors file, not a prototype bridge (the message names the keys found), or
        not as many input maps as ``input_names``.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read the bridge weights ({exc}); the bundle is damaged, "
                               "copy it again") from None
    kind = meta.get("kind", KIND)
    fused = sorted((k for k in tensors if _FUSED_A.match(k)), key=lambda k: int(k[2:]))
    maps = ["A"] if "A" in tensors else fused
    if (kind != KIND or not {"B", "Pi"} <= set(tensors) or not maps or ("A" in tensors and fused)
            or (maps != ["A"] and maps != [f"A_{k}" for k in range(len(maps))])):
        raise CalibrationError(
            f"{path}: calibration refits prototype bridges (tensors A, B, Pi; a fused one A_0..A_K-1, B, "
            f"Pi); this file holds a {kind!r} bridge with tensors {sorted(tensors)}. Export the bundle from "
            "a prototype-bridge run")
    As, B, Pi = [tensors[k] for k in maps], tensors["B"], tensors["Pi"]
    if (any(a.ndim != 2 or a.shape[0] != As[0].shape[0] for a in As) or B.ndim != 2 or Pi.ndim != 2
            or B.shape[0] % Pi.shape[1]):
        shapes = ", ".join(f"{k} {tensors[k].shape}" for k in [*maps, "B", "Pi"])
        raise CalibrationError(f"{path}: bridge tensors have shapes {shapes}, which do not form a prototype "
                               "bridge")
    tokens = B.shape[0] // Pi.shape[1]
    if "config" in meta:
        try:
            cfg = json.loads(meta["config"])
            tokens = int(cfg.get("tokens", tokens))
        except (json.JSONDecodeError, TypeError, ValueError):
            logger.warning("%s: unreadable config in the metadata; using the tensor shapes", path)
    names = tuple(input_names) if input_names is not None else ()
    if names and len(names) != len(As):
        raise CalibrationError(
            f"{path}: the bundle's bridge takes {len(names)} input(s) {list(names)} but its weights hold "
            f"{len(As)} input map(s) ({', '.join(maps)}); the weights belong to another bridge, re-export "
            "the bundle")
    A = As[0] if len(As) == 1 else np.concatenate(As, axis=1)
    return PrototypeWeights(A, B, Pi, tokens, tuple(a.shape[1] for a in As) if len(As) > 1 else (), names)


def save_bridge_dir(weights: PrototypeWeights, directory: str | os.PathLike[str],
                    meta: dict[str, Any] | None = None) -> Path:
    """Write ``bridge_config.json`` + ``bridge.safetensors``, the format of ``PrototypeBridge.save``.

    For host tools (``edge_bridge.bridge.load_bridge``); a bundle keeps only the safetensors file.
    """
    from edge_bridge.fileio import atomic_write_bytes, atomic_write_text

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CalibrationError(f"{directory} is a file; a bridge is saved into a directory")
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / WEIGHTS_NAME, weights.safetensors_bytes(meta))
    cfg = {"schema_version": CONFIG_SCHEMA_VERSION, "tool_version": __version__, "kind": KIND,
           "config": weights.config, "meta": dict(meta or {}), "parameters": weights.n_parameters}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(cfg, indent=2, default=str) + "\n")
    return directory


# --- a minimal ONNX (protocol buffers) writer -------------------------------------------------------------
# Field numbers from onnx.proto (ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto, ...).
_FLOAT, _INT64 = 1, 7  # TensorProto.DataType
_ATTR_INT, _ATTR_INTS = 2, 7  # AttributeProto.AttributeType


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 in two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _int(field: int, n: int) -> bytes:
    return _key(field, 0) + _varint(n)


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _str(field: int, s: str) -> bytes:
    return _bytes(field, s.encode("utf-8"))


def _tensor(name: str, arr: np.ndarray) -> bytes:
    if arr.dtype == np.float32:
        dtype = _FLOAT
    elif arr.dtype == np.int64:
        dtype = _INT64
    else:
        raise TypeError(f"unsupported initializer dtype {arr.dtype}")
    raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return b"".join([*(_int(1, d) for d in arr.shape), _int(2, dtype), _str(8, name), _bytes(9, raw)])


def _value_info(name: str, shape: list[int | None]) -> bytes:
    dims = b"".join(_bytes(1, _str(2, "batch") if d is None else _int(1, d)) for d in shape)
    tensor_type = _int(1, _FLOAT) + _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


def _node(op: str, inputs: list[str], outputs: list[str], name: str, ints: dict[str, list[int]] | None = None,
          **int_attrs: int) -> bytes:
    parts = [*(_str(1, i) for i in inputs), *(_str(2, o) for o in outputs), _str(3, name), _str(4, op)]
    for attr, values in (ints or {}).items():
        parts.append(_bytes(5, _str(1, attr) + b"".join(_int(8, v) for v in values) + _int(20, _ATTR_INTS)))
    for attr, value in int_attrs.items():  # AttributeProto: name 1, i 3, type 20
        parts.append(_bytes(5, _str(1, attr) + _int(3, value) + _int(20, _ATTR_INT)))
    return b"".join(parts)


def bridge_onnx_bytes(weights: PrototypeWeights, metadata: dict[str, str] | None = None) -> bytes:
    """The bridge as a self-contained ONNX model: ``h (batch, d_in) -> z (batch, T, D_out)``, FP32.

    A fused bridge's graph takes its K inputs ``weights.input_names`` (``h``, ``h_<key>``, ...; widths
    ``input_dims``) and concatenates them first (``Concat`` on the feature axis), so the rest is the
    single-input graph with ``A = [A_0 | ... | A_{K-1}]``; one input gives the very bytes it always has.

    Parameters
    ----------
    weights : PrototypeWeights
    metadata : dict of str -> str, optional
        Written to ``metadata_props`` under ``edge_bridge.`` (tool version and part are always set), so a
        stray file can be identified.

    Raises
    ------
    CalibrationError
        A fused bridge without input names (only its bundle knows them).
    """
    w = weights
    if not w.input_names:
        raise CalibrationError(f"a fused bridge of {w.n_inputs} inputs (widths {list(w.input_dims)}) needs "
                               "its bundle's input names (h, h_<key>, ...) to be written as ONNX; read it "
                               "with read_weights(path, input_names=...)")
    fused = w.n_inputs > 1
    inits = [
        _tensor("bridge.A_T", np.ascontiguousarray(w.A.T)),  # (d_in, r)
        _tensor("bridge.B_T", np.ascontiguousarray(w.B.T)),  # (r, P*T)
        _tensor("bridge.Pi", w.Pi),  # (D_out, P)
        _tensor("bridge.coef_shape", np.array([-1, w.prototypes, w.tokens], dtype=np.int64)),
    ]
    concat = [_node("Concat", list(w.input_names), ["h_fused"], "fuse_inputs", axis=1)] if fused else []
    nodes = [
        *concat,  # fused: (N, sum d_k), in the bundle's input order
        _node("MatMul", ["h_fused" if fused else "h", "bridge.A_T"], ["low"], "A"),  # (N, r)
        _node("MatMul", ["low", "bridge.B_T"], ["coef_flat"], "B"),  # (N, P*T)
        _node("Reshape", ["coef_flat", "bridge.coef_shape"], ["coef"], "coefficients"),  # (N, P, T)
        _node("MatMul", ["bridge.Pi", "coef"], ["z_dt"], "prototypes"),  # (N, D_out, T)
        _node("Transpose", ["z_dt"], ["z"], "tokens_first", {"perm": [0, 2, 1]}),  # (N, T, D_out)
    ]
    graph = b"".join([
        *(_bytes(1, n) for n in nodes),
        _str(2, "bridge"),
        *(_bytes(5, t) for t in inits),
        *(_bytes(11, _value_info(name, [None, d])) for name, d in zip(w.input_names, w.input_dims,
                                                                       strict=True)),
        _bytes(12, _value_info("z", [None, w.tokens, w.d_out])),
    ])
    props = {"tool_version": __version__, "part": "bridge", "precision": "fp32", "kind": KIND,
             **(metadata or {})}
    model = b"".join([
        _int(1, IR_VERSION),
        _str(2, "edge-bridge calibrate"),
        _str(3, __version__),
        _bytes(7, graph),
        _bytes(8, _str(1, "") + _int(2, OPSET)),
        *(_bytes(14, _str(1, METADATA_PREFIX + k) + _str(2, str(v))) for k, v in props.items()),
    ])
    return model
