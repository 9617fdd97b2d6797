"""Architecture configs from JSON: one rule for every backbone.

Configs are dataclasses; :func:`config_from_dict` rebuilds one from JSON, dropping keys from a newer tool with
a warning (upgrade to use them) and naming any value of the wrong type. It lives apart from the registry so a
model module needs nothing of the registry (the registry knows the models by a name table, not the reverse).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, TypeVar

from edge_bridge.models.backbone import BackboneError

C = TypeVar("C")


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
