"""Selection on a run folder: the paired subjects train the trials, the val subjects score them.

Writes ``RUN/selection.json`` (every candidate) and ``RUN/selection.png``. The trials keep their resume
points in ``RUN/selection_trials/`` until the selection finishes, so ``resume=True`` continues an
interrupted one; a finished selection removes the folder.
"""

from __future__ import annotations

import shutil
from typing import Any

RULES = ("trial", "paper")


def select_run(run: Any, *, rule: str = "trial", settings: Any = None, bridge_settings: Any = None,
               latency_budget_ms: float | None = None, device: str = "cpu", resume: bool = False,
               progress: bool = False) -> Any:
    """Choose (i, j) for ``run`` by ``rule`` (``"trial"``: :func:`edge_bridge.selection.trial.select_trial`;
    ``"paper"``: the two stages of :mod:`edge_bridge.select`, as :func:`edge_bridge.pipeline.select`).

    Raises
    ------
    SelectionError
        An unknown rule, or a latency budget with the paper rule (it has no candidates to drop).
    """
    from edge_bridge import pipeline
    from edge_bridge.select import SelectionError

    if rule not in RULES:
        raise SelectionError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if rule == "paper":
        if latency_budget_ms is not None:
            raise SelectionError("a latency budget needs the trial rule (--rule trial): the paper's rule "
                                 "picks one pair and has no candidates to drop")
        return pipeline.select(run, progress=progress)
    from edge_bridge.models import load_backbone
    from edge_bridge.selection.trial import TrialSettings, select_trial

    target, _ = load_backbone(run.require(run.target_backbone, "pretrain"))
    source, _ = load_backbone(run.require(run.source_model, "fit-source"))
    paired, val = run.role("paired"), run.role("val")
    work = run.path / "selection_trials"
    sel = select_trial(target, source, paired.x["target"], paired.x["source"], val.x["target"],
                       val.x["source"], subjects=paired.subjects,
                       settings=settings or TrialSettings(seed=run.seed),
                       bridge_settings=bridge_settings, latency_budget_ms=latency_budget_ms, device=device,
                       work_dir=work, resume=resume, progress=progress)
    sel.save(run.selection)
    sel.plot(run.path / "selection.png")
    shutil.rmtree(work, ignore_errors=True)
    return sel
