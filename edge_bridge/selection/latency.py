"""A candidate's deployed cost: batch-1 latency of ``target_front[:i]`` + ``bridge`` + ``source_back[j:]``.

Why measured, not estimated: the cost of a cut depends on the cut (a NormWear front costs 0.3-3.6 s per
window depending on *i*, ``bench/positions.py``), and on what ONNX Runtime fuses in the graph ``export``
writes. So each part is built the way ``edge-bridge export`` builds it (:func:`edge_bridge.export.onnx_export
.export_part`, static INT8 QDQ by :func:`edge_bridge.export.quantize.quantize_part` in the device's flavour;
the bridge stays FP32 because it is refit on site), then timed one window at a time on one intra-op thread
(the device setting: DESIGN.md) with ONNX Runtime's CPU provider, or its TensorRT provider where present and
the device is a Jetson. A candidate's latency is the sum of its three parts, as ``deploy`` runs one engine
per part.

Latency depends on the architecture and the shapes, not on the weights, so measurements are cached per part
under ``$XDG_CACHE_HOME/edge-bridge/latency/`` keyed by a structure hash of the part (module tree, parameter
shapes, input shape), the device flavour, the execution provider, ONNX Runtime's version and the CPU: a
front is measured once per model and position *i*, a back once per *j*, and a bridge once per shape.

The bench (``bench/positions.py``) times its graphs with the same :func:`time_session`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.errors import EdgeBridgeError

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "jetson")
CACHE_VERSION = 1


class LatencyError(EdgeBridgeError, ValueError):
    """A latency cannot be measured or no candidate meets the budget."""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/edge-bridge/latency`` (default ``~/.cache/edge-bridge/latency``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-bridge" / "latency"


def providers(device: str) -> list[str]:
    """ONNX Runtime providers for ``device``: TensorRT first on a Jetson that has it, else the CPU."""
    import onnxruntime as ort

    if device == "jetson" and "TensorrtExecutionProvider" in ort.get_available_providers():
        return ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def time_session(path: str | os.PathLike[str], feed: dict[str, np.ndarray], *, threads: int = 1,
                 min_repeats: int = 5, budget_s: float = 0.5, provider_list: list[str] | None = None
                 ) -> tuple[float, float, int]:
    """Batch-1 latency of one ONNX Runtime session: ``(median ms, min ms, runs)`` after 2 warm-up runs.

    At least ``min_repeats`` runs, more while within ``budget_s`` seconds (at most 500). The minimum is kept
    next to the median because on a shared machine other processes only ever add time.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts,
                                providers=provider_list or ["CPUExecutionProvider"])
    feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feed.items()}
    for _ in range(2):
        sess.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget_s and len(times) < 500):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), 1000 * min(times), len(times)


def structure_key(module: Any, in_shape: tuple[int, ...]) -> str:
    """Identical architecture and input shape mean identical latency: a hash of both (values excluded)."""
    attrs = []
    for name, m in module.named_modules():
        prim = {k: v for k, v in vars(m).items()
                if not k.startswith("_") and isinstance(v, int | float | bool | str | tuple)}
        attrs.append((name, type(m).__name__, sorted(prim.items(), key=lambda kv: kv[0])))
    shapes = [(k, tuple(v.shape)) for k, v in module.state_dict().items()]
    text = repr(module) + repr(attrs) + repr(shapes) + repr(tuple(in_shape))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def quantize_graph(src: str | os.PathLike[str], dst: str | os.PathLike[str], input_name: str,
                   windows: np.ndarray, device: str = "cpu", batch: int = 8) -> Path:
    """Static INT8 QDQ of ``src`` in ``device``'s flavour (``export``'s :func:`~edge_bridge.export.quantize
    .quantize_part`), calibrated on ``windows`` (rows stacked on the batch axis, ``batch`` rows per feed: a
    graph exported at a fixed batch needs exactly that many)."""
    from edge_bridge.export.quantize import QuantConfig, WindowReader, quantize_part

    return quantize_part(src, dst, WindowReader(input_name, windows, batch=batch),
                         QuantConfig.for_target(device))


