"""Choose where to cut the target model (i) and where to enter the source model (j), without labels.

--rule trial (default): the cheap scores shortlist candidates (a logistic-regression probe per target block
on the source model's pseudo-labels, folds grouped by subject; linear CKA per pair), then short trial
trainings of the shortlisted pairs with successive halving (--trial-epochs for many candidates first,
more for the survivors) are scored on the val subjects without labels: balanced agreement of the
composite's decisions with the source model's, minus the alignment loss. A candidate that decides one class
everywhere never wins. train keeps its best checkpoint by the same score.
--rule paper: the paper's two stages (best probe block i, then best CKA block j), unchanged.

A fused run (task stress+eda or stress-binary+eda: several targets, one bridge) has one rule, fused (its
default): each target's position i_k by its own stage-1 probe, one entry block j by linear CKA on the
concatenated features of the chosen blocks; selection.json then records i as a list (main target first),
f1 per target and the targets' names.

--latency-budget-ms MS measures each candidate's deployed cost (target_front[:i] + bridge +
source_back[j:], batch 1, one thread, INT8 as export makes it for --device; cached per model and position)
and drops those over budget. --resume continues an interrupted selection. Writes RUN/selection.json (every
candidate: cheap scores, trial scores per rung, latency, status) and RUN/selection.png.

Examples:
  edge-bridge select --run runs/stress
  edge-bridge select --run runs/wesad --latency-budget-ms 50 --device cpu
  edge-bridge select --run runs/stress --rule paper
  edge-bridge select --run runs/fused          # a stress-binary+eda run: the fused rule
"""

from __future__ import annotations

import argparse
import itertools

from edge_bridge.commands._method import add_run_arguments
from edge_bridge.commands._options import positive, positive_int

SHORTLIST, TRIAL_EPOCHS = 4, "2,4,8"  # edge_bridge.selection.trial.TrialSettings' defaults


def trial_epochs(text: str) -> tuple[int, ...]:
    """``--trial-epochs``: increasing positive totals, comma-separated (e.g. ``2,4,8``)."""
    try:
        rungs = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects increasing positive integers like 2,4,8, got {text!r}"
                                         ) from None
    if not rungs or rungs[0] < 1 or any(b <= a for a, b in itertools.pairwise(rungs)):
        raise argparse.ArgumentTypeError(f"expects increasing positive integers like 2,4,8, got {text!r}")
    return rungs


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--rule", default=None, choices=["trial", "paper", "fused"],
                   help="trial (default for one target): cheap shortlist + label-free trial trainings; "
                        "paper: the paper's two stages; fused (the default and only rule of a run with "
                        "several targets): a stage-1 probe per target, CKA on the fused features")
    p.add_argument("--shortlist", type=positive_int, default=SHORTLIST,
                   help=f"candidates the trials start with (default {SHORTLIST}; 1 skips the trials)")
    p.add_argument("--trial-epochs", type=trial_epochs, default=trial_epochs(TRIAL_EPOCHS),
                   metavar="E1,E2,..",
                   help=f"total epochs of the survivors after each halving rung (default {TRIAL_EPOCHS})")
    p.add_argument("--latency-budget-ms", type=positive, default=None, metavar="MS",
                   help="drop candidates whose deployed latency per window exceeds MS (measured, cached)")
    p.add_argument("--device", default="cpu", choices=["cpu", "jetson"],
                   help="whose INT8 flavour and runtime the latency is measured with (default cpu; jetson "
                        "uses TensorRT where ONNX Runtime has it, else its CPU provider)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted selection's trials")


def preflight(args: argparse.Namespace) -> None:
    from edge_bridge.commands._method import preflight as method_preflight
    from edge_bridge.commands._options import OptionError

    method_preflight(args)
    if args.rule == "paper" and args.latency_budget_ms is not None:
        raise OptionError("--latency-budget-ms needs --rule trial: the paper's rule picks one pair and "
                          "has no candidates to drop")


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def run(args: argparse.Namespace) -> int:
    from edge_bridge.commands._method import open_run
    from edge_bridge.selection.run import select_run
    from edge_bridge.selection.trial import TrialSettings

    r = open_run(args)
    settings = TrialSettings(shortlist=args.shortlist, rungs=args.trial_epochs, seed=args.seed)
    sel = select_run(r, rule=args.rule, settings=settings, latency_budget_ms=args.latency_budget_ms,
                     device=args.device, resume=args.resume, progress=not args.no_progress)
    if sel.rule == "fused":
        for name, f1, ik in zip(sel.targets, sel.f1, sel.i, strict=True):
            print(f"{name} block  probe macro-F1 ({sel.folds})")
            for k, f in enumerate(f1):
                print(f"  {k:>3}{'*' if k == ik else ' '}       {f:.3f}")
        print("source block  linear CKA with the fused features")
        for k, c in enumerate(sel.cka):
            print(f"  {k:>3}{'*' if k == sel.j else ' '}       {c:.3f}")
    elif sel.rule == "paper":
        print(f"target block  probe macro-F1 ({sel.folds})")
        for k, f in enumerate(sel.f1):
            print(f"  {k:>3}{'*' if k == sel.i else ' '}       {f:.3f}")
        print("source block  linear CKA")
        for k, c in enumerate(sel.cka):
            print(f"  {k:>3}{'*' if k == sel.j else ' '}       {c:.3f}")
    else:
        print("  i  j  probe F1   CKA  latency ms  trial score (bal. agreement - loss)  status")
        for c in sel.candidates:
            if c["status"] == "not shortlisted":
                continue
            last = c["rungs"][-1] if c["rungs"] else {}
            lat = c["latency"]["total_ms"] if c.get("latency") else None
            print(f"{c['i']:>3}{c['j']:>3}  {c['probe_f1']:>8.3f} {c['cka']:>5.2f}  {_fmt(lat, '>10.1f')}  "
                  f"{_fmt(last.get('score'), '>+7.3f')} after {last.get('epochs', 0):>2} epochs"
                  f"{'':>17}{c['status']}{' (' + c['reason'] + ')' if c.get('reason') else ''}")
        rest = sum(c["status"] == "not shortlisted" for c in sel.candidates)
        if rest:
            print(f"  ({rest} more pairs not shortlisted; all in selection.json)")
        for note in sel.notes:
            print(f"note: {note}")
    which = f" ({', '.join(sel.targets)})" if sel.targets else ""
    print(f"chosen i={sel.i}{which}, j={sel.j} ({sel.rule} rule) from {sel.n_windows} paired windows in "
          f"{sel.seconds['total']:.1f} s -> {r.selection}, {r.path / 'selection.png'}")
    print(f"next: edge-bridge train --run {r.path}")
    return 0
