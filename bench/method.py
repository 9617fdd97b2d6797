"""Benchmark of the bridging method on the simulated stress task (one machine, one run); JSON out.

1. Transfer: test-subject balanced accuracy of the composite vs the KD student and the source model, on
   30 held-out subjects by default, with 95 % intervals of the differences from resampling test subjects.
2. Cost: trainable parameters, wall time per epoch (training steps only, same thread count; bridge with
   train's default recompute, bridge with --no-recompute and KD interleaved in rounds in this process,
   medians) and measured peak training memory of the bridge (both ways) vs KD.
3. Selection quality: a bridge for EVERY (i, j) pair (``--grid-seeds`` training seeds each, ranked by
   the mean); where the default trial rule's choice and the paper's two-stage choice rank (by test
   balanced accuracy; ``selection_rules``), whether each is within one seed standard deviation of the best
   pair, selection cost vs the cost of one single-seed grid, and the trial rule's cost-vs-rank curve over
   shortlist sizes and rungs (replayed on the grid's first-seed trainings); heat map PNG with both choices.
Also: prototype initialisation from k-means of real source tokens vs random (same scale).

Memory: each training (bridge, KD) runs again in its own fresh subprocess: one warm-up epoch, then one
measured epoch, with the same data, models, batch size and thread count. The measured epoch runs under
``torch.profiler`` with ``profile_memory=True``; every allocation and free of a tensor is an event, and the
running sum of those (in time order) is the live tensor memory the epoch adds. Its maximum is the peak
training memory: activations kept for backward, gradients, optimizer state and temporaries. The inputs (the
windows, or the bridge's feature cache) and the frozen models were allocated before and are not counted,
for both alike. Process RSS (VmHWM - VmRSS around the epoch) is reported beside it but not used for the
ratio: the allocator keeps freed pages and thread pools grow lazily, which puts hundreds of MB of noise
on a difference of tens.

Run (about 20-30 minutes on 2 CPU cores):
  .venv/bin/python bench/method.py --out bench-out/method
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _proc_status_kib(*keys: str) -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k = line.split(":")[0]
            if k in keys:
                out[k] = int(line.split()[1])
    return out


def measure_training_memory(kind: str, run_dir: str, batch_size: int, threads: int,
                            seed: int) -> dict[str, Any]:
    """Peak RSS of one training epoch (see the module docstring); runs in a fresh subprocess."""
    import ctypes

    torch.set_num_threads(threads)
    from edge_bridge import pipeline as P
    from edge_bridge.fitting import FitConfig, predict
    from edge_bridge.kd import fit_kd
    from edge_bridge.models import load_backbone
    from edge_bridge.runs import Run
    from edge_bridge.train import TrainConfig, train_bridge

    run = Run.open(run_dir)
    source, _ = load_backbone(run.source_model)
    paired = run.role("paired")
    if kind in ("bridge", "bridge-recompute"):
        from edge_bridge.bridge import load_bridge
        from edge_bridge.features import bridge_cache

        target, _ = load_backbone(run.target_backbone)
        i, j = load_bridge(run.bridge).meta["i"], load_bridge(run.bridge).meta["j"]
        cache = bridge_cache(target, source, paired.x["target"], paired.x["source"], i)
        bridge = P.make_bridge(target, source, i, j, P.BridgeSettings(), paired.x["source"], seed)

        def loop() -> None:
            train_bridge(bridge, source, j, cache, None,
                         TrainConfig(epochs=1, batch_size=batch_size, seed=seed,
                                     recompute=kind == "bridge-recompute"))
    else:
        student, _ = load_backbone(run.target_backbone)
        student.set_head(source.n_classes)
        x = paired.x["target"]
        teacher = predict(source, paired.x["source"])

        def loop() -> None:
            fit_kd(student, x, teacher, x[:2], teacher[:2],
                   FitConfig(epochs=1, batch_size=batch_size, seed=seed, weight_decay=0.0))
    from torch.profiler import ProfilerActivity, profile

    loop()  # warm-up epoch: lazily loaded library code and thread pools are resident before measuring
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kib("VmRSS")["VmRSS"]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loop()
    peak = _proc_status_kib("VmHWM")["VmHWM"]
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = np.cumsum([e.self_cpu_memory_usage for e in events])
    return {"peak_training_bytes": int(max(live.max(), 0)), "allocated_bytes": int(sum(
        max(e.self_cpu_memory_usage, 0) for e in events)), "rss_before_kib": before, "peak_rss_kib": peak,
        "peak_rss_training_bytes": (peak - before) * 1024}


def _memory_in_subprocess(kind: str, run_dir: Path, batch_size: int, threads: int,
                          seed: int) -> dict[str, Any]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, "--measure-memory", kind, "--run-dir", str(run_dir),
                          "--batch", str(batch_size), "--threads", str(threads), "--seed", str(seed)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced accuracy of every row of ``preds`` (models x windows): the mean recall over the classes
    present in ``labels`` (sklearn's definition), vectorised over models for the bootstraps."""
    p = np.atleast_2d(preds)
    recalls = [np.mean(p[:, labels == c] == c, axis=1) for c in range(n_classes) if np.any(labels == c)]
    return np.mean(recalls, axis=0)


