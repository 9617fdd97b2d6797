"""Latency of the bridge positions: batch-1 INT8 CPU time of ``front[:i]`` and ``back[j:]`` for each model.

The paper notes that inference time depends on the bridge position. This benchmark publishes, for every
published foundation model at full size (random weights: latency does not depend on the values), the
single-thread ONNX Runtime latency of

``front[:i]``  target window -> blocks 0..i -> mean pooling (the deployed ``target_front``), i = 0..n-1
``back[j:]``   block j's input -> blocks j..n-1 -> pooling/head (the deployed ``source_back``), j = 0..n-1

so position selection can later weigh accuracy against device latency. Output: ``positions.json`` and
``positions.png`` in ``--out``.

How it is measured
    The graphs are exported with the classic TorchScript exporter (``torch.onnx.export(dynamo=False)``,
    opset 17, fixed batch 1), quantized with static INT8 QDQ in the repository's ``cpu`` flavour
    (``edge_bridge.export.quantize``: per-channel int8 weights, uint8 activations, MinMax calibration on a
    few random windows propagated through the model) and timed in ONNX Runtime with one intra-op thread
    (median of repeats after warm-up). FP32 latency of the same graphs is reported next to it.

Two modes, per model (``--mode auto``, the default, picks "full" below ``--full-max-params``)
    ``full``: every ``front[:i]`` and ``back[j:]`` is its own graph: the deployed ``TargetFront`` and
    ``SourceBack`` modules of ``edge_bridge.composite``, exported, quantized and timed (2n graphs).
    ``composed``: for NormWear (128 M encoder parameters, 3 x 560 tokens) 2n graphs of up to the whole
    model each would take hours on a 2-core box. Each *segment* is exported once instead (the stem, every
    block, the pooling, the head), timed, and summed: ``front[:i] = stem + blocks 0..i + pool``,
    ``back[j:] = blocks j..n-1 + head``. ONNX Runtime fuses only inside a block (attention, LayerNorm,
    GELU, Conv+BN), so this is what the whole graph costs up to per-call overhead. Segments with identical
    structure and input shape (the identical transformer layers) are timed once and the JSON says so
    (``timed_as``). The composition is checked on the true part graphs at a short front and a short back
    (``validation``: measured vs composed latency).

The timing (:func:`edge_bridge.selection.latency.time_session`) and the INT8 quantization are the
package's, shared with ``select --latency-budget-ms``.

``--budget-ms MS --pair TARGET,SOURCE`` measures instead what ``select`` measures: every (i, j) candidate
of a published pair at full size (random weights), as deployed -- ``target_front[:i]`` INT8 + bridge FP32
+ ``source_back[j:]`` INT8, graphs exported as ``edge-bridge export`` exports them -- and runs the trial
selection under that budget on a few random paired windows (the choice is meaningless with random
weights; what is checked is that it meets the budget), writing ``budget.json``.

Run (about 8-10 minutes on 2 busy CPU cores):
  .venv/bin/python bench/positions.py --out bench-out/positions
  .venv/bin/python bench/positions.py --out bench-out/positions --budget-ms 50 --pair papagei,hubert_ecg
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_bridge.selection.latency import structure_key, time_session

logger = logging.getLogger("bench.positions")

MODELS = ("papagei", "normwear", "hubert_ecg", "labram")
GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
OPSET = 17


class _Fn(nn.Module):
    """A callable as a module, so ``torch.onnx.export`` can trace it (the backbone is a submodule)."""

    def __init__(self, owner: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and ORT's quantizer warn a lot (TracerWarnings, per-channel notes on the root logger)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Classic (TorchScript) ONNX export at fixed batch 1; one self-contained file."""
    with _quiet(), torch.no_grad():
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=OPSET, do_constant_folding=True)
    return path


