"""Check an INT8 graph against what TensorRT accepts, on the file (TensorRT itself is not needed).

TensorRT (10.x on JetPack 6; 11 dropped implicit INT8) builds INT8 engines only from *explicit* quantization:
Q/DQ nodes in the ONNX graph. It is strict about their form, and a graph that breaks a rule either fails to
parse on the device or silently runs in FP32/FP16 there. The rules checked here (:data:`RULES`):

``int8``             every Q/DQ is int8: no uint8 activations (no zero point means uint8), no int16/int4
``symmetric``        every zero point is 0
``no_bias_qdq``      no int32 Q/DQ (ONNX Runtime's bias quantization); TensorRT wants FP32 biases
``qdq_placement``    a DQ feeds only Conv, MatMul or Gemm and is no graph output; a Q feeds only DQs
``per_tensor_act``   activation scales are scalars (per-channel is for weights only)
``valid_scales``     every scale is finite and positive
``no_integer_ops``   no QLinear*/ConvInteger/MatMulInteger/DynamicQuantizeLinear (QOperator format)
``quantized``        at least one Conv/MatMul/Gemm actually reads a DQ (else the graph is not INT8 at all)

:func:`audit_tensorrt` returns an :class:`AuditReport`; the exporter raises if a ``jetson`` graph fails it.
This module needs only ``onnx`` and numpy.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edge_bridge.export.errors import ExportError

TENSORRT_COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
RULES = ("int8", "symmetric", "no_bias_qdq", "qdq_placement", "per_tensor_act", "valid_scales",
         "no_integer_ops", "quantized")
_INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
                "QLinearAdd", "QLinearMul", "QGemm", "QLinearSigmoid", "QLinearGlobalAveragePool")
_INT8 = onnx.TensorProto.INT8
_NAMES = {v: k for k, v in onnx.TensorProto.DataType.items()}


@dataclass
class AuditReport:
    """The outcome of an audit: which rules were broken where.

    Attributes
    ----------
    file : str
    violations : list of (rule, message)
    counts : dict
        Q, DQ and compute nodes seen, and how many compute nodes read a DQ.
    """

    file: str
    violations: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def broken_rules(self) -> list[str]:
        return sorted({r for r, _ in self.violations})

    def add(self, rule: str, message: str) -> None:
        self.violations.append((rule, message))

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "ok": self.ok, "rules": list(RULES), "broken": self.broken_rules,
                "violations": [f"{r}: {m}" for r, m in self.violations[:20]], "counts": dict(self.counts)}

    def raise_if_failed(self) -> None:
        """Raise :class:`ExportError` listing the first violations of each broken rule."""
        if self.ok:
            return
        shown = []
        for rule in self.broken_rules:
            msgs = [m for r, m in self.violations if r == rule]
            shown.append(f"{rule} ({len(msgs)}x, e.g. {msgs[0]})")
        raise ExportError(f"{self.file}: not a TensorRT-compatible INT8 graph: {'; '.join(shown)}. Export "
                          "with --target jetson (symmetric int8 QDQ, FP32 biases, Q/DQ on Conv/MatMul/Gemm "
                          "inputs only)")


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    vals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def _const_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {t.name: t.data_type for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def audit_tensorrt(model: onnx.ModelProto | str | os.PathLike[str],
                   compute_ops: tuple[str, ...] = TENSORRT_COMPUTE_OPS) -> AuditReport:
    """Audit an INT8 QDQ graph against TensorRT's explicit-quantization rules (module docstring).

    Parameters
    ----------
    model : ModelProto or path
    compute_ops : tuple of str
        Op types a DQ may feed.

    Returns
    -------
    AuditReport
        ``report.ok`` is True when no rule is broken; ``report.raise_if_failed()`` raises otherwise.

    Examples
    --------
    >>> audit_tensorrt("bundle/target_front.onnx").raise_if_failed()  # doctest: +SKIP
    """
    where = "<model>"
    if not isinstance(model, onnx.ModelProto):
        where = str(model)
        model = onnx.load(str(Path(model)), load_external_data=False)
    report = AuditReport(where)
    g = model.graph
    consts = _constants(model)
    ctypes = _const_types(model)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    outputs = {o.name for o in g.output}
    qs = [n for n in g.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in g.node if n.op_type == "DequantizeLinear"]
    compute = [n for n in g.node if n.op_type in compute_ops]
    producer = {o: n for n in g.node for o in n.output}
    fed = sum(1 for n in compute if any(producer.get(i) is not None and producer[i].op_type ==
                                        "DequantizeLinear" for i in n.input))
    report.counts = {"Q": len(qs), "DQ": len(dqs), "compute": len(compute), "compute_reading_dq": fed}

    for n in g.node:
        if n.op_type in _INTEGER_OPS:
            report.add("no_integer_ops", f"node {n.name or n.output[0]} is {n.op_type} (QOperator format)")
    for n in (*qs, *dqs):
        label = f"{n.op_type} {n.name or n.output[0]}"
        zp_name = n.input[2] if len(n.input) > 2 and n.input[2] else None
        if n.op_type == "DequantizeLinear":
            dtype = ctypes.get(n.input[0])
            if dtype is None:
                src = producer.get(n.input[0])
                dtype = None if src is None else _zp_type(src, ctypes)
        else:
            dtype = _zp_type(n, ctypes)
        if dtype == onnx.TensorProto.INT32:
            report.add("no_bias_qdq", f"{label} is int32 (a quantized bias)")
        elif dtype is not None and dtype != _INT8:
            report.add("int8", f"{label} is {_NAMES.get(dtype, dtype)}, not INT8")
        if zp_name is not None and zp_name in consts and np.any(consts[zp_name] != 0):
            report.add("symmetric", f"{label} has non-zero zero point {consts[zp_name].ravel()[:4].tolist()}")
        scale = consts.get(n.input[1])
        if scale is not None and not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            report.add("valid_scales", f"{label} has a non-positive or non-finite scale")
        is_act = n.op_type == "DequantizeLinear" and n.input[0] not in consts
        if is_act and scale is not None and scale.size != 1:
            report.add("per_tensor_act", f"{label} dequantizes an activation with {scale.size} scales")
    for n in dqs:
        label = f"DequantizeLinear {n.name or n.output[0]}"
        if n.output[0] in outputs:
            report.add("qdq_placement", f"{label} is a graph output")
        bad = sorted({c.op_type for c in consumers[n.output[0]] if c.op_type not in compute_ops})
        if bad:
            report.add("qdq_placement", f"{label} feeds {bad}, not only {list(compute_ops)}")
    for n in qs:
        bad = sorted({c.op_type for c in consumers[n.output[0]] if c.op_type != "DequantizeLinear"})
        if bad or n.output[0] in outputs:
            report.add("qdq_placement", f"QuantizeLinear {n.name or n.output[0]} feeds "
                                        f"{bad or 'the output'}, not only DequantizeLinear")
    if fed == 0:
        report.add("quantized", f"none of the {len(compute)} Conv/MatMul/Gemm nodes reads a DequantizeLinear")
    return report


def _zp_type(q: onnx.NodeProto, ctypes: dict[str, int]) -> int | None:
    """Output type of a QuantizeLinear: its zero point's type, uint8 when it has none (the ONNX default)."""
    if q.op_type != "QuantizeLinear":
        return None
    if len(q.input) > 2 and q.input[2]:
        return ctypes.get(q.input[2])
    for a in q.attribute:
        if a.name == "output_dtype" and a.i:
            return int(a.i)
    return onnx.TensorProto.UINT8
