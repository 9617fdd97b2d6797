"""``selection.png`` of the trial rule: what each candidate scored, what it costs, and what was chosen.

Left: label-free trial score (val balanced agreement - val alignment loss, at the candidate's last rung)
against deployed latency, with the Pareto front (no other trialled candidate is both faster and better) and
the budget; candidates over budget sit on the latency axis with an x. Without a measured latency the left
panel plots the score against the cheap-stage rank instead. Right: each trialled candidate's score per rung,
so the halving can be followed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points ``(cost, score)`` that no other point beats on both (lower cost, higher score),
    sorted by cost."""
    order = sorted(range(len(points)), key=lambda k: (points[k][0], -points[k][1]))
    front, best = [], float("-inf")
    for k in order:
        if points[k][1] > best:
            front.append(k)
            best = points[k][1]
    return front


def plot_trials(sel: Any, path: str | os.PathLike[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_bridge.fileio import atomic_path

    cands = sel.candidates
    tried = [c for c in cands if c["rungs"]]
    has_latency = any(c.get("latency") for c in cands)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]

    def x_of(c: dict[str, Any]) -> float:
        return c["latency"]["total_ms"] if has_latency else c["cheap_rank"]

    scored = [c for c in tried if (c.get("latency") or not has_latency)]
    pts = [(x_of(c), c["rungs"][-1]["score"]) for c in scored]
    for c, (x, s) in zip(scored, pts, strict=True):
        colour = "tab:red" if c["one_class"] else ("tab:orange" if c["status"] == "chosen" else "tab:blue")
        ax.scatter([x], [s], color=colour, s=70 if c["status"] == "chosen" else 25,
                   marker="*" if c["status"] == "chosen" else "o", zorder=3)
        ax.annotate(f"({c['i']},{c['j']})", (x, s), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if pts and has_latency:  # the front is about cost; the cheap rank is no cost
        front = pareto_front(pts)
        ax.plot([pts[k][0] for k in front], [pts[k][1] for k in front], "k--", lw=0.8, label="Pareto front")
    if has_latency:
        over = [c for c in cands if c["status"] == "over budget"]
        if over and pts:
            low = min(p[1] for p in pts)
            ax.scatter([c["latency"]["total_ms"] for c in over], [low] * len(over), marker="x",
                       color="grey", label="over budget (not trialled)")
        budget = (sel.latency or {}).get("budget_ms")
        if budget is not None:
            ax.axvline(budget, color="tab:red", lw=0.8, label=f"budget {budget:g} ms")
        ax.set_xlabel("deployed latency per window [ms] (front + bridge + back)")
    else:
        ax.set_xlabel("cheap-stage rank (probe F1 of i, then CKA)")
    ax.set_ylabel("label-free score (bal. agreement - loss)")
    ax.set_title("trial score vs cost; star: chosen, red: one-class", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax = axes[1]
    for c in tried:
        style = "-" if c["status"] == "chosen" else ":"
        ax.plot([r["epochs"] for r in c["rungs"]], [r["score"] for r in c["rungs"]], style, marker="o", ms=3,
                label=f"({c['i']},{c['j']})" if c["status"] == "chosen" else None)
    ax.set_xlabel("trial epochs")
    ax.set_ylabel("label-free score")
    ax.set_title("successive halving (chosen: solid)", fontsize=9)
    if tried:
        ax.legend(fontsize=7)
    fig.suptitle(f"Trial selection on {sel.n_windows} paired windows: chose i={sel.i}, j={sel.j}",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
