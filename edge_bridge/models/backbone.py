"""The :class:`Backbone` interface: a frozen model seen as an ordered list of blocks.

A bridge needs to cut a model at a block boundary: run the target model up to the end of block *i*
(:meth:`Backbone.front`) and the source model from the start of block *j* to its head
(:meth:`Backbone.back`). Every backbone therefore exposes the same parts, whatever its architecture:

``embed``
    raw window ``(batch, channels, samples)`` -> boundary 0 (the input of block 0).
``blocks``
    an ``nn.ModuleList``; block *k* maps boundary *k* to boundary *k + 1*.
``norm`` / pooling / ``head``
    the last boundary -> normalised -> mean over tokens -> logits (``head`` is ``None`` for a backbone
    without a task, e.g. a self-supervised one; then :meth:`back` returns the pooled features).

Each boundary has a stated layout (:class:`Boundary`): ``"btd"`` is the canonical ``(batch, tokens,
features)``; ``"bcl"`` is a 1-D CNN's ``(batch, channels, length)``, read as tokens = length and features =
channels. :meth:`to_tokens` / :meth:`from_tokens` convert to and from the canonical layout, so a bridge
always speaks ``(batch, tokens, features)``.

Positions are block indices ``0 .. n_blocks - 1``, or module paths such as ``"blocks.2"``
(:meth:`position`). Position *i* on the target side means "the output of block *i*"; position *j* on the
source side means "the input of block *j*".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from edge_bridge.errors import EdgeBridgeError

logger = logging.getLogger(__name__)

LAYOUTS = ("btd", "bcl")


class BackboneError(EdgeBridgeError, ValueError):
    """A backbone was built, addressed or fed in a way it does not support."""


@dataclass(frozen=True)
class Boundary:
    """The tensor at one block boundary (per window, without the batch axis).

    Attributes
    ----------
    tokens : int
        Sequence length (transformer tokens, or CNN time steps).
    features : int
        Width per token (transformer model width, or CNN channels).
    layout : str
        ``"btd"`` (batch, tokens, features) or ``"bcl"`` (batch, channels = features, length = tokens).
    """

    tokens: int
    features: int
    layout: str

    @property
    def native_shape(self) -> tuple[int, int]:
        """Shape without the batch axis, in the backbone's own layout."""
        return (self.tokens, self.features) if self.layout == "btd" else (self.features, self.tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "features": self.features, "layout": self.layout}


