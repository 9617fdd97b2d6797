"""Position selection, as the BioX-Bridge code does it (``select --rule paper``): where to cut the target
model and where to enter the source model, from paired data and no labels. The default rule
(``--rule trial``, :mod:`edge_bridge.selection.trial`) uses these cheap scores as a shortlist and lets
short label-free trial trainings choose; both write the same :class:`Selection`.

Cost: one forward pass of each model over the paired set (:func:`edge_bridge.features.pooled_boundaries`).

Stage 1, bridge input *i*
    Pseudo-labels are the source model's argmax on the source signal. For every target block, a logistic-
    regression probe on its mean-pooled output is scored by 5-fold cross-validated macro-F1; the best block
    wins. (Features are standardised inside each fold so the probe's regularisation treats blocks alike.)
    The folds are grouped by subject, the same rule as every split here: paired windows overlap (a 60 s
    window on a 5 s hop shares 92 % of its samples with the next), so folds drawn window by window put near
    copies of each test window in the training folds, and the score then rewards the block that best
    *memorises* a recording, not the one whose features carry the source model's decision to new people.
    On the first benchmark draw's paired set (9 subjects) shuffled folds scored the four target blocks
    0.975-0.981 and chose the deepest, whose bridges test worst on average; grouped folds score them
    0.69-0.73 and choose the first, whose bridges test best on average (README "Measured"). With a single
    subject the folds are contiguous in time.
Stage 2, bridge output *j*
    Linear CKA between the chosen target features and every source block's mean-pooled *input*; the best
    block wins.

The result (:class:`Selection`) keeps every candidate's score; :meth:`Selection.save` writes
``selection.json`` and :meth:`Selection.plot` a PNG with F1 per target block and CKA per source block.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge import __version__
from edge_bridge.errors import EdgeBridgeError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class SelectionError(EdgeBridgeError, ValueError):
    """Position selection cannot run on the data given (too few windows, a single pseudo-class)."""


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment of two representations of the same windows.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``; invariant to orthogonal transforms and
    isotropic scaling of either side, 1 for identical inputs, 0 for a constant one.

    Parameters
    ----------
    x : ndarray, shape (n, p)
    y : ndarray, shape (n, q)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise SelectionError(f"CKA needs two 2-D arrays with the same number of rows, got {x.shape} and "
                             f"{y.shape}")
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / denom) if denom > 0 else 0.0


def probe_folds(labels: np.ndarray, groups: np.ndarray | None, folds: int = 5) -> tuple[Any, str]:
    """The cross-validation splitter for the stage-1 probe, and a line saying what it is.

    Folds grouped by subject (stratified by pseudo-label as far as the groups allow) when the windows come
    from 2 or more subjects; otherwise contiguous stratified folds over the windows in time order, so only
    the windows at a fold's edges have overlapping neighbours on the other side.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    _, counts = np.unique(labels, return_counts=True)
    n_groups = 0 if groups is None else len(np.unique(groups))
    if n_groups >= 2:
        n_splits = int(min(folds, n_groups))
        what = f"{n_splits} folds grouped by subject ({n_groups} subjects)"
        return StratifiedGroupKFold(n_splits=n_splits), what
    n_splits = int(min(folds, counts.min()))
    if n_splits < 2:
        raise SelectionError("a probe needs at least 2 windows of every pseudo-label")
    return StratifiedKFold(n_splits=n_splits), f"{n_splits} contiguous folds (one subject)"


