"""Which quantized nodes cost the accuracy, and the fewest of them to keep in FP32.

Falling back a whole part to FP16/FP32 throws away INT8 for every node because a few are sensitive (a
Softmax whose input has outliers, a projection with a wide range). This module finds those few, the way
TensorRT's per-layer precision and ONNX Runtime's QDQ debugging tools do:

1. :func:`node_errors` runs the FP32 and the QDQ graph on calibration windows with every intermediate tensor
   saved (:func:`intermediate_tensors`; ONNX Runtime's ``qdq_loss_debug`` for the SQNR and the weight
   matching, ``create_weight_matching``) and gives each quantized node the signal-to-
   quantization-noise ratio (SQNR, dB) of the worst of its quantized inputs (activations and weights): the
   noise INT8 injects right there. An activation's SQNR is the lower of the whole tensor's and the median
   per-channel one (:func:`channel_sqnr`: an outlier channel hides the other channels' loss in the first).
   Lowest SQNR first is the order in which nodes are tried in FP32.
2. :func:`fewest_fp32_nodes` then measures, with the caller's own measure (the accuracy guard's decision
   agreement with FP32 on the calibration windows), growing prefixes of that order (1, 2, 4, ...), bisects
   to the shortest passing prefix and prunes it: a node whose removal still passes goes back to INT8. Every
   node left in FP32 carries its measured effect (the agreement if it were INT8 too).

Each trial is a real ``quantize_static`` with ``nodes_to_exclude`` (ONNX Runtime's own switch), so the file
that ships is one the search measured. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = (CalibrationMethod.MinMax, CalibrationMethod.Percentile, CalibrationMethod.Entropy)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
DEBUG_WINDOWS = 64  # the per-node pass keeps every intermediate tensor in memory: a sample is enough
GREEDY_POOL = 8  # candidates per greedy step after the first (see rank_by_effect)
FIRST_ROUND = 24  # the first greedy step measures at most this many nodes, the lowest SQNR first


@dataclass
class NodeError:
    """The INT8 noise at one quantized node.

    Attributes
    ----------
    node, op_type : str
    sqnr_db : float
        SQNR of the worst quantized input (activation or weight) of the node, in dB: lower is noisier.
    worst_input : str
        The tensor that SQNR belongs to.
    output_sqnr_db : float or None
        SQNR of the node's output in the QDQ graph against the FP32 graph (the error accumulated so far).
    effect : dict or None
        The emulated measure with this node and those picked before it (``with``) in FP32
        (:func:`rank_by_effect`).
    """

    node: str
    op_type: str
    sqnr_db: float
    worst_input: str
    output_sqnr_db: float | None = None
    effect: dict[str, Any] | None = None


def quantized_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes (other than Q/DQ) that read at least one DequantizeLinear output: the INT8 compute."""
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type in QDQ_OPS:
            continue
        if any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input):
            out.append(n)
    return out


