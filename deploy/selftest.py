"""The device self-test: run each part on the bundle's ``golden.npz`` inputs and compare with its outputs.

Why: an engine built on the device (another CPU, ONNX Runtime version or TensorRT) can compute something
different from what the host exported -- a kernel that rounds INT8 differently, a TensorRT tactic with a
bug, a truncated file that still loads. Comparing against the host's own outputs before the first live
window catches that, instead of streaming plausible-looking wrong classes.

Keys in ``golden.npz``. For every part (``target_front``, ``bridge``, ``source_back``, ``source_front``) and
every tensor of it (``PART_IO`` in :mod:`edge_bridge.bundle`) the inputs and expected outputs are looked up
as ``"<part>/<tensor>"`` (also ``"<part>.<tensor>"`` or ``"<part>__<tensor>"``). A golden file written as one
chain with plain tensor names (``x_target``, ``h``, ``z``, ``logits``) is read too: then ``x_target -> h`` is
the target front, ``h -> z`` the bridge and ``z -> logits`` the source back. Optional per-part tolerances:
``"<part>/atol"`` and ``"<part>/rtol"`` (scalars).

No NaN decides anything: a golden value that is NaN or inf, or an output that is, fails the part (a NaN
difference compares false against every tolerance, which would otherwise read as "max diff 0").

Tolerance: a part passes when ``max|got - expected| <= atol + rtol * max|expected|``. Defaults depend on the
precision: FP32 graphs must match closely; INT8/FP16 graphs get room for one quantisation step of rounding
that differs between CPUs and runtimes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_bridge.bundle import PART_IO
from edge_bridge.errors import EdgeBridgeError

logger = logging.getLogger(__name__)

# (atol, rtol) per precision; rtol is relative to the largest expected magnitude of the tensor
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-3),
    "fp16": (1e-2, 2e-2),
    "int8": (1e-2, 5e-2),
}
# TensorRT and CUDA pick other kernels (TF32, fused INT8): allow a little more on GPUs
GPU_FACTOR = 2.0


class SelfTestError(EdgeBridgeError, RuntimeError):
    """A part's outputs on the golden inputs drift beyond tolerance, or it cannot run them."""


@dataclass
class PartCheck:
    """One part's verdict."""

    part: str
    passed: bool
    max_abs_err: float
    scale: float
    atol: float
    rtol: float
    n: int
    detail: str = ""
    argmax_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"part": self.part, "passed": self.passed, "max_abs_err": self.max_abs_err,
                "scale": self.scale,
                "atol": self.atol, "rtol": self.rtol, "n": self.n, "detail": self.detail,
                "argmax_agreement": self.argmax_agreement}

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        agree = (f", argmax agreement {100 * self.argmax_agreement:.0f}%"
                 if self.argmax_agreement is not None else "")
        return (f"{self.part:<13} {verdict:<6} max|diff| {self.max_abs_err:.2e} <= "
                f"{self.atol:.0e} + {self.rtol:.0e} x {self.scale:.3g} on {self.n} window(s){agree}"
                f"{'; ' + self.detail if self.detail else ''}")


@dataclass
class SelfTestReport:
    """All parts' verdicts; ``passed`` only when every checked part passed."""

    checks: list[PartCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "parts": [c.to_dict() for c in self.checks]}


_SEPARATORS = ("/", ".", "__")


Arrays = dict[str, np.ndarray]


def golden_case(golden: Arrays, part: str, io: tuple[tuple[str, ...], tuple[str, ...]] | None = None
                ) -> tuple[Arrays, Arrays] | None:
    """The ``(feeds, expected)`` of ``part`` in a golden file, or ``None`` if it has none for it.

    ``io``: the part's tensor names when they are not :data:`PART_IO`'s (a fused bundle's bridge and extra
    fronts, :func:`edge_bridge.bundle.part_io`).
    """
    ins, outs = io if io is not None else PART_IO[part]

    def find(tensor: str) -> np.ndarray | None:
        for sep in _SEPARATORS:
            key = f"{part}{sep}{tensor}"
            if key in golden:
                return golden[key]
        return None

    feeds = {t: find(t) for t in ins}
    expected = {t: find(t) for t in outs}
    if all(v is not None for v in (*feeds.values(), *expected.values())):
        return feeds, expected  # type: ignore[return-value]
    if part == "source_front" or part not in PART_IO:  # source_front's plain "z" would be the bridge's;
        return None  # an extra front has no plain-name form
    if all(t in golden for t in (*ins, *outs)):
        return {t: golden[t] for t in ins}, {t: golden[t] for t in outs}
    return None