def quantize_int8(src: Path, dst: Path, windows: np.ndarray, rows: int = 1) -> Path:
    """Static INT8 QDQ in the repository's ``cpu`` flavour (:func:`edge_bridge.selection.latency
    .quantize_graph`, which ``select --latency-budget-ms`` uses too).

    ``windows`` holds the calibration inputs stacked on the native batch axis, ``rows`` rows per window
    (NormWear folds its channels into the batch: 3 rows per window; the graphs have a fixed batch).
    """
    from edge_bridge.selection.latency import quantize_graph

    with _quiet():
        return quantize_graph(src, dst, "x", windows, "cpu", batch=rows)


class Timer:
    """Exports, quantizes and times graphs, remembering timings by structure key."""

    def __init__(self, work: Path, threads: int, repeats: int, budget_s: float) -> None:
        self.work = work
        self.threads = threads
        self.repeats = repeats
        self.budget_s = budget_s
        self.cache: dict[str, dict[str, Any]] = {}
        self.n = 0

    def measure(self, name: str, module: nn.Module, calib: torch.Tensor, key: str | None = None,
                rows: int = 1) -> dict[str, Any]:
        """FP32 and INT8 latency (ms) and INT8 file size of ``module`` on one window (``calib[:rows]``)."""
        if key is not None and key in self.cache:
            return {**self.cache[key], "timed_as": self.cache[key]["name"], "name": name}
        self.n += 1
        t0 = time.perf_counter()
        fp32 = export_onnx(module, calib[:rows], self.work / f"g{self.n}.onnx")
        t_export = time.perf_counter() - t0
        int8 = quantize_int8(fp32, self.work / f"g{self.n}.int8.onnx", calib.numpy(), rows)
        t_quant = time.perf_counter() - t0 - t_export
        x = calib[:rows].numpy()
        res: dict[str, Any] = {"name": name}
        for prec, path in (("fp32", fp32), ("int8", int8)):
            med, best, runs = time_session(path, {"x": x}, threads=self.threads, min_repeats=self.repeats,
                                           budget_s=self.budget_s)
            res.update({f"{prec}_ms": round(med, 3), f"{prec}_min_ms": round(best, 3), f"{prec}_runs": runs})
        res.update({"fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size,
                    "export_s": round(t_export, 2), "quantize_s": round(t_quant, 2)})
        fp32.unlink()
        int8.unlink()
        logger.info("  %-22s fp32 %8.2f ms  int8 %8.2f ms  (%.1f MB int8; export %.1f s, quantize %.1f s)",
                    name, res["fp32_ms"], res["int8_ms"], res["int8_bytes"] / 1e6, t_export, t_quant)
        if key is not None:
            self.cache[key] = res
        return res


def published_config(name: str, golden: Path) -> dict[str, Any]:
    schema = golden / name / "schema.json"
    if schema.is_file():
        return dict(json.loads(schema.read_text())["published_config"])
    logger.warning("%s: no %s; using the registry defaults (the published size here)", name, schema)
    return {}


