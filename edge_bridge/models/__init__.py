"""Backbones: frozen models seen as ordered lists of blocks, built by name, saved as safetensors + JSON.

>>> from edge_bridge.models import build_backbone
>>> net = build_backbone("transformer", {"input_samples": 6000, "patch": 100})
>>> net.boundaries[0]  # doctest: +SKIP
Boundary(tokens=60, features=64, layout='btd')
"""

from edge_bridge.models.backbone import Backbone, BackboneError, Boundary
from edge_bridge.models.io import CheckpointError, load_backbone, save_backbone
from edge_bridge.models.registry import available_backbones, build_backbone, register_backbone

__all__ = [
    "Backbone",
    "BackboneError",
    "Boundary",
    "CheckpointError",
    "available_backbones",
    "build_backbone",
    "load_backbone",
    "register_backbone",
    "save_backbone",
]
