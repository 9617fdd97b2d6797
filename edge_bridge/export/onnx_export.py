"""One ONNX graph per part of the composite, with fixed tensor names and only the batch axis dynamic.

The part table (:data:`PARTS`) is the one place that says what each graph is::

    target_front   x_target (B, C_t, L_t) -> h (B, d_in)          target[:i] + mean pooling
    bridge         h (B, d_in)            -> z (B, T, D_out)      FP32 always (refit on site)
    source_back    z (B, T, D_out)        -> logits (B, n_classes) source[j:] + head
    source_front   x_source (B, C_s, L_s) -> z (B, T, D_out)      source[:j], for on-site calibration only

A fused composite (several target modalities) adds ``target_front_<key>`` (``x_target_<key> -> h_<key>``,
:func:`part_info`) per extra target, and its bridge graph has the further inputs ``h_<key>``
(:func:`part_inputs`).

Why the checks after export: ``torch.onnx.export(dynamo=True)`` happily exports a graph whose time axis was
declared dynamic although the model reshapes by a fixed number of tokens; it then fails (or silently
broadcasts) at run time on the device. So :func:`export_part` declares only the batch axis dynamic, then
checks that every non-batch dimension of the graph's inputs and outputs is a fixed number equal to the
expected shape, and runs the graph once in ONNX Runtime at batch 1 and at batch 3.

The dynamo export is the slow step (seconds per part). Exporting the same weights again in the same
process (the ``cpu`` and ``jetson`` flavours of one run, a retry, the tests) reuses the graph from an
in-memory cache keyed by the part's architecture, weights and shapes.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_bridge import __version__
from edge_bridge.bundle import EXTRA_FRONT_PREFIX, PART_IO, part_io
from edge_bridge.export.errors import ExportError
from edge_bridge.fileio import atomic_path

logger = logging.getLogger(__name__)

OPSET = 20
METADATA_PREFIX = "edge_bridge."


@dataclass(frozen=True)
class PartInfo:
    """One row of the part table.

    Attributes
    ----------
    name : str
    input, output : str
        Tensor names in the graph (also in the manifest and in ``golden.npz``).
    quantizable : bool
        Whether ``--precision int8|fp16`` applies; the bridge stays FP32 because it is refit on site.
    calibration : str
        What calibrates it: the ``"target"`` windows, the ``"source"`` windows, or the bridge outputs ``"z"``
        of the target windows (what ``source_back`` sees at run time).
    """

    name: str
    input: str
    output: str
    quantizable: bool
    calibration: str


PARTS: dict[str, PartInfo] = {
    "target_front": PartInfo("target_front", *PART_IO["target_front"][0], *PART_IO["target_front"][1],
                             quantizable=True, calibration="target"),
    "bridge": PartInfo("bridge", *PART_IO["bridge"][0], *PART_IO["bridge"][1], quantizable=False,
                       calibration=""),
    "source_back": PartInfo("source_back", *PART_IO["source_back"][0], *PART_IO["source_back"][1],
                            quantizable=True, calibration="z"),
    "source_front": PartInfo("source_front", *PART_IO["source_front"][0], *PART_IO["source_front"][1],
                             quantizable=True, calibration="source"),
}


def part_info(part: str) -> PartInfo:
    """The row of :data:`PARTS`, or for a fused composite's extra front ``target_front_<key>`` its own row
    (``x_target_<key> -> h_<key>``, quantizable like ``target_front``, calibrated on the ``<key>`` windows;
    the export's search and guard measure it on the fused chain)."""
    if part in PARTS:
        return PARTS[part]
    if part.startswith(EXTRA_FRONT_PREFIX) and len(part) > len(EXTRA_FRONT_PREFIX):
        key = part[len(EXTRA_FRONT_PREFIX):]
        (x,), (h,) = part_io(part, (key,))
        return PartInfo(part, x, h, quantizable=True, calibration=key)
    raise ExportError(f"unknown part {part!r}; the parts are {', '.join(PARTS)} and target_front_<key> for a "
                      "fused bridge's extra targets")


def part_inputs(composite: Any) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per part, its graph inputs ``{name: per-window shape}`` in order: one input each, except a fused
    bridge's ``h`` then ``h_<key>`` per extra target."""
    shapes = part_shapes(composite)
    out = {p: {part_info(p).input: shapes[p][0]} for p in shapes}
    for key in getattr(composite, "extra_keys", ()):
        out["bridge"][f"h_{key}"] = shapes[f"{EXTRA_FRONT_PREFIX}{key}"][1]
    return out


@dataclass
class ExportedPart:
    """A graph written by :func:`export_part`: where, how big, how long it took."""

    part: str
    path: Path
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    seconds: float
    cached: bool = False

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def part_shapes(composite: Any) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per-window input and output shape (no batch axis) of every part of a :class:`Composite`."""
    target, source, bridge = composite.target, composite.source, composite.bridge
    tz = (bridge.tokens, bridge.d_out)
    fronts = getattr(composite, "extra_fronts", {})
    if not fronts:
        return {
            "target_front": (tuple(target.input_shape), (bridge.d_in,)),
            "bridge": ((bridge.d_in,), tz),
            "source_back": (tz, (source.n_classes,)),
            "source_front": (tuple(source.input_shape), tz),
        }
    # fused: the bridge's first input is the main target's h (its width d_1); the rest are the extra fronts'
    d = list(bridge.input_dims)
    out = {
        "target_front": (tuple(target.input_shape), (d[0],)),
        "bridge": ((d[0],), tz),
        "source_back": (tz, (source.n_classes,)),
        "source_front": (tuple(source.input_shape), tz),
    }
    for (key, front), dk in zip(fronts.items(), d[1:], strict=True):
        out[f"{EXTRA_FRONT_PREFIX}{key}"] = (tuple(front.target.input_shape), (dk,))
    return out


def state_digest(module: Any) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes): identifies the weights exported."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        arr = t.detach().cpu().contiguous()
        h.update(f"{name}|{arr.dtype}|{tuple(arr.shape)}|".encode())
        h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_CACHE: collections.OrderedDict[str, bytes] = collections.OrderedDict()
_CACHE_MAX = 32


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """The dynamo exporter logs and warns a lot (absent torchvision ops, deprecations); quiet it."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def _batch_axes(module: Any, n: int, batch: Any) -> tuple[Any, ...]:
    """``dynamic_shapes`` for ``n`` inputs, each dynamic on axis 0 only, shaped like ``forward``'s signature:
    torch.export wants the inputs caught by ``*args`` (a fused bridge's ``h_<key>``) as one nested tuple."""
    import inspect

    params = list(inspect.signature(module.forward).parameters.values())
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params) and n > len(named):
        return (*({0: batch} for _ in named), tuple({0: batch} for _ in range(n - len(named))))
    return tuple({0: batch} for _ in range(n))