def subject_resamples(subjects: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Window indices of ``n_boot`` resamples of the *test subjects* (with replacement, all of a subject's
    windows at once). Why subjects and not windows: one subject's windows overlap and share its physiology,
    so they are not independent; resampling subjects says how much a figure would move with another draw
    of test subjects."""
    members = [np.flatnonzero(subjects == s) for s in np.unique(subjects)]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])


def subject_bootstrap(labels: np.ndarray, subjects: np.ndarray, preds: dict[str, np.ndarray],
                      pairs: list[tuple[str, str]], n_classes: int, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Balanced-accuracy differences between models with a 95 % interval over :func:`subject_resamples`."""
    names = list(preds)
    stacked = np.stack([preds[k] for k in names])
    col = {k: n for n, k in enumerate(names)}
    diffs: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    for idx in subject_resamples(subjects, n_boot, seed):
        score = balanced_accuracy(labels[idx], stacked[:, idx], n_classes)
        for a, b in pairs:
            diffs[(a, b)].append(100 * (score[col[a]] - score[col[b]]))
    full = balanced_accuracy(labels, stacked, n_classes)
    return {f"{a} - {b}": {"points": round(100 * float(full[col[a]] - full[col[b]]), 2),
                           "ci95": [round(float(np.percentile(d, q)), 2) for q in (2.5, 97.5)]}
            for (a, b), d in diffs.items()} | {"subjects": len(np.unique(subjects)), "resamples": n_boot}


def rank_bootstrap(labels: np.ndarray, subjects: np.ndarray, preds: np.ndarray, chosen: int, n_classes: int,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Rank of pair ``chosen`` among ``preds`` (training seeds x pairs x windows) by balanced accuracy
    (mean over the seeds) over :func:`subject_resamples`: how firmly the grid's ranking stands on these
    subjects."""
    n_seeds, n_pairs, n_windows = preds.shape
    flat = preds.reshape(n_seeds * n_pairs, n_windows)

    def mean_ba(idx: np.ndarray) -> np.ndarray:
        return balanced_accuracy(labels[idx], flat[:, idx], n_classes).reshape(n_seeds, n_pairs).mean(0)

    ranks = np.array([1 + int(np.sum(ba > ba[chosen] + 1e-12))
                      for ba in (mean_ba(idx) for idx in subject_resamples(subjects, n_boot, seed))])
    return {"median": float(np.median(ranks)), "ci95": [int(np.percentile(ranks, q)) for q in (2.5, 97.5)],
            "p_top3": float(np.mean(ranks <= 3)), "p_top1": float(np.mean(ranks == 1)), "resamples": n_boot}


def simulate_trials(order: list[tuple[int, int]], histories: dict[tuple[int, int], list[dict[str, Any]]],
                    shortlist: int, rungs: tuple[int, ...], eta: int = 2) -> tuple[tuple[int, int], int,
                                                                                    list[tuple[int, int]]]:
    """The trial rule replayed on recorded training histories: ``(chosen, trial epochs, epochs per pair)``.

    A trial of E epochs with the grid's first seed is the first E epochs of that grid training (same seed,
    data, bridge and settings; the checkpoint so far is the best of those epochs by the label-free rule),
    so shortlist sizes and rungs can be compared without training again.
    """
    from edge_bridge.selection.score import rank_key

    def best(p: tuple[int, int], epochs: int) -> tuple[int, float]:
        return max(rank_key(h) for h in histories[p][:epochs])

    alive = list(order[:shortlist])
    spent: dict[tuple[int, int], int] = {}
    for r, epochs in enumerate(rungs):
        if len(alive) <= 1:
            break
        for p in alive:
            spent[p] = epochs
        ranked = sorted(alive, key=lambda p: (best(p, epochs), -order.index(p)), reverse=True)
        alive = ranked if r == len(rungs) - 1 else ranked[:max(1, -(-len(ranked) // eta))]
    finalists = [p for p in alive if best(p, spent.get(p, 1))[0] == 1] or alive
    return finalists[0], sum(spent.values()), list(spent.items())


def selection_curve(sel: Any, first_seed: dict[tuple[int, int], dict[str, Any]], grid_ba: np.ndarray,
                    n_t: int, n_s: int, grid_epochs: int, *, forward_seconds: float,
                    one_grid: float) -> dict[str, Any]:
    """Cost vs rank of the trial rule over shortlist sizes and rungs, replayed on the grid's first seed."""
    order = [(c["i"], c["j"]) for c in sel.candidates]
    histories = {p: v["history"] for p, v in first_seed.items()}
    rows = []
    for shortlist in (1, 2, 4, 8, 12, n_t * n_s):
        for rungs in ((1, 2, 4), (2, 4, 8), (4, 8, 16), (2, 4, 8, 16), (grid_epochs,)):
            if max(rungs) > grid_epochs:
                continue
            (i, j), epochs, spent = simulate_trials(order, histories, shortlist, rungs)
            seconds = forward_seconds + sum(first_seed[p]["seconds_per_epoch"] * e for p, e in spent)
            rows.append({"shortlist": shortlist, "rungs": list(rungs), "chosen": [i, j],
                         "rank": 1 + int((grid_ba > grid_ba[i, j] + 1e-12).sum()), "trial_epochs": epochs,
                         "seconds_estimate": round(seconds, 1),
                         "cost_fraction": round(seconds / one_grid, 4)})
    return {"note": "replayed on the grid's first-seed trainings (the trials' seed and settings); cost = the "
                    "selection's forward and cheap-score seconds + the grid's measured seconds per epoch of "
                    "each pair times the epochs its trials would take", "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/method")
    ap.add_argument("--task", default="stress-binary", choices=("stress-binary", "stress"),
                    help="stress-binary (default): stress vs non-stress, WESAD's usual setting; stress: the "
                         "3-class variant, where no model (hand-made HRV features included) reaches 0.70 on "
                         "unseen subjects, so transfer comparisons drown in subject noise")
    ap.add_argument("--train-subjects", type=int, default=15, help="subjects whose labelled ECG trains the "
                    "source task model")
    ap.add_argument("--val-subjects", type=int, default=5)
    ap.add_argument("--paired-subjects", type=int, default=9, help="unlabelled paired ECG+PPG subjects "
                    "(bridge and KD training)")
    ap.add_argument("--test-subjects", type=int, default=30, help="held-out subjects for every accuracy "
                    "figure; cheap (inference only) and the main lever on noise: with 7 test subjects the "
                    "ranking of bridge, KD and source flipped between subject draws")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-epochs", type=int, default=6)
    ap.add_argument("--source-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=60,
                    help="epochs of both the bridge and the KD student (the issue: same data, same epochs); "
                         "each keeps its best epoch by its own label-free validation loss")
    ap.add_argument("--grid-epochs", type=int, default=20)
    ap.add_argument("--grid-seeds", type=int, default=1,
                    help="train every grid pair with this many seeds and rank pairs by the mean; a pair's "
                         "test accuracy moves with the bridge's initialisation and batch order, and one seed "
                         "ranks that noise too (each seed adds the grid's time, ~7 min on one thread)")
    ap.add_argument("--shortlist", type=int, default=4, help="trial rule: candidates of the first rung")
    ap.add_argument("--trial-epochs", type=lambda t: [int(v) for v in t.split(",")], default=[2, 4, 8],
                    help="trial rule: total epochs after each halving rung (default 2,4,8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64, help="bridge and KD batch size (the same for both)")
    ap.add_argument("--measure-memory", choices=("bridge", "bridge-recompute", "kd"), help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.grid_seeds < 1:
        ap.error(f"--grid-seeds must be at least 1, got {args.grid_seeds}")
    torch.set_num_threads(args.threads)
    if args.measure_memory:
        print(json.dumps(measure_training_memory(args.measure_memory, args.run_dir, args.batch, args.threads,
                                                 args.seed)))
        return

    from edge_bridge import pipeline as P
    from edge_bridge.bridge import load_bridge
    from edge_bridge.composite import Composite
    from edge_bridge.evaluate import classification_metrics
    from edge_bridge.features import bridge_cache
    from edge_bridge.fitting import FitConfig, predict
    from edge_bridge.kd import fit_kd
    from edge_bridge.models import load_backbone
    from edge_bridge.runs import Run
    from edge_bridge.simulate import simulate_dataset
    from edge_bridge.train import TrainConfig, train_bridge

    counts = {"train": args.train_subjects, "val": args.val_subjects, "paired": args.paired_subjects,
              "test": args.test_subjects}
    if min(counts.values()) < 1:
        ap.error(f"every role needs at least one subject, got {counts}")
    n_subjects = sum(counts.values())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                                          "threads": args.threads, "device": "cpu"}, "args": vars(args)}
    t0 = time.perf_counter()
    data = out / "data"
    if not (data / "dataset.json").is_file():
        simulate_dataset(data, "stress", subjects=n_subjects, minutes=args.minutes, seed=args.seed)
    # fractions proportional to the role counts; split_subjects hands out any rounding remainder
    run = Run.open(out / "run", data=data, task=args.task, seed=args.seed,
                   fractions={r: counts[r] / n_subjects for r in counts})
    n_classes = len(run.task.classes)
    report["windows"] = len(run.windows())
    report["labelled_windows"] = {r: len(run.role(r, labelled=True))
                                  for r in ("train", "val", "paired", "test")}
    report["splits"] = run.splits()
    if {r: len(v) for r, v in report["splits"].items()} != counts:
        raise SystemExit(f"{run.path} holds a split {report['splits']} that is not the requested {counts}; "
                         "use a fresh --out")
    report["seconds"] = {"data": time.perf_counter() - t0}

    def timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        res = fn(*a, **kw)
        report["seconds"][name] = time.perf_counter() - t
        print(f"{name}: {report['seconds'][name]:.1f} s", flush=True)
        return res

    # source task model (and the supervised upper bound): random circular shifts + gain, dropout, weight
    # decay, best epoch by val-subject balanced accuracy; without them a 0.1 M-parameter transformer
    # memorises the few training subjects within an epoch or two
    source_cfg = FitConfig(epochs=args.source_epochs, seed=args.seed, lr=5e-4, weight_decay=0.05,
                           augment=True)
    if not run.target_backbone.exists():
        timed("pretrain", P.pretrain, run,
              FitConfig(epochs=args.pretrain_epochs, batch_size=64, seed=args.seed))
    if not run.source_model.exists():
        report["source_fit"] = timed("fit_source", P.fit_source, run, source_cfg, config={"dropout": 0.1})
    # both rules on the same run: the paper's two stages, then the default trial rule (whose selection.json
    # the bridge below trains from)
    from edge_bridge.selection.run import select_run
    from edge_bridge.selection.trial import TrialSettings

    sel_paper = timed("select_paper", select_run, run, rule="paper")
    trial_settings = TrialSettings(shortlist=args.shortlist, rungs=tuple(args.trial_epochs), seed=args.seed)
    sel = timed("select", select_run, run, rule="trial", settings=trial_settings)
    report["selection"] = sel.to_dict()
    report["selection_paper"] = sel_paper.to_dict()
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, batch_size=args.batch)
    report["bridge_train"] = timed("bridge_train", P.train, run, cfg, P.BridgeSettings())
    kd_cfg = FitConfig(epochs=args.epochs, seed=args.seed, batch_size=args.batch, weight_decay=0.0)
    report["kd_train"] = timed("kd_train", P.train_kd, run, kd_cfg)
    metrics = timed("evaluate", P.evaluate, run, upper_bound_cfg=source_cfg)
    models = metrics["models"]
    report["metrics"] = models
    ba = {k: round(100 * v["balanced_accuracy"], 2) for k, v in models.items()}

    # --- cost ---------------------------------------------------------------------------------------------
    target, _ = load_backbone(run.target_backbone)
    source, _ = load_backbone(run.source_model)
    bridge = load_bridge(run.bridge)
    i, j = bridge.meta["i"], bridge.meta["j"]
    paired = run.role("paired")
    comp = Composite(target, source, bridge, i, j)
    mem_bridge = _memory_in_subprocess("bridge", run.path, args.batch, args.threads, args.seed)
    mem_kd = _memory_in_subprocess("kd", run.path, args.batch, args.threads, args.seed)
    mem_rc = _memory_in_subprocess("bridge-recompute", run.path, args.batch, args.threads, args.seed)
    # time per epoch, side by side: bridge (plain and --recompute) and KD, interleaved in rounds so that
    # anything else slowing the machine hits all three alike; medians over rounds
    full_cache = bridge_cache(target, source, paired.x["target"], paired.x["source"], i)
    teacher = predict(source, paired.x["source"])
    rounds: dict[str, list[float]] = {"bridge": [], "bridge_recompute": [], "kd": []}
    for _ in range(3):
        for recompute in (False, True):
            b = P.make_bridge(target, source, i, j, P.BridgeSettings(), paired.x["source"], args.seed)
            tcfg = TrainConfig(epochs=4, seed=args.seed, batch_size=args.batch, recompute=recompute)
            r = train_bridge(b, source, j, full_cache, None, tcfg)
            rounds["bridge_recompute" if recompute else "bridge"].append(r.seconds_per_epoch)
        student, _ = load_backbone(run.target_backbone)
        student.set_head(source.n_classes)
        r = fit_kd(student, paired.x["target"], teacher, paired.x["target"][:2], teacher[:2],
                   FitConfig(epochs=3, batch_size=args.batch, seed=args.seed, weight_decay=0.0))
        rounds["kd"].append(r.seconds_per_epoch)
    per_epoch = {k: float(np.median(v)) for k, v in rounds.items()}
    bridge_params = report["bridge_train"]["trainable_parameters"]
    kd_params = report["kd_train"]["trainable_parameters"]
    report["cost"] = {
        "bridge_trainable_parameters": bridge_params, "kd_trainable_parameters": kd_params,
        "param_ratio": bridge_params / kd_params,
        "target_backbone_parameters": target.num_parameters(),
        "source_model_parameters": source.num_parameters(),
        "source_back_parameters": sum(p.numel() for b in source.blocks[j:] for p in b.parameters())
        + sum(p.numel() for p in source.norm.parameters())
        + (sum(p.numel() for p in source.head.parameters()) if source.head is not None else 0),
        "bridge_seconds_per_epoch": per_epoch["bridge"],
        "kd_seconds_per_epoch": per_epoch["kd"],
        "time_ratio": per_epoch["bridge"] / per_epoch["kd"],
        "seconds_per_epoch_rounds": rounds,
        "seconds_per_epoch_in_the_full_trainings": {"bridge": report["bridge_train"]["seconds_per_epoch"],
                                                    "kd": report["kd_train"]["seconds_per_epoch"]},
        "bridge_total_seconds": report["seconds"]["bridge_train"], "bridge_epochs": args.epochs,
        "kd_total_seconds": report["seconds"]["kd_train"], "kd_epochs": args.epochs,
        "bridge_feature_cache_seconds": report["bridge_train"]["feature_seconds"],
        "bridge_memory": mem_bridge, "kd_memory": mem_kd,
        "memory_ratio": mem_bridge["peak_training_bytes"] / max(mem_kd["peak_training_bytes"], 1),
        "recompute": {
            "memory": mem_rc,
            "memory_ratio": mem_rc["peak_training_bytes"] / max(mem_kd["peak_training_bytes"], 1),
            "seconds_per_epoch": per_epoch["bridge_recompute"],
            "time_ratio": per_epoch["bridge_recompute"] / per_epoch["kd"],
            "time_vs_plain": per_epoch["bridge_recompute"] / per_epoch["bridge"],
        },
        "batch_size": args.batch, "threads": args.threads,
        "variants_note": "bridge_seconds_per_epoch, time_ratio, bridge_memory and memory_ratio: the bridge "
                         "trained with --no-recompute; 'recompute' holds the same for train's default",
        "time_note": "training-step wall time per epoch (validation excluded): 3 rounds, each a 4-epoch "
                     "bridge, a 4-epoch bridge with recompute and a 3-epoch KD student in this process "
                     "with the same data, thread count and batch size; median of the rounds' medians. The "
                     "bridge epoch runs the bridge + source[j:] on cached target features (one-time cache: "
                     "bridge_feature_cache_seconds)",
        "memory_ratio_rss": mem_bridge["peak_rss_training_bytes"] / max(mem_kd["peak_rss_training_bytes"], 1),
        "memory_note": "peak live tensor bytes of one training epoch (after a warm-up epoch) in a fresh "
                       "subprocess per method, from torch.profiler(profile_memory=True) allocation events; "
                       "inputs and frozen models allocated before and not counted. memory_ratio_rss: the "
                       "same by process RSS (VmHWM after minus VmRSS before; allocator noise, not used)",
    }

    # --- how sure: the transfer comparison under resampled test subjects --------------------------------
    test = run.role("test", labelled=True)
    preds = {"bridge (composite)": predict(comp, test.x["target"]).argmax(1),
             "source model": predict(source, test.x["source"]).argmax(1),
             "kd student": predict(load_backbone(run.kd_student)[0], test.x["target"]).argmax(1)}
    pairs = [("bridge (composite)", "kd student"), ("bridge (composite)", "source model")]
    report["subject_bootstrap"] = subject_bootstrap(test.labels, test.subjects, preds, pairs, n_classes,
                                                    seed=args.seed)
    # a subject whose test windows hold one class scores its recall of that class
    report["per_subject_mean_balanced_accuracy"] = {
        k: float(np.mean([balanced_accuracy(test.labels[m], p[m], n_classes)[0]
                          for m in (test.subjects == s for s in np.unique(test.subjects))]))
        for k, p in preds.items()}

    # --- prototype init ablation (same i, j, data, epochs) -------------------------------------------------
    val = run.role("val")
    vcache = bridge_cache(target, source, val.x["target"], val.x["source"], i)
    xt_test = torch.as_tensor(test.x["target"])
    with torch.no_grad():
        h_test = torch.cat([comp.target_front(xt_test[s:s + 128]) for s in range(0, len(xt_test), 128)])

    def test_pred(b: Any, back_j: int, h: torch.Tensor) -> np.ndarray:
        from edge_bridge.composite import SourceBack

        with torch.no_grad():
            return SourceBack(source, back_j)(b(h)).argmax(1).numpy()

    def test_ba(b: Any, back_j: int, h: torch.Tensor) -> float:
        pred = test_pred(b, back_j, h)
        return float(classification_metrics(test.labels, pred, n_classes)["balanced_accuracy"])

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
    n_seeds = args.grid_seeds
    grid_ba_seeds = np.zeros((n_seeds, n_t, n_s))
    grid_loss_seeds = np.zeros((n_seeds, n_t, n_s))
    grid_one_class = np.zeros((n_seeds, n_t, n_s), dtype=bool)
    grid_pred = np.zeros((n_seeds, n_t * n_s, len(test)), dtype=np.int64)
    first_seed: dict[tuple[int, int], dict[str, Any]] = {}  # seed args.seed: the trials' seed and settings
    histories: dict[str, list[list[dict[str, Any]]]] = {}  # "i,j" -> per seed, the val metrics per epoch
    for gi in range(n_t):
        tc = bridge_cache(target, source, paired.x["target"], paired.x["source"], gi)
        vc = bridge_cache(target, source, val.x["target"], val.x["source"], gi)
        with torch.no_grad():
            ht = torch.cat([target.pool(target.front(xt_test[s:s + 128], gi))
                            for s in range(0, len(xt_test), 128)])
        for gj in range(n_s):
            for k in range(n_seeds):
                gseed = args.seed + k
                gcfg = TrainConfig(epochs=args.grid_epochs, seed=gseed, batch_size=args.batch)
                t_pair = time.perf_counter()
                b = P.make_bridge(target, source, gi, gj, P.BridgeSettings(), paired.x["source"], gseed)
                res = train_bridge(b, source, gj, tc, vc, gcfg)
                histories.setdefault(f"{gi},{gj}", []).append(res.history)
                if k == 0:
                    first_seed[(gi, gj)] = {"history": res.history,
                                            "seconds_per_epoch": (time.perf_counter() - t_pair) / gcfg.epochs}
                grid_loss_seeds[k, gi, gj] = res.best_val
                grid_one_class[k, gi, gj] = res.one_class
                grid_pred[k, gi * n_s + gj] = test_pred(b, gj, ht)
                grid_ba_seeds[k, gi, gj] = classification_metrics(test.labels, grid_pred[k, gi * n_s + gj],
                                                                  n_classes)["balanced_accuracy"]
                print(f"grid i={gi} j={gj} seed {gseed}: val loss {res.best_val:.4f}, "
                      f"test bal.acc {grid_ba_seeds[k, gi, gj]:.3f}", flush=True)
    grid_ba, grid_loss = grid_ba_seeds.mean(0), grid_loss_seeds.mean(0)
    grid_seconds = time.perf_counter() - t_grid
    order_ba = np.argsort(-grid_ba, axis=None, kind="stable")
    order_loss = np.argsort(grid_loss, axis=None, kind="stable")
    flat = sel.i * n_s + sel.j
    one_grid = grid_seconds / n_seeds

    def rank_of(i: int, j: int) -> int:
        return 1 + int((grid_ba > grid_ba[i, j] + 1e-12).sum())

    best_flat = int(order_ba[0])
    best_sd = float(grid_ba_seeds[:, best_flat // n_s, best_flat % n_s].std(ddof=1)) if n_seeds > 1 else 0.0
    curve = selection_curve(sel, first_seed, grid_ba, n_t, n_s, args.grid_epochs,
                            forward_seconds=sel.seconds["forward"] + sel.seconds["cheap"], one_grid=one_grid)
    paper_ba = float(grid_ba[sel_paper.i, sel_paper.j])
    report["selection_rules"] = {
        "trial": {"chosen": [sel.i, sel.j], "rank_by_test_balanced_accuracy": rank_of(sel.i, sel.j),
                  "test_balanced_accuracy": float(grid_ba[sel.i, sel.j]),
                  "minus_best_points": round(100 * float(grid_ba[sel.i, sel.j] - grid_ba.max()), 2),
                  "within_one_seed_sd_of_best": bool(grid_ba[sel.i, sel.j] >= grid_ba.max() - best_sd),
                  "seconds": report["seconds"]["select"],
                  "cost_fraction_of_one_single_seed_grid": report["seconds"]["select"] / one_grid,
                  "trial_epochs": sel.trials.get("trial_epochs"), "settings": sel.trials},
        "paper": {"chosen": [sel_paper.i, sel_paper.j],
                  "rank_by_test_balanced_accuracy": rank_of(sel_paper.i, sel_paper.j),
                  "test_balanced_accuracy": paper_ba,
                  "minus_best_points": round(100 * float(paper_ba - grid_ba.max()), 2),
                  "within_one_seed_sd_of_best": bool(paper_ba >= grid_ba.max() - best_sd),
                  "seconds": report["seconds"]["select_paper"],
                  "cost_fraction_of_one_single_seed_grid": report["seconds"]["select_paper"] / one_grid},
        "best_pair_seed_sd_points": round(100 * best_sd, 2),
        "one_single_seed_grid_seconds": one_grid,
        "grid_checkpoint_rule": "label-free (train's default)",
        "curve": curve,
    }
    report["grid"] = {
        "test_balanced_accuracy": grid_ba.tolist(), "val_alignment_loss": grid_loss.tolist(),
        "epochs": args.grid_epochs, "seconds": grid_seconds, "training_seeds": n_seeds,
        "note": "test_balanced_accuracy and val_alignment_loss are means over the training seeds; ranks "
                "are taken on the means",
        "test_balanced_accuracy_per_seed": grid_ba_seeds.tolist(),
        "histories_per_seed": histories,  # to replay other label-free rules offline, without training again
        "val_alignment_loss_per_seed": grid_loss_seeds.tolist(),
        "one_class_per_seed": grid_one_class.tolist(),
        "one_class_bridges": int(grid_one_class.sum()),
        "one_class_note": "bridges whose best checkpoint (lowest val alignment loss) decides one class on "
                          "every val window while the source model decides several (train's warning)",
        "chosen_rank_by_test_balanced_accuracy_per_seed": [
            1 + int((g > g[sel.i, sel.j] + 1e-12).sum()) for g in grid_ba_seeds],
        "seed_std_points_median_over_pairs": float(100 * np.median(grid_ba_seeds.std(0, ddof=1)))
        if n_seeds > 1 else None,
        "chosen": [sel.i, sel.j],
        "rank_by_test_balanced_accuracy": int(np.flatnonzero(order_ba == flat)[0]) + 1,
        "rank_by_val_alignment_loss": int(np.flatnonzero(order_loss == flat)[0]) + 1,
        "pairs_strictly_better_by_test_balanced_accuracy":
            int((grid_ba > grid_ba[sel.i, sel.j] + 1e-12).sum()),
        "test_windows": len(test),
        "test_windows_per_class": np.bincount(test.labels, minlength=n_classes).tolist(),
        "chosen_minus_best_test_balanced_accuracy": float(grid_ba[sel.i, sel.j] - grid_ba.max()),
        "best_pair_by_val_alignment_loss": [int(order_loss[0] // n_s), int(order_loss[0] % n_s)],
        "n_pairs": n_t * n_s,
        "selection_seconds": sel.seconds["total"],
        "selection_cost_fraction": sel.seconds["total"] / (grid_seconds / n_seeds),  # vs one grid
        "best_pair_by_test_balanced_accuracy": [int(order_ba[0] // n_s), int(order_ba[0] % n_s)],
        "chosen_rank_under_subject_resampling": rank_bootstrap(test.labels, test.subjects, grid_pred, flat,
                                                               n_classes, seed=args.seed),
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
        ax.add_patch(plt.Rectangle((sel_paper.j - 0.4, sel_paper.i - 0.4), 0.8, 0.8, fill=False, ec="white",
                                   lw=1.5, ls="--"))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"Bridge for every (i, j), mean of {n_seeds} training seed(s); red: trial rule, white "
                 "dashed: paper rule",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "grid.png", dpi=100)
    plt.close(fig)

    # --- targets ------------------------------------------------------------------------------------------
    c = report["cost"]
    report["targets"] = {
        "bridge >= kd - 2 points": ba["bridge (composite)"] >= ba["kd student"] - 2,
        "bridge within 10 points of source": ba["source model"] - ba["bridge (composite)"] <= 10,
        "params <= 12% of kd": c["param_ratio"] <= 0.12,
        "time per epoch <= 1/3 of kd (train default: recompute)": c["recompute"]["time_ratio"] <= 1 / 3,
        "memory <= 1/3 of kd (train default: recompute)": c["recompute"]["memory_ratio"] <= 1 / 3,
        "time per epoch <= 1/3 of kd (--no-recompute)": c["time_ratio"] <= 1 / 3,
        "memory <= 1/3 of kd (--no-recompute)": c["memory_ratio"] <= 1 / 3,
        "trial selection in top 3 or within one seed sd of the best (test bal.acc)":
            report["selection_rules"]["trial"]["rank_by_test_balanced_accuracy"] <= 3
            or report["selection_rules"]["trial"]["within_one_seed_sd_of_best"],
        "trial selection <= 10% of one single-seed grid":
            report["selection_rules"]["trial"]["cost_fraction_of_one_single_seed_grid"] <= 0.10,
        "selection in top 3 (test bal.acc)": report["grid"]["rank_by_test_balanced_accuracy"] <= 3,
        "selection in top 3 in most subject resamples (test bal.acc)":
            report["grid"]["chosen_rank_under_subject_resampling"]["p_top3"] > 0.5,
        "selection in top 3 (val alignment loss, no labels)":
            report["grid"]["rank_by_val_alignment_loss"] <= 3,
        "selection < 10% of grid cost": report["grid"]["selection_cost_fraction"] < 0.10,
    }
    report["balanced_accuracy_points"] = ba
    report["seconds"]["total"] = time.perf_counter() - t0
    (out / "method.json").write_text(json.dumps(report, indent=1))
    summary_cost = {k: v for k, v in c.items() if not k.endswith("_note") and not k.endswith("_memory")}
    print(json.dumps({"balanced_accuracy": ba, "subject_bootstrap": report["subject_bootstrap"],
                      "cost": summary_cost,
                      "grid_rank": report["grid"]["rank_by_test_balanced_accuracy"],
                      "selection_rules": {k: v for k, v in report["selection_rules"].items() if k != "curve"},
                      "prototype_init": ablation, "targets": report["targets"]}, indent=1))


if __name__ == "__main__":
    main()
