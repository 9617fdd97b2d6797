"""A report a person can read of predictions scored against a recording's labels (torch-free).

The live loop hands every predicted window of a labelled recording (EDF+ annotations or a labels sidecar)
to a :class:`WindowScores`: its time span, the true label (or none), whether it straddles a label change,
the decided class and the class probabilities. From these come

* the metrics (:func:`classification_report`): balanced accuracy (the mean recall over the classes the
  labels hold, so a model that always answers the most common class scores 1 / n_classes, not the class's
  share), recall per class and the confusion matrix (rows: truth, columns: prediction);
* the counts beside them: windows that straddle a label change hold two conditions, so no class is their
  truth; they are counted apart and never enter the metrics, like windows outside every label;
* a PNG timeline (:func:`write_timeline`): the true blocks above the predicted class probabilities over
  time, so a reader sees *where* the model goes wrong (late after a change, one class never predicted).

matplotlib is imported only when a timeline is drawn, so the device path needs it only for the picture.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.errors import EdgeBridgeError


class ReportError(EdgeBridgeError, ValueError):
    """Scores that cannot be reported (a label or class outside the classes, or lengths that differ)."""


def classification_report(truth: Sequence[str], pred: Sequence[str],
                          classes: Sequence[str]) -> dict[str, Any]:
    """Balanced accuracy, recall per class and the confusion matrix of ``pred`` against ``truth``.

    Parameters
    ----------
    truth, pred : sequence of str, same length
        One entry per scored window (only windows with one true class: straddling ones are left out by
        the caller).
    classes : sequence of str
        The model's classes, in its output order (rows and columns of the matrix).

    Returns
    -------
    dict
        ``windows``, ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in
        ``truth``; ``None`` with no window), ``recall`` (class -> recall, ``None`` for a class the labels
        never hold) and ``confusion`` (``{"classes": [...], "matrix": rows truth x columns prediction}``).

    Raises
    ------
    ReportError
        Lengths differ, or a label or prediction is not one of ``classes``.
    """
    classes = list(classes)
    if len(truth) != len(pred):
        raise ReportError(f"{len(truth)} true labels but {len(pred)} predictions; they must pair up")
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({str(v) for v in (*truth, *pred) if v not in index})
    if unknown:
        raise ReportError(f"label(s) {unknown} are not among the model's classes {classes}; map the "
                          "recording's labels to them (--label-map LABEL=CLASS)")
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        matrix[index[t], index[p]] += 1
    support = matrix.sum(1)
    recall = {c: (float(matrix[k, k] / support[k]) if support[k] else None) for k, c in enumerate(classes)}
    present = [r for r in recall.values() if r is not None]
    n = int(matrix.sum())
    return {"windows": n, "accuracy": float(np.trace(matrix) / n) if n else None,
            "balanced_accuracy": float(np.mean(present)) if present else None, "recall": recall,
            "support": {c: int(s) for c, s in zip(classes, support, strict=True)},
            "confusion": {"classes": classes, "matrix": matrix.tolist(),
                          "note": "rows: true class, columns: predicted class"}}


@dataclass
class ScoredWindow:
    """One predicted window of a labelled recording."""

    start_s: float
    end_s: float
    truth: str | None  # the one label covering the window, else None
    straddling: bool  # overlaps two or more labels: counted apart, never scored
    predicted: str
    probabilities: dict[str, float]


@dataclass
class WindowScores:
    """Every predicted window of one labelled recording, and the report made from them."""

    classes: list[str]
    windows: list[ScoredWindow] = field(default_factory=list)

    def add(self, start_s: float, end_s: float, truth: str | None, straddling: bool, predicted: str,
            probabilities: dict[str, float]) -> None:
        self.windows.append(ScoredWindow(start_s, end_s, truth, straddling, predicted, dict(probabilities)))

    def report(self) -> dict[str, Any]:
        """:func:`classification_report` on the windows with one true class, plus what was left out."""
        pure = [w for w in self.windows if w.truth is not None and not w.straddling]
        scored = [w for w in pure if w.truth in self.classes]
        out = classification_report([w.truth for w in scored], [w.predicted for w in scored],  # type: ignore
                                    self.classes)
        out["straddling"] = sum(w.straddling for w in self.windows)
        out["unlabelled"] = sum(w.truth is None and not w.straddling for w in self.windows)
        # a label the model has no class for (an unmapped annotation) says nothing about its classes
        out["other_labels"] = len(pure) - len(scored)
        out["never_predicted"] = [c for c in self.classes if not any(w.predicted == c for w in scored)]
        return out

    def lines(self, what: str = "labels") -> list[str]:
        """The report as text lines for the closing summary."""
        r = self.report()
        if not r["windows"]:
            return [f"against the {what}: no window with one true class (straddling {r['straddling']}, "
                    f"unlabelled {r['unlabelled']})"]
        out = [f"against the {what}: balanced accuracy {r['balanced_accuracy']:.3f} over {r['windows']} "
               f"window(s) with one true class (accuracy {r['accuracy']:.3f}; {r['straddling']} straddling a "
               f"label change and {r['unlabelled']} unlabelled counted apart, not scored"
               + (f"; {r['other_labels']} under a label that is no class" if r["other_labels"] else "")
               + ")"]
        out.append("  recall: " + ", ".join(
            f"{c} {v:.2f} ({r['support'][c]})" if v is not None else f"{c} n/a (0)"
            for c, v in r["recall"].items()))
        width = max(len(c) for c in self.classes)
        out.append("  confusion (rows true, columns predicted): " + " | ".join(self.classes))
        for c, row in zip(self.classes, r["confusion"]["matrix"], strict=True):
            out.append(f"    {c:>{width}}: " + " ".join(f"{v:5d}" for v in row))
        if r["never_predicted"]:
            out.append(f"  never predicted: {', '.join(r['never_predicted'])}")
        return out


def timeline_path(predictions: str | os.PathLike[str], stream: str | None = None) -> Path:
    """Where the timeline of ``predictions`` goes: beside it, ``<stem>[.<stream>].timeline.png``."""
    p = Path(predictions)
    return p.with_name(f"{p.stem}{'.' + stream if stream else ''}.timeline.png")


def write_timeline(path: str | os.PathLike[str], scores: WindowScores,
                   spans: Sequence[tuple[float, float, str]], *, title: str = "") -> Path:
    """Draw the true blocks and the predicted class probabilities over time into a PNG; returns its path.

    Each window is drawn at its end time (when its prediction is made). The file is written atomically.

    Raises
    ------
    ReportError
        No predicted window to draw.
    """
    if not scores.windows:
        raise ReportError("no predicted window to draw a timeline of")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from edge_bridge.fileio import atomic_write_bytes

    colours = {c: plt.get_cmap("tab10")(k) for k, c in enumerate(scores.classes)}
    t = np.array([w.end_s for w in scores.windows])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4), sharex=True,
                                      gridspec_kw={"height_ratios": [1, 3]})
    for onset, dur, label in spans:
        top.axvspan(onset, onset + dur, color=colours.get(label, "0.7"), alpha=0.8)
        top.text(onset + dur / 2, 0.5, label, ha="center", va="center", fontsize=8)
    top.set_yticks([])
    top.set_ylabel("true", fontsize=8)
    for c in scores.classes:
        bottom.plot(t, [w.probabilities.get(c, np.nan) for w in scores.windows], color=colours[c], label=c,
                    lw=1.2)
    wrong = [w for w in scores.windows if w.truth is not None and not w.straddling and w.predicted != w.truth]
    if wrong:
        bottom.scatter([w.end_s for w in wrong], [1.04] * len(wrong), marker="|", color="red", s=20,
                       label="wrong class", clip_on=False)
    bottom.set_ylim(0, 1.08)
    bottom.set_ylabel("predicted probability", fontsize=8)
    bottom.set_xlabel("time from the recording's start (s; each window at its end)", fontsize=8)
    bottom.legend(fontsize=7, loc="upper right", ncol=len(scores.classes) + 1)
    r = scores.report()
    ba = f"balanced accuracy {r['balanced_accuracy']:.3f}" if r["balanced_accuracy"] is not None else ""
    top.set_title(" ".join(x for x in (title, ba) if x), fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