def _torch_to_onnx_bytes(module: Any, info: PartInfo, inputs: dict[str, tuple[int, ...]]) -> bytes:
    import torch

    # batch 2: batch 1 would let the exporter specialise the axis
    examples = tuple(torch.randn(2, *shape) for shape in inputs.values())
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet_torch_export(), torch.no_grad():
        program = torch.onnx.export(module, examples, None, dynamo=True, input_names=list(inputs),
                                    output_names=[info.output],
                                    dynamic_shapes=_batch_axes(module, len(inputs), batch),
                                    opset_version=OPSET, optimize=True, verbose=False)
        if program is None:
            raise ExportError(f"{info.name}: torch.onnx.export returned no program")
        model = program.model_proto
    return model.SerializeToString()


def stamp(model: onnx.ModelProto, props: dict[str, str]) -> onnx.ModelProto:
    """Set ``edge_bridge.*`` entries in ``metadata_props`` (existing keys are replaced).

    So that a stray file can be identified: tool version, part, precision, the sha256 of its weights.
    """
    keep = {p.key: p.value for p in model.metadata_props}
    keep.update({f"{METADATA_PREFIX}{k}": str(v) for k, v in props.items()})
    del model.metadata_props[:]
    for k, v in keep.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    return model


def read_stamp(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``edge_bridge.*`` metadata of an ONNX file, without the prefix."""
    model = onnx.load(str(path), load_external_data=False)
    n = len(METADATA_PREFIX)
    return {p.key[n:]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write one self-contained ``.onnx`` file atomically (never a ``.onnx.data`` side file)."""
    path = Path(path)
    data = model.SerializeToString()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def export_part(module: Any, part: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                path: str | os.PathLike[str], *, metadata: dict[str, str] | None = None,
                extra_inputs: dict[str, tuple[int, ...]] | None = None) -> ExportedPart:
    """Export one part to ``path`` (FP32), check it and log one line: file, size and time.

    Parameters
    ----------
    module : torch.nn.Module
        The part (from :meth:`Composite.parts`); put in eval mode here.
    part : str
        A key of :data:`PARTS`; fixes the tensor names.
    in_shape, out_shape : tuple of int
        Per-window shapes (no batch axis) the graph must have.
    path : path
    metadata : dict, optional
        Extra ``metadata_props`` (e.g. the sha256 of the source weights file).
    extra_inputs : dict of name -> shape, optional
        Further graph inputs after the part's own (a fused bridge's ``h_<key>``), in order.

    Raises
    ------
    ExportError
        If the export, the checker, the static-shape check or the ORT batch-1/batch-3 run fails. The failure
        is logged, then re-raised.
    """
    info, path = part_info(part), Path(path)
    inputs = {info.input: tuple(in_shape), **(extra_inputs or {})}
    t0 = time.perf_counter()
    try:
        module.eval()
        digest = state_digest(module)
        what = f"{part}|{digest}|{module!r}|{in_shape}|{out_shape}|{OPSET}"
        if extra_inputs:  # a single-input part's key stays what it was (the in-process cache)
            what += f"|{sorted(extra_inputs.items())}"
        key = hashlib.sha256(what.encode()).hexdigest()
        cached = key in _CACHE
        if cached:
            _CACHE.move_to_end(key)
            data = _CACHE[key]
        else:
            data = _torch_to_onnx_bytes(module, info, inputs)
            _CACHE[key] = data
            while len(_CACHE) > _CACHE_MAX:
                _CACHE.popitem(last=False)
        model = onnx.load_from_string(data)
        stamp(model, {"tool_version": __version__, "part": part, "precision": "fp32",
                      "weights_sha256": digest, **(metadata or {})})
        save_model(model, path)
        check_graph(path, part, in_shape, out_shape, extra_inputs=extra_inputs)
    except Exception as exc:
        logger.error("%s: export to %s failed after %.1f s: %s", part, path, time.perf_counter() - t0, exc)
        raise
    out = ExportedPart(part, path, tuple(in_shape), tuple(out_shape), time.perf_counter() - t0, cached)
    logger.info("%s: exported %s (%.1f kB, %.1f s%s)", part, path.name, out.size / 1e3, out.seconds,
                ", cached graph" if cached else "")
    return out


def graph_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Shapes of the graph's inputs and outputs: ints for fixed dims, the symbol name for dynamic ones."""
    out: dict[str, list[int | str | None]] = {}
    for v in (*model.graph.input, *model.graph.output):
        dims: list[int | str | None] = []
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        out[v.name] = dims
    return out


def check_graph(path: str | os.PathLike[str], part: str, in_shape: tuple[int, ...],
                out_shape: tuple[int, ...], *, run: bool = True,
                extra_inputs: dict[str, tuple[int, ...]] | None = None) -> None:
    """The checks every graph of a bundle passes (FP32 or quantized); raises :class:`ExportError`.

    ``onnx.checker``; exactly one input and one output with the part's names; the batch axis dynamic and every
    other axis fixed and equal to the expected shape; no ``.onnx.data`` side file; and (``run``) one ONNX
    Runtime run at batch 1 and batch 3 with the expected output shapes.
    """
    path = Path(path)
    info = part_info(part)
    inputs = {info.input: tuple(in_shape), **(extra_inputs or {})}
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError(f"{path}: onnx.checker rejects the {part} graph: {exc}") from exc
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ExportError(f"{path}: the {part} graph keeps weights in an external data file; bundles hold "
                          "self-contained .onnx files")
    side = sorted(p.name for p in path.parent.glob(f"{path.name}*.data"))
    if side:
        raise ExportError(f"{path}: found side file(s) {side}; bundles hold self-contained .onnx files")
    ins = [v.name for v in model.graph.input]
    outs = [v.name for v in model.graph.output]
    if (ins, outs) != (list(inputs), [info.output]):
        raise ExportError(f"{path}: the {part} graph has tensors {ins} -> {outs}, expected "
                          f"{list(inputs)} -> [{info.output!r}]")
    shapes = graph_shapes(model)
    for name, want in (*inputs.items(), (info.output, out_shape)):
        got = shapes[name]
        if len(got) != len(want) + 1 or isinstance(got[0], int):
            raise ExportError(f"{path}: {part} tensor {name} has shape {got}, expected [batch, "
                              f"{', '.join(map(str, want))}] with only the batch axis dynamic")
        if list(got[1:]) != list(want):
            raise ExportError(
                f"{path}: {part} tensor {name} has shape {got}, but only the batch axis may be dynamic and "
                f"the rest must be fixed at {list(want)}; a dynamic time axis exports fine and then breaks "
                "at run time. Export with dynamic_shapes on axis 0 only"
            )
    if run:
        sess = ort_session(path)
        for batch in (1, 3):
            rng = np.random.default_rng(batch)
            feed = {n: rng.standard_normal((batch, *shape)).astype(np.float32) for n, shape in inputs.items()}
            try:
                (y,) = sess.run([info.output], feed)
            except Exception as exc:
                raise ExportError(f"{path}: ONNX Runtime fails on the {part} graph at batch {batch}: {exc}"
                                  ) from exc
            if tuple(y.shape) != (batch, *out_shape) or not np.isfinite(y).all():
                raise ExportError(f"{path}: at batch {batch} the {part} graph gave shape {tuple(y.shape)} "
                                  f"(finite: {bool(np.isfinite(y).all())}), expected {(batch, *out_shape)}")


def ort_session(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """A CPU ONNX Runtime session; ``threads`` sets intra-op threads (1: flattest batch-1 latency)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_session(sess: Any, part: str, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Run a part's session over ``x`` (n, ...) in chunks; returns (n, ...) float32."""
    info = part_info(part)
    outs = [sess.run([info.output], {info.input: np.ascontiguousarray(x[k:k + batch], dtype=np.float32)})[0]
            for k in range(0, len(x), batch)]
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)
