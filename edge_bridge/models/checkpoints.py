"""Reading published checkpoint files safely and loading them strictly.

Published foundation-model checkpoints come as safetensors or as ``torch.save`` pickles, in layouts that
differ from the module they fill: a ``module.`` prefix (DataParallel), a ``student.`` prefix (LaBraM
pretraining), the state dict nested under ``"model"`` or ``"model_state_dict"``, or the two naming schemes of
weight norm. This module holds the small, model-independent pieces every loader needs:

- :func:`read_checkpoint` reads a file **without ever running pickled code**: safetensors, or
  ``torch.load(weights_only=True)``. A pickle that needs an arbitrary object is refused; a loader may name a
  few harmless config classes that are then rebuilt as inert :class:`ConfigStub` records.
- :func:`extract_state_dict`, :func:`strip_prefix`, :func:`rename_weight_norm` normalise layouts.
- :func:`load_strict` copies a state dict into a module only if every key and shape matches, and otherwise
  raises one error that lists *all* missing, unexpected and mis-shaped keys (not the first five), because a
  user fixing a layout needs the whole picture at once.

>>> sd = load_state_dict_file("labram-base.pth", container_keys=("model", "module"))  # doctest: +SKIP
>>> load_strict(model, strip_prefix(sd, "student.", only_prefixed=True), "labram-base.pth")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_bridge.models.backbone import Backbone
from edge_bridge.models.tensors import CheckpointError, read_tensors

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
DEFAULT_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")
MAX_LISTED = 40  # keys listed per category in an error; the count is always given


class ConfigStub:
    """Inert stand-in for a config object pickled inside a checkpoint (e.g. ``HuBERTECGConfig``).

    It only stores the pickled attribute dict, so allow-listing it for ``weights_only`` unpickling cannot run
    code. ``stub.attributes`` is that dict; ``stub.qualified_name`` the class path the file named.
    """

    qualified_name = "?"

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state), as pickle writes it
            state = {**(state[0] or {}), **(state[1] or {})}
        self.attributes = dict(state) if isinstance(state, Mapping) else {"state": state}

    def __repr__(self) -> str:
        return f"ConfigStub({self.qualified_name}, {len(self.attributes)} attributes)"


def _stub_class(qualified_name: str) -> type[ConfigStub]:
    return type("ConfigStub", (ConfigStub,), {"qualified_name": qualified_name})


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` looks like a safetensors file (suffix, or a JSON header instead of a zip/pickle)."""
    path = Path(path)
    if path.suffix in SAFETENSORS_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    # safetensors: 8-byte little-endian header length, then '{'; torch.save files start with 'PK' or a pickle
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def read_checkpoint(path: str | os.PathLike[str], *, stub_classes: Iterable[str] = ()) -> Any:
    """Read a checkpoint file without executing pickled code.

    Parameters
    ----------
    path : path
        A ``.safetensors`` file (returns a flat dict of tensors) or a ``torch.save`` file.
    stub_classes : iterable of str
        Class *names* (the last path component, e.g. ``"HuBERTECGConfig"``) that a trusted layout is known to
        pickle next to its weights. Any global in the file whose name ends in one of them is rebuilt as an
        inert :class:`ConfigStub`; every other non-tensor global is refused.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, or needs an object ``weights_only`` loading does not allow.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; check the path (download the published "
                              "checkpoint first if needed)")
    if is_safetensors(path):
        return read_tensors(path)
    names = tuple(stub_classes)
    extra: list[Any] = []
    if names:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except (RuntimeError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile):
            unsafe = []  # legacy (non-zip) files: weights_only loading below reports the problem
        extra = [(_stub_class(g), g) for g in unsafe if g.rsplit(".", 1)[-1] in names]
    try:
        with torch.serialization.safe_globals(extra):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load: the file contains pickled objects that are not plain tensors "
            f"({first}). edge-bridge only loads checkpoints with torch.load(weights_only=True) and never "
            "runs code from a checkpoint. If you trust the file, convert it once to safetensors "
            "(load it yourself, then safetensors.torch.save_file(state_dict, 'model.safetensors'))"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc}); the file is truncated, corrupted "
                              "or not a PyTorch/safetensors checkpoint; download it again") from None


def extract_state_dict(obj: Any, source: str,
                       container_keys: Iterable[str] = DEFAULT_CONTAINER_KEYS) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint object.

    ``obj`` may already be a state dict, or a dict holding it under the first of ``container_keys`` present
    (BioX-Bridge tries ``"model"`` then ``"module"`` for LaBraM; HuBERT-ECG uses ``"model_state_dict"``).
    """
    if isinstance(obj, Mapping):
        for key in container_keys:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state dict (or a dict holding one under one of "
                              f"{list(container_keys)}), got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        top = sorted(map(str, obj))[:10]
        raise CheckpointError(f"{source}: no tensors found under the top-level keys {top}; expected weights "
                              f"under one of {list(container_keys)}")
    skipped = sorted(str(k) for k in obj if k not in tensors)
    if skipped:
        logger.debug("%s: ignoring non-tensor entries %s", source, skipped)
    return dict(tensors)


def load_state_dict_file(path: str | os.PathLike[str], *,
                         container_keys: Iterable[str] = DEFAULT_CONTAINER_KEYS,
                         stub_classes: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """:func:`read_checkpoint` + :func:`extract_state_dict`: the tensors of a checkpoint file."""
    return extract_state_dict(read_checkpoint(path, stub_classes=stub_classes), str(path), container_keys)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str, *,
                 only_prefixed: bool = False) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from the keys that carry it.

    Parameters
    ----------
    only_prefixed : bool
        ``False`` (default): keys without the prefix are kept unchanged (e.g. an optional ``module.``).
        ``True``: keys without the prefix are dropped (e.g. LaBraM keeps only ``student.*``).
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k.startswith(prefix):
            out[k[len(prefix):]] = v
        elif not only_prefixed:
            out[k] = v
    return out


def strip_common_prefix(state_dict: Mapping[str, torch.Tensor],
                        prefixes: Iterable[str] = ("module.",)) -> dict[str, torch.Tensor]:
    """Strip each of ``prefixes`` (in order) when *every* key carries it (DataParallel's ``module.``)."""
    out = dict(state_dict)
    for prefix in prefixes:
        if out and all(k.startswith(prefix) for k in out):
            out = strip_prefix(out, prefix)
    return out


def rename_weight_norm(state_dict: Mapping[str, torch.Tensor],
                       model_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Map between the two weight-norm naming schemes so a file in either fits ``model_keys``.

    ``torch.nn.utils.weight_norm`` names the parameters ``X.weight_g`` / ``X.weight_v``; the parametrization
    API (torch >= 2.1) names them ``X.parametrizations.weight.original0`` / ``original1``. Both hold the same
    tensors (g, v), so a plain rename is exact.
    """
    wanted = set(model_keys)
    pairs = (("weight_g", "parametrizations.weight.original0"),
             ("weight_v", "parametrizations.weight.original1"))
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        new = k
        if k not in wanted:
            for old, param in pairs:
                for a, b in ((old, param), (param, old)):
                    if k.endswith("." + a) and k[: -len(a)] + b in wanted:
                        new = k[: -len(a)] + b
        out[new] = v
    return out


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f", ... ({len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else "")


def state_dict_diff(module: nn.Module, state_dict: Mapping[str, torch.Tensor]
                    ) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, shape_mismatch)`` of ``state_dict`` against ``module.state_dict()``."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
              for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    return missing, unexpected, shapes


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, *,
                hint: str = "") -> None:
    """Copy ``state_dict`` into ``module`` only if keys and shapes match exactly.

    Parameters
    ----------
    source : str
        What is being loaded (a file path or model name), for the message.
    hint : str
        What the user should do, appended to the message (e.g. which config option changes the shapes).

    Raises
    ------
    CheckpointError
        Listing every missing key, unexpected key and shape mismatch (with both shapes).
    """
    missing, unexpected, shapes = state_dict_diff(module, state_dict)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) [{_listing(missing)}]")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) [{_listing(unexpected)}]")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) [{_listing(shapes)}]")
        what = hint or ("the checkpoint and the model configuration describe different architectures; build "
                        "the backbone with the configuration the checkpoint was trained with")
        raise CheckpointError(f"{source}: weights do not fit {type(module).__name__} strictly: "
                              f"{'; '.join(parts)}. {what}")
    own = module.state_dict()
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)
    logger.info("loaded %d tensors into %s from %s", len(state_dict), type(module).__name__, source)


def load_state_checked(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``module`` after checking keys and shapes match exactly (our own files: the
    weights and their config travel together, so a mismatch means they were mixed up)."""
    load_strict(module, tensors, source,
                hint="the weights and the config come from different models")


def load_weights(model: Backbone, path: str | os.PathLike[str]) -> Backbone:
    """Load a ``model.safetensors`` file into ``model`` (exact match required)."""
    load_state_checked(model, read_tensors(path), str(path))
    return model
