"""The composite model: ``target_front = target[:i]`` -> ``bridge`` -> ``source_back = source[j:] + head``.

The composite *wraps* the two frozen backbones (it does not copy them), and freezing follows the structure:
every parameter reachable from a backbone gets ``requires_grad=False`` and the backbones stay in eval mode
even when the composite is put in training mode, so only the bridge trains. The three parts are also
available as modules of their own (:meth:`Composite.parts`), which is what export writes one graph for.

Tensor names at the cuts (per window): ``x_target (C_t, L_t)`` -> ``h (d_in)`` -> ``z (T, D_out)`` ->
``logits (n_classes)``.

A fused composite (``extra_targets``: a fused :class:`~edge_bridge.bridge.PrototypeBridge` of K target
modalities) has one more front per extra target, ``x_target_<key> -> h_<key>``, and its bridge takes
``h, h_<key>, ...`` in that order; with no extra targets everything is as above, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edge_bridge.bridge import Bridge, BridgeError
from edge_bridge.models.backbone import Backbone


class TargetFront(nn.Module):
    """Target window -> block-*i* output mean-pooled over tokens: ``(batch, d_in)``."""

    def __init__(self, target: Backbone, i: int) -> None:
        super().__init__()
        self.target = target
        self.i = target.position(i)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.pool(self.target.front(x, self.i))  # (B, d_in)


class SourceBack(nn.Module):
    """Canonical ``(batch, T, D_out)`` tokens at source block *j*'s input -> logits."""

    def __init__(self, source: Backbone, j: int) -> None:
        super().__init__()
        self.source = source
        self.j = source.position(j)

    def last_block(self, z: torch.Tensor, *, recompute: bool = False) -> torch.Tensor:
        """Source last-block output (native layout) for bridge tokens ``z``: the Y_hat of the objective.

        ``recompute`` (training only) keeps just each block's input for backward and runs the block again
        when the gradient reaches it (``torch.utils.checkpoint``): the frozen blocks' activations are the
        bulk of bridge-training memory, and one extra forward of ``source[j:]`` costs less than keeping them.
        A block that knows a finer split offers it as ``forward_recomputed`` (the reference transformer
        recomputes each residual branch on its own) and that is used instead.
        """
        h = self.source.from_tokens(z)
        if not (recompute and torch.is_grad_enabled()):
            return self.source.blocks_from(h, self.j)
        from torch.utils.checkpoint import checkpoint

        for block in self.source.blocks[self.j:]:
            finer = getattr(block, "forward_recomputed", None)
            h = finer(h) if finer is not None else checkpoint(block, h, use_reentrant=False)
        return h

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.source.head_forward(self.last_block(z))  # (B, n_classes)


class SourceFront(nn.Module):
    """Source window -> canonical tokens at block *j*'s input (what the bridge imitates; for calibration)."""

    def __init__(self, source: Backbone, j: int) -> None:
        super().__init__()
        self.source = source
        self.j = source.position(j)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.source.embed(x)
        for block in self.source.blocks[: self.j]:
            h = block(h)
        return self.source.to_tokens(h)  # (B, T, D_out)


