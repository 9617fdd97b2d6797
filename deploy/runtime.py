"""The composite on the device: one engine per part, chained ``target_front -> bridge -> source_back``.

:class:`CompositeRunner` opens the parts of a verified :class:`~edge_bridge.bundle.Bundle` on one device,
warms them up, runs the golden self-test, and swaps the bridge for a newer version without touching the
fronts and backs (the bridge is the only part refit on site, so it is the only one that changes while the
loop runs).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from deploy.engines import Engine, load_engine
from deploy.selftest import (
    PartCheck,
    SelfTestError,
    SelfTestReport,
    check_part,
    compare,
    golden_input,
    smoke_check,
)
from edge_bridge.bundle import Bundle, BundleError, PartSpec, read_golden

logger = logging.getLogger(__name__)

LIVE_PARTS = ("target_front", "bridge", "source_back")


def engine_options(device: str, threads: int) -> dict[str, Any]:
    """Backend options for :func:`deploy.engines.load_engine` (threads apply to ONNX Runtime only)."""
    return {"threads": threads} if device in ("cpu", "cuda") else {}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits; shape ``(n, n_classes)``."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_io(engine: Engine, spec: PartSpec, part: str) -> None:
    """The graph's real tensors must be the ones the manifest declares (names and non-batch shapes).

    ``Bundle.verify`` checks hashes and that the manifest's shapes fit together; only the loaded graph can
    tell that the file itself has those shapes (a bridge of the wrong size published under the old
    shapes would otherwise verify and fail mid-stream).
    """
    for kind, actual, declared in (("input", engine.inputs, spec.inputs), ("output", engine.outputs,
                                                                            spec.outputs)):
        got = [(t.name, list(t.shape[1:])) for t in actual]
        want = [(t.name, list(t.shape[1:])) for t in declared]
        if got != want:
            raise BundleError(f"{engine.path}: the {part} graph's {kind}s are {got} but the manifest "
                              f"declares {want}; the file does not belong to this bundle. Re-export it")


class CompositeRunner:
    """The three live parts of a bundle loaded on ``device``.

    Parameters
    ----------
    bundle : Bundle
        Verified bundle (``Bundle.load``).
    device : {"cpu", "cuda", "jetson"}
    threads : int
        ONNX Runtime intra-op threads per part (default 1: flattest batch-1 latency on small CPUs).

    Raises
    ------
    EngineError
        A runtime is missing for ``device`` or a graph cannot be loaded.

    Examples
    --------
    >>> runner = CompositeRunner(Bundle.load("demo.bundle"), "cpu")   # doctest: +SKIP
    >>> runner.warm_up(); runner.self_test()
    >>> probs = softmax(runner(x[None]))
    """

    def __init__(self, bundle: Bundle, device: str = "cpu", *, threads: int = 1) -> None:
        self.bundle = bundle
        self.device = device
        self.threads = threads
        self._lock = threading.Lock()
        opts = engine_options(device, threads)
        self.engines: dict[str, Engine] = {}
        try:
            for part in LIVE_PARTS:
                path = bundle.bridge_path() if part == "bridge" else bundle.part_path(part)
                t0 = time.perf_counter()
                self.engines[part] = load_engine(path, device, **opts)
                check_io(self.engines[part], bundle.part(part), part)
                logger.info("%s: %s loaded on %s in %.0f ms", part, path.name, device,
                            1e3 * (time.perf_counter() - t0))
        except BaseException:
            self.close()
            raise
        self.bridge_version = bundle.manifest.current_bridge
        self.input_shape = tuple(bundle.manifest.target.input_shape)

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits for a batch of preprocessed target windows ``(n, C, L)`` -> ``(n, n_classes)``."""
        with self._lock:  # a bridge swap never lands between the three parts of one window
            e = self.engines
            h = e["target_front"].run({"x_target": x})["h"]
            z = e["bridge"].run({"h": h})["z"]
            return e["source_back"].run({"z": z})["logits"]

    def warm_up(self, runs: int = 5) -> float:
        """Run zeros through the chain ``runs`` times (allocations, kernel choice); returns seconds."""
        t0 = time.perf_counter()
        x = np.zeros((1, *self.input_shape), dtype=np.float32)
        for _ in range(max(runs, 1)):
            self(x)
        return time.perf_counter() - t0

    def self_test(self, golden: dict[str, np.ndarray] | None = None) -> SelfTestReport:
        """Compare every live part (and the chain) with ``golden.npz``; raise :class:`SelfTestError` on drift.

        Raises
        ------
        SelfTestError
            A part's outputs differ from the host's beyond tolerance (the message lists each part, the
            largest difference and what to do), or the bundle has no golden file.
        """
        golden = self._golden() if golden is None else golden
        report = SelfTestReport()
        for part in LIVE_PARTS:
            precision = self.bundle.part(part).precision
            check = check_part(self.engines[part], part, golden, precision, self.gpu)
            if check is not None:
                report.checks.append(check)
        if not report.checks:
            raise SelfTestError(f"{self.bundle.root}/golden.npz has no inputs and outputs for "
                                f"{', '.join(LIVE_PARTS)} (keys: {sorted(golden)}); re-export the bundle")
        if not report.passed:
            lines = "\n  ".join(c.line() for c in report.checks)
            raise SelfTestError(
                f"self-test on {self.device} failed: outputs drift from the bundle's golden.npz beyond "
                f"tolerance\n  {lines}\nThe engine computes something other than what was exported "
                "(corrupted engine cache, another runtime version, a backend bug). Clear the engine cache "
                "and retry, or try --device cpu; if the CPU also fails, re-export the bundle")
        return report

    def _golden(self) -> dict[str, np.ndarray]:
        try:
            return read_golden(self.bundle)
        except BundleError as exc:
            raise SelfTestError(f"cannot self-test: {exc}") from None

    # --- bridge swap ------------------------------------------------------------------------------------
    def prepare_bridge(self, bundle: Bundle) -> tuple[Engine, PartCheck]:
        """Open ``bundle``'s current bridge and test it; the caller swaps it in only if the check passed.

        A bridge refit on site has no golden outputs of its own: it must run on the golden ``h``, give
        finite outputs of the bundle's ``z`` shape, and, when calibration recorded expected outputs in the
        version's ``metrics["golden"]`` (``{"z": nested list, "atol": float}`` for the golden ``h``),
        match them.
        """
        version = bundle.current_bridge
        engine = load_engine(bundle.bridge_path(), self.device, **engine_options(self.device, self.threads))
        try:
            golden = self._golden()
            h = golden_input(golden, "bridge", "h")
            if h is None:
                h = np.zeros((1, *self.engines["target_front"].outputs[0].shape[1:]), dtype=np.float32)
            feeds = {"h": np.asarray(h, dtype=np.float32)}
            z_shape = tuple(int(d) for d in version.onnx.outputs[0].shape[1:])
            check = smoke_check(engine, "bridge", feeds, z_shape)
            recorded = version.metrics.get("golden") if isinstance(version.metrics, dict) else None
            if check.passed and isinstance(recorded, dict) and "z" in recorded:
                want = np.asarray(recorded["z"], dtype=np.float32)
                atol = float(recorded.get("atol", 1e-4))
                rtol = float(recorded.get("rtol", 1e-3))
                check = compare("bridge", engine.run(feeds), {"z": want}, atol, rtol)
                check.detail = check.detail or "matches the outputs calibration recorded"
        except BaseException:
            engine.close()
            raise
        return engine, check

    def swap_bridge(self, engine: Engine, version: int) -> None:
        """Put a tested bridge engine in place (between windows) and close the old one."""
        with self._lock:
            old, self.engines["bridge"] = self.engines["bridge"], engine
            self.bridge_version = version
        old.close()

    def close(self) -> None:
        for e in self.engines.values():
            e.close()
        self.engines = {}

    def __enter__(self) -> CompositeRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
