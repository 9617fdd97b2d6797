"""The source model's blocks after *j*, as a frozen torch module, for the gradient path only (imports torch).

``source_back`` (ONNX) ends in the head's logits; the paper's objective needs the last block's output, so the
gradient path rebuilds the source model from its saved weights: the bundle's ``source_model/`` (shipped by
``edge-bridge export`` unless ``--no-source-weights``) or the training run's (``RUN/source_model``, with
``--run``). Importing this module imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from calibrate.errors import CalibrationError


class SourceTail(nn.Module):
    """``z (N, T, D_out)`` at source block *j*'s input -> the source model's last-block output."""

    def __init__(self, source: nn.Module, j: int) -> None:
        super().__init__()
        from edge_bridge.composite import SourceBack

        self.back = SourceBack(source, j)  # type: ignore[arg-type]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.back.last_block(z)

    def head(self, y: torch.Tensor) -> torch.Tensor:
        """Logits from a last-block output (``self(z)``), so that both come from one pass of the blocks."""
        return self.back.source.head_forward(y)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self(z))


def load_source_tail(weights_dir: str | os.PathLike[str], j: int) -> SourceTail:
    """Load a saved source model (``RUN/source_model`` or a bundle's ``source_model/``: safetensors +
    config, never unpickled) and wrap its blocks from *j* on, frozen and in eval mode."""
    from edge_bridge.errors import EdgeBridgeError
    from edge_bridge.models import load_backbone

    path = Path(weights_dir)
    try:
        source, _ = load_backbone(path)
    except EdgeBridgeError as exc:
        raise CalibrationError(f"{path}: cannot load the source model for gradient steps ({exc}); use "
                               "--method closed-form, or point --run at the run the bundle was exported "
                               "from") from None
    tail = SourceTail(source, j).eval()
    for p in tail.parameters():
        p.requires_grad_(False)
    return tail


def check_matches(ours: np.ndarray, bundle_logits: np.ndarray, max_relative_error: float = 0.5) -> float:
    """The loaded source model (its logits ``ours``) must compute the bundle's ``source_back`` on the same
    tokens.

    Compared on the logits, each window's minus their mean (softmax ignores a shift): the RMS of the
    difference relative to the RMS of the run's logits. Not the argmax: a quantized ``source_back`` moves
    logits a little, which flips every window near the decision boundary, and a new user's shifted signal
    can put many windows there. Another run's source model gives unrelated logits, an error near or above
    1 (measured 0.72 for a source_back whose INT8 ranges clipped the tokens: refused, rightly). Returns the
    relative error.
    """
    a = np.asarray(ours, dtype=np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    theirs = np.asarray(bundle_logits, dtype=np.float64)
    b = theirs - theirs.mean(axis=1, keepdims=True)
    err = float(np.sqrt(np.mean((a - b) ** 2) / max(float(np.mean(a**2)), 1e-12)))
    if not err <= max_relative_error:
        raise CalibrationError(
            f"the source model's weights do not compute the bundle's source_back: their logits differ by "
            f"{err:.0%} (RMS, relative; allowed {max_relative_error:.0%}) on these windows; they are not "
            "the ones this bundle was exported from. Point --run at the right run, or use --method "
            "closed-form")
    return err
