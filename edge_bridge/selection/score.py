"""The label-free score of a bridge on the val subjects: decision agreement with the source model, and the
alignment loss.

Why not the loss alone (the paper's rule): the alignment loss ``1 - cos`` can be lowest for a bridge that
gives every window the same class. On the method benchmark's second draw the lowest-loss checkpoint of one
grid pair decided one class (test balanced accuracy 0.50) while its later epochs, at a loss only 0.01-0.03
higher, tested at 0.65-0.69. What a user wants from the composite is the source model's *decisions* on the
new modality, and the source model's decisions on the paired source windows are known without labels. So
the score is::

    score = balanced agreement - alignment loss

Both terms live on [0, 1]-like scales and are weighted alike: the balanced agreement (mean over the source
model's classes of the share of windows where the composite decides the same) is what matters but is a
coarse count on a few hundred windows; the loss is smooth and breaks its near-ties. A bridge that decides
one class on every window while the source model decides several is *one-class*: it ranks below every
bridge that is not, whatever its score (:func:`rank_key`), so it never wins a trial or a checkpoint.

No torch here: the score reads the numbers ``edge_bridge.train.validate`` records per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: checkpoint/selection rules: the label-free score (default) or the paper's lowest val alignment loss
CHECKPOINT_RULES = ("label-free", "paper")


def is_one_class(entry: Mapping[str, Any]) -> bool:
    """The bridge decides one class on every val window while the source model decides several."""
    return int(entry.get("val_classes", 2)) == 1 and int(entry.get("val_source_classes", 1)) > 1


def label_free_score(entry: Mapping[str, Any]) -> float:
    """``val_balanced_agreement - val_loss`` of one history entry (``edge_bridge.train`` records both).

    Without an agreement (no val windows, or an entry from an older tool) the score is ``-val_loss``, the
    paper's rule; without a val loss it is ``-train_loss``.
    """
    loss = entry.get("val_loss", entry.get("train_loss"))
    if loss is None:
        raise KeyError("a history entry needs val_loss or train_loss to be scored")
    agreement = entry.get("val_balanced_agreement")
    score = -float(loss) + (0.0 if agreement is None else float(agreement))
    return score if math.isfinite(score) else -math.inf


def rank_key(entry: Mapping[str, Any], rule: str = "label-free") -> tuple[int, float]:
    """Sort key, larger is better: one-class bridges below all others, then the rule's score.

    ``rule="paper"``: the lowest val alignment loss wins and one-class bridges are *not* demoted (the
    paper's checkpoint rule, kept for comparison).
    """
    if rule not in CHECKPOINT_RULES:
        raise ValueError(f"rule must be one of {', '.join(CHECKPOINT_RULES)}, got {rule!r}")
    if rule == "paper":
        loss = entry.get("val_loss", entry.get("train_loss"))
        return (1, -float(loss) if loss is not None else -math.inf)
    return (0 if is_one_class(entry) else 1, label_free_score(entry))