def golden_input(golden: dict[str, np.ndarray], part: str, tensor: str) -> np.ndarray | None:
    """One input tensor of ``part`` from the golden file (any key form), or ``None``.

    A fused bridge's further inputs (``h_<key>``) are not in :data:`PART_IO`'s case for the bridge, so
    they are looked up by key (``bridge.h_<key>``) like any tensor outside a case.
    """
    case = golden_case(golden, part)
    if case is not None and tensor in case[0]:
        return case[0][tensor]
    for key in (*(f"{part}{sep}{tensor}" for sep in _SEPARATORS), tensor):
        if key in golden:
            return golden[key]
    return None


def tolerance_for(golden: dict[str, np.ndarray], part: str, precision: str, gpu: bool) -> tuple[float, float]:
    """``(atol, rtol)``: the golden file's own values if it has them, else the precision's defaults."""
    atol, rtol = TOLERANCES.get(precision, TOLERANCES["int8"])
    if gpu:
        atol, rtol = atol * GPU_FACTOR, rtol * GPU_FACTOR
    for sep in _SEPARATORS:
        if f"{part}{sep}atol" in golden:
            atol = float(np.asarray(golden[f"{part}{sep}atol"]))
        if f"{part}{sep}rtol" in golden:
            rtol = float(np.asarray(golden[f"{part}{sep}rtol"]))
    return atol, rtol


def compare(part: str, got: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float,
            rtol: float) -> PartCheck:
    """Compare every output tensor of one part; the worst tensor decides."""
    worst, worst_scale, n, detail = 0.0, 0.0, 0, ""
    agreement = None
    passed = True
    for name, want in expected.items():
        want = np.asarray(want, dtype=np.float32)
        if not np.all(np.isfinite(want)):  # NaN - NaN is no difference, and NaN <= tol is False: refuse
            return PartCheck(part, False, float("inf"), 0.0, atol, rtol, 0,
                             f"the golden {part}.{name} has NaN or inf (corrupt golden file)")
        have = got.get(name)
        if have is None:
            return PartCheck(part, False, float("inf"), 0.0, atol, rtol, 0, f"no output {name!r}")
        have = np.asarray(have, dtype=np.float32)
        n = int(want.shape[0]) if want.ndim else 1
        if have.shape != want.shape:
            return PartCheck(part, False, float("inf"), 0.0, atol, rtol, n,
                             f"output {name} has shape {list(have.shape)}, golden has {list(want.shape)}")
        if not np.all(np.isfinite(have)):
            return PartCheck(part, False, float("inf"), 0.0, atol, rtol, n, f"output {name} has NaN or inf")
        err = float(np.max(np.abs(have - want))) if want.size else 0.0
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        if err > atol + rtol * scale:
            passed = False
            if not detail:
                idx = np.unravel_index(int(np.argmax(np.abs(have - want))), want.shape)
                detail = (f"{name}{list(map(int, idx))}: got {float(have[idx]):.5g}, expected "
                          f"{float(want[idx]):.5g}")
        if err >= worst:
            worst, worst_scale = err, scale
        if name == "logits" and want.ndim == 2:
            agreement = float(np.mean(have.argmax(1) == want.argmax(1)))
    return PartCheck(part, passed, worst, worst_scale, atol, rtol, n, detail, agreement)


def check_part(engine: Any, part: str, golden: dict[str, np.ndarray], precision: str,
               gpu: bool = False, io: tuple[tuple[str, ...], tuple[str, ...]] | None = None
               ) -> PartCheck | None:
    """Run one engine on its golden inputs; ``None`` if the golden file has nothing for ``part``
    (``io`` as in :func:`golden_case`)."""
    case = golden_case(golden, part, io)
    if case is None:
        return None
    feeds, expected = case
    atol, rtol = tolerance_for(golden, part, precision, gpu)
    for name, value in {**feeds, **expected}.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu" or arr.size == 0 or not np.all(np.isfinite(arr)):
            n = int(arr.shape[0]) if arr.ndim else 0
            return PartCheck(part, False, float("inf"), 0.0, atol, rtol, n,
                             f"the golden {part}.{name} "
                             f"{'is empty' if arr.size == 0 else 'has NaN, inf or non-numbers'} "
                             "(corrupt golden file)")
    try:
        got = engine.run({k: np.asarray(v, dtype=np.float32) for k, v in feeds.items()})
    except Exception as exc:  # an engine that cannot run its golden input fails the test, with the cause
        n = int(next(iter(feeds.values())).shape[0])
        return PartCheck(part, False, float("inf"), 0.0, atol, rtol, n, f"cannot run: {exc}")
    return compare(part, got, expected, atol, rtol)
