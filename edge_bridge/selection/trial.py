"""The default selection rule (``select --rule trial``): cheap shortlist, then short label-free trials.

Why not the paper's two stages alone: on the method benchmark (``bench/method.py --grid-seeds 3``) the
two-stage choice ranked 7th and 15th of 16 (i, j) pairs. Stage 2's CKA rises with source depth and so always
names the deepest entry block, and nothing in either stage sees how a bridge at (i, j) actually trains. The
trial rule keeps the cheap stages as a *filter* and lets short trainings decide:

1. Cheap scores (one forward pass of each model over the paired windows, as ``--rule paper``): the
   grouped-fold probe macro-F1 of every target block on the source model's pseudo-labels, and the linear CKA
   of every (target block i, source block j) pair. Pairs are ranked by the probe score of i, then by CKA
   within an i. Why F1 first: it is the one cheap score that was measured to separate good from bad rows
   (grouped folds; ``edge_bridge.select``), while CKA's ordering of j is the bias the trials must correct;
   so the shortlist covers every j of the best-probed target blocks.
2. With ``latency_budget_ms``, pairs are measured in that order (:mod:`edge_bridge.selection.latency`) and
   those over budget are dropped with the reason, until the shortlist is full. No pair within budget is an
   error naming the fastest pair's latency.
3. Successive halving over the shortlist: every candidate trains for ``rungs[0]`` epochs, the better
   ``1/eta`` continue to ``rungs[1]`` epochs (resumed, not restarted), and so on until one is left or the
   last rung is done. A candidate's trial score is its best checkpoint's label-free score
   (:mod:`edge_bridge.selection.score`: val balanced agreement with the source model's decisions minus val
   alignment loss, on the val subjects) -- the rule ``train`` keeps its best checkpoint by, so selection
   and training agree. A candidate that decides one class on every val window ranks below every one that
   does not, and never wins a trial. If every trial is one-class the trials cannot rank anything: the
   cheap stages' top pair (the paper's choice) is taken, with a warning and a note in the selection.

Labels are never read: pseudo-labels and agreements come from the source model's own decisions (a test
shuffles the labels and gets the same selection). Trials are seeded like ``train`` (``seed``), write their
resume points under ``work_dir`` and continue from there with ``resume=True``.

Cost: the forward passes, plus ``sum over rungs of (candidates alive) x (epochs added)`` bridge epochs; the
defaults (4 candidates, rungs 2/4/8 epochs, eta 2) are 12 epochs, about 1/27 of the 16 pairs x 20 epochs of
the benchmark's grid. Why 4: the cost-vs-rank curve ``bench/method.py --grid-seeds 3`` records (replayed
on the grid's trainings) has its knee there. On draw 0 every shortlist from 2 to 16 chose the same pair
(rank 11 of 16); on draw 1 a shortlist of 4 ranked 2nd at 4.9 % of one grid's time, and 8 ranked 1st (a
tie: 0.657 and 0.657) at 11 %, above the 10 % budget. Measured with 8 (the old default): 13.8 % / 12.1 %.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.select import Selection, SelectionError, linear_cka, probe_f1, probe_folds
from edge_bridge.selection.score import is_one_class, label_free_score, rank_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSettings:
    """How many candidates get trials and how long.

    Attributes
    ----------
    shortlist : int
        Candidates trained at the first rung (after the latency filter).
    rungs : tuple of int
        Total epochs a surviving candidate has trained after each rung (increasing).
    eta : int
        ``ceil(alive / eta)`` candidates continue after each rung.
    batch_size, lr, seed :
        As ``train`` (so the trial of the chosen pair is the start of ``train``'s run with the same seed).
    """

    shortlist: int = 4
    rungs: tuple[int, ...] = (2, 4, 8)
    eta: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        rungs = tuple(int(r) for r in self.rungs)
        object.__setattr__(self, "rungs", rungs)
        if self.shortlist < 1:
            raise SelectionError(f"the shortlist needs at least 1 candidate, got {self.shortlist}")
        if not rungs or rungs[0] < 1 or any(b <= a for a, b in itertools.pairwise(rungs)):
            raise SelectionError(f"trial epochs must be increasing positive totals, e.g. 2,4,8; got "
                                 f"{','.join(map(str, rungs))}")
        if self.eta < 2:
            raise SelectionError(f"eta (1/eta of the candidates continue) must be at least 2, got {self.eta}")

    def planned_epochs(self, n: int) -> int:
        """Bridge epochs the trials take for ``n`` candidates (fewer when one is left early)."""
        total, alive, done = 0, n, 0
        for epochs in self.rungs:
            if alive <= 1 and done:
                break
            total += alive * (epochs - done)
            done = epochs
            alive = math.ceil(alive / self.eta)
        return total if n > 1 else 0


def cheap_order(f1: list[float], cka: list[list[float]], pairs: list[tuple[int, int]]
                ) -> list[tuple[int, int]]:
    """Pairs by probe F1 of i (descending), then CKA of (i, j) (descending); ties by position."""
    return sorted(pairs, key=lambda p: (-f1[p[0]], -cka[p[0]][p[1]], p[0], p[1]))


def _caches(target: Any, source: Any, xt: np.ndarray, xs: np.ndarray, batch_size: int, progress: bool
            ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, Any]:
    """Pooled boundaries of both models, the source logits and the source last-block tokens ``Y``."""
    from edge_bridge.features import pooled_boundaries, run_batched

    t_pooled, _ = pooled_boundaries(target, xt, batch_size, progress=progress)
    s_pooled, logits = pooled_boundaries(source, xs, batch_size, progress=progress)
    (y,) = run_batched(lambda xb: source.to_tokens(source.front(xb, source.n_blocks - 1)), xs, batch_size)
    return t_pooled, s_pooled, logits, y.contiguous()


def _status_line(c: dict[str, Any]) -> str:
    last = c["rungs"][-1] if c["rungs"] else None
    score = f"{last['score']:+.3f}" if last else "-"
    lat = f"{c['latency']['total_ms']:.1f} ms" if c.get("latency") else ""
    return f"({c['i']}, {c['j']}) {score} {lat} {c['status']}"


def select_trial(target: Any, source: Any, x_target: np.ndarray, x_source: np.ndarray, val_target: np.ndarray,
                 val_source: np.ndarray, *, subjects: np.ndarray | None = None,
                 settings: TrialSettings | None = None, bridge_settings: Any = None,
                 latency_budget_ms: float | None = None, device: str = "cpu", meter: Any = None,
                 work_dir: str | os.PathLike[str] | None = None, resume: bool = False, folds: int = 5,
                 batch_size: int = 128, progress: bool = False) -> Selection:
    """Choose (i, j) by cheap scores, the latency budget and label-free trial trainings.

    Parameters
    ----------
    target, source : Backbone
        The source must have a head (its argmax gives the pseudo-labels and the decisions compared).
    x_target, x_source : ndarray, shapes (n, C_t, L_t) and (n, C_s, L_s)
        Paired windows the trial bridges train on (the paired subjects).
    val_target, val_source : ndarray
        Paired windows of other subjects the trials are scored on (the val subjects).
    subjects : ndarray, shape (n,), optional
        Subject of each paired window (the probe's folds never split one).
    settings : TrialSettings
    bridge_settings : edge_bridge.pipeline.BridgeSettings
        The bridge each trial trains (and the latency meter builds).
    latency_budget_ms : float, optional
        Drop pairs whose deployed latency (:class:`~edge_bridge.selection.latency.LatencyMeter`) exceeds it.
    device : {"cpu", "jetson"}
    meter : LatencyMeter, optional
        A ready meter (tests, benches); built from ``device`` when a budget is given.
    work_dir : path, optional
        Where trial bridges keep their resume points (a temporary folder when None).
    resume : bool
        Continue the trials found in ``work_dir`` (same settings required).

    Returns
    -------
    Selection
        ``rule="trial"``; ``candidates`` lists every (i, j) with its cheap scores, latency, trial scores
        per rung and status.

    Raises
    ------
    SelectionError
        A single pseudo-class, or settings that differ from the trials being resumed.
    LatencyError
        No pair meets ``latency_budget_ms`` (the message names the fastest pair's latency).
    """
    import tempfile

    import torch

    from edge_bridge.features import BridgeCache
    from edge_bridge.pipeline import BridgeSettings, make_bridge
    from edge_bridge.train import TrainConfig, train_bridge

    settings = settings or TrialSettings()
    bridge_settings = bridge_settings or BridgeSettings()
    if source.head is None:
        raise SelectionError("the source backbone has no head, so it gives no pseudo-labels; run fit-source")
    t0 = time.perf_counter()
    tp, sp, logits, y = _caches(target, source, x_target, x_source, batch_size, progress)
    tv, _, _, yv = _caches(target, source, val_target, val_source, batch_size, False)
    t_forward = time.perf_counter() - t0

    # --- 1. cheap scores ---------------------------------------------------------------------------------
    labels = logits.argmax(1)
    classes, counts = np.unique(labels, return_counts=True)
    n = len(labels)
    if len(classes) < 2:
        raise SelectionError(f"the source model predicts a single class ({classes.tolist()}) on all {n} "
                             "paired windows, so there is nothing to probe or agree with; check the source "
                             "model and the pairing")
    keep = np.isin(labels, classes[counts >= 2])
    groups = None if subjects is None else np.asarray(subjects)[keep]
    _, folds_used = probe_folds(labels[keep], groups, folds)
    t_out, s_in = tp[1:], sp[:-1]
    f1 = [probe_f1(f[keep], labels[keep], folds, groups) for f in t_out]
    cka = [[linear_cka(t, s) for s in s_in] for t in t_out]
    t_cheap = time.perf_counter()
    pairs = [(i, j) for i in range(target.n_blocks) for j in range(source.n_blocks)]
    order = cheap_order(f1, cka, pairs)
    cands: dict[tuple[int, int], dict[str, Any]] = {
        p: {"i": p[0], "j": p[1], "probe_f1": f1[p[0]], "cka": cka[p[0]][p[1]], "cheap_rank": r + 1,
            "latency": None, "rungs": [], "status": "not shortlisted", "one_class": False}
        for r, p in enumerate(order)}

    # --- 2. latency budget -> shortlist ------------------------------------------------------------------
    notes: list[str] = []
    latency_info: dict[str, Any] = {}
    shortlist: list[tuple[int, int]] = []
    if latency_budget_ms is not None:
        from edge_bridge.selection.latency import LatencyError, LatencyMeter

        if meter is None:
            meter = LatencyMeter(target, source, bridge_settings, device=device, x_target=x_target,
                                 x_source=x_source)
        latency_info = {"budget_ms": latency_budget_ms, **meter.describe()}
        for p in order:
            if len(shortlist) >= settings.shortlist:
                break
            lat = meter.candidate(*p)
            cands[p]["latency"] = lat.to_dict()
            if lat.total_ms > latency_budget_ms:
                cands[p]["status"] = "over budget"
                cands[p]["reason"] = (f"{lat.total_ms:.1f} ms per window > budget {latency_budget_ms:g} ms "
                                      f"(front {lat.front_ms:.1f} + bridge {lat.bridge_ms:.2f} + back "
                                      f"{lat.back_ms:.1f})")
            else:
                shortlist.append(p)
        if not shortlist:
            fastest = min((c for c in cands.values() if c["latency"]), key=lambda c: c["latency"]["total_ms"])
            f = fastest["latency"]
            raise LatencyError(
                f"no (i, j) pair meets the latency budget of {latency_budget_ms:g} ms on {device}: the "
                f"fastest is (i={fastest['i']}, j={fastest['j']}) at {f['total_ms']:.1f} ms per window "
                f"(front {f['front_ms']:.1f} + bridge {f['bridge_ms']:.2f} + back {f['back_ms']:.1f}); raise "
                f"--latency-budget-ms to at least {math.ceil(f['total_ms'])} or use a smaller model")
        latency_info["parts_measured"] = meter.measured
    else:
        shortlist = order[:settings.shortlist]
    t_latency = time.perf_counter()
    for p in shortlist:
        cands[p]["status"] = "shortlisted"

    # --- 3. trials ----------------------------------------------------------------------------------------
    cleanup = None
    if work_dir is None:
        cleanup = tempfile.TemporaryDirectory(prefix="select-trials-")
        work = Path(cleanup.name)
    else:
        work = Path(work_dir)
    plan = {"settings": asdict(settings), "bridge": dict(vars(bridge_settings)),
            "shortlist": [list(p) for p in shortlist]}
    plan_file = work / "trials.json"
    if resume and plan_file.is_file():
        saved = json.loads(plan_file.read_text())
        if saved != json.loads(json.dumps(plan)):
            raise SelectionError(f"{plan_file}: the interrupted selection used other settings or another "
                                 f"shortlist ({saved}); rerun with the same options, or without --resume to "
                                 "start the trials afresh")
        logger.info("resuming the trials in %s", work)
    elif work.exists() and work_dir is not None:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    from edge_bridge.fileio import atomic_write_text

    atomic_write_text(plan_file, json.dumps(plan, indent=1))

    caches: dict[int, tuple[Any, Any]] = {}

    def cache_for(i: int) -> tuple[Any, Any]:
        if i not in caches:
            caches[i] = (BridgeCache(torch.from_numpy(np.ascontiguousarray(tp[i + 1])), y),
                         BridgeCache(torch.from_numpy(np.ascontiguousarray(tv[i + 1])), yv))
        return caches[i]

    alive = list(shortlist)
    bridges: dict[tuple[int, int], Any] = {}
    trial_epochs = 0
    bar = None
    if len(alive) == 1:
        notes.append(f"a shortlist of one ({alive[0]}): trials skipped, the pair is chosen as it stands")
        logger.info(notes[-1])
    elif progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.planned_epochs(len(alive)), desc="select trials", unit="epoch")
    try:
        done = 0
        for rung, epochs in enumerate(settings.rungs):
            if len(alive) <= 1:
                break
            for p in alive:
                i, j = p
                tc, vc = cache_for(i)
                if p not in bridges:  # its later rungs resume from work/i-j/last into the same object
                    bridges[p] = make_bridge(target, source, i, j, bridge_settings, x_source, settings.seed)
                bridge = bridges[p]
                cfg = TrainConfig(epochs=epochs, batch_size=settings.batch_size, lr=settings.lr,
                                  seed=settings.seed, checkpoint_rule="label-free")
                res = train_bridge(bridge, source, j, tc, vc, cfg, out_dir=work / f"i{i}-j{j}", resume=True,
                                   report=False)
                best = res.best
                cands[p]["rungs"].append({
                    "rung": rung, "epochs": epochs, "best_epoch": res.best_epoch,
                    "score": label_free_score(best), "val_loss": best.get("val_loss"),
                    "val_balanced_agreement": best.get("val_balanced_agreement"),
                    "val_agreement": best.get("val_agreement"), "val_classes": best.get("val_classes"),
                    "val_source_classes": best.get("val_source_classes"), "one_class": is_one_class(best)})
                cands[p]["one_class"] = is_one_class(best)
                trial_epochs += epochs - done
                if bar is not None:
                    bar.update(epochs - done)
                    bar.set_postfix_str(_status_line(cands[p]))
            done = epochs
            ranked = sorted(alive, key=lambda q: (rank_key(_best(cands[q])), -cands[q]["cheap_rank"]),
                            reverse=True)
            if rung == len(settings.rungs) - 1:
                alive = ranked
                break
            n_keep = max(1, math.ceil(len(ranked) / settings.eta))
            for q in ranked[n_keep:]:
                cands[q]["status"] = (f"one-class, halved at rung {rung}" if cands[q]["one_class"]
                                      else f"halved at rung {rung}")
            alive = ranked[:n_keep]
    finally:
        if bar is not None:
            bar.close()
        if cleanup is not None:
            cleanup.cleanup()
    t_trials = time.perf_counter()

    # --- choice ----------------------------------------------------------------------------------------
    tried = [p for p in shortlist if cands[p]["rungs"]]
    if len(shortlist) == 1:
        chosen = shortlist[0]
    else:
        finalists = [p for p in alive if not cands[p]["one_class"]]
        if not finalists:  # every finalist one-class: the best non-one-class candidate of any rung
            finalists = sorted((p for p in tried if not cands[p]["one_class"]),
                               key=lambda q: (len(cands[q]["rungs"]), rank_key(_best(cands[q]))),
                               reverse=True)
            if finalists:
                notes.append(f"every finalist decides one class on the val windows; chose {finalists[0]}, "
                             "the best candidate that does not")
        if not finalists:
            # the trials carry no information, so the cheap stages decide: their top pair is the paper's
            # choice (best probe block i, best CKA block j within it)
            for p in tried:
                cands[p]["status"] = "one-class"
            finalists = [order[0]]
            notes.append(f"every trial bridge ({len(tried)} shortlisted pairs) decided one class on every "
                         "val window while the source model decides several, so the trials cannot rank them; "
                         f"fell back to the cheap stages' top pair {order[0]} (the paper's rule). Longer "
                         "trials (--trial-epochs), a wider --shortlist, more paired data or a better source "
                         "model help")
            logger.warning(notes[-1])
        chosen = finalists[0]
    for p in alive:
        if p != chosen:
            last_rung = len(cands[p]["rungs"]) - 1
            cands[p]["status"] = "one-class" if cands[p]["one_class"] else f"runner-up at rung {last_rung}"
    cands[chosen]["status"] = "chosen"
    i, j = chosen
    seconds = {"forward": t_forward, "cheap": t_cheap - t0 - t_forward, "latency": t_latency - t_cheap,
               "trials": t_trials - t_latency, "total": time.perf_counter() - t0}
    logger.info("trial selection chose i=%d, j=%d after %d trial epochs over %d candidates (%.1f s)", i, j,
                trial_epochs, len(shortlist), seconds["total"])
    return Selection(
        i=i, j=j, f1=f1, cka=cka[i], n_windows=n, folds=folds_used,
        pseudo_label_counts={str(c): int(k) for c, k in zip(classes, counts, strict=True)},
        seconds=seconds, target_paths=target.block_paths, source_paths=source.block_paths, rule="trial",
        candidates=[cands[p] for p in order], cka_pairs=cka,
        trials={**asdict(settings), "bridge": dict(vars(bridge_settings)), "trial_epochs": trial_epochs,
                "val_windows": len(val_target), "score": "val balanced agreement - val alignment loss; "
                                                         "one-class bridges rank last"},
        latency=latency_info, notes=notes)


def _best(c: dict[str, Any]) -> dict[str, Any]:
    """A candidate's last rung (its best checkpoint so far): what :func:`rank_key` ranks."""
    return c["rungs"][-1]


__all__ = ["TrialSettings", "cheap_order", "select_trial"]
