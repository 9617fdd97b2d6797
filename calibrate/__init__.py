"""On-site refit of the bridge from locally collected paired data, validated and swapped in atomically.

Imports ``deploy`` (to run the fronts) and ``edge_bridge.bundle``; torch is imported only on the gradient
path (:mod:`calibrate.torch_tail`), so ``calibrate`` runs on a device with numpy, onnxruntime and
safetensors. Entry points: :func:`calibrate` and :func:`rollback` (:mod:`calibrate.core`).

============  =============================================================================
module        what
============  =============================================================================
data          paired windows from recordings (one file, or two aligned by time), split
refit         closed-form reduced-rank ridge (numpy) and gradient steps (torch, optional)
weights       the prototype bridge as numpy arrays; ONNX and safetensors writers, no torch
core          features, validation, acceptance, publish under a lock, rollback
record        record paired data on site with firmware_interface, then calibrate
============  =============================================================================
"""

from __future__ import annotations

from typing import Any

__all__ = ["CalibrationError", "CalibrationReport", "calibrate", "rollback"]


def __getattr__(name: str) -> Any:
    if name in ("calibrate", "rollback", "CalibrationReport"):
        from calibrate import core

        return getattr(core, name)
    if name == "CalibrationError":
        from calibrate.errors import CalibrationError

        return CalibrationError
    raise AttributeError(f"module 'calibrate' has no attribute {name!r}")
