"""The export's one exception type (torch-free, so the audit can raise it on a machine without torch)."""

from __future__ import annotations

from edge_bridge.errors import EdgeBridgeError


class ExportError(EdgeBridgeError, RuntimeError):
    """A part could not be exported, checked, quantized or verified; the message says which and why."""
