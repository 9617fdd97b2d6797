"""Backbones by name: ``build_backbone(name, config=..., weights=...)``.

The registry is a plain dict of builders keyed by name. The built-in reference backbones register
themselves here; a later issue adds published foundation models (PaPaGei, HuBERT-ECG, LaBraM) through the
same function, each a builder that takes a config dict and returns a :class:`Backbone`.

Configs are dataclasses; :func:`config_from_dict` rebuilds one from JSON, dropping keys from a newer tool with
a warning (upgrade to use them) and naming any value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from edge_bridge.models.backbone import Backbone, BackboneError

logger = logging.getLogger(__name__)

Builder = Callable[[dict[str, Any]], Backbone]
_REGISTRY: dict[str, Builder] = {}
C = TypeVar("C")


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(config_dict) -> Backbone`` under ``name``."""

    def deco(builder: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise BackboneError(f"a backbone named {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return deco


def available_backbones() -> list[str]:
    """Names :func:`build_backbone` accepts."""
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # importing the modules runs their @register_backbone decorators (built-ins + published foundation models)
    from edge_bridge.models import hubert_ecg, labram, normwear, papagei, resnet1d, transformer  # noqa: F401


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
    _load_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BackboneError(f"unknown backbone {name!r}{hint}; choose one of {', '.join(sorted(_REGISTRY))}")
    model = _REGISTRY[name](dict(config or {}))
    if weights is not None:
        loader = getattr(model, "load_checkpoint", None)
        if callable(loader):  # published models: their checkpoint layouts (.pt/.pth or safetensors)
            loader(weights)
        else:
            from edge_bridge.models.io import load_weights

            load_weights(model, weights)
    return model


def config_from_dict(cls: type[C], data: dict[str, Any], *, what: str) -> C:
    """Build config dataclass ``cls`` from ``data``: unknown keys warn, wrong types raise."""
    if not isinstance(data, dict):
        raise BackboneError(f"{what} config must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        warnings.warn(f"{what} config has keys this version does not know: {unknown}; they are ignored "
                      "(written by a newer edge-bridge? upgrade to use them)", stacklevel=3)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            continue
        default = getattr(cls, key, None)
        if isinstance(default, tuple):
            if not isinstance(value, list | tuple):
                raise BackboneError(f"{what} config {key!r} must be a list, got {value!r}")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise BackboneError(f"{what} config {key!r} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise BackboneError(f"{what} config {key!r} must be an integer, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BackboneError(f"{what} config {key!r} must be a number, got {value!r}")
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)
