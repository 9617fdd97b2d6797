"""Static INT8 quantization of an exported part with ONNX Runtime, in the flavour the device needs.

A file goes in and a file comes out (ONNX Runtime's own shape): :func:`quantize_part` runs ONNX Runtime's
pre-processing (symbolic shape inference and graph optimisation, which the quantizer expects), then
``quantize_static`` with the settings of a :class:`QuantConfig`. Two flavours, picked by :class:`Target`:

``cpu``
    QDQ, int8 per-channel weights, uint8 (asymmetric) activations: what ONNX Runtime's x86/ARM CPU kernels
    run fastest and most accurately. Only ops with an INT8 kernel in ONNX Runtime's CPU provider get Q/DQ
    (:data:`INT8_FLOW_OPS`, or the compute ops alone, :data:`COMPUTE_OPS`; the exporter picks per part
    by measurement): a LayerNorm, Gelu or Softmax between a DQ and a Q runs as DQ -> FP32 kernel -> Q, which
    costs two extra passes over the tensor at batch 1 and rounds the residual stream for nothing. A MatMul's
    output is left FP32 (ONNX Runtime then fuses it into ``MatMulIntegerToFloat``, one node instead of a
    QLinearMatMul and a DQ) unless the next op quantizes it anyway.
``jetson``
    what TensorRT accepts as explicit quantization: symmetric int8 for weights *and* activations (zero
    points 0), no int32 bias Q/DQ (biases stay FP32; TensorRT fuses them), Q/DQ only in front of Conv,
    MatMul and Gemm. ONNX Runtime still routes some non-compute consumers (a residual Add) through a DQ it
    made for a Conv, so :func:`detach_float_consumers` gives those back the FP32 tensor; the audit
    (:mod:`edge_bridge.export.audit`) then checks the rules on the file.

In both flavours a MatMul of two activations (attention's ``q k^T`` and ``softmax . v``) stays FP32
(:func:`activation_matmuls`): both operands need per-tensor ranges fitted to the calibration windows, the
attention logits' outliers make that range coarse, and at the sizes we ship (tens of tokens) the INT8
kernel and its Q/DQ cost more time than the FP32 MatMul (ORT profile of the demo's source_back: the
QLinearSoftmax between the two alone took 4x the FP32 Softmax). The manifest lists them as FP32 by rule.

Calibration windows arrive as ``{input name: array}`` feeds through :class:`WindowReader`, the one-method
``CalibrationDataReader`` protocol. Too few windows raise (never a quiet drop to fewer); fewer than the
recommended number warn.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType

from edge_bridge.export.errors import ExportError

logger = logging.getLogger(__name__)

COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
# ops with an INT8 kernel on ONNX Runtime's CPU provider (QLinearAdd, fused Relu/Clip, QLinear pools and
# Concat): quantizing them keeps a conv net's activations INT8 between convolutions
INT8_FLOW_OPS = (*COMPUTE_OPS, "Add", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat")
FP16_BLOCKED_OPS = ("Gelu",)


class Target(str, Enum):
    """Where the bundle runs: decides the INT8 flavour."""

    CPU = "cpu"
    JETSON = "jetson"


class Precision(str, Enum):
    """Numeric precision of a part's graph (the bridge is always FP32)."""

    INT8 = "int8"
    FP16 = "fp16"
    FP32 = "fp32"


E = TypeVar("E", bound=Enum)