class FusedBridgeInputs(nn.Module):
    """A fused bridge seen as a graph of K named inputs ``(h, h_<key>, ...)`` -> ``z``: what export writes.

    Why a wrapper: the bridge itself takes the K features as one list (training's code path); an ONNX
    graph needs them as separate inputs, one per front, so the device feeds each front's output as it is.
    """

    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge

    def forward(self, h: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.bridge([h, *extra])  # (B, T, D_out)


def check_fit(target: Backbone, source: Backbone, bridge: Bridge, i: int, j: int,
              extra: Sequence[tuple[Backbone, int]] = ()) -> None:
    """Raise :class:`BridgeError` unless the bridge's sizes match target block *i* and source block *j*
    (and, fused, each extra target's block ``i_k`` one of the bridge's further input widths)."""
    if extra:
        dims = list(getattr(bridge, "input_dims", (bridge.d_in,)))
        want_dims = [target.block_output(i).features, *(tb.block_output(ik).features for tb, ik in extra)]
        if dims != want_dims:
            raise BridgeError(f"the fused bridge takes inputs of widths {dims}, but the target blocks give "
                              f"{want_dims} (main target first, then the extra targets in order); build the "
                              "bridge for these positions")
        b_out = source.block_input(j)
        if (bridge.tokens, bridge.d_out) != (b_out.tokens, b_out.features):
            raise BridgeError(f"the bridge outputs (T={bridge.tokens}, D_out={bridge.d_out}) but source "
                              f"block {j} expects (T={b_out.tokens}, D_out={b_out.features})")
        return
    b_in, b_out = target.block_output(i), source.block_input(j)
    want = (b_in.features, b_out.tokens, b_out.features)
    got = (bridge.d_in, bridge.tokens, bridge.d_out)
    if want != got:
        raise BridgeError(f"the bridge maps d_in={got[0]} to (T={got[1]}, D_out={got[2]}), but target "
                          f"block {i} "
                          f"outputs {want[0]} features and source block {j} expects (T={want[1]}, "
                          f"D_out={want[2]}); build the bridge for these positions")


class Composite(nn.Module):
    """Target front, bridge and source back as one classifier of target windows.

    Parameters
    ----------
    target, source : Backbone
        Frozen here (``requires_grad=False``, eval mode); the source must have a head.
    bridge : Bridge
    i : int or str
        Target block whose output feeds the bridge.
    j : int or str
        Source block whose input the bridge produces.
    extra_targets : sequence of (key, Backbone, i_k), optional
        A fused bridge's further target modalities, in the bridge's input order after the main target:
        each key (``Task.target_keys``, e.g. ``"eda"``), its frozen backbone and its block ``i_k``.
    """

    def __init__(self, target: Backbone, source: Backbone, bridge: Bridge, i: int | str,
                 j: int | str, extra_targets: Sequence[tuple[str, Backbone, int | str]] = ()) -> None:
        super().__init__()
        self.i, self.j = target.position(i), source.position(j)
        extra = [(str(k), tb, tb.position(ik)) for k, tb, ik in extra_targets]
        if len({k for k, _, _ in extra}) != len(extra) or any(k in ("target", "source") for k, _, _ in extra):
            raise BridgeError(f"extra target keys {[k for k, _, _ in extra]} must be unique and none "
                              "'target' or 'source'")
        check_fit(target, source, bridge, self.i, self.j, [(tb, ik) for _, tb, ik in extra])
        if source.head is None:
            raise BridgeError("the source backbone has no head; a composite needs the source task model "
                              "(run edge-bridge fit-source)")
        target.freeze()
        source.freeze()
        for _, tb, _ in extra:
            tb.freeze()
        self.target_front = TargetFront(target, self.i)
        # key -> that modality's front; a ModuleDict so .eval()/.cpu()/parameters() reach the backbones
        self.extra_fronts = nn.ModuleDict({k: TargetFront(tb, ik) for k, tb, ik in extra})
        self.bridge = bridge
        self.source_back = SourceBack(source, self.j)

    @property
    def target(self) -> Backbone:
        return self.target_front.target

    @property
    def source(self) -> Backbone:
        return self.source_back.source

    def train(self, mode: bool = True) -> Composite:
        """Only the bridge changes mode; the frozen backbones stay in eval (BatchNorm, dropout)."""
        self.training = mode
        self.bridge.train(mode)
        self.target.eval()
        self.source.eval()
        for front in self.extra_fronts.values():
            front.target.eval()
        return self

    @property
    def extra_keys(self) -> tuple[str, ...]:
        """The extra targets' keys in bridge-input order (empty unless fused)."""
        return tuple(self.extra_fronts)

    @property
    def extra_positions(self) -> dict[str, int]:
        """Each extra target's block ``i_k``, by key."""
        return {k: int(f.i) for k, f in self.extra_fronts.items()}

    def forward(self, x_target: torch.Tensor, *x_extra: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)``; a fused composite takes one window batch per extra target too."""
        h = self.target_front(x_target)  # (B, d_in)
        if len(x_extra) != len(self.extra_fronts):
            raise BridgeError(f"this composite takes {1 + len(self.extra_fronts)} window batches (target"
                              f"{''.join(', ' + k for k in self.extra_fronts)}), got {1 + len(x_extra)}")
        if x_extra:
            hs = [front(x) for front, x in zip(self.extra_fronts.values(), x_extra, strict=True)]
            z = self.bridge([h, *hs])  # (B, T, D_out)
        else:
            z = self.bridge(h)  # (B, T, D_out)
        return self.source_back(z)  # (B, n_classes)

    def count_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter elements; trainable must equal the bridge's count."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total

    def parts(self) -> dict[str, nn.Module]:
        """The modules export writes one graph for each: target_front, bridge, source_back, source_front."""
        parts: dict[str, nn.Module] = {
            "target_front": self.target_front,
            "bridge": FusedBridgeInputs(self.bridge) if self.extra_fronts else self.bridge,
            "source_back": self.source_back, "source_front": SourceFront(self.source, self.j)}
        for key, front in self.extra_fronts.items():  # fused: target_front_<key> (bundle.extra_front)
            parts[f"target_front_{key}"] = front
        return parts

    def describe(self) -> dict[str, Any]:
        trainable, total = self.count_parameters()
        return {"i": self.i, "j": self.j, "bridge": self.bridge.kind, "bridge_config": self.bridge.config,
                "trainable_parameters": trainable, "total_parameters": total}