def _front(target: Any, i: int) -> Any:
    """``TargetFront(target, i)`` whose repr names *i*: ``export_part`` caches graphs by the module's repr,
    weights and shapes, and two fronts of one backbone with equal output widths would otherwise share one."""
    from edge_bridge.composite import TargetFront

    class PositionedFront(TargetFront):
        def extra_repr(self) -> str:
            return f"i={self.i}"

    return PositionedFront(target, i)


def _back(source: Any, j: int) -> Any:
    """``SourceBack(source, j)`` whose repr names *j* (see :func:`_front`)."""
    from edge_bridge.composite import SourceBack

    class PositionedBack(SourceBack):
        def extra_repr(self) -> str:
            return f"j={self.j}"

    return PositionedBack(source, j)


@dataclass
class Candidate:
    """The deployed latency of one (i, j) pair, in ms per window (medians; ``*_min_ms``: the fastest run)."""

    i: int
    j: int
    front_ms: float
    bridge_ms: float
    back_ms: float

    @property
    def total_ms(self) -> float:
        return self.front_ms + self.bridge_ms + self.back_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_ms": round(self.total_ms, 3)}


class LatencyMeter:
    """Measures (and caches) the deployed parts of candidates for one target/source pair of backbones.

    Parameters
    ----------
    target, source : Backbone
    bridge_settings : object with ``kind``, ``rank``, ``prototypes``
        The bridge a candidate would get (``edge_bridge.pipeline.BridgeSettings``).
    device : {"cpu", "jetson"}
        INT8 flavour (``export --target``) and execution provider.
    x_target, x_source : ndarray, optional
        Real windows for INT8 calibration; random N(0, 1) windows (the models see z-scored signals) when
        absent. Latency does not depend on them, only the quantization ranges do.
    cache_dir : path, optional
        Default :func:`cache_root`.
    """

    def __init__(self, target: Any, source: Any, bridge_settings: Any, *, device: str = "cpu",
                 x_target: np.ndarray | None = None, x_source: np.ndarray | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, calibration_windows: int = 16,
                 min_repeats: int = 5, budget_s: float = 0.5) -> None:
        if device not in DEVICES:
            raise LatencyError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        self.target, self.source, self.settings, self.device = target, source, bridge_settings, device
        rng = np.random.default_rng(0)
        n = calibration_windows
        self.x_target = (x_target[:n] if x_target is not None
                         else rng.standard_normal((n, *target.input_shape))).astype(np.float32)
        self.x_source = (x_source[:n] if x_source is not None
                         else rng.standard_normal((n, *source.input_shape))).astype(np.float32)
        self.min_repeats, self.budget_s = min_repeats, budget_s
        self.providers = providers(device)
        self.cache_file = Path(cache_dir or cache_root()) / f"{device}.json"
        self._cache = self._read_cache()
        self.measured = 0  # parts measured (not from the cache) in this meter's life

    # --- cache --------------------------------------------------------------------------------------------
    def _read_cache(self) -> dict[str, Any]:
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            return {}
        return data.get("parts", {}) if data.get("cache_version") == CACHE_VERSION else {}

    def _write_cache(self) -> None:
        from edge_bridge.fileio import atomic_write_text

        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.cache_file, json.dumps({"cache_version": CACHE_VERSION,
                                                           "parts": self._cache}, indent=1))
        except OSError as exc:  # the cache saves time; a read-only home must not stop a selection
            logger.warning("could not write the latency cache %s: %s", self.cache_file, exc)

    def _key(self, part: str, module: Any, in_shape: tuple[int, ...]) -> str:
        import onnxruntime as ort

        from edge_bridge.export.quantize import QuantConfig

        # the INT8 flavour is part of the key: a change of what export quantizes changes the latency
        flavour = json.dumps(QuantConfig.for_target(self.device).to_dict(), sort_keys=True, default=str)
        where = f"{self.device}|{','.join(self.providers)}|ort {ort.__version__}|{platform.processor()}|" \
                f"{platform.machine()}|{flavour}"
        return f"{part}|{structure_key(module, in_shape)}|{hashlib.sha256(where.encode()).hexdigest()[:12]}"

    # --- parts --------------------------------------------------------------------------------------------
    def _measure(self, part: str, module: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 calibration: Callable[[], np.ndarray], what: str) -> float:
        """The part's median ms: from the cache, else exported, quantized on ``calibration()`` and timed."""
        from edge_bridge.bundle import PART_IO
        from edge_bridge.export.onnx_export import export_part

        key = self._key(part, module, in_shape)
        if key in self._cache:
            return float(self._cache[key]["ms"])
        t0 = time.perf_counter()
        calib = calibration()
        name = PART_IO[part][0][0]
        with tempfile.TemporaryDirectory(prefix="latency-") as work:
            fp32 = export_part(module, part, in_shape, out_shape, Path(work) / f"{part}.onnx").path
            graph = fp32 if part == "bridge" else quantize_graph(fp32, Path(work) / f"{part}.int8.onnx", name,
                                                                 calib, self.device)
            med, best, runs = time_session(graph, {name: calib[:1]}, threads=1, min_repeats=self.min_repeats,
                                           budget_s=self.budget_s, provider_list=self.providers)
        self._cache[key] = {"ms": round(med, 4), "min_ms": round(best, 4), "runs": runs, "what": what,
                            "precision": "fp32" if part == "bridge" else "int8",
                            "measured_s": round(time.perf_counter() - t0, 2)}
        self.measured += 1
        self._write_cache()
        logger.info("latency %-28s %8.3f ms (median of %d, min %.3f; %.1f s to build)", what, med, runs, best,
                    time.perf_counter() - t0)
        return med

    def front_ms(self, i: int) -> float:
        """``target_front[:i]`` (INT8)."""
        module = _front(self.target, i).eval()
        return self._measure("target_front", module, tuple(self.target.input_shape),
                             (self.target.block_output(i).features,), lambda: self.x_target,
                             f"{self.target.kind} front[:{i}]")

    def bridge_ms(self, i: int, j: int) -> float:
        """The bridge for (i, j) (FP32); its weights are random (latency does not depend on them)."""
        import torch

        from edge_bridge.bridge import build_bridge

        t_out, s_in = self.target.block_output(i), self.source.block_input(j)
        kw: dict[str, Any] = {"d_in": t_out.features, "tokens": s_in.tokens, "d_out": s_in.features}
        if self.settings.kind in ("prototype", "lowrank"):
            kw["rank"] = self.settings.rank
        if self.settings.kind == "prototype":
            kw["prototypes"] = self.settings.prototypes
        torch.manual_seed(0)
        bridge = build_bridge(self.settings.kind, **kw).eval()
        return self._measure(
            "bridge", bridge, (t_out.features,), (s_in.tokens, s_in.features),
            lambda: np.random.default_rng(0).standard_normal((8, t_out.features)).astype(np.float32),
            f"bridge {t_out.features} -> {s_in.tokens}x{s_in.features}")

    def back_ms(self, j: int) -> float:
        """``source_back[j:]`` including the head (INT8), calibrated on real block-*j* tokens."""
        import torch

        from edge_bridge.features import source_tokens

        s_in = self.source.block_input(j)
        module = _back(self.source, j).eval()

        def tokens() -> np.ndarray:  # a forward of source[:j]: only when the part is not in the cache
            with torch.no_grad():
                return source_tokens(self.source, self.x_source, j).numpy()

        return self._measure("source_back", module, (s_in.tokens, s_in.features), (self.source.n_classes,),
                             tokens, f"{self.source.kind} back[{j}:]")

    def candidate(self, i: int, j: int) -> Candidate:
        """All three parts of (i, j), each measured once and then read from the cache."""
        return Candidate(i, j, round(self.front_ms(i), 4), round(self.bridge_ms(i, j), 4),
                         round(self.back_ms(j), 4))

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"device": self.device, "providers": self.providers, "threads": 1, "batch": 1,
                "onnxruntime": ort.__version__, "processor": platform.processor() or platform.machine(),
                "precision": "target_front and source_back INT8 QDQ (export's flavour), bridge FP32",
                "statistic": "median ms per window of each part, summed", "cache": str(self.cache_file)}
