"""Selection on a run folder: the paired subjects train the trials, the val subjects score them.

Writes ``RUN/selection.json`` (every candidate) and ``RUN/selection.png``. The trials keep their resume
points in ``RUN/selection_trials/`` until the selection finishes, so ``resume=True`` continues an
interrupted one; a finished selection removes the folder.
"""

from __future__ import annotations

import shutil
from typing import Any

RULES = ("trial", "paper")
FUSED_RULE = "fused"  # a run with several targets (Task.extra_targets): edge_bridge.select.select_fused


def select_run(run: Any, *, rule: str | None = None, settings: Any = None, bridge_settings: Any = None,
               latency_budget_ms: float | None = None, device: str = "cpu", resume: bool = False,
               progress: bool = False) -> Any:
    """Choose (i, j) for ``run`` by ``rule`` (``"trial"``, the default for one target:
    :func:`edge_bridge.selection.trial.select_trial`; ``"paper"``: the two stages of
    :mod:`edge_bridge.select`, as :func:`edge_bridge.pipeline.select`).

    A fused run (a task with several targets) has one rule, ``"fused"`` (the default there):
    :func:`edge_bridge.pipeline.select_fused_run`, each ``i_k`` by its own stage-1 probe and one ``j`` by
    CKA on the fused features.

    Raises
    ------
    SelectionError
        An unknown rule, a rule the run's task has not got, or a latency budget with a rule other than
        trial (it has no candidates to drop).
    """
    from edge_bridge import pipeline
    from edge_bridge.select import SelectionError

    if pipeline.is_fused(run):
        names = "+".join(pipeline.target_names(run))
        if rule not in (None, FUSED_RULE):
            raise SelectionError(f"run {run.path} is a fused {run.task.name!r} run ({names}); its positions "
                                 f"are chosen by the fused rule (each target's stage-1 probe, CKA on the "
                                 f"fused features): omit --rule or pass --rule {FUSED_RULE}, not {rule!r}")
        if latency_budget_ms is not None:
            raise SelectionError(f"a latency budget needs the trial rule, which is not built for a fused run "
                                 f"({names}); select without --latency-budget-ms")
        return pipeline.select_fused_run(run, progress=progress)
    rule = "trial" if rule is None else rule
    if rule not in RULES:
        raise SelectionError(f"rule must be one of {', '.join(RULES)}, got {rule!r}"
                             + (f" ({FUSED_RULE!r} is for a run with several targets, e.g. task "
                                "stress-binary+eda)" if rule == FUSED_RULE else ""))
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
