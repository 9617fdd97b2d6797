"""Engines: one per bundle part, behind one small interface, one module per backend.

=========  ==================================  ============  ========
backend    what                                 module        needs GPU
=========  ==================================  ============  ========
cpu        ONNX Runtime, CPU EP, 1 thread        ort.py        no
cuda       ONNX Runtime, CUDA EP                 ort.py        yes
jetson     TensorRT from the QDQ ONNX (cached)   trt.py        yes
=========  ==================================  ============  ========

``load_engine(path, device)`` picks the backend; an unknown device gets the list and the closest match.
Backend libraries are imported inside their module only (``import tensorrt`` appears in ``trt.py`` alone).
"""

from __future__ import annotations

import difflib
import os

from deploy.engines.base import Engine, EngineError, TensorInfo

DEVICES = ("cpu", "cuda", "jetson")


def load_engine(path: str | os.PathLike[str], device: str = "cpu", **options: object) -> Engine:
    """Open one ONNX part on ``device`` (``cpu``, ``cuda`` or ``jetson``).

    Raises
    ------
    EngineError
        Unknown device (with the closest valid name), or the device's runtime is missing (naming the
        package to install and suggesting ``--device cpu``).
    """
    if device not in DEVICES:
        close = difflib.get_close_matches(device, DEVICES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise EngineError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}{hint}")
    if device in ("cpu", "cuda"):
        from deploy.engines.ort import OrtEngine

        return OrtEngine(path, device=device, **options)  # type: ignore[arg-type]
    from deploy.engines.trt import TrtEngine  # type: ignore[import-not-found]

    return TrtEngine(path, **options)  # type: ignore[no-any-return]


__all__ = ["DEVICES", "Engine", "EngineError", "TensorInfo", "load_engine"]
