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

import torch

from edge_bridge import __version__
from edge_bridge.errors import EdgeBridgeError
from edge_bridge.fileio import atomic_path, atomic_write_text
from edge_bridge.models.backbone import Backbone

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(EdgeBridgeError, ValueError):
    """A weights or config file is missing, corrupted, from a newer tool, or does not fit the model."""


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


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a safetensors file atomically (contiguous CPU copies)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file; a truncated or foreign file is a :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected safetensors weights written by edge-bridge")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors weights ({exc}); the file is corrupted or "
                              "not a safetensors file. Re-create it with the command that wrote it") from None


def load_state_checked(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``module`` after checking keys and shapes match exactly (our own files: the
    weights and their config travel together, so a mismatch means they were mixed up)."""
    from edge_bridge.models.checkpoints import load_strict  # checkpoints imports this module

    load_strict(module, tensors, source,
                hint="the weights and the config come from different models")


def load_weights(model: Backbone, path: str | os.PathLike[str]) -> Backbone:
    """Load a ``model.safetensors`` file into ``model`` (exact match required)."""
    load_state_checked(model, read_tensors(path), str(path))
    return model


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
