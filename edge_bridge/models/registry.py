"""Backbones by name: ``build_backbone(name, config=..., weights=...)``.

The built-in backbones (the reference models and the published foundation models) are a name table:
registry name -> the module and the builder function in it, imported on first use. So the registry knows
every model while no model module imports the registry (no import circle), and building one backbone loads
only its own module. Other code adds backbones with :func:`register_backbone`; each builder takes a config
dict and returns a :class:`Backbone`.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

from edge_bridge.models.backbone import Backbone, BackboneError

logger = logging.getLogger(__name__)

Builder = Callable[[dict[str, Any]], Backbone]
_REGISTRY: dict[str, Builder] = {}
# name -> (module, builder function): the built-ins, imported when first asked for
BUILTINS: dict[str, tuple[str, str]] = {
    "resnet1d": ("edge_bridge.models.resnet1d", "build_resnet1d"),
    "transformer": ("edge_bridge.models.transformer", "build_transformer"),
    "hubert_ecg": ("edge_bridge.models.hubert_ecg", "build_hubert_ecg"),
    "labram": ("edge_bridge.models.labram", "build_labram"),
    "normwear": ("edge_bridge.models.normwear", "build_normwear"),
    "papagei": ("edge_bridge.models.papagei", "build_papagei"),
}


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(config_dict) -> Backbone`` under ``name``."""

    def deco(builder: Builder) -> Builder:
        if name in BUILTINS or (name in _REGISTRY and _REGISTRY[name] is not builder):
            raise BackboneError(f"a backbone named {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return deco


def available_backbones() -> list[str]:
    """Names :func:`build_backbone` accepts."""
    return sorted(set(_REGISTRY) | set(BUILTINS))


def _builder(name: str) -> Builder | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name not in BUILTINS:
        return None
    module, function = BUILTINS[name]
    builder: Builder = getattr(importlib.import_module(module), function)
    _REGISTRY[name] = builder
    return builder


def build_backbone(name: str, config: dict[str, Any] | None = None,
                   weights: str | os.PathLike[str] | None = None) -> Backbone:
    """Build a registered backbone, optionally loading weights from a safetensors file.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"resnet1d"`` or ``"transformer"``.
    config : dict, optional
        Architecture settings; missing keys take the architecture's defaults.
    weights : path, optional
        A ``model.safetensors`` file whose keys and shapes must match the model exactly; a backbone with a
        ``load_checkpoint`` method (the published models) also reads its published checkpoint layout.

    Raises
    ------
    BackboneError
        For an unknown name (the message lists the valid ones and the closest match) or a bad config.
    CheckpointError
        If ``weights`` cannot be read or does not match the model.
    """
    builder = _builder(name)
    if builder is None:
        names = available_backbones()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BackboneError(f"unknown backbone {name!r}{hint}; choose one of {', '.join(names)}")
    model = builder(dict(config or {}))
    if weights is not None:
        loader = getattr(model, "load_checkpoint", None)
        if callable(loader):  # published models: their checkpoint layouts (.pt/.pth or safetensors)
            loader(weights)
        else:
            from edge_bridge.models.checkpoints import load_weights

            load_weights(model, weights)
    return model
