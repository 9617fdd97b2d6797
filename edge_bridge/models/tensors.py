"""Tensors on disk: safetensors files written atomically and read without unpickling.

The lowest layer of the model files: :mod:`edge_bridge.models.io` (our own backbones) and
:mod:`edge_bridge.models.checkpoints` (published checkpoints) both read through it, so neither needs the
other.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from edge_bridge.errors import EdgeBridgeError
from edge_bridge.fileio import atomic_path


class CheckpointError(EdgeBridgeError, ValueError):
    """A weights or config file is missing, corrupted, from a newer tool, or does not fit the model."""


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