def probe_f1(features: np.ndarray, labels: np.ndarray, folds: int = 5,
             groups: np.ndarray | None = None) -> float:
    """Cross-validated macro-F1 of a logistic-regression probe (folds from :func:`probe_folds`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv, _ = probe_folds(labels, groups, folds)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    with warnings.catch_warnings():
        # convergence chatter on near-separable blocks; a test fold may lack a pseudo-class
        warnings.simplefilter("ignore")
        # a fold whose training part holds one pseudo-class cannot fit a probe: it scores 0 (it learnt
        # nothing) instead of failing the whole selection (few subjects, one of them all one state)
        try:
            scores = cross_val_score(probe, features, labels, groups=groups, cv=cv, scoring="f1_macro",
                                     error_score=0.0)
        except ValueError as exc:  # every fold's training part holds one pseudo-class
            if "fits failed" not in str(exc):
                raise
            return 0.0
    return float(np.mean(scores))


@dataclass
class Selection:
    """The chosen positions and every candidate's score.

    Attributes
    ----------
    i : int or list of int
        Target block whose output feeds the bridge (argmax of ``f1``); for the ``"fused"`` rule one block
        per target, in ``targets`` order.
    j : int
        Source block whose input the bridge produces (argmax of ``cka``).
    f1 : list of float, or list of list of float
        Stage 1 score of each target block (probe macro-F1 on pseudo-labels); ``"fused"``: one list per
        target.
    cka : list of float
        Stage 2 score of each source block (linear CKA with target block *i*; ``"fused"``: with the
        concatenated features of the chosen blocks).
    targets : list of str
        ``"fused"`` rule only: the targets' modalities (e.g. ``["ppg", "eda"]``); empty for one target.
    """

    i: int | list[int]
    j: int
    f1: list[float] | list[list[float]]
    cka: list[float]
    n_windows: int
    folds: str = ""
    pseudo_label_counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    target_paths: list[str] = field(default_factory=list)
    source_paths: list[str] = field(default_factory=list)
    # the trial rule (edge_bridge.selection.trial) fills these; the paper rule leaves them empty
    rule: str = "paper"
    candidates: list[dict[str, Any]] = field(default_factory=list)  # every (i, j): scores, latency, status
    cka_pairs: list[list[float]] = field(default_factory=list)  # CKA of every (target i, source j)
    trials: dict[str, Any] = field(default_factory=dict)  # settings and cost of the trial trainings
    latency: dict[str, Any] = field(default_factory=dict)  # budget and how latency was measured
    notes: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)  # the "fused" rule: one modality per entry of i

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["targets"]:  # a single-target selection.json stays as it was
            del d["targets"]
        return {"schema_version": SCHEMA_VERSION, "tool_version": __version__, **d}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``selection.json``."""
        from edge_bridge.fileio import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Selection:
        from edge_bridge.models.io import read_versioned_json

        d = read_versioned_json(path, required=("i", "j", "f1", "cka", "n_windows"),
                                known=("folds", "pseudo_label_counts", "seconds", "target_paths",
                                       "source_paths", "rule", "candidates", "cka_pairs", "trials", "latency",
                                       "notes", "targets"))
        return Selection(**d)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """A PNG a user can read: probe F1 per target block and CKA per source block, choices marked (the
        trial rule: :func:`edge_bridge.selection.plot.plot_trials`)."""
        if self.rule == "trial":
            from edge_bridge.selection.plot import plot_trials

            return plot_trials(self, path)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if self.rule == "fused":  # one stage-1 panel per target, then CKA on the fused features
            panels = [(f1, ik, f"Stage 1: {name} block output (bridge input i)", "probe macro-F1")
                      for f1, ik, name in zip(self.f1, self.i, self.targets, strict=True)]  # type: ignore
            panels.append((self.cka, self.j, f"Stage 2: source block input (j), fused i={self.i}",
                           "linear CKA"))
        else:
            panels = [(self.f1, self.i, "Stage 1: target block output (bridge input i)", "probe macro-F1"),
                      (self.cka, self.j, f"Stage 2: source block input (bridge output j), i={self.i}",
                       "linear CKA")]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4))
        for ax, (scores, pick, title, ylabel) in zip(axes, panels, strict=True):
            colours = ["tab:orange" if k == pick else "tab:blue" for k in range(len(scores))]
            ax.bar(range(len(scores)), scores, color=colours)
            ax.set_xticks(range(len(scores)))
            ax.set_xlabel("block")
            ax.set_ylabel(ylabel)
            ax.set_title(title, fontsize=9)
            ax.set_ylim(0, max(1.0, max(scores) * 1.05))
            for k, s in enumerate(scores):
                ax.text(k, s, f"{s:.2f}", ha="center", va="bottom", fontsize=8)
        fig.suptitle(f"Position selection on {self.n_windows} paired windows (chosen in orange)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return Path(path)


def select_from_features(target_outputs: list[np.ndarray], source_inputs: list[np.ndarray],
                         pseudo_labels: np.ndarray, *, groups: np.ndarray | None = None,
                         folds: int = 5) -> Selection:
    """Two-stage selection on already pooled features.

    Parameters
    ----------
    target_outputs : list of ndarray, each shape (n, d_k)
        Pooled output of each target block (index = block).
    source_inputs : list of ndarray, each shape (n, e_k)
        Pooled input of each source block (index = block).
    pseudo_labels : ndarray of int, shape (n,)
        Source model's argmax on the source signal.
    groups : ndarray, shape (n,), optional
        Subject of each window; the probe's folds never split a subject. Without it the folds are
        contiguous in the order given.
    """
    labels = np.asarray(pseudo_labels)
    n = len(labels)
    if any(len(f) != n for f in (*target_outputs, *source_inputs)):
        raise SelectionError("every feature array must have one row per paired window")
    if groups is not None and len(groups) != n:
        raise SelectionError(f"groups has {len(groups)} subjects for {n} paired windows; give one per window")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise SelectionError(f"the source model predicts a single class ({classes.tolist()}) on all {n} "
                             "paired "
                             "windows, so stage 1 has nothing to probe; check the source model and the "
                             "pairing")
    keep = np.isin(labels, classes[counts >= 2])  # a class seen once cannot be stratified
    t0 = time.perf_counter()
    kept_groups = None if groups is None else np.asarray(groups)[keep]
    _, folds_used = probe_folds(labels[keep], kept_groups, folds)
    f1 = [probe_f1(f[keep], labels[keep], folds, kept_groups) for f in target_outputs]
    t1 = time.perf_counter()
    i = int(np.argmax(f1))
    cka = [linear_cka(target_outputs[i], s) for s in source_inputs]
    j = int(np.argmax(cka))
    t2 = time.perf_counter()
    logger.info("selected target block i=%d (F1 %s, %s) and source block j=%d (CKA %s)", i,
                [round(v, 3) for v in f1], folds_used, j, [round(v, 3) for v in cka])
    return Selection(i=i, j=j, f1=f1, cka=cka, n_windows=n, folds=folds_used,
                     pseudo_label_counts={str(c): int(k) for c, k in zip(classes, counts, strict=True)},
                     seconds={"stage1": t1 - t0, "stage2": t2 - t1})


def select_positions(target: Any, source: Any, x_target: np.ndarray, x_source: np.ndarray, *,
                     subjects: np.ndarray | None = None, folds: int = 5, batch_size: int = 128,
                     progress: bool = False) -> Selection:
    """Run one forward pass of each model over the paired windows, then the two-stage selection.

    Parameters
    ----------
    target, source : Backbone
        The source must have a head (its argmax gives the pseudo-labels).
    x_target : ndarray, shape (n, C_t, L_t)
    x_source : ndarray, shape (n, C_s, L_s)
    subjects : ndarray, shape (n,), optional
        Subject of each paired window, so that the stage-1 probe's folds never split a subject.
    """
    from edge_bridge.features import pooled_boundaries

    if source.head is None:
        raise SelectionError("the source backbone has no head, so it gives no pseudo-labels; run fit-source")
    t0 = time.perf_counter()
    t_pooled, _ = pooled_boundaries(target, x_target, batch_size, progress=progress)
    s_pooled, logits = pooled_boundaries(source, x_source, batch_size, progress=progress)
    t1 = time.perf_counter()
    sel = select_from_features(t_pooled[1:], s_pooled[:-1], logits.argmax(1), groups=subjects,
                               folds=folds)
    sel.seconds = {"forward": t1 - t0, **sel.seconds, "total": time.perf_counter() - t0}
    sel.target_paths = target.block_paths
    sel.source_paths = source.block_paths
    return sel


def select_fused(targets: Sequence[Any], source: Any, x_targets: Sequence[np.ndarray], x_source: np.ndarray,
                 *, subjects: np.ndarray | None = None, folds: int = 5,
                 batch_size: int = 128) -> dict[str, Any]:
    """Label-free positions of a fused bridge: each ``i_k`` by its own stage-1 probe, one entry block j.

    Each target backbone's ``i_k`` is the existing stage 1 (probe macro-F1 on the source model's
    pseudo-labels, folds grouped by subject) on its own pooled block outputs; j is stage 2 (linear CKA)
    on the *fused* features, the concatenation of the chosen ``h_k``, against each source block's pooled
    input. Why one j by CKA on the fused features: the bridge feeds one source block from all modalities
    together, so the block must suit their sum, not any one alone. Cost: one forward pass of each model.

    Returns
    -------
    dict
        ``{"i": [i_1..i_K], "j": j, "f1": [[...] per target], "cka": [...], "per_target": [Selection]}``
        (JSON-ready except ``per_target``, whose ``to_dict()`` is).
    """
    from edge_bridge.features import pooled_boundaries

    if source.head is None:
        raise SelectionError("the source backbone has no head, so it gives no pseudo-labels; run fit-source")
    if len(targets) != len(x_targets) or not targets:
        raise SelectionError(f"need one window array per target backbone, got {len(targets)} backbones and "
                             f"{len(x_targets)} arrays")
    t0 = time.perf_counter()
    s_pooled, logits = pooled_boundaries(source, x_source, batch_size)
    labels = logits.argmax(1)
    per_target, chosen = [], []
    for tb, xk in zip(targets, x_targets, strict=True):
        t_pooled, _ = pooled_boundaries(tb, xk, batch_size)
        sel = select_from_features(t_pooled[1:], s_pooled[:-1], labels, groups=subjects, folds=folds)
        sel.target_paths, sel.source_paths = tb.block_paths, source.block_paths
        per_target.append(sel)
        chosen.append(t_pooled[1:][sel.i])
    fused = np.concatenate(chosen, axis=1)
    cka = [linear_cka(fused, s) for s in s_pooled[:-1]]
    j = int(np.argmax(cka))
    logger.info("fused selection: i=%s, j=%d (CKA on fused features %s)", [s.i for s in per_target], j,
                [round(v, 3) for v in cka])
    return {"rule": "paper (stage 1 per target, stage 2 on fused features)", "i": [s.i for s in per_target],
            "j": j, "f1": [s.f1 for s in per_target], "cka": cka, "per_target": per_target,
            "seconds": time.perf_counter() - t0}
