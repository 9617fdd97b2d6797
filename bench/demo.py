"""How good and how slow is the demo bundle? Build time and accuracy on unseen simulated subjects; JSON out.

1. Build: the demo bundle from :class:`deploy.demo_bundle.DemoSettings` (the defaults, or ``--set`` changes
   to try another recipe), timed end to end (simulate, pretrain, fit-source, select, train, export) with the
   settings' thread count; the machine's load average is recorded before and after (shared machines).
2. Accuracy of the shipped bundle (:func:`edge_bridge.demo.score_bundle`): the composite
   (``target_front -> bridge -> source_back``, the bundle's ONNX files through ONNX Runtime) and the
   bundle's source model on the paired ECG, on ``--subjects`` simulated subjects from a seed the build
   never used (the build uses ``settings.seed`` for its subjects, the demo recording seed
   1000), 3-class balanced accuracy per subject (mean, sd, min, max) and pooled over all their windows;
   windows that straddle a block change carry no label and are not scored.
3. The demo subject (the recording ``make demo`` streams) scored as the live loop scores it (the same
   windows, at the live hop), beside ``--subjects`` unseen subjects of the same length and hop (another
   unused seed), and whether its figure lies inside their range (and the 10 minute subjects'): the demo
   must not be tuned to it.

Run (about 5 minutes for the build plus a minute of scoring on 2 CPU cores)::

  .venv/bin/python bench/demo.py --out bench-out/demo
  .venv/bin/python bench/demo.py --out bench-out/demo-30s --set window_s=30 --set roles=8,3,5,1
  .venv/bin/python bench/demo.py --bundle PATH/bundle      # score an existing bundle, no build
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

EVAL_SEED = 2025  # never a build seed (DemoSettings.seed = 0) nor the demo recording's (1000)


def _parse_set(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    if not value:
        raise argparse.ArgumentTypeError(f"--set wants KEY=VALUE, got {text!r}")
    if key in ("roles", "trial_rungs"):
        return key, tuple(int(v) for v in value.split(","))
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/demo"))
    ap.add_argument("--set", dest="changes", type=_parse_set, action="append", default=[],
                    metavar="KEY=VALUE", help="change one DemoSettings field for this build, e.g. "
                    "--set window_s=30 --set roles=8,3,5,1 --set rule=paper (JSON values)")
    ap.add_argument("--bundle", type=Path, help="score this bundle instead of building one")
    ap.add_argument("--subjects", type=int, default=8, help="unseen simulated subjects to score (default 8)")
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes per unseen subject (default 10)")
    ap.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    args = ap.parse_args()
    if args.subjects < 2:
        ap.error(f"--subjects must be at least 2 for a spread, got {args.subjects}")

    from deploy.demo_bundle import DEMO_MINUTES, DEMO_SEED, DEMO_SUBJECT, DemoSettings
    from edge_bridge.bundle import Bundle
    from edge_bridge.demo import score_bundle
    from edge_bridge.simulate import simulate_dataset, simulate_subject

    settings = dataclasses.replace(DemoSettings(), **dict(args.changes))
    if args.eval_seed == settings.seed:
        ap.error(f"--eval-seed {args.eval_seed} is the build's seed; pick another")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_before": list(os.getloadavg())},
        "settings": dataclasses.asdict(settings), "args": {k: str(v) for k, v in vars(args).items()}}
    if args.bundle is None:
        import resource

        from edge_bridge.demo import build_demo_bundle

        t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        root = build_demo_bundle(settings, args.out / "build", report=lambda t: print(t, flush=True),
                                 progress=False)
        report["build_seconds"] = round(time.perf_counter() - t0, 1)
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        # on a shared machine the wall time depends on the others' load; the CPU seconds this process used,
        # over the thread count, are what the build would take on idle cores (if its threads stayed busy)
        report["build_cpu_seconds"] = round(cpu.ru_utime + cpu.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)
        built = json.loads((args.out / "build" / "settings.json").read_text())
        report["build_steps"] = built.get("step_started_at_s")
    else:
        root = args.bundle
    report["machine"]["load_after_build"] = list(os.getloadavg())
    bundle = Bundle.load(root)

    with tempfile.TemporaryDirectory(prefix="edge-bridge-bench-demo-") as tmp:
        data = Path(tmp) / "unseen"
        files = simulate_dataset(data, bundle.manifest.task, subjects=args.subjects, minutes=args.minutes,
                                 seed=args.eval_seed)
        t1 = time.perf_counter()
        report["unseen"] = score_bundle(root, files)
        report["unseen"]["seed"], report["unseen"]["minutes"] = args.eval_seed, args.minutes
        # the demo subject: the very recording make demo streams, scored offline as the live loop scores it
        # (the same zero-phase windows, at the live hop); beside it, unseen subjects of the same length,
        # protocol and hop, so its figure is compared like for like
        from edge_bridge.recordings.edf import write_edf

        live_hop = bundle.manifest.target.hop_s
        rec = simulate_subject(bundle.manifest.task, DEMO_SUBJECT, DEMO_MINUTES, DEMO_SEED)
        demo_file = write_edf(rec, Path(tmp) / "demo" / f"{DEMO_SUBJECT}.edf")
        demo = score_bundle(root, [demo_file], hop_s=live_hop, source_model=False)
        like = simulate_dataset(Path(tmp) / "demo-like", bundle.manifest.task, subjects=args.subjects,
                                minutes=DEMO_MINUTES, seed=args.eval_seed + 1)
        report["unseen_demo_like"] = score_bundle(root, like, hop_s=live_hop, source_model=False)
        report["unseen_demo_like"].update(seed=args.eval_seed + 1, minutes=DEMO_MINUTES, hop_s=live_hop)
        report["scoring_seconds"] = round(time.perf_counter() - t1, 1)
    d = next(iter(demo["subjects"].values()))
    spread, like_spread = report["unseen"]["per_subject"], report["unseen_demo_like"]["per_subject"]
    ba = d["balanced_accuracy"]
    report["demo_subject"] = {**d, "hop_s": live_hop,
                              "inside_unseen_range": spread["min"] <= ba <= spread["max"],
                              "inside_demo_like_unseen_range": like_spread["min"] <= ba <= like_spread["max"],
                              "demo_like_subjects_at_or_above": sum(
                                  v["balanced_accuracy"] >= ba
                                  for v in report["unseen_demo_like"]["subjects"].values())}
    report["machine"]["load_after"] = list(os.getloadavg())
    (args.out / "demo.json").write_text(json.dumps(report, indent=1))
    keys = ("build_seconds", "build_cpu_seconds", "build_steps", "demo_subject", "machine")
    print(json.dumps({k: report[k] for k in keys if k in report}
                     | {"unseen_per_subject": spread, "unseen_demo_like_per_subject": like_spread,
                        "unseen_demo_like_pooled":
                            report["unseen_demo_like"]["pooled"]["balanced_accuracy"],
                        "unseen_pooled_balanced_accuracy": report["unseen"]["pooled"]["balanced_accuracy"],
                        "unseen_source_model": report["unseen"]["source_model"]["per_subject"],
                        "unseen_source_model_pooled":
                            report["unseen"]["source_model"]["pooled"]["balanced_accuracy"]}, indent=1))


if __name__ == "__main__":
    main()
