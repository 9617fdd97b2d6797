"""The composite on the device: one engine per part, chained ``target_front -> bridge -> source_back``.

:class:`CompositeRunner` opens the parts of a verified :class:`~edge_bridge.bundle.Bundle` on one device,
warms them up, runs the golden self-test, and swaps the bridge for a newer version without touching the
fronts and backs (the bridge is the only part refit on site, so it is the only one that changes while the
loop runs).

No bridge becomes current without its chain giving finite logits on the bundle's golden inputs:
:func:`bridge_golden` computes a new version's own expected outputs for calibrate's publish (and refuses a
non-finite chain), :meth:`CompositeRunner.prepare_bridge` checks the same before a hot swap, and the
start-up self-test checks the current version against its own golden file.

A fused bundle (a bridge fed by K target modalities, manifest schema 2) also opens one front per extra
target, ``target_front_<key>``; :meth:`CompositeRunner.run_targets` (or :func:`run_windows`) takes one
window batch per modality and runs every front, then the bridge on ``h, h_<key>, ...``, then
``source_back``. A single-target bundle runs exactly as before, through either call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
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
    tolerance_for,
)
from edge_bridge.bundle import GOLDEN, Bundle, BundleError, PartSpec, extra_front, part_io, read_golden

logger = logging.getLogger(__name__)

LIVE_PARTS = ("target_front", "bridge", "source_back")


def _short_keys(golden: dict[str, Any]) -> str:
    keys = sorted(golden)
    return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def engine_options(device: str, threads: int) -> dict[str, Any]:
    """Backend options for :func:`deploy.engines.load_engine` (threads apply to ONNX Runtime only)."""
    return {"threads": threads} if device in ("cpu", "cuda") else {}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits; shape ``(n, n_classes)``."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def bridge_golden(bundle: Bundle, onnx_bytes: bytes) -> dict[str, np.ndarray] | None:
    """A new bridge's own expected outputs on the bundle's golden inputs, by ONNX Runtime on this CPU.

    The golden ``h`` (the bundle's, so every version is checked on the same input) -> the new bridge ->
    the bundle's ``source_back``; returns :data:`edge_bridge.bundle.BRIDGE_GOLDEN_KEYS` for
    :func:`edge_bridge.bundle.publish_bridge`. A bundle without ``golden.npz`` (which cannot self-test
    at start anyway) gets ``None``, after the same finiteness check on a fixed random ``h``. A fused
    bridge runs on every golden input (``h``, ``h_<key>``, ...), and they go into its golden outputs too,
    so the new version self-tests at start like the exported one.

    Raises
    ------
    BundleError
        The bridge cannot run on the golden ``h`` or the chain's logits are not finite: it must not
        become current.
    """
    import onnxruntime as ort

    inputs = bundle.current_bridge.onnx.inputs  # h, then a fused bridge's h_<key> (the new version's too)
    if bundle.golden_path is None:  # nothing to self-test with at start either; still refuse a NaN chain
        rng = np.random.default_rng(0)
        feeds = {t.name: rng.standard_normal((8, *[int(d) for d in t.shape[1:]])).astype(np.float32)
                 for t in inputs}
    else:
        golden = read_golden(bundle, strict=False)
        feeds = {}
        for t in inputs:
            found = golden_input(golden, "bridge", t.name)
            if found is None:
                raise BundleError(f"{bundle.root}: {GOLDEN} has no golden {t.name} to compute the new "
                                  "bridge's expected outputs with; re-export the bundle")
            feeds[t.name] = np.asarray(found, dtype=np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        z = sess.run(["z"], feeds)[0]
    except Exception as exc:  # ORT raises its own types for bad graphs and feeds
        raise BundleError(f"{bundle.root}: the new bridge cannot run on the golden inputs "
                          f"({' '.join(str(exc).split())[:200]}); nothing was published") from None
    back = load_engine(bundle.part_path("source_back"), "cpu", threads=1)
    try:
        logits = back.run({"z": np.asarray(z, dtype=np.float32)})["logits"]
    finally:
        back.close()
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(logits))):
        raise BundleError(f"{bundle.root}: the new bridge makes the chain's logits non-finite (NaN or inf) "
                          "on the golden inputs; refused, the current bridge stays current")
    if bundle.golden_path is None:
        return None
    return {**{f"bridge.{name}": v for name, v in feeds.items()}, "bridge.z": z, "source_back.z": z,
            "source_back.logits": logits}


def run_windows(bundle: Bundle, windows: Mapping[str, np.ndarray], *, device: str = "cpu",
                threads: int = 1) -> np.ndarray:
    """Logits of one window batch per target modality through a bundle's parts, once.

    Opens a :class:`CompositeRunner` (fronts -> bridge -> source_back; ONNX Runtime on ``device``), runs
    :meth:`CompositeRunner.run_targets` and closes it: for a one-off batch (a test, a file), not a stream.

    Examples
    --------
    >>> logits = run_windows(Bundle.load("fused.bundle"), {"target": x_ppg, "eda": x_eda})  # doctest: +SKIP
    """
    with CompositeRunner(bundle, device, threads=threads) as runner:
        return runner.run_targets(windows)


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
        self.extra_keys = bundle.extra_keys  # a fused bundle's further targets, in bridge-input order
        self.parts = (*LIVE_PARTS, *(extra_front(k) for k in self.extra_keys))
        try:
            for part in self.parts:
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
        self.last_h: np.ndarray | None = None
        self.last_x: np.ndarray | None = None
        self.input_shape = tuple(bundle.manifest.target.input_shape)
        self.input_shapes = {"target": self.input_shape,
                             **{e.key: tuple(e.spec.input_shape) for e in bundle.manifest.extra_targets}}

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits for a batch of preprocessed target windows ``(n, C, L)`` -> ``(n, n_classes)``.

        Raises
        ------
        BundleError
            For a fused bundle, whose bridge needs every target's window: use :meth:`run_targets`.
        """
        if self.extra_keys:
            keys = ", ".join(f"'{k}': x_{k}" for k in self.extra_keys)
            raise BundleError(f"{self.bundle.root}: the bridge is fused (targets "
                              f"{', '.join(self.input_shapes)}) and needs one window per modality; call "
                              f"run_targets({{'target': x, {keys}}}) instead")
        with self._lock:  # a bridge swap never lands between the three parts of one window
            e = self.engines
            h = e["target_front"].run({"x_target": x})["h"]
            self.last_x, self.last_h = x, h  # the batch's input and features, for the drift monitor
            z = e["bridge"].run({"h": h})["z"]
            return e["source_back"].run({"z": z})["logits"]

    def run_targets(self, windows: Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits for one batch of preprocessed windows per target modality -> ``(n, n_classes)``.

        Parameters
        ----------
        windows : mapping of key -> ndarray, shape (n, C_k, L_k)
            ``"target"`` (the main target) and, for a fused bundle, each extra target's key
            (``bundle.extra_keys``), windowed in lockstep (the same n, window i of each covering the same
            time); float32, cut with the manifest's preprocessing of that modality.

        Raises
        ------
        BundleError
            A modality is missing or unknown, or a batch has the wrong shape or length.
        """
        feeds = self._check_windows(windows)
        with self._lock:  # a bridge swap never lands between the parts of one window
            e = self.engines
            h = e["target_front"].run({"x_target": feeds["target"]})["h"]
            self.last_x, self.last_h = feeds["target"], h  # the main target's, for the drift monitor
            hb = {"h": h}
            for k in self.extra_keys:
                hb[f"h_{k}"] = e[extra_front(k)].run({f"x_target_{k}": feeds[k]})[f"h_{k}"]
            z = e["bridge"].run(hb)["z"]
            return e["source_back"].run({"z": z})["logits"]

    def _check_windows(self, windows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        want = self.input_shapes
        if not isinstance(windows, Mapping) or set(windows) != set(want):
            got = sorted(windows) if isinstance(windows, Mapping) else type(windows).__name__
            raise BundleError(f"{self.bundle.root}: this bundle takes one window batch per target modality "
                              f"{list(want)}, got {got}; pass a dict with exactly these keys")
        feeds = {k: np.ascontiguousarray(windows[k], dtype=np.float32) for k in want}
        n = {k: int(v.shape[0]) if v.ndim else -1 for k, v in feeds.items()}
        for k, v in feeds.items():
            if tuple(v.shape[1:]) != want[k] or v.ndim != len(want[k]) + 1:
                raise BundleError(f"{self.bundle.root}: the {k} windows have shape {list(v.shape)}, expected "
                                  f"[n, {', '.join(map(str, want[k]))}] (the manifest's {k} preprocessing)")
        if len(set(n.values())) != 1:
            raise BundleError(f"{self.bundle.root}: the modalities' batches differ in length {n}; window "
                              "them in lockstep (window i of each covers the same time)")
        return feeds

    def warm_up(self, runs: int = 5) -> float:
        """Run zeros through the chain ``runs`` times (allocations, kernel choice); returns seconds."""
        t0 = time.perf_counter()
        x = {k: np.zeros((1, *shape), dtype=np.float32) for k, shape in self.input_shapes.items()}
        for _ in range(max(runs, 1)):
            if self.extra_keys:
                self.run_targets(x)
            else:  # the single-target path as it always ran (through __call__)
                self(x["target"])
        return time.perf_counter() - t0

    def self_test(self, golden: dict[str, np.ndarray] | None = None) -> SelfTestReport:
        """Compare every live part (and the chain) with the golden outputs; raise :class:`SelfTestError`.

        The expected outputs are the current bridge version's own (``bridges/vNNNN.golden.npz`` over
        ``golden.npz``), so a bundle calibrated on site, or rolled back, starts like a fresh one.

        Raises
        ------
        SelfTestError
            A part's outputs differ from the host's beyond tolerance, a golden value or an output is NaN
            or inf, or there is nothing to compare with. One line: the version, each part's verdict and
            what to do.
        """
        golden = self._golden() if golden is None else golden
        version = self.bridge_version
        report = SelfTestReport()
        for part in self.parts:
            precision = self.bundle.part(part).precision
            io = part_io(part, self.extra_keys) if self.extra_keys else None
            check = check_part(self.engines[part], part, golden, precision, self.gpu, io)
            if check is not None:
                report.checks.append(check)
        where = self.golden_name
        missing = [p for p in self.parts if p not in {c.part for c in report.checks}]
        if missing:  # an unchecked part would run live unverified
            raise SelfTestError(f"cannot self-test bridge v{version:04d}: {self.bundle.root}/{where} (with "
                                f"{GOLDEN}) has no inputs and outputs for {', '.join(missing)} (keys: "
                                f"{_short_keys(golden)}); re-export the bundle")
        if not report.passed:
            lines = " | ".join(" ".join(c.line().split()) for c in report.checks)
            raise SelfTestError(
                f"self-test of bridge v{version:04d} on {self.device} failed, outputs drift from {where} "
                f"beyond tolerance: {lines}. "
                "The engine computes something other than what was exported, or the golden file is damaged "
                "(corrupted engine cache, another runtime version, a backend bug): clear the engine cache "
                "and retry, or try --device cpu; if the CPU also fails, re-export the bundle")
        return report

    @property
    def golden_name(self) -> str:
        """The file the self-test compares with: the current version's own, or the bundle's golden.npz."""
        b = self.bundle.manifest.bridges.get(self.bridge_version)
        return b.golden_file if b is not None and b.golden_file else GOLDEN

    def _golden(self) -> dict[str, np.ndarray]:
        try:
            return read_golden(self.bundle, self.bridge_version)
        except BundleError as exc:
            raise SelfTestError(f"cannot self-test bridge v{self.bridge_version:04d}: {exc}") from None

    # --- bridge swap ------------------------------------------------------------------------------------
    def prepare_bridge(self, bundle: Bundle) -> tuple[Engine, PartCheck]:
        """Open ``bundle``'s current bridge and test it; the caller swaps it in only if the check passed.

        The whole chain runs on the golden inputs: golden ``h`` -> new bridge -> this runner's source
        back. ``z`` must have the bundle's shape and the logits must be finite (a NaN chain would label
        every window); with the version's own golden file both must also match it.
        """
        engine = load_engine(bundle.bridge_path(), self.device, **engine_options(self.device, self.threads))
        try:
            try:
                check_io(engine, bundle.current_bridge.onnx, "bridge")
            except BundleError as exc:
                check = PartCheck("bridge", False, float("inf"), 0.0, 0.0, 0.0, 0, str(exc))
            else:
                check = self._chain_check(engine, bundle)
        except BaseException:
            engine.close()
            raise
        return engine, check

    def _chain_check(self, engine: Engine, bundle: Bundle) -> PartCheck:
        version = bundle.current_bridge
        own = bool(version.golden_file)
        golden = read_golden(bundle, version.version, strict=False)
        h = golden_input(golden, "bridge", "h")
        if h is None:
            raise BundleError(f"{bundle.root}: {GOLDEN} has no golden h; re-export the bundle")
        feeds = {"h": np.asarray(h, dtype=np.float32)}
        for k in bundle.extra_keys:  # a fused bridge: its further golden inputs
            hk = golden_input(golden, "bridge", f"h_{k}")
            if hk is None:
                raise BundleError(f"{bundle.root}: {GOLDEN} has no golden h_{k}; re-export the bundle")
            feeds[f"h_{k}"] = np.asarray(hk, dtype=np.float32)
        n = int(feeds["h"].shape[0])
        z_shape = tuple(int(d) for d in version.onnx.outputs[0].shape[1:])

        def fail(detail: str) -> PartCheck:
            return PartCheck("bridge", False, float("inf"), 0.0, 0.0, 0.0, n, detail)

        try:
            z = engine.run(feeds)["z"]
            if tuple(z.shape[1:]) != z_shape:
                return fail(f"output shape {list(z.shape[1:])} per window, expected {list(z_shape)}")
            logits = self.engines["source_back"].run({"z": np.asarray(z, dtype=np.float32)})["logits"]
        except Exception as exc:  # report, never crash the watcher: it keeps the old bridge
            return fail(f"cannot run on the golden inputs: {' '.join(str(exc).split())[:200]}")
        if not (np.all(np.isfinite(z)) and np.all(np.isfinite(logits))):
            return fail("the chain gives non-finite logits (NaN or inf) on the golden inputs")
        if not own:
            return PartCheck("bridge", True, 0.0, float(np.max(np.abs(z))) if z.size else 0.0, 0.0, 0.0, n,
                             "runs, finite logits, right shape (no golden outputs of its own)")
        atol, rtol = tolerance_for(golden, "bridge", version.onnx.precision, self.gpu)
        check = compare("bridge", {"z": z}, {"z": golden["bridge.z"]}, atol, rtol)
        sb_prec = bundle.part("source_back").precision
        sb_atol, sb_rtol = tolerance_for(golden, "source_back", sb_prec, self.gpu)
        chain = compare("source_back", {"logits": logits}, {"logits": golden["source_back.logits"]},
                        sb_atol, sb_rtol)
        if not chain.passed:
            check.passed = False
            check.detail = check.detail or f"chain logits: {chain.detail}"
        if check.passed:
            check.detail = f"matches {version.golden_file}"
        return check

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
