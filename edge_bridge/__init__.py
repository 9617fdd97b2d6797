"""edge-bridge: carry a biosignal task model to a new modality by model bridging, and run it on the edge.

This package __init__ stays light on purpose: the device imports ``edge_bridge.signals`` and
``edge_bridge.bundle``, and importing either runs this file first. Nothing heavy (torch) is imported here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
