"""The one exception calibration raises on purpose: bad data, or a bundle that cannot be calibrated."""

from __future__ import annotations

from edge_bridge.errors import EdgeBridgeError


class CalibrationError(EdgeBridgeError, ValueError):
    """Calibration cannot go ahead (missing modality, too little data, no ``source_front``, ...).

    Raised before anything is written, so the bundle is unchanged whenever this is raised.
    """
