"""Evaluation on held-out subjects: balanced accuracy, macro-F1 and Cohen's kappa (scikit-learn).

The bridged composite reads the test subjects' *target* signal. Beside it: the source model on the source
signal (the reference the bridge tries to carry over), the KD student on the target signal, and a
supervised target model (target backbone + head trained with labels: the upper bound).
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
