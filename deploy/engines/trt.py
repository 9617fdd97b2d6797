"""TensorRT engines (``--device jetson``): built on the device from the part's QDQ ONNX, cached, reused.

Engines are not portable across GPUs or TensorRT versions, so bundles never carry them (DESIGN.md). The
first run on a device parses each ONNX file with TensorRT's ``OnnxParser``, builds a serialized plan and
stores it under::

    $XDG_CACHE_HOME/edge-bridge/trt/<device-name>/<tensorrt-version>/<onnx-sha256>.plan   (+ .json sidecar)

Later runs deserialize the plan (milliseconds instead of a build of tens of seconds). The sidecar records
what was built (file, precision flags, batch profile, build time) so a stray plan can be identified; a plan
that fails to deserialize is deleted and rebuilt.

Precision: a graph with explicit QuantizeLinear/DequantizeLinear nodes (the exporter's ``jetson`` INT8
flavour) is built with ``BuilderFlag.INT8``, so TensorRT honours the QDQ scales (TensorRT 10 has no implicit
INT8 calibration path worth using, and 11 removes it); FP16 is allowed too where the GPU has fast FP16, for
the layers left in float. The batch axis, the only dynamic one, gets an optimisation profile
``min = opt = 1`` (the live loop runs one window at a time) and ``max = 8`` (the self-test's golden batch).

Memory goes through the torch-free CUDA runtime bindings of ``cuda-python`` (``cuda.bindings.runtime``, or
``cuda.cudart`` in releases before 12.6). ``import tensorrt`` appears only in this module.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import time
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from deploy.engines.base import Engine, EngineError, TensorInfo
from edge_bridge.bundle import sha256_file

logger = logging.getLogger(__name__)

MAX_BATCH = 8
WORKSPACE_BYTES = 256 << 20


@cache
def tensorrt_available() -> bool:
    """Whether the ``tensorrt`` package can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


@cache
def cuda_available() -> bool:
    """Whether cuda-python's runtime bindings are installed (not whether a GPU answers)."""
    try:
        return importlib.util.find_spec("cuda") is not None and (
            importlib.util.find_spec("cuda.bindings") is not None or importlib.util.find_spec("cuda.cudart")
            is not None)
    except (ImportError, ValueError):
        return False


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        from cuda import cudart  # type: ignore[import-not-found,no-redef]
    return cudart


def missing_runtime() -> str | None:
    """``None`` when TensorRT and cuda-python are importable, else what is missing and how to fix it."""
    missing = []
    if not tensorrt_available():
        missing.append("the tensorrt Python package (JetPack ships it: "
                       "`sudo apt install python3-libnvinfer`; "
                       "on x86-64 `pip install tensorrt`)")
    if not cuda_available():
        missing.append("cuda-python (`pip install cuda-python`)")
    if not missing:
        return None
    return ("--device jetson needs " + " and ".join(missing) + "; see deploy/jetson/README.md, or run on the "
            "CPU with --device cpu")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-bridge" / "trt"


