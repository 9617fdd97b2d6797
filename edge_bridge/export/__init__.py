"""Export: a trained bridge run -> one ONNX graph per part, static INT8 QDQ, an accuracy guard -> a bundle.

::

    from edge_bridge.export import export
    bundle = export("runs/stress", "stress.bundle", calibration="data/sim", precision="int8", target="cpu")

The modules, in the order the work flows:

``onnx_export``  one graph per part (``torch.onnx.export(dynamo=True)``, batch axis the only dynamic one),
                 checked by ``onnx.checker``, by its static shapes and by one ORT run at batch 1 and 3.
``quantize``     ONNX Runtime's pre-processing, then static QDQ quantization in the ``cpu`` or ``jetson``
                 flavour (:class:`QuantConfig`), calibration windows through a ``CalibrationDataReader``.
``audit``        the rules a TensorRT-bound graph must follow, checked on the file (TensorRT itself is not
                 needed).
``golden``       inputs and expected outputs per part for the device self-test.
``exporter``     the entry point: parity, the fp32-vs-int8 guard with part-by-part fallback, the manifest.

This package imports torch (the exporter runs on the host); :mod:`edge_bridge.bundle` does not.
Importing this ``__init__`` stays light: the names below are attached on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AuditReport", "ExportError", "Precision", "QuantConfig", "Target", "audit_tensorrt", "export",
           "export_composite"]

_WHERE = {
    "AuditReport": "audit", "audit_tensorrt": "audit",
    "ExportError": "errors",
    "Precision": "quantize", "QuantConfig": "quantize", "Target": "quantize",
    "export": "exporter", "export_composite": "exporter",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"edge_bridge.export.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'edge_bridge.export' has no attribute {name!r}")
