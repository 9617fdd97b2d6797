"""Runtime benchmark of an exported bundle on the simulated stress task (one machine, one run); JSON out.

Batch-1 window latency on ONE thread (torch.set_num_threads(1), ORT intra_op_num_threads=1), median of
repeated runs after a warm-up, for each part and for the chained composite (target_front -> bridge ->
source_back), all in the same run:

  PyTorch eager FP32  vs  ORT FP32  vs  ORT INT8 mixed (the shipped bundle: export's default search, op set,
  calibration method and the fewest FP32 nodes)  vs  the old per-part fallback (the old cpu flavour: every
  op type INT8 with MinMax, whole parts fall back to FP16/FP32)  vs  that old flavour without the guard.

The engines are timed side by side: in each of ``--rounds`` rounds every engine runs ``repeats / rounds``
times in turn, so a load spike from other processes hits all of them alike; medians over all calls.

Accuracy of each exported bundle as its manifest's accuracy guard measured it on the held-out subjects
(argmax agreement with FP32, balanced accuracy FP32 vs shipped, max logit drift), the nodes kept in FP32
(share of the quantized nodes), and sizes. Goals: chained INT8 >= 3x faster than PyTorch eager FP32 and
faster than ORT FP32; agreement >= 0.98; balanced-accuracy drop <= 1 point; < 10 % of nodes in FP32.

Without --run it first trains a small run on simulated data (simulate, pretrain, fit-source, select, train;
a few minutes on 2 cores), reusing whatever OUT/run already holds.

  .venv/bin/python bench/runtime.py --out bench-out/runtime
  .venv/bin/python bench/runtime.py --papagei --out bench-out/runtime   # the full-size PaPaGei-S front only

``--papagei``: the published PaPaGei-S architecture at full size (18 blocks, 7500-sample windows; seeded
random weights, as the published checkpoint cannot be fetched here), its front up to block ``--papagei-i``
exported and quantized (cpu flavour, MinMax, every node INT8): batch-1 latency INT8 vs FP32 and the
output SQNR of every block (the residual Add that ends it) INT8 vs FP32, from ONNX Runtime's qdq_loss_debug.
  .venv/bin/python bench/runtime.py --run runs/stress --out bench-out/runtime
On the demo bundle's run (``ensure_demo_bundle()`` leaves it in the cache's ``work/`` folder):
  .venv/bin/python bench/runtime.py --run ~/.cache/edge-bridge/demo-bundle-*/work/run \
      --calibration ~/.cache/edge-bridge/demo-bundle-*/work/data --out bench-out/runtime-demo
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPLIT_FRACTIONS = {"train": 0.375, "val": 0.125, "paired": 0.25, "test": 0.25}


def train_small_run(out: Path, args: argparse.Namespace) -> Path:
    """A stress-task run trained on simulated data (steps already done are skipped)."""
    from edge_bridge import pipeline as P
    from edge_bridge.fitting import FitConfig
    from edge_bridge.runs import Run
    from edge_bridge.simulate import simulate_dataset
    from edge_bridge.train import TrainConfig

    data = out / "data"
    if not (data / "dataset.json").is_file():
        simulate_dataset(data, "stress", subjects=args.subjects, minutes=args.minutes, seed=args.seed)
    run = Run.open(out / "run", data=data, task="stress", seed=args.seed, fractions=SPLIT_FRACTIONS)
    steps = [
        (run.target_backbone, "pretrain",
         lambda: P.pretrain(run, FitConfig(epochs=args.pretrain_epochs, batch_size=64, seed=args.seed))),
        (run.source_model, "fit_source",
         lambda: P.fit_source(run, FitConfig(epochs=args.source_epochs, seed=args.seed, lr=5e-4,
                                             weight_decay=0.05, augment=True), config={"dropout": 0.1})),
        (run.selection, "select", lambda: P.select(run)),
        (run.bridge, "train",
         lambda: P.train(run, TrainConfig(epochs=args.epochs, seed=args.seed), P.BridgeSettings())),
    ]
    for done, name, step in steps:
        if not done.exists():
            t = time.perf_counter()
            step()
            print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
    return run.path


def median_ms(fn: Any, repeats: int, warmup: int) -> dict[str, float]:
    return side_by_side({"x": fn}, repeats, warmup, rounds=1)["x"]


def side_by_side(fns: dict[str, Any], repeats: int, warmup: int,
                 rounds: int = 10) -> dict[str, dict[str, float]]:
    """Per-call latency stats of each of ``fns``, in interleaved rounds (see the module docstring)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t) * 1e3)
    out = {}
    for k, ts in times.items():
        q = np.percentile(ts, [10, 90])
        out[k] = {"median_ms": statistics.median(ts), "p10_ms": float(q[0]), "p90_ms": float(q[1]),
                  "repeats": len(ts)}
    return out