def bench_model(name: str, timer: Timer, *, golden: Path, n_calib: int, mode: str, validate: bool,
                full_max_params: float = 40e6) -> dict[str, Any]:
    """Every position of one model; see the module docstring."""
    from edge_bridge.composite import SourceBack, TargetFront
    from edge_bridge.models import build_backbone

    t_start = time.perf_counter()
    torch.manual_seed(0)
    bb = build_backbone(name, config=published_config(name, golden)).eval()
    n = bb.n_blocks
    if mode == "auto":
        mode = "full" if bb.num_parameters() < full_max_params else "composed"
    logger.info("%s: %d blocks, input %s, %.1f M parameters, %s mode", name, n, bb.input_shape,
                bb.num_parameters() / 1e6, mode)
    x = torch.randn(n_calib, *bb.input_shape)  # random windows (N(0,1): the models see z-scored signals)
    with torch.no_grad():
        bounds, _ = bb.boundary_outputs(x)  # realistic calibration inputs for every segment
    rows = int(bounds[0].shape[0]) // n_calib  # native batch rows per window (NormWear: its channels)
    out: dict[str, Any] = {"n_blocks": n, "input_shape": list(bb.input_shape),
                           "parameters": bb.num_parameters(), "block_paths": bb.block_paths,
                           "boundaries": [b.to_dict() for b in bb.boundaries], "mode": mode}

    def front_part(i: int) -> nn.Module:
        return TargetFront(bb, i)

    def back_part(j: int) -> nn.Module:
        return SourceBack(bb, j)

    def tokens(j: int) -> torch.Tensor:
        with torch.no_grad():
            return bb.to_tokens(bounds[j])

    if mode == "composed":
        seg: dict[str, Any] = {}
        seg["stem"] = timer.measure("stem", _Fn(bb, bb.embed), x)
        blocks = []
        for k in range(n):
            blk = bb.blocks[k]
            key = f"{name}|" + structure_key(blk, tuple(bounds[k].shape))
            blocks.append(timer.measure(f"block {k}", blk, bounds[k], key, rows=rows))
        seg["pool"] = timer.measure("pool", _Fn(bb, bb.pool), bounds[n], rows=rows)
        seg["head"] = timer.measure("head", _Fn(bb, bb.head_forward), bounds[n], rows=rows)
        out["segments"] = [seg["stem"], *blocks, seg["pool"], seg["head"]]
        positions = []
        for p in range(n):
            row: dict[str, Any] = {"position": p, "block_path": bb.block_paths[p]}
            for prec in ("int8", "fp32"):
                front = seg["stem"][f"{prec}_ms"] + sum(b[f"{prec}_ms"] for b in blocks[:p + 1]) \
                    + seg["pool"][f"{prec}_ms"]
                back = sum(b[f"{prec}_ms"] for b in blocks[p:]) + seg["head"][f"{prec}_ms"]
                row[f"front_{prec}_ms"] = round(front, 3)
                row[f"back_{prec}_ms"] = round(back, 3)
            row["front_int8_mb"] = round((seg["stem"]["int8_bytes"] + seg["pool"]["int8_bytes"]
                                          + sum(b["int8_bytes"] for b in blocks[:p + 1])) / 1e6, 2)
            row["back_int8_mb"] = round((seg["head"]["int8_bytes"]
                                         + sum(b["int8_bytes"] for b in blocks[p:])) / 1e6, 2)
            positions.append(row)
        out["positions"] = positions
        if validate:  # the true deployed part graphs at a short front and a short back
            fi, bj = min(1, n - 1), max(n - 2, 0)
            checks = [("front", fi, timer.measure(f"true front[:{fi}]", front_part(fi), x)),
                      ("back", bj, timer.measure(f"true back[{bj}:]", back_part(bj), tokens(bj)))]
            out["validation"] = []
            for part, p, got in checks:
                row = {"part": part, "position": p}
                for prec in ("int8", "fp32"):
                    composed, measured = positions[p][f"{part}_{prec}_ms"], got[f"{prec}_ms"]
                    row.update({f"composed_{prec}_ms": composed, f"measured_{prec}_ms": measured,
                                f"{prec}_rel_diff": round(composed / measured - 1, 3)})
                out["validation"].append(row)
    else:  # every front and back as its own graph
        positions = []
        for p in range(n):
            f = timer.measure(f"front[:{p}]", front_part(p), x)
            b = timer.measure(f"back[{p}:]", back_part(p), tokens(p))
            positions.append({"position": p, "block_path": bb.block_paths[p],
                              "front_int8_ms": f["int8_ms"], "front_fp32_ms": f["fp32_ms"],
                              "back_int8_ms": b["int8_ms"], "back_fp32_ms": b["fp32_ms"],
                              "front_int8_mb": round(f["int8_bytes"] / 1e6, 2),
                              "back_int8_mb": round(b["int8_bytes"] / 1e6, 2)})
        out["positions"] = positions
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = {k: v for k, v in results.items() if "positions" in v}
    if not done:
        return
    fig, axes = plt.subplots(1, len(done), figsize=(4.2 * len(done), 3.6), squeeze=False)
    for ax, (name, res) in zip(axes[0], done.items(), strict=True):
        pos = [r["position"] for r in res["positions"]]
        for part, colour in (("front", "tab:blue"), ("back", "tab:orange")):
            ax.plot(pos, [r[f"{part}_int8_ms"] for r in res["positions"]], "o-", color=colour, ms=3,
                    label=f"{part} INT8")
            ax.plot(pos, [r[f"{part}_fp32_ms"] for r in res["positions"]], "--", color=colour, alpha=0.5,
                    label=f"{part} FP32")
        ax.set_title(f"{name} ({res['parameters'] / 1e6:.1f} M params, {res['mode']})")
        ax.set_xlabel("position (block index)")
        ax.set_ylabel("batch-1 latency, 1 thread [ms]")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("front[:i] (target side, up to block i) and back[j:] (source side, from block j)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_budget(target_name: str, source_name: str, budget_ms: float, golden: Path, out_dir: Path,
                 *, device: str = "cpu", windows: int = 48) -> dict[str, Any]:
    """Every candidate's deployed latency for one published pair, and the trial selection under a budget."""
    from edge_bridge.models import build_backbone
    from edge_bridge.models.presets import PRESETS
    from edge_bridge.pipeline import BridgeSettings
    from edge_bridge.selection.latency import LatencyMeter
    from edge_bridge.selection.trial import TrialSettings, select_trial

    preset = next((p for p in PRESETS.values() if (p.target_model, p.source_model) == (target_name,
                                                                                         source_name)), None)
    settings = BridgeSettings("prototype", preset.rank if preset else 8, preset.prototypes if preset else 16)
    torch.manual_seed(0)
    target = build_backbone(target_name, config=published_config(target_name, golden)).eval()
    source = build_backbone(source_name, config={**published_config(source_name, golden),
                                                 "n_classes": 2}).eval()
    if source.head is None:
        source.set_head(2)
    t0 = time.perf_counter()
    meter = LatencyMeter(target, source, settings, device=device)
    rows = []
    for i in range(target.n_blocks):
        for j in range(source.n_blocks):
            rows.append(meter.candidate(i, j).to_dict())
    t_measure = time.perf_counter() - t0
    within = [r for r in rows if r["total_ms"] <= budget_ms]
    logger.info("%d of %d candidates within %g ms (parts measured in %.0f s)", len(within), len(rows),
                budget_ms, t_measure)
    # the selection itself, on random paired windows: a random-weight source head decides by its bias, so
    # it is scaled up to spread its decisions (the trial rule needs several source classes)
    with torch.no_grad():
        for p in source.head.parameters():
            p.mul_(50)
    rng = np.random.default_rng(0)
    n_val = windows // 2
    z = rng.standard_normal((windows + n_val, 1, 1))
    xt = (rng.standard_normal((windows + n_val, *target.input_shape)) + z).astype(np.float32)
    xs = (rng.standard_normal((windows + n_val, *source.input_shape)) + z).astype(np.float32)
    subjects = np.repeat(np.arange(4), -(-windows // 4))[:windows]
    t1 = time.perf_counter()
    sel = select_trial(target, source, xt[:windows], xs[:windows], xt[windows:], xs[windows:],
                       subjects=subjects, settings=TrialSettings(shortlist=4, rungs=(1, 2), batch_size=16),
                       bridge_settings=settings, latency_budget_ms=budget_ms, device=device, meter=meter)
    chosen = next(c for c in sel.candidates if c["status"] == "chosen")
    sel.save(out_dir / "budget_selection.json")
    sel.plot(out_dir / "budget_selection.png")
    fastest = min(rows, key=lambda r: r["total_ms"])
    return {"pair": {"target": target_name, "source": source_name, "preset": preset.name if preset else None},
            "budget_ms": budget_ms, "latency": meter.describe(), "bridge": vars(settings),
            "candidates": rows, "within_budget": len(within), "n_candidates": len(rows),
            "fastest": fastest, "slowest": max(rows, key=lambda r: r["total_ms"]),
            "chosen": [sel.i, sel.j], "chosen_latency_ms": chosen["latency"]["total_ms"],
            "chosen_meets_budget": chosen["latency"]["total_ms"] <= budget_ms,
            "selection_statuses": {f"{c['i']},{c['j']}": c["status"] for c in sel.candidates
                                   if c["status"] != "not shortlisted"},
            "seconds": {"measure_all_parts": round(t_measure, 1),
                        "selection_with_cached_latency": round(time.perf_counter() - t1, 1)},
            "parts_measured": meter.measured}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-out/positions", help="output folder (JSON + PNG)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    ap.add_argument("--golden", default=str(GOLDEN), help="folder with <model>/schema.json (configs)")
    ap.add_argument("--mode", choices=("auto", "composed", "full"), default="auto")
    ap.add_argument("--full-max-params", type=float, default=40e6,
                    help="auto mode: models with fewer parameters get a true graph per front/back")
    ap.add_argument("--no-validate", action="store_true", help="skip the true-graph check of the composition")
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (1: the device setting)")
    ap.add_argument("--repeats", type=int, default=5, help="minimum timed runs per graph")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of extra repeats per graph")
    ap.add_argument("--calib", type=int, default=2, help="random calibration windows per graph")
    ap.add_argument("--budget-ms", type=float, default=None,
                    help="measure every (i, j) candidate of --pair as select does and select under this "
                         "budget")
    ap.add_argument("--pair", default="papagei,hubert_ecg", help="TARGET,SOURCE for --budget-ms")
    ap.add_argument("--device", default="cpu", choices=("cpu", "jetson"), help="INT8 flavour for --budget-ms")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # no notes about unused initializers of the tiny pool/head graphs
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.budget_ms is not None:
        t_name, s_name = (m.strip() for m in args.pair.split(","))
        torch.set_num_threads(1)
        res = bench_budget(t_name, s_name, args.budget_ms, Path(args.golden), out_dir, device=args.device)
        res["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "torch": torch.__version__, "onnxruntime": ort.__version__,
                          "loadavg": os.getloadavg()}
        (out_dir / "budget.json").write_text(json.dumps(res, indent=2) + "\n")
        logger.info("chose %s at %.1f ms (budget %g ms); wrote %s", res["chosen"], res["chosen_latency_ms"],
                    args.budget_ms, out_dir / "budget.json")
        return 0
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="positions-") as work:
        timer = Timer(Path(work), args.threads, args.repeats, args.budget)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            try:
                results[name] = bench_model(name, timer, golden=Path(args.golden), n_calib=args.calib,
                                            mode=args.mode, validate=not args.no_validate,
                                            full_max_params=args.full_max_params)
            except ImportError as exc:
                logger.warning("%s: skipped, module not available (%s)", name, exc)
                results[name] = {"skipped": f"module not available: {exc}"}
            except Exception as exc:  # one model failing must not lose the others' figures
                logger.exception("%s: failed", name)
                results[name] = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
    method = {
        "mode": args.mode,
        "exporter": f"torch.onnx.export(dynamo=False), opset {OPSET}, batch 1",
        "quantization": "static INT8 QDQ, edge_bridge.export.quantize cpu flavour (per-channel int8 weights, "
                        f"uint8 activations, MinMax), {args.calib} random windows",
        "timing": f"onnxruntime CPUExecutionProvider, {args.threads} intra-op thread(s), median of "
                  f">= {args.repeats} runs after 2 warm-ups",
        "weights": "random (published configs at full size)",
    }
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
               "torch": torch.__version__, "onnxruntime": ort.__version__, "loadavg": os.getloadavg()}
    report = {
        "what": "batch-1 CPU latency of front[:i] (stem + blocks 0..i + pool), back[j:] (blocks j.. + head)",
        "method": method,
        "machine": machine,
        "seconds": round(time.perf_counter() - t0, 1),
        "models": results,
    }
    (out_dir / "positions.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, out_dir / "positions.png")
    logger.info("wrote %s and %s (%.0f s)", out_dir / "positions.json", out_dir / "positions.png",
                report["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