def _check(result: Any, what: str) -> Any:
    """cuda-python calls return ``(err, *values)``; raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA call {what} failed with {err}; check that the GPU is visible "
                          "(nvidia-smi / tegrastats) or run with --device cpu")
    return values[0] if len(values) == 1 else values


@lru_cache(maxsize=1)
def device_name() -> str:
    """The GPU's name, made safe for a directory name (e.g. ``Orin``, ``NVIDIA_H100_80GB_HBM3``)."""
    cudart = _cudart()
    count = _check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if count < 1:
        raise EngineError("--device jetson needs a CUDA GPU, but CUDA reports none; run with --device cpu")
    props = _check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    name = name.split("\x00", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "gpu0"


def _has_qdq(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


class TrtEngine(Engine):
    """One bundle part as a TensorRT engine.

    Parameters
    ----------
    path : path-like
        The part's ``.onnx`` file (QDQ INT8, FP16 or FP32).
    cache_dir : path-like, optional
        Root of the plan cache (default ``$XDG_CACHE_HOME/edge-bridge/trt``).
    max_batch : int
        Largest batch of the optimisation profile (default 8).
    rebuild : bool
        Ignore a cached plan and build again.

    Raises
    ------
    EngineError
        TensorRT, cuda-python or a GPU is missing (with what to install, suggesting ``--device cpu``), the
        ONNX file does not parse, or the build fails.
    """

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None,
                 max_batch: int = MAX_BATCH, rebuild: bool = False) -> None:
        problem = missing_runtime()
        if problem:
            raise EngineError(problem)
        super().__init__(path)
        import tensorrt as trt  # type: ignore[import-not-found]

        self._trt = trt
        self._cudart = _cudart()
        self.max_batch = int(max_batch)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.sha256 = sha256_file(self.path)
        root = Path(cache_dir) if cache_dir is not None else cache_root()
        self.plan_path = root / device_name() / trt.__version__ / f"{self.sha256}.plan"
        plan = None if rebuild else self._load_plan()
        runtime = trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(plan) if plan is not None else None
        if plan is not None and engine is None:
            logger.warning("%s: cached plan %s does not deserialize (TensorRT upgraded?); rebuilding",
                           self.path.name, self.plan_path)
        if engine is None:
            plan = self._build()
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise EngineError(f"{self.path}: TensorRT built a plan it cannot deserialize; delete "
                                  f"{self.plan_path.parent} and retry, or run with --device cpu")
        self._runtime, self.engine = runtime, engine
        self.context = engine.create_execution_context()
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._inputs: list[TensorInfo] = []
        self._outputs: list[TensorInfo] = []
        for k in range(engine.num_io_tensors):
            name = engine.get_tensor_name(k)
            shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            info = TensorInfo(name, shape, dtype)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(info)
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    # --- plan cache -----------------------------------------------------------------------------------
    def _load_plan(self) -> bytes | None:
        if not self.plan_path.is_file():
            return None
        logger.info("%s: TensorRT plan from cache %s", self.path.name, self.plan_path)
        return self.plan_path.read_bytes()

    def _build(self) -> bytes:
        trt = self._trt
        t0 = time.perf_counter()
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch always
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(self.path.read_bytes()):
            errors = "; ".join(str(parser.get_error(k)) for k in range(parser.num_errors))
            raise EngineError(f"{self.path}: TensorRT cannot parse this ONNX graph: {errors}. Re-export with "
                              "`edge-bridge export --device jetson` (explicit symmetric QDQ), or run with "
                              "--device cpu")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        flags = []
        if _has_qdq(self.path):
            config.set_flag(trt.BuilderFlag.INT8)
            flags.append("INT8")
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            flags.append("FP16")
        profile = builder.create_optimization_profile()
        for k in range(network.num_inputs):
            tensor = network.get_input(k)
            dims = list(tensor.shape)
            if any(d < 0 for d in dims[1:]):
                raise EngineError(f"{self.path}: input {tensor.name} has shape {dims}; only the batch axis "
                                  "may "
                                  "be dynamic (re-export the bundle)")
            rest = tuple(int(d) for d in dims[1:])
            profile.set_shape(tensor.name, (1, *rest), (1, *rest), (self.max_batch, *rest))
        config.add_optimization_profile(profile)
        logger.warning("%s: building a TensorRT engine (%s); first run on this device only, this takes a "
                       "while", self.path.name, "+".join(flags) or "FP32")
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"{self.path}: TensorRT could not build an engine (see the TensorRT log "
                              "above); "
                              "run with --device cpu")
        data = bytes(plan)
        seconds = time.perf_counter() - t0
        self.plan_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.plan_path.with_suffix(".plan.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.plan_path)
        sidecar = {"onnx": str(self.path), "onnx_sha256": self.sha256, "tensorrt": trt.__version__,
                   "device": device_name(), "flags": flags, "max_batch": self.max_batch,
                   "build_seconds": round(seconds, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.plan_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
        logger.info("%s: TensorRT engine built in %.1f s, cached at %s", self.path.name, seconds,
                    self.plan_path)
        return data

    # --- Engine interface -----------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = _check(self._cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self.check_feeds(feeds)
        cudart = self._cudart
        batch = next(iter(feeds.values())).shape[0]
        if not 1 <= batch <= self.max_batch:
            raise EngineError(f"{self.path.name}: batch {batch} is outside the engine's profile "
                              f"1..{self.max_batch}")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, arr in feeds.items():
            ptr = self._buffer(name, arr.nbytes)
            self.context.set_input_shape(name, tuple(arr.shape))
            _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream),
                   "cudaMemcpyAsync")
            self.context.set_tensor_address(name, ptr)
        outs: dict[str, np.ndarray] = {}
        for info in self._outputs:
            shape = tuple(self.context.get_tensor_shape(info.name))
            out = np.empty(shape, dtype=np.dtype(info.dtype))
            ptr = self._buffer(info.name, max(out.nbytes, 1))
            self.context.set_tensor_address(info.name, ptr)
            outs[info.name] = out
        if not self.context.execute_async_v3(self._stream):
            raise EngineError(f"{self.path.name}: TensorRT execution failed (see the TensorRT log)")
        for info in self._outputs:
            out = outs[info.name]
            ptr, _ = self._buffers[info.name]
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h, self._stream),
                   "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: arr.astype(np.float32, copy=False) for name, arr in outs.items()}

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        stream = getattr(self, "_stream", None)
        if stream is not None:
            cudart.cudaStreamDestroy(stream)
            self._stream = None
        self.context = None
        self.engine = None