class Backbone(nn.Module):
    """Base class of every backbone; subclasses set ``embed``, ``blocks``, ``norm`` and ``head``.

    Subclasses must set the class attribute ``kind`` (the registry name), store their config dict in
    ``self.config`` and call :meth:`_finish_init` at the end of ``__init__`` (it measures the boundaries
    with one dry run, so they can never disagree with the code).
    """

    kind: ClassVar[str] = ""
    embed: nn.Module
    blocks: nn.ModuleList
    norm: nn.Module
    head: nn.Linear | None

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self._boundaries: list[Boundary] = []

    # --- structure -----------------------------------------------------------------------------------
    def _finish_init(self) -> None:
        shape = self.input_shape
        was_training = self.training
        self.eval()
        with torch.no_grad():
            h = self.embed(torch.zeros(1, *shape))
            bounds = [self._measure(h)]
            for block in self.blocks:
                h = block(h)
                bounds.append(self._measure(h))
        self.train(was_training)
        self._boundaries = bounds

    def _measure(self, h: torch.Tensor) -> Boundary:
        if h.ndim != 3:
            raise BackboneError(f"{self.kind}: block boundaries must be 3-D tensors, got shape "
                                f"{tuple(h.shape)}")
        if self.layout == "btd":
            return Boundary(int(h.shape[1]), int(h.shape[2]), "btd")
        return Boundary(int(h.shape[2]), int(h.shape[1]), "bcl")

    @property
    def layout(self) -> str:
        """Layout of every boundary of this backbone (``"btd"`` or ``"bcl"``)."""
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(channels, samples)`` of one input window."""
        return (int(self.config["in_channels"]), int(self.config["input_samples"]))

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def n_classes(self) -> int:
        return 0 if self.head is None else int(self.head.out_features)

    @property
    def feature_dim(self) -> int:
        """Width of the pooled representation the head reads."""
        return self._boundaries[-1].features

    @property
    def boundaries(self) -> list[Boundary]:
        """``n_blocks + 1`` boundaries: boundary *k* is the input of block *k* (and output of block *k-1*)."""
        return list(self._boundaries)

    def block_input(self, j: int) -> Boundary:
        """The tensor block *j* expects (where a bridge's output goes)."""
        return self._boundaries[self.position(j)]

    def block_output(self, i: int) -> Boundary:
        """The tensor block *i* produces (where a bridge's input comes from)."""
        return self._boundaries[self.position(i) + 1]

    @property
    def block_paths(self) -> list[str]:
        """Module path of each block, e.g. ``["blocks.0", "blocks.1", ...]``."""
        return [f"blocks.{k}" for k in range(self.n_blocks)]

    def position(self, pos: int | str) -> int:
        """Resolve a block index or module path to an index in ``0 .. n_blocks - 1``.

        Raises
        ------
        BackboneError
            If the position does not name a block; the message lists the valid ones.
        """
        if isinstance(pos, str) and not pos.lstrip("-").isdigit():
            paths = self.block_paths
            if pos in paths:
                return paths.index(pos)
            raise BackboneError(f"{self.kind}: no block at module path {pos!r}; valid paths are {paths}")
        k = int(pos)
        if not 0 <= k < self.n_blocks:
            raise BackboneError(
                f"{self.kind}: block index must be in 0..{self.n_blocks - 1} (it has {self.n_blocks} "
                "blocks), "
                f"got {pos!r}"
            )
        return k

    # --- layout helpers ------------------------------------------------------------------------------
    def to_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """Native boundary tensor -> canonical ``(batch, tokens, features)``."""
        return h if self.layout == "btd" else h.transpose(1, 2)

    def from_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """Canonical ``(batch, tokens, features)`` -> the backbone's native boundary layout."""
        return z if self.layout == "btd" else z.transpose(1, 2)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """Mean over tokens of a native boundary tensor: ``(batch, features)``."""
        return h.mean(dim=1) if self.layout == "btd" else h.mean(dim=2)

    # --- running parts -------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or tuple(x.shape[1:]) != self.input_shape:
            raise BackboneError(
                f"{self.kind}: expected input of shape (batch, {self.input_shape[0]}, "
                f"{self.input_shape[1]}), "
                f"got {tuple(x.shape)}; check the preprocessing spec's channels and output rate"
            )

    def front(self, x: torch.Tensor, i: int | str) -> torch.Tensor:
        """Run the embedding and blocks ``0 .. i``; returns block *i*'s output in native layout."""
        i = self.position(i)
        self._check_input(x)
        h = self.embed(x)
        for block in self.blocks[: i + 1]:
            h = block(h)
        return h

    def blocks_from(self, h: torch.Tensor, j: int | str) -> torch.Tensor:
        """Run blocks ``j .. end`` on block *j*'s input; returns the last block's output (native layout)."""
        for block in self.blocks[self.position(j):]:
            h = block(h)
        return h

    def head_forward(self, y: torch.Tensor) -> torch.Tensor:
        """Last-block output -> final norm -> mean over tokens -> head (logits), or pooled features."""
        feats = self.pool(self.norm(y))  # (B, D)
        return feats if self.head is None else self.head(feats)

    def back(self, h: torch.Tensor, j: int | str) -> torch.Tensor:
        """Run blocks ``j .. end``, pooling and head on block *j*'s input (native layout)."""
        return self.head_forward(self.blocks_from(h, j))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled representation ``(batch, feature_dim)`` the head reads."""
        self._check_input(x)
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.pool(self.norm(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full model: logits ``(batch, n_classes)``, or pooled features when there is no head."""
        self._check_input(x)
        return self.back(self.embed(x), 0)

    def embed_input(self, x: torch.Tensor) -> torch.Tensor:
        """Check and embed a window; published models override it to also take their official layout."""
        self._check_input(x)
        return self.embed(x)

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every bridgeable block's output (native layout), as forward hooks on the blocks record them.

        This is what the golden tests of the published models compare against the official code.
        """
        h = self.embed_input(x)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        return outs

    def boundary_outputs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One pass that keeps every boundary (native layout) and the final output.

        Returns
        -------
        bounds : list of Tensor
            ``n_blocks + 1`` tensors; ``bounds[k]`` is block *k*'s input, ``bounds[k + 1]`` its output.
        out : Tensor, shape (batch, n_classes) or (batch, feature_dim)
        """
        self._check_input(x)
        h = self.embed(x)
        bounds = [h]
        for block in self.blocks:
            h = block(h)
            bounds.append(h)
        return bounds, self.head_forward(h)

    # --- heads and freezing --------------------------------------------------------------------------
    def set_head(self, n_classes: int) -> None:
        """Replace the head by a fresh linear layer with ``n_classes`` outputs (0 removes it)."""
        if not isinstance(n_classes, int) or n_classes < 0:
            raise BackboneError(f"n_classes must be a non-negative integer, got {n_classes!r}")
        self.head = nn.Linear(self.feature_dim, n_classes) if n_classes else None
        self.config["n_classes"] = n_classes

    def freeze(self) -> Backbone:
        """Set every parameter to ``requires_grad=False`` and switch to eval mode; returns ``self``."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameter elements (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary: kind, config, boundaries and parameter count."""
        return {
            "kind": self.kind,
            "config": dict(self.config),
            "boundaries": [b.to_dict() for b in self._boundaries],
            "block_paths": self.block_paths,
            "parameters": self.num_parameters(),
        }