def parse_enum(enum: type[E], value: Any, what: str) -> E:
    """``value`` as a member of ``enum``; the error lists the valid values and the closest match."""
    if isinstance(value, enum):
        return value
    valid = [m.value for m in enum]  # type: ignore[attr-defined]
    try:
        return enum(str(value).lower())
    except ValueError:
        close = difflib.get_close_matches(str(value), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ExportError(f"{what} must be one of {', '.join(valid)}, got {value!r}{hint}") from None


@dataclass(frozen=True)
class QuantConfig:
    """Settings of static INT8 quantization; build one with :meth:`for_target`.

    Attributes
    ----------
    target : Target
    activation_type, weight_type : QuantType
        uint8 activations on CPU (asymmetric ranges use all 256 levels); int8 everywhere for TensorRT.
    per_channel : bool
        One weight scale per output channel: recovers most of the accuracy per-tensor loses on CNNs.
    symmetric_activations, symmetric_weights : bool
        Zero points fixed at 0; TensorRT requires it.
    quantize_bias : bool
        Whether biases become int32 Q/DQ; TensorRT wants FP32 biases.
    op_types : tuple of str or None
        Op types to quantize; ``None`` means every op ONNX Runtime can quantize.
    activation_matmuls : bool
        Quantize MatMuls of two activations too (off: they stay FP32, see the module docstring).
    exclude_output_quantization : tuple of str
        Op types whose outputs get no Q/DQ (TensorRT places Q/DQ on compute inputs only).
    dedicated_qdq_pairs : bool
        One Q/DQ pair per consumer, so a shared tensor's other consumers can keep FP32.
    calibration_method : CalibrationMethod
        MinMax: deterministic and fast on a few hundred windows.
    min_windows : int
        Fewer calibration windows than this is an error: the ranges would not be representative.
    recommended_windows : int
        Fewer than this gives a warning.
    max_windows : int
        At most this many windows are used (evenly spaced over what was given), to keep calibration short.
    """

    target: Target
    activation_type: QuantType
    weight_type: QuantType
    per_channel: bool
    symmetric_activations: bool
    symmetric_weights: bool
    quantize_bias: bool
    op_types: tuple[str, ...] | None
    exclude_output_quantization: tuple[str, ...] = ()
    activation_matmuls: bool = False
    dedicated_qdq_pairs: bool = False
    calibration_method: CalibrationMethod = CalibrationMethod.MinMax
    min_windows: int = 16
    recommended_windows: int = 128
    max_windows: int = 256
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_target(cls, target: Target | str, **overrides: Any) -> QuantConfig:
        """The flavour for ``"cpu"`` or ``"jetson"`` (see the module docstring); fields can be overridden."""
        target = parse_enum(Target, target, "target")
        if target is Target.CPU:
            base = cls(target, QuantType.QUInt8, QuantType.QInt8, per_channel=True,
                       symmetric_activations=False, symmetric_weights=True, quantize_bias=True,
                       op_types=INT8_FLOW_OPS, exclude_output_quantization=("MatMul",))
        else:
            base = cls(target, QuantType.QInt8, QuantType.QInt8, per_channel=True, symmetric_activations=True,
                       symmetric_weights=True, quantize_bias=False, op_types=COMPUTE_OPS,
                       exclude_output_quantization=COMPUTE_OPS, dedicated_qdq_pairs=True)
        if overrides:
            import dataclasses

            base = dataclasses.replace(base, **overrides)
        base.validate()
        return base

    def validate(self) -> None:
        """Reject combinations that cannot work, before any calibration runs."""
        if self.target is Target.JETSON:
            bad = []
            if self.activation_type is not QuantType.QInt8 or self.weight_type is not QuantType.QInt8:
                bad.append("int8 activations and weights")
            if not (self.symmetric_activations and self.symmetric_weights):
                bad.append("symmetric activations and weights")
            if self.quantize_bias:
                bad.append("no int32 bias quantization")
            if bad:
                raise ExportError(f"the jetson (TensorRT) flavour needs {', '.join(bad)}; use target='cpu' "
                                  "for other settings")
        if not 1 <= self.min_windows <= self.max_windows:
            raise ExportError(f"need 1 <= min_windows <= max_windows, got {self.min_windows} and "
                              f"{self.max_windows}")

    def ort_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``onnxruntime.quantization.quantize_static`` for these settings."""
        extra = {"ActivationSymmetric": self.symmetric_activations, "WeightSymmetric": self.symmetric_weights,
                 "QuantizeBias": self.quantize_bias, "DedicatedQDQPair": self.dedicated_qdq_pairs,
                 **self.extra}
        if self.exclude_output_quantization:
            extra["OpTypesToExcludeOutputQuantization"] = list(self.exclude_output_quantization)
        return {"quant_format": QuantFormat.QDQ, "activation_type": self.activation_type,
                "weight_type": self.weight_type, "per_channel": self.per_channel,
                "op_types_to_quantize": list(self.op_types) if self.op_types else None,
                "calibrate_method": self.calibration_method, "extra_options": extra}

    def to_dict(self) -> dict[str, Any]:
        """For the manifest: every setting by name."""
        return {"target": self.target.value, "format": "QDQ", "activation_type": self.activation_type.name,
                "weight_type": self.weight_type.name, "per_channel": self.per_channel,
                "symmetric_activations": self.symmetric_activations,
                "symmetric_weights": self.symmetric_weights, "quantize_bias": self.quantize_bias,
                "op_types": list(self.op_types) if self.op_types else "all",
                "exclude_output_quantization": list(self.exclude_output_quantization),
                "activation_matmuls": "int8" if self.activation_matmuls else "fp32",
                "calibration_method": self.calibration_method.name}


class WindowReader(CalibrationDataReader):
    """Calibration feeds ``{input name: (batch, ...) float32}`` over an array of windows.

    Parameters
    ----------
    name : str
        The graph input the windows feed (``x_target``, ``x_source`` or ``z``).
    windows : ndarray, shape (n, ...)
    batch : int
        Windows per feed; the batch axis of every part is dynamic.
    """

    def __init__(self, name: str, windows: np.ndarray, batch: int = 16) -> None:
        self.name = name
        self.windows = np.ascontiguousarray(windows, dtype=np.float32)
        n = len(self.windows)
        # every feed the same size: ONNX Runtime's histogram calibrators (Percentile, Entropy) stack the
        # per-feed outputs and fail on a shorter last feed, so take the largest batch that divides n
        self.batch = next((b for b in range(min(batch, max(n, 1)), 0, -1) if n % b == 0), 1)
        self._k = 0

    def __len__(self) -> int:
        return len(self.windows)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._k >= len(self.windows):
            return None
        feed = {self.name: self.windows[self._k:self._k + self.batch]}
        self._k += self.batch
        return feed

    def rewind(self) -> None:
        self._k = 0


def pick_windows(x: np.ndarray, config: QuantConfig, what: str) -> np.ndarray:
    """Check the count against the config and take at most ``max_windows``, evenly spaced."""
    n = len(x)
    if n < config.min_windows:
        raise ExportError(f"{what}: {n} calibration windows, but static INT8 needs at least "
                          f"{config.min_windows} (recommended {config.recommended_windows}); pass more "
                          "recordings with --calibration-data, or export with --precision fp16/fp32")
    if n < config.recommended_windows:
        logger.warning("%s: only %d calibration windows (recommended %d); INT8 ranges may be off — check "
                       "the agreement in the report", what, n, config.recommended_windows)
    if n > config.max_windows:
        idx = np.linspace(0, n - 1, config.max_windows).round().astype(int)
        logger.info("%s: using %d of %d calibration windows (evenly spaced)", what, config.max_windows, n)
        return x[idx]
    return x


def preprocess(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference + optimisation) of ``src`` into ``dst``.

    Symbolic shape inference is tried first; where it cannot follow a graph, ONNX's own shape inference is
    used alone (logged).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception as exc:
        logger.info("%s: symbolic shape inference failed (%s); pre-processing without it", Path(src).name,
                    exc)
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return Path(dst)


def quantize_part(src: str | os.PathLike[str], dst: str | os.PathLike[str], reader: WindowReader,
                  config: QuantConfig, *, nodes_to_exclude: tuple[str, ...] = (), preprocessed: bool = False,
                  calibration_cache: str | os.PathLike[str] | None = None) -> Path:
    """Pre-process and statically quantize ``src`` (FP32 ONNX) into ``dst`` (QDQ INT8 ONNX).

    Parameters
    ----------
    nodes_to_exclude : tuple of str
        Node names (of the pre-processed graph) kept in FP32: ONNX Runtime's ``nodes_to_exclude``.
    preprocessed : bool
        ``src`` is already the output of :func:`preprocess` (node names stay those ``nodes_to_exclude``
        was measured on).
    calibration_cache : path or None
        ONNX Runtime's ``calibration_cache_path``: the ranges are computed once per file and calibration
        method and read back by every later call (a node search quantizes the same graph many times).

    Raises
    ------
    ExportError
        If ONNX Runtime fails; the message names the file and the flavour.
    """
    from onnxruntime.quantization import quantize_static

    src, dst = Path(src), Path(dst)
    reader.rewind()
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=dst.parent) as work:
        pre = src if preprocessed else Path(work) / "pre.onnx"
        out = Path(work) / "int8.onnx"
        try:
            if not preprocessed:
                preprocess(src, pre)
            if not config.activation_matmuls:
                nodes_to_exclude = (*nodes_to_exclude,
                                    *(n for n in activation_matmuls(onnx.load(str(pre)))
                                      if n not in nodes_to_exclude))
            # ORT logs per-channel notes on LayerNorm weights to the root logger and prints its histogram
            # calibrators' progress (Percentile, Entropy) to stdout: neither is for our user
            with _root_logger_quiet(), contextlib.redirect_stdout(io.StringIO()):
                quantize_static(str(pre), str(out), reader, nodes_to_exclude=list(nodes_to_exclude),
                                calibration_cache_path=None if calibration_cache is None else str(
                                    calibration_cache), **config.ort_kwargs())
        except Exception as exc:
            raise ExportError(f"{src}: static INT8 quantization ({config.target.value} flavour) failed: "
                              f"{exc}") from exc
        model = onnx.load(str(out))
        if nodes_to_exclude:
            release_nodes(model, nodes_to_exclude)
        if config.target is Target.JETSON:
            detach_float_consumers(model, COMPUTE_OPS)
        onnx.save(model, str(out))
        shutil.move(str(out), dst)
    return dst


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes of ``model`` none of whose inputs is a weight (an initializer or a
    Constant, possibly behind a Transpose/Reshape/Cast): attention's products (see the module docstring)."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consts = {t.name for t in g.initializer}

    def constant(name: str) -> bool:
        n = producer.get(name)
        while n is not None and n.op_type in ("Transpose", "Reshape", "Cast", "DequantizeLinear"):
            name = n.input[0]
            n = producer.get(name)
        return name in consts or (n is not None and n.op_type == "Constant")

    return [n.name for n in g.node if n.op_type == "MatMul" and not any(constant(i) for i in n.input)]


@contextlib.contextmanager
def _root_logger_quiet() -> Iterator[None]:
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(old)


def to_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """FP16 weights and compute, FP32 inputs and outputs (so the manifest's tensor specs stay float32)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # Gelu stays FP32: ONNX Runtime 1.32's CPU graph optimiser crashes (segfault) on some FP16 Gelu graphs
    block = sorted({*DEFAULT_OP_BLOCK_LIST, *FP16_BLOCKED_OPS})
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=block)
    topological_sort(model)  # the converter appends the input casts at the end of the node list
    onnx.save(model, str(dst))
    return Path(dst)


def topological_sort(model: onnx.ModelProto) -> None:
    """Reorder the main graph's nodes so each comes after the producers of its inputs (ONNX requires it)."""
    g = model.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending = list(g.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in ready})[:5]
            raise ExportError(f"graph {g.name!r} has a cycle or dangling inputs {missing}; cannot order it")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)


