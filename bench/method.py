"""Benchmark of the bridging method on the simulated stress task (one machine, one run); JSON out.

1. Transfer: test-subject balanced accuracy of the composite vs the KD student and the source model.
2. Cost: trainable parameters, wall time per epoch and training-step memory of the bridge vs KD.
3. Selection quality: a bridge for EVERY (i, j) pair; where the two-stage choice ranks; selection cost vs
   grid cost; heat map PNG.
Also: prototype initialisation from k-means of real source tokens vs random (same scale).

Run (about 10-15 minutes on 2 CPU cores):
  .venv/bin/python bench/method.py --out bench-out/method --subjects 12
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def step_memory_bytes(step: Any, modules: list[torch.nn.Module], trainable: list[torch.nn.Parameter],
                      inputs: list[torch.Tensor]) -> dict[str, int]:
    """Memory of one training step, counted tensor by tensor (portable across CPU and GPU).

    activations saved for backward + parameters of the modules run + gradients and Adam's two moments of
    the trainable parameters + the batch inputs.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    params = {p.data_ptr(): p.numel() * p.element_size() for m in modules for p in m.parameters()}
    train_b = sum(p.numel() * p.element_size() for p in trainable)
    out = {"activations": sum(seen.values()), "parameters": sum(params.values()),
           "grads_and_adam": 3 * train_b, "inputs": sum(t.numel() * t.element_size() for t in inputs)}
    out["total"] = sum(out.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/method")
    ap.add_argument("--subjects", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--source-epochs", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=20, help="bridge and KD epochs (the same for both)")
    ap.add_argument("--grid-epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from edge_bridge import pipeline as P
    from edge_bridge.bridge import load_bridge
    from edge_bridge.composite import Composite
    from edge_bridge.evaluate import classification_metrics
    from edge_bridge.features import bridge_cache
    from edge_bridge.fitting import FitConfig, predict
    from edge_bridge.kd import kd_loss
    from edge_bridge.models import load_backbone
    from edge_bridge.runs import Run
    from edge_bridge.simulate import simulate_dataset
    from edge_bridge.train import TrainConfig, alignment_loss, train_bridge

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                                          "threads": args.threads, "device": "cpu"}, "args": vars(args)}
    t0 = time.perf_counter()
    data = out / "data"
    if not (data / "dataset.json").is_file():
        simulate_dataset(data, "stress", subjects=args.subjects, minutes=args.minutes, seed=args.seed)
    run = Run.open(out / "run", data=data, task="stress", seed=args.seed)
    report["windows"] = len(run.windows())
    report["splits"] = run.splits()
    report["seconds"] = {"data": time.perf_counter() - t0}

    def timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        res = fn(*a, **kw)
        report["seconds"][name] = time.perf_counter() - t
        print(f"{name}: {report['seconds'][name]:.1f} s", flush=True)
        return res

    if not run.target_backbone.exists():
        timed("pretrain", P.pretrain, run,
              FitConfig(epochs=args.pretrain_epochs, batch_size=64, seed=args.seed))
    if not run.source_model.exists():
        report["source_fit"] = timed("fit_source", P.fit_source, run,
                                     FitConfig(epochs=args.source_epochs, seed=args.seed))
    sel = timed("select", P.select, run)
    report["selection"] = sel.to_dict()
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed)
    report["bridge_train"] = timed("bridge_train", P.train, run, cfg, P.BridgeSettings())
    report["kd_train"] = timed("kd_train", P.train_kd, run, FitConfig(epochs=args.epochs, seed=args.seed,
                                                                       batch_size=64, weight_decay=0.0))
    metrics = timed("evaluate", P.evaluate, run, upper_bound_cfg=FitConfig(epochs=args.source_epochs,
                                                                            seed=args.seed))
    models = metrics["models"]
    report["metrics"] = models
    ba = {k: round(100 * v["balanced_accuracy"], 2) for k, v in models.items()}

    # --- cost -------------------------------------------------------------------------------------------
    target, _ = load_backbone(run.target_backbone)
    source, _ = load_backbone(run.source_model)
    kd_student, _ = load_backbone(run.kd_student)
    bridge = load_bridge(run.bridge)
    i, j = bridge.meta["i"], bridge.meta["j"]
    paired = run.role("paired")
    bs = 64
    cache = bridge_cache(target, source, paired.x["target"][:bs], paired.x["source"][:bs], i)
    comp = Composite(target, source, bridge, i, j)
    bridge.train()

    def bridge_step() -> torch.Tensor:
        y_hat = comp.source_back.last_block(bridge(cache.h))
        return alignment_loss(y_hat, source.from_tokens(cache.y))

    mem_bridge = step_memory_bytes(bridge_step, [bridge, *source.blocks[j:]], list(bridge.parameters()),
                                   [cache.h, cache.y])
    xb = torch.as_tensor(paired.x["target"][:bs])
    tb = torch.as_tensor(predict(source, paired.x["source"][:bs]))
    kd_student.train()
    for p in kd_student.parameters():
        p.requires_grad_(True)
    mem_kd = step_memory_bytes(lambda: kd_loss(kd_student(xb), tb, 2.0), [kd_student],
                               list(kd_student.parameters()), [xb, tb])
    bridge_params = report["bridge_train"]["trainable_parameters"]
    kd_params = report["kd_train"]["trainable_parameters"]
    report["cost"] = {
        "bridge_trainable_parameters": bridge_params, "kd_trainable_parameters": kd_params,
        "param_ratio": bridge_params / kd_params,
        "bridge_seconds_per_epoch": report["bridge_train"]["seconds_per_epoch"],
        "kd_seconds_per_epoch": report["kd_train"]["seconds_per_epoch"],
        "time_ratio": report["bridge_train"]["seconds_per_epoch"] / report["kd_train"]["seconds_per_epoch"],
        "bridge_step_memory_bytes": mem_bridge, "kd_step_memory_bytes": mem_kd,
        "memory_ratio": mem_bridge["total"] / mem_kd["total"], "memory_batch": bs,
        "note": "memory counted per training step: saved activations + parameters run + grads/Adam + inputs",
    }

    # --- prototype init ablation (same i, j, data, epochs) -------------------------------------------------
    test = run.role("test", labelled=True)
    val = run.role("val")
    full_cache = bridge_cache(target, source, paired.x["target"], paired.x["source"], i)
    vcache = bridge_cache(target, source, val.x["target"], val.x["source"], i)
    xt_test = torch.as_tensor(test.x["target"])
    with torch.no_grad():
        h_test = torch.cat([comp.target_front(xt_test[s:s + 128]) for s in range(0, len(xt_test), 128)])

    def test_ba(b: Any, back_j: int, h: torch.Tensor) -> float:
        from edge_bridge.composite import SourceBack

        with torch.no_grad():
            logits = SourceBack(source, back_j)(b(h))
        return float(classification_metrics(test.labels, logits.argmax(1).numpy(), 3)["balanced_accuracy"])

    ablation = {}
    for init in ("kmeans", "random"):
        b = P.make_bridge(target, source, i, j, P.BridgeSettings(prototype_init=init), paired.x["source"],
                          args.seed)
        res = train_bridge(b, source, j, full_cache, vcache, cfg)
        ablation[init] = {"best_val_loss": res.best_val, "test_balanced_accuracy": test_ba(b, j, h_test),
                          "first_epoch_val_loss": res.history[0]["val_loss"]}
    report["prototype_init"] = ablation

    # --- exhaustive grid ------------------------------------------------------------------------------------
    t_grid = time.perf_counter()
    n_t, n_s = target.n_blocks, source.n_blocks
    grid_ba = np.zeros((n_t, n_s))
    grid_loss = np.zeros((n_t, n_s))
    gcfg = TrainConfig(epochs=args.grid_epochs, seed=args.seed)
    for gi in range(n_t):
        tc = bridge_cache(target, source, paired.x["target"], paired.x["source"], gi)
        vc = bridge_cache(target, source, val.x["target"], val.x["source"], gi)
        with torch.no_grad():
            ht = torch.cat([target.pool(target.front(xt_test[s:s + 128], gi))
                            for s in range(0, len(xt_test), 128)])
        for gj in range(n_s):
            b = P.make_bridge(target, source, gi, gj, P.BridgeSettings(), paired.x["source"], args.seed)
            res = train_bridge(b, source, gj, tc, vc, gcfg)
            grid_loss[gi, gj] = res.best_val
            grid_ba[gi, gj] = test_ba(b, gj, ht)
            print(f"grid i={gi} j={gj}: val loss {res.best_val:.4f}, test bal.acc {grid_ba[gi, gj]:.3f}",
                  flush=True)
    grid_seconds = time.perf_counter() - t_grid
    order_ba = np.argsort(-grid_ba, axis=None, kind="stable")
    order_loss = np.argsort(grid_loss, axis=None, kind="stable")
    flat = sel.i * n_s + sel.j
    report["grid"] = {
        "test_balanced_accuracy": grid_ba.tolist(), "val_alignment_loss": grid_loss.tolist(),
        "epochs": args.grid_epochs, "seconds": grid_seconds,
        "chosen": [sel.i, sel.j],
        "rank_by_test_balanced_accuracy": int(np.flatnonzero(order_ba == flat)[0]) + 1,
        "rank_by_val_alignment_loss": int(np.flatnonzero(order_loss == flat)[0]) + 1,
        "n_pairs": n_t * n_s,
        "selection_seconds": sel.seconds["total"],
        "selection_cost_fraction": sel.seconds["total"] / grid_seconds,
        "best_pair_by_test_balanced_accuracy": [int(order_ba[0] // n_s), int(order_ba[0] % n_s)],
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, grid, title, cmap in ((axes[0], grid_ba, "test balanced accuracy", "viridis"),
                                  (axes[1], grid_loss, "val alignment loss", "viridis_r")):
        im = ax.imshow(grid, cmap=cmap)
        ax.set_xlabel("source block j (bridge output)")
        ax.set_ylabel("target block i (bridge input)")
        ax.set_title(title, fontsize=9)
        for a in range(n_t):
            for c in range(n_s):
                ax.text(c, a, f"{grid[a, c]:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.add_patch(plt.Rectangle((sel.j - 0.5, sel.i - 0.5), 1, 1, fill=False, ec="red", lw=2))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("Bridge for every (i, j); red: two-stage selection", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "grid.png", dpi=100)
    plt.close(fig)

    # --- targets ------------------------------------------------------------------------------------------
    c = report["cost"]
    report["targets"] = {
        "bridge >= kd - 2 points": ba["bridge (composite)"] >= ba["kd student"] - 2,
        "bridge within 10 points of source": ba["source model"] - ba["bridge (composite)"] <= 10,
        "params <= 12% of kd": c["param_ratio"] <= 0.12,
        "time per epoch <= 1/3 of kd": c["time_ratio"] <= 1 / 3,
        "memory <= 1/3 of kd": c["memory_ratio"] <= 1 / 3,
        "selection in top 3 (test bal.acc)": report["grid"]["rank_by_test_balanced_accuracy"] <= 3,
        "selection < 10% of grid cost": report["grid"]["selection_cost_fraction"] < 0.10,
    }
    report["balanced_accuracy_points"] = ba
    report["seconds"]["total"] = time.perf_counter() - t0
    (out / "method.json").write_text(json.dumps(report, indent=1))
    summary_cost = {k: v for k, v in c.items() if "memory_bytes" not in k}
    print(json.dumps({"balanced_accuracy": ba, "cost": summary_cost,
                      "grid_rank": report["grid"]["rank_by_test_balanced_accuracy"],
                      "prototype_init": ablation, "targets": report["targets"]}, indent=1))


if __name__ == "__main__":
    main()
