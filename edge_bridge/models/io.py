"""Saving and loading backbones: ``model.safetensors`` + ``config.json``; loading never unpickles.

``config.json`` holds ``schema_version``, ``tool_version``, the registry ``kind``, the architecture
``config`` and free-form ``meta`` (e.g. class names, the preprocessing spec, training figures). Loading checks
before it copies: every key and shape of the file must match the model built from the config, and the error
names what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from edge_bridge import __version__
from edge_bridge.fileio import atomic_write_text
from edge_bridge.models.backbone import Backbone
from edge_bridge.models.checkpoints import load_state_checked, load_weights
from edge_bridge.models.tensors import CheckpointError, read_tensors, save_tensors

logger = logging.getLogger(__name__)

__all__ = ["CheckpointError", "load_backbone", "load_state_checked", "load_weights", "read_backbone_config",
           "read_tensors", "read_versioned_json", "save_backbone", "save_tensors", "write_versioned_json"]

SCHEMA_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def write_versioned_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` with ``schema_version`` and ``tool_version`` stamped in, atomically."""
    data = {"schema_version": SCHEMA_VERSION, "tool_version": __version__, **payload}
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_versioned_json(path: str | os.PathLike[str], required: tuple[str, ...],
                        known: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a config written by :func:`write_versioned_json`.

    A missing required key is an error naming the key; keys outside ``required + known`` (from a newer
    tool) are dropped with a warning that says to upgrade.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected a {path.name} written by edge-bridge")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); the file is corrupted") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    version = data.pop("schema_version", None)
    tool = data.pop("tool_version", "?")
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: missing or invalid 'schema_version'; not written by edge-bridge?")
    if version > SCHEMA_VERSION:
        warnings.warn(f"{path}: schema_version {version} is newer than this tool's {SCHEMA_VERSION} "
                      f"(written by edge-bridge {tool}, this is {__version__}); upgrade edge-bridge",
                      stacklevel=3)
    missing = [k for k in required if k not in data]
    if missing:
        raise CheckpointError(f"{path}: missing required key(s) {missing}")
    extra = sorted(set(data) - set(required) - set(known))
    if extra:
        warnings.warn(f"{path}: ignoring unknown key(s) {extra} (written by edge-bridge {tool}, this is "
                      f"{__version__}); upgrade edge-bridge to use them", stacklevel=3)
        for k in extra:
            data.pop(k)
    return data


def save_backbone(model: Backbone, directory: str | os.PathLike[str],
                  meta: dict[str, Any] | None = None) -> Path:
    """Save ``model`` as ``directory/model.safetensors`` + ``directory/config.json``.

    Raises
    ------
    CheckpointError
        If ``directory`` exists and is a file.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory} is a file; save_backbone needs a directory")
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS_NAME, model.state_dict(), metadata={"kind": model.kind})
    write_versioned_json(directory / CONFIG_NAME,
                         {"kind": model.kind, "config": model.config, "meta": dict(meta or {})})
    logger.info("saved %s backbone (%d parameters) to %s", model.kind, model.num_parameters(), directory)
    return directory


def read_backbone_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of a saved backbone: ``{"kind", "config", "meta"}``."""
    return read_versioned_json(Path(directory) / CONFIG_NAME, required=("kind", "config"), known=("meta",))


def load_backbone(directory: str | os.PathLike[str]) -> tuple[Backbone, dict[str, Any]]:
    """Rebuild a backbone saved by :func:`save_backbone`; returns ``(model, meta)``. The model is in "
      "eval mode."""
    from edge_bridge.models.registry import build_backbone

    directory = Path(directory)
    cfg = read_backbone_config(directory)
    model = build_backbone(cfg["kind"], cfg["config"], weights=directory / WEIGHTS_NAME)
    return model.eval(), dict(cfg.get("meta") or {})