def detach_float_consumers(model: onnx.ModelProto, allowed: tuple[str, ...] = COMPUTE_OPS) -> int:
    """Give consumers outside ``allowed`` the FP32 tensor instead of a dequantized copy of it.

    For an activation ``x -> Q -> DQ -> {Conv, Add}`` the Add is rewired to read ``x``; a DQ (and its Q) left
    without consumers is removed. The maths of the Add is unchanged from the FP32 graph. Returns the number
    of inputs rewired.
    """
    return _rewire_to_float(model, lambda n: n.op_type not in allowed)


def release_nodes(model: onnx.ModelProto, names: tuple[str, ...] | set[str]) -> int:
    """Make the nodes ``names`` read FP32 activations (see :func:`quantize_part`'s ``nodes_to_exclude``).

    ONNX Runtime's ``nodes_to_exclude`` stops a node from quantizing its own inputs and outputs, but a
    tensor another node quantizes (a MatMul quantizes its output on CPU) still reaches the excluded node
    through a DQ: the node would compute in FP32 on INT8-rounded values. This rewires those inputs to the
    FP32 tensor, as :func:`detach_float_consumers` does for TensorRT. Returns the number of inputs rewired.
    """
    wanted = set(names)
    return _rewire_to_float(model, lambda n: n.name in wanted)


def _rewire_to_float(model: onnx.ModelProto, select: Any) -> int:
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    graph_outputs = {o.name for o in model.graph.output}
    rewired = 0
    for node in nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or not select(node):
            continue
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue  # a weight DQ: no FP32 tensor to hand back
            node.input[k] = q.input[0]
            rewired += 1
    used = {i for n in model.graph.node for i in n.input} | graph_outputs
    changed = True
    while changed:
        changed = False
        for n in list(model.graph.node):
            if n.op_type in ("DequantizeLinear", "QuantizeLinear") and not any(o in used for o in n.output):
                model.graph.node.remove(n)
                changed = True
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
    for init in list(model.graph.initializer):
        if init.name not in used:
            model.graph.initializer.remove(init)
    return rewired