def node_errors(float_path: str | os.PathLike[str], qdq_path: str | os.PathLike[str],
                reader: CalibrationDataReader) -> list[NodeError]:
    """Per quantized node, the SQNR INT8 leaves at its inputs, worst first (see the module docstring).

    Parameters
    ----------
    float_path : path
        The FP32 graph the QDQ graph was quantized from (pre-processed; node names match).
    qdq_path : path
        The QDQ graph.
    reader : CalibrationDataReader
        Feeds; it is iterated twice (once per graph), so it must support ``rewind()``.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        compute_signal_to_quantization_noice_ratio,
        compute_weight_error,
        create_weight_matching,
    )

    sqnr = compute_signal_to_quantization_noice_ratio
    acts = {name: intermediate_tensors(path, reader) for name, path in (("float", float_path),
                                                                        ("qdq", qdq_path))}
    weights = compute_weight_error(create_weight_matching(str(float_path), str(qdq_path)))
    model = onnx.load(str(qdq_path))
    producer = {o: n for n in model.graph.node for o in n.output}
    int32 = {t.name: t.data_type == onnx.TensorProto.INT32 for t in model.graph.initializer}
    zero = {t.name for t in onnx.load(str(float_path)).graph.initializer
            if not np.any(onnx.numpy_helper.to_array(t))}
    fa, qa = acts["float"], acts["qdq"]
    result = []
    for n in quantized_nodes(model):
        worst, where = float("inf"), ""
        for i in n.input:
            dq = producer.get(i)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":  # an activation: before vs after its Q/DQ
                x = q.input[0]
                if x in qa and i in qa:
                    err = min(sqnr(qa[x], qa[i]), channel_sqnr(qa[x], qa[i]))
                    if err < worst:
                        worst, where = err, x
            else:  # a weight: FP32 initializer vs its dequantized INT8 copy
                base = dq.input[0].removesuffix("_quantized")
                if int32.get(dq.input[0]) or base in zero:
                    continue  # an int32 bias rounds far below the activations; an all-zero weight (a bias
                    # as initialised) has nothing to lose but scored -7 dB, which ranked it first
                if base in weights and weights[base] < worst:
                    worst, where = weights[base], base
        out = n.output[0] if n.output else ""
        out_err = float(sqnr(fa[out], qa[out])) if out in fa and out in qa else None
        if where:
            result.append(NodeError(n.name, n.op_type, float(worst), where, out_err))
    result.sort(key=lambda e: e.sqnr_db)
    return result


def channel_sqnr(x: np.ndarray, y: np.ndarray) -> float:
    """The SQNR (dB) of ``y`` vs ``x`` per channel, the median over channels, on the worse of the two axes a
    channel can be (1 for ``(n, C, L)``, the last for ``(n, T, D)``).

    Why beside the whole-tensor SQNR: one outlier channel carries most of a tensor's power, so the tensor
    SQNR stays high while per-tensor INT8 rounds every other channel to nothing (a LayerNorm with one large
    gain: 47.6 dB for the tensor, the other channels gone); per channel they count one each, and the
    median is not lifted by the one clean channel as a mean would be."""
    if x.ndim < 2 or x.shape != y.shape:
        return float("inf")
    eps = float(np.finfo(np.float32).eps)
    a, b = x.astype(np.float64), y.astype(np.float64)
    worst = float("inf")
    for axis in {1, x.ndim - 1}:
        other = tuple(k for k in range(x.ndim) if k != axis)
        signal = np.sqrt((a ** 2).sum(axis=other))
        noise = np.sqrt(((a - b) ** 2).sum(axis=other))
        live = signal > eps  # an all-zero channel has nothing to lose
        if live.any():
            worst = min(worst, float(np.median(20 * np.log10(signal[live] / np.maximum(noise[live], eps)))))
    return worst


def intermediate_tensors(path: str | os.PathLike[str],
                         reader: CalibrationDataReader) -> dict[str, np.ndarray]:
    """Every float tensor the graph at ``path`` computes, over all of ``reader``'s feeds (stacked on the
    batch axis), with ONNX Runtime's graph optimisations off (so each tensor is the node's own output).

    Why not ``qdq_loss_debug.collect_activations``: its augmented graph saves every tensor behind a
    Reshape to 1-D, and :func:`channel_sqnr` needs the channel axis. Here each tensor is a graph output
    of its own, in its own shape."""
    import onnxruntime as ort

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    known = {o.name for o in model.graph.output}
    floats = {v.name for v in model.graph.value_info
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    for n in model.graph.node:
        for o in n.output:
            if o and o in floats and o not in known:
                model.graph.output.append(onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
                known.add(o)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got: dict[str, list[np.ndarray]] = {k: [] for k in names}
    reader.rewind()  # type: ignore[attr-defined]
    while (feed := reader.get_next()) is not None:
        for k, v in zip(names, sess.run(None, feed), strict=True):
            got[k].append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in got.items() if v}


def emulate_fp32(qdq: onnx.ModelProto, float_model: onnx.ModelProto, nodes: set[str]) -> onnx.ModelProto:
    """A copy of ``qdq`` in which ``nodes`` compute in FP32: FP32 activations (as
    :func:`~edge_bridge.export.quantize.release_nodes` gives the shipped file) and their FP32 weights back.

    Costs no calibration, so every node's effect can be measured to rank the candidates; the shipped file
    is always a real ``quantize_static`` with ``nodes_to_exclude``.
    """
    from edge_bridge.export.quantize import release_nodes

    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    producer = {o: n for n in m.graph.node for o in n.output}
    floats = {t.name: t for t in float_model.graph.initializer}
    have = {t.name for t in m.graph.initializer}
    for n in m.graph.node:
        if n.name not in nodes:
            continue
        for k, i in enumerate(n.input):
            dq = producer.get(i)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in have:
                continue
            base = dq.input[0].removesuffix("_quantized")  # a weight: its FP32 initializer
            if base in floats:
                name = f"{base}_fp32"  # ORT names a bias DQ's output after the bias itself
                if name not in have:
                    t = onnx.TensorProto()
                    t.CopyFrom(floats[base])
                    t.name = name
                    m.graph.initializer.append(t)
                    have.add(name)
                n.input[k] = name
    release_nodes(m, nodes)
    return m


def rank_by_effect(qdq_path: str | os.PathLike[str], float_path: str | os.PathLike[str],
                   errors: list[NodeError], measure_file: Callable[[Path], dict[str, Any]],
                   work: str | os.PathLike[str], *, threshold: float, max_steps: int,
                   pool: int = GREEDY_POOL, first_round: int = FIRST_ROUND) -> list[NodeError]:
    """``errors`` reordered by what keeping nodes in FP32 does to the caller's measure, greedily.

    Each step tries every remaining node in FP32 on top of those already picked (on :func:`emulate_fp32`,
    no calibration) and picks the one with the highest agreement, then the lowest mean logit drift, then
    the lowest SQNR; it stops when the emulated measure reaches ``threshold`` or after ``max_steps``. The
    first step measures the ``FIRST_ROUND`` lowest-SQNR nodes; later steps only the ``pool`` best of the
    first step and the ``pool`` lowest SQNRs (a few hundred cheap runs at most). The rest follow in the
    order of the first step. Noise that only hurts in combination (a LayerNorm reading a quantized residual
    stream) is found this way where one-at-a-time scores miss it. ``max_steps=1`` is the cheap one-pass
    ranking: each of the ``first_round`` lowest-SQNR nodes alone in FP32, ordered by its effect
    (``first_round`` runs).
    """
    qdq, flt = onnx.load(str(qdq_path)), onnx.load(str(float_path))
    path = Path(work) / "emulated.onnx"

    def key(e: NodeError, r: dict[str, Any]) -> tuple[float, float, float]:
        return (-r["agreement"], float(r.get("mean_logit_drift") or 0.0), e.sqnr_db)

    chosen: list[NodeError] = []
    remaining = list(errors[:first_round])  # ``errors`` come lowest SQNR first (node_errors)
    rest = list(errors[first_round:])
    first: dict[str, tuple[float, float, float]] = {}
    while remaining and len(chosen) < max_steps:
        scored = []
        if first:
            best_first = sorted(remaining, key=lambda e: first[e.node])[:pool]
            lowest = sorted(remaining, key=lambda e: e.sqnr_db)[:pool]
            candidates = [e for e in remaining if e in best_first or e in lowest]
        else:
            candidates = remaining
        for e in candidates:
            onnx.save(emulate_fp32(qdq, flt, {c.node for c in chosen} | {e.node}), str(path))
            r = measure_file(path)
            scored.append((key(e, r), e, r))
            first.setdefault(e.node, key(e, r))
        scored.sort(key=lambda t: t[0])
        _, best, r = scored[0]
        best.effect = {"agreement": r["agreement"], "mean_logit_drift": r.get("mean_logit_drift"),
                       "with": [c.node for c in chosen]}
        chosen.append(best)
        remaining.remove(best)
        if r["agreement"] >= threshold:
            break
    remaining.sort(key=lambda e: first.get(e.node, (0.0, 0.0, e.sqnr_db)))
    return chosen + remaining + rest

Measure = Callable[[tuple[str, ...]], dict[str, Any]]


@dataclass
class SearchResult:
    """The outcome of :func:`fewest_fp32_nodes`.

    Attributes
    ----------
    kept : list of dict
        Nodes left in FP32, each with its SQNR and ``agreement_if_int8`` (the measure with that one node
        quantized too: why it stays FP32).
    passed : bool
        Whether the measure reached the threshold with ``kept`` in FP32.
    result : dict
        The measure with ``kept`` in FP32.
    trials : list of dict
        Every measured exclusion set (size, agreement), in order.
    """

    kept: list[dict[str, Any]]
    passed: bool
    result: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k["node"] for k in self.kept)


def fewest_fp32_nodes(ranked: list[NodeError], measure: Measure, threshold: float, *,
                      max_nodes: int, prune: bool = True) -> SearchResult:
    """The shortest set of ``ranked`` nodes in FP32 for which ``measure`` reaches ``threshold``.

    Parameters
    ----------
    ranked : list of NodeError
        Candidates, most suspect first (:func:`node_errors`).
    measure : callable
        ``measure(nodes_in_fp32) -> {"agreement": float, ...}``; each call quantizes and evaluates once.
    threshold : float
        Agreement the guard needs.
    max_nodes : int
        Never keep more than this many nodes in FP32; beyond it the part falls back whole (the caller's
        last resort).
    prune : bool
        After the bisection, each kept node is tried back in INT8, least suspect first (one measure per
        kept node); with ``prune`` such rounds repeat until none can go back, without it (the cheap path)
        there is one round. Either way each kept node's effect (the measure with it in INT8 too) is
        recorded.
    """
    cache: dict[tuple[str, ...], dict[str, Any]] = {}
    trials: list[dict[str, Any]] = []
    order = [e.node for e in ranked]
    by_name = {e.node: e for e in ranked}

    def run(nodes: list[str] | tuple[str, ...]) -> dict[str, Any]:
        key = tuple(n for n in order if n in set(nodes))
        if key not in cache:
            cache[key] = measure(key)
            trials.append({"fp32_nodes": len(key), "agreement": cache[key]["agreement"],
                           "max_logit_drift": cache[key].get("max_logit_drift")})
        return cache[key]

    def ok(r: dict[str, Any]) -> bool:
        return r["agreement"] >= threshold

    base = run(())
    if ok(base):
        return SearchResult([], True, base, trials)
    n = min(len(order), max_nodes)
    last_fail, k, hit = 0, 1, 0
    while n and not hit:
        k = min(k, n)
        if ok(run(order[:k])):
            hit = k
        elif k == n:
            break
        else:
            last_fail, k = k, 2 * k
    if not hit:
        best = run(order[:n]) if n else base
        return SearchResult([_kept(by_name[x], None) for x in order[:n]], False, best, trials)
    lo, hi = last_fail, hit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(run(order[:mid])):
            hi = mid
        else:
            lo = mid
    kept = order[:hi]
    pruned, rounds = True, 0
    while pruned and len(kept) > 1 and (prune or rounds == 0):
        pruned, rounds = False, rounds + 1  # least suspect first: back to INT8 what the guard does not need
        for node in reversed(list(kept)):
            if len(kept) > 1 and ok(run([x for x in kept if x != node])):
                kept = [x for x in kept if x != node]
                pruned = True
    final = run(kept)
    effects = {x: run([y for y in kept if y != x]) for x in kept}
    return SearchResult([_kept(by_name[x], effects[x]) for x in kept], True, final, trials)


def _kept(e: NodeError, effect: dict[str, Any] | None) -> dict[str, Any]:
    d = asdict(e)
    d["sqnr_db"] = round(d["sqnr_db"], 2)
    if d["output_sqnr_db"] is not None:
        d["output_sqnr_db"] = round(d["output_sqnr_db"], 2)
    if effect is not None:
        d["agreement_if_int8"] = effect["agreement"]
        d["max_logit_drift_if_int8"] = effect.get("max_logit_drift")
    return d


def subsample(x: np.ndarray, n: int = DEBUG_WINDOWS) -> np.ndarray:
    """At most ``n`` windows of ``x``, evenly spaced."""
    if len(x) <= n:
        return x
    return x[np.linspace(0, len(x) - 1, n).round().astype(int)]


__all__ = [
    "CALIBRATION_METHODS",
    "NodeError",
    "SearchResult",
    "channel_sqnr",
    "emulate_fp32",
    "fewest_fp32_nodes",
    "intermediate_tensors",
    "node_errors",
    "quantized_nodes",
    "rank_by_effect",
    "subsample",
]