def latencies(composite: Any, bundles: dict[str, Any], x: np.ndarray, xs: np.ndarray, repeats: int,
              warmup: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Per part and chained, batch 1: torch eager FP32 and ORT on each bundle (1 thread), side by side."""
    from edge_bridge.export.onnx_export import PARTS, ort_session

    parts = composite.parts()
    with torch.no_grad():
        h = parts["target_front"](torch.from_numpy(x))
        z = parts["bridge"](h)
    feeds = {"target_front": x, "bridge": h.numpy(), "source_back": z.numpy(), "source_front": xs}
    out: dict[str, dict[str, Any]] = {}
    sessions = {name: {p: ort_session(b.part_path(p), threads=1) for p in PARTS} for name, b in
                bundles.items()}
    for part in PARTS:
        t_in = torch.from_numpy(feeds[part])
        mod = parts[part]

        def eager(mod: Any = mod, t_in: Any = t_in) -> None:
            with torch.no_grad():
                mod(t_in)

        fns = {"torch_eager_fp32": eager}
        for name, sess in sessions.items():
            feed = {PARTS[part].input: feeds[part]}
            fns[name] = lambda s=sess[part], f=feed: s.run(None, f)
        row: dict[str, Any] = side_by_side(fns, repeats, warmup, rounds)
        row["precisions"] = {name: b.part(part).precision for name, b in bundles.items()}
        out[part] = row

    def eager_chain() -> None:
        with torch.no_grad():
            composite(torch.from_numpy(x))

    def ort_chain(s: dict[str, Any]) -> Any:
        def f() -> None:
            h = s["target_front"].run(None, {"x_target": x})[0]
            z = s["bridge"].run(None, {"h": h})[0]
            s["source_back"].run(None, {"z": z})

        return f

    out["chained"] = side_by_side({"torch_eager_fp32": eager_chain,
                                   **{name: ort_chain(s) for name, s in sessions.items()}}, repeats, warmup,
                                  rounds)
    return out


def papagei_front(out: Path, i: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Full-size PaPaGei-S front: INT8 vs FP32 latency (batch 1, 1 thread) and per-block output error."""
    from torch import nn

    from edge_bridge.export.onnx_export import export_part, ort_session
    from edge_bridge.export.quantize import QuantConfig, WindowReader, preprocess, quantize_part
    from edge_bridge.export.sensitivity import node_errors
    from edge_bridge.models import build_backbone

    torch.manual_seed(0)
    model = build_backbone("papagei", {}).eval()

    class Front(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m.pool(self.m.front(x, i))

    front = Front().eval()
    shape = tuple(model.input_shape)
    d = model.block_output(i).features
    rng = np.random.default_rng(0)
    t = np.linspace(0, 60 * 2 * np.pi * 1.2, shape[1])  # ~72 bpm pulse + noise, z-scored like the spec
    x = (np.sin(t[None, None] + rng.uniform(0, 6.3, (48, 1, 1))) + 0.3 * rng.standard_normal((48, *shape)))
    x = ((x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)).astype(np.float32)
    fp32 = export_part(front, "target_front", shape, (d,), out / "papagei_front.fp32.onnx").path
    pre = preprocess(fp32, out / "papagei_front.pre.onnx")
    int8 = quantize_part(pre, out / "papagei_front.int8.onnx", WindowReader("x_target", x[:32]),
                         QuantConfig.for_target("cpu"), preprocessed=True)
    x1 = x[32:33]
    outs = {}
    fns: dict[str, Any] = {}
    for name, path in (("ort_fp32", pre), ("ort_int8", int8)):
        sess = ort_session(path, threads=1)
        fns[name] = lambda s=sess: s.run(None, {"x_target": x1})
        outs[name] = sess.run(None, {"x_target": x[32:]})[0]

    def eager() -> None:
        with torch.no_grad():
            front(torch.from_numpy(x1))

    lat = side_by_side({**fns, "torch_eager_fp32": eager}, repeats, warmup, rounds=5)
    errs = node_errors(pre, int8, WindowReader("x_target", x[32:40]))
    def natural(e: Any) -> list[Any]:
        return [int(c) if c.isdigit() else c for c in re.split(r"(\d+)", e.node)]

    adds = sorted((e for e in errs if e.op_type == "Add" and e.output_sqnr_db is not None), key=natural)
    ref, got = outs["ort_fp32"], outs["ort_int8"]
    cos = float(np.mean(np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))))
    return {"model": f"PaPaGei-S (published architecture, seeded random weights), front = blocks[:{i}]",
            "input_shape": list(shape), "output_features": d, "latency_batch1": lat,
            "speedup_int8_vs_ort_fp32": lat["ort_fp32"]["median_ms"] / lat["ort_int8"]["median_ms"],
            "speedup_int8_vs_torch_eager":
                lat["torch_eager_fp32"]["median_ms"] / lat["ort_int8"]["median_ms"],
            "pooled_output": {"max_abs_diff": float(np.abs(ref - got).max()),
                              "relative_l2": float(np.linalg.norm(ref - got) / np.linalg.norm(ref)),
                              "mean_cosine": cos},
            "per_block_output_sqnr_db": [{"node": e.node, "output_sqnr_db": e.output_sqnr_db} for e in adds],
            "file_bytes": {"fp32": pre.stat().st_size, "int8": int8.stat().st_size}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/runtime")
    ap.add_argument("--run", default=None, help="a trained run directory (default: train one under OUT)")
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--source-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10, help="bridge epochs")
    ap.add_argument("--calibration", default=None,
                    help="calibration recordings or windows .npz (default: the run's data folder)")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds per comparison (default 10)")
    ap.add_argument("--reuse", action="store_true",
                    help="measure bundles already in OUT (from an earlier run) instead of exporting again")
    ap.add_argument("--papagei", action="store_true", help="only the full-size PaPaGei-S front (see above)")
    ap.add_argument("--papagei-i", type=int, default=9, help="PaPaGei-S blocks in the front (default 9)")
    args = ap.parse_args()
    if args.papagei:
        torch.set_num_threads(1)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rep = papagei_front(out, args.papagei_i, args.repeats, args.warmup)
        (out / "papagei_front.json").write_text(json.dumps(rep, indent=1))
        print(json.dumps(rep, indent=1))
        return

    from edge_bridge.bundle import Bundle
    from edge_bridge.export import export
    from edge_bridge.log import setup_logging
    from edge_bridge.runs import Run

    setup_logging("INFO")
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(args.run) if args.run else train_small_run(out, args)
    run = Run.open(run_dir)
    torch.set_num_threads(1)

    calibration = args.calibration or run.data

    def made(name: str, **kw: Any) -> tuple[Any, float | None]:
        """The bundle OUT/name, exported now unless --reuse finds one that verifies."""
        path = out / name
        if args.reuse and (path / "manifest.json").is_file():
            return Bundle.load(path), None
        t = time.perf_counter()
        return export(run_dir, path, overwrite=True, **kw), time.perf_counter() - t

    from edge_bridge.export.quantize import QuantConfig

    # the cpu flavour before issue 16: every op type INT8 (LayerNorm, Gelu, Softmax too), MatMul outputs and
    # attention's MatMuls quantized, MinMax, no search: a failing part falls back whole
    old_flavour = QuantConfig.for_target("cpu", op_types=None, exclude_output_quantization=(),
                                         activation_matmuls=True)
    mixed, t_mixed = made("stress-int8-mixed.bundle", calibration=calibration, precision="int8", target="cpu")
    old, t_old = made("stress-int8-old-fallback.bundle", calibration=calibration, precision="int8",
                      target="cpu", int8_search="off", quant_config=old_flavour)
    fp32, _ = made("stress-fp32.bundle", precision="fp32")
    # every node INT8, no guard: what INT8 itself costs and gives where the guard made the others fall back
    unguarded, _ = made("stress-int8-unguarded.bundle", calibration=calibration, precision="int8",
                        target="cpu", agreement_threshold=1e-9, int8_search="off", quant_config=old_flavour)

    from edge_bridge.bridge import load_bridge
    from edge_bridge.composite import Composite
    from edge_bridge.models import load_backbone

    bridge = load_bridge(run.bridge)
    composite = Composite(load_backbone(run.target_backbone)[0], load_backbone(run.source_model)[0], bridge,
                          bridge.meta["i"], bridge.meta["j"]).eval()
    test = run.role("test")
    x, xs = test.x["target"][:1].astype(np.float32), test.x["source"][:1].astype(np.float32)
    bundles = {"ort_fp32": Bundle.load(fp32.root), "ort_int8_mixed": Bundle.load(mixed.root),
               "ort_old_fallback": Bundle.load(old.root), "ort_int8_unguarded": Bundle.load(unguarded.root)}
    lat = latencies(composite, bundles, x, xs, args.repeats, args.warmup, args.rounds)
    chained = lat["chained"]

    def accuracy(b: Any) -> dict[str, Any]:
        q = b.manifest.quantization
        acc = q["accuracy"]["shipped"]
        parts = q.get("parts", {})
        int8_parts = {p: r for p, r in parts.items() if q["precisions"].get(p) == "int8"}
        kept = sum(len(r.get("fp32_nodes", [])) for r in int8_parts.values())
        rule = sum(len(r.get("fp32_by_rule", [])) for r in int8_parts.values())
        total = sum(r.get("quantized_nodes", 0) for r in int8_parts.values())
        return {"precisions": q["precisions"], "degraded": q["degraded"], "fallback": q["fallback"],
                "guard_passed": q["accuracy"]["passed"], "argmax_agreement": acc["agreement"],
                "max_logit_drift": acc["max_logit_drift"],
                "balanced_accuracy_fp32": acc.get("balanced_accuracy_fp32"),
                "balanced_accuracy": acc.get("balanced_accuracy"),
                "balanced_accuracy_drop_points": acc.get("balanced_accuracy_drop_points"),
                "source_path": q["accuracy"]["source_front"],
                "fp32_nodes": {p: [k["node"] for k in r.get("fp32_nodes", [])] for p, r in parts.items()},
                "calibration_methods": {p: r.get("calibration_method") for p, r in parts.items()},
                "op_sets": {p: r.get("op_set") for p, r in parts.items()},
                # of the INT8 parts' quantizable nodes: those the guard kept FP32, and with attention's
                # activation MatMuls (FP32 by rule) counted too
                "fp32_node_share": kept / (total + rule) if total else 0.0,
                "fp32_node_share_with_rule": (kept + rule) / (total + rule) if total else 0.0,
                "bundle_bytes": b.manifest.report["bundle_bytes"]}

    eager = chained["torch_eager_fp32"]["median_ms"]
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                    "threads": 1},
        "run": run_dir.name, "args": vars(args),
        "export_seconds": {"int8_mixed": t_mixed, "int8_old_fallback": t_old},
        "input_shapes": {"x_target": list(x.shape), "x_source": list(xs.shape)},
        "latency_batch1": lat,
        "speedup_chained_vs_torch_eager": {k: eager / chained[k]["median_ms"] for k in bundles},
        "accuracy": {"int8_mixed": accuracy(mixed), "int8_old_fallback": accuracy(old),
                     "int8_unguarded": accuracy(unguarded)},
        "held_out": mixed.manifest.quantization["accuracy"]["held_out"],
        "file_bytes_int8_mixed": mixed.manifest.report["file_bytes"],
    }
    acc = report["accuracy"]["int8_mixed"]
    drop = acc["balanced_accuracy_drop_points"]
    report["goals"] = {
        "int8_chained_3x_faster_than_torch_eager": report["speedup_chained_vs_torch_eager"]["ort_int8_mixed"]
                                                   >= 3.0,
        "int8_chained_faster_than_ort_fp32": chained["ort_int8_mixed"]["median_ms"]
                                             < chained["ort_fp32"]["median_ms"],
        "agreement_ge_0.98": acc["argmax_agreement"] >= 0.98,
        "balanced_accuracy_drop_le_1_point": drop is not None and drop <= 1.0,
        "fp32_node_share_lt_10pct": acc["fp32_node_share"] < 0.10,
        "fp32_node_share_with_attention_rule_lt_10pct": acc["fp32_node_share_with_rule"] < 0.10,
        "target_front_and_source_back_int8": all(acc["precisions"][p] == "int8"
                                                 for p in ("target_front", "source_back")),
    }
    (out / "runtime.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({k: report[k] for k in ("latency_batch1", "speedup_chained_vs_torch_eager", "accuracy",
                                             "goals")}, indent=1, default=str))


if __name__ == "__main__":
    main()
