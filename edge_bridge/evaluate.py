"""Evaluation on held-out subjects: balanced accuracy, macro-F1 and Cohen's kappa (scikit-learn).

The bridged composite reads the test subjects' *target* signal. Beside it: the source model on the source
signal (the reference the bridge tries to carry over), the KD student on the target signal, and a
supervised target model (target backbone + head trained with labels: the upper bound).

Also the one warning for a useless model (:func:`check_decisions`, used by fit-source, train, evaluate and
calibrate) and the confusion-matrix picture that evaluate writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# What helped, measured on the simulated stress task: at the README's quick-start sizes the source model
# scored 0.29 balanced accuracy (chance 0.33); another --seed did not change that, more data did.
ADVICE = ("more data helps most: more subjects (`edge-bridge simulate --subjects`, or more recordings in "
          "--data) and more minutes per subject, then more --epochs; another --seed alone rarely helps")
CHANCE_MARGIN = 0.01  # "at chance" includes a hair above it: 0.335 of three classes is no classifier


def decision_problem(n_classes: int, predicted_classes: int, balanced: float | None = None,
                     measure: str = "balanced accuracy", windows: str = "window") -> str | None:
    """What makes a model's decisions useless, in words, or None when they are not.

    ``predicted_classes`` distinct classes were decided; ``balanced`` is the balanced accuracy (or, without
    labels, the balanced agreement with the source model) over ``n_classes`` classes.
    """
    if n_classes >= 2 and predicted_classes <= 1:
        return f"decides one class on every {windows} (a constant classifier)"
    chance = 1.0 / max(n_classes, 1)
    if balanced is not None and n_classes >= 2 and balanced <= chance + CHANCE_MARGIN:
        return f"scores {measure} {balanced:.3f}, at or below chance (1/{n_classes} = {chance:.3f})"
    return None


def check_decisions(what: str, n_classes: int, predicted_classes: int, balanced: float | None = None, *,
                    measure: str = "balanced accuracy", windows: str = "window", advice: str = ADVICE,
                    log: logging.Logger | None = None) -> str | None:
    """Log the one clear warning for a model below chance or deciding one class; return it (or None)."""
    problem = decision_problem(n_classes, predicted_classes, balanced, measure, windows)
    if problem is None:
        return None
    message = f"{what} {problem}; {advice}"
    (log or logger).warning(message)
    return message


def check_metrics(models: dict[str, dict[str, Any]], where: str = "on the test subjects") -> list[str]:
    """:func:`check_decisions` for each model of a metrics table (decided classes from its confusion)."""
    out = []
    for name, m in models.items():
        confusion = np.asarray(m.get("confusion", []))
        if confusion.ndim != 2 or confusion.size == 0:
            continue
        decided = int((confusion.sum(axis=0) > 0).sum())
        msg = check_decisions(f"{name} {where}", confusion.shape[0], decided, m.get("balanced_accuracy"))
        if msg:
            out.append(msg)
    return out


def plot_confusion(models: dict[str, dict[str, Any]], classes: Sequence[str],
                   path: str | os.PathLike[str]) -> Path:
    """One confusion matrix per model (rows: true class, columns: decided; row-normalised), as a PNG.

    Row-normalised because the test subjects' classes are unbalanced: a raw count matrix hides that a
    model never decides the rare class.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_bridge.fileio import atomic_path

    names = [n for n, m in models.items() if np.asarray(m.get("confusion", [])).ndim == 2]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.4 * max(len(names), 1), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        c = np.asarray(models[name]["confusion"], dtype=float)
        rows = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
        ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
        for (r, k), v in np.ndenumerate(c):
            ax.text(k, r, f"{int(v)}", ha="center", va="center",
                    color="white" if rows[r, k] > 0.5 else "black", fontsize=8)
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, classes, fontsize=8)
        ax.set_xlabel("decided")
        ax.set_title(f"{name}\nbal. acc {models[name].get('balanced_accuracy', float('nan')):.3f}",
                     fontsize=9)
    axes[0][0].set_ylabel("true class")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                           n_classes: int | None = None) -> dict[str, Any]:
    """Balanced accuracy, macro-F1 and Cohen's kappa (plus n and the confusion matrix)."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = list(range(n_classes)) if n_classes else sorted(set(y_true) | set(y_pred))
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
        "n": len(y_true),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def format_table(metrics: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of the models' metrics (for the CLI and the closing note)."""
    rows = [f"{'model':<22} {'input':<8} {'bal.acc':>8} {'macro-F1':>9} {'kappa':>7} {'n':>6}"]
    for name, m in metrics.items():
        rows.append(f"{name:<22} {m.get('input', ''):<8} {m['balanced_accuracy']:>8.3f} "
                    f"{m['macro_f1']:>9.3f} "
                    f"{m['kappa']:>7.3f} {m['n']:>6d}")
    return "\n".join(rows)
