"""Run a bundle live on this device: verify, self-test, then stream predictions as JSON lines.

Steps: verify the bundle (schema, hashes, shapes); load one engine per part for --device (cpu: ONNX Runtime
with one thread; cuda: ONNX Runtime's CUDA provider; jetson: TensorRT, engines built once and cached);
warm up; compare with the bundle's golden.npz (stops if the outputs drift). Then: source -> a window every
hop -> the bundle's preprocessing -> quality gate (bad windows are skipped and reported) -> target_front ->
bridge -> source_back -> class probabilities -> JSON lines on stdout or --out, and an LSL outlet with --lsl.
A bridge that calibration publishes into the bundle is picked up between windows. Ctrl-C, SIGTERM or
--duration stop cleanly and print a summary (windows, skipped, lost samples, latency percentiles,
real-time factor).

With no --bundle, a demo bundle is built from simulated data on first use (a few minutes; cached); with no
--source, a simulated recording of an unseen subject streams through BrainFlow's playback board and the
summary says how often the predictions matched its labels.

Examples:
  edge-bridge deploy                                   # the demo: simulated bundle and playback
  edge-bridge deploy --bundle stress.bundle --source playback:S01.csv --out predictions.jsonl
  edge-bridge deploy --device jetson --bundle b/ --source board:CYTON_BOARD,serial_port=/dev/ttyUSB0
  edge-bridge deploy --bundle stress.bundle --source tcp:127.0.0.1:5555 --duration 60 --smoothing ema
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda", "jetson"], default="cpu",
                   help="where the model runs (default cpu)")
    p.add_argument("--bundle", type=Path,
                   help="bundle directory (default: the demo bundle, built on first use)")
    p.add_argument("--source", metavar="SPEC",
                   help="playback:FILE | synthetic | board:NAME[,k=v...] | tcp:HOST:PORT | serial:PORT "
                        "(default: a simulated recording through BrainFlow's playback board)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--out", type=Path, metavar="FILE", help="JSON lines to FILE instead of stdout")
    p.add_argument("--lsl", action="store_true", help="also publish probabilities as an LSL stream (pylsl)")
    p.add_argument("--smoothing", choices=["none", "ema", "majority"], default="none",
                   help="smooth probabilities over windows (default none)")
    p.add_argument("--alpha", type=float, default=0.5, help="EMA weight of the newest window (default 0.5)")
    p.add_argument("--majority", type=int, default=5, help="windows in the majority vote (default 5)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per part (default 1)")
    p.add_argument("--labels", type=Path, metavar="FILE",
                   help="label sidecar {annotations: [{onset, duration, label}]} to score predictions; found "
                        "automatically next to a playback file as FILE.labels.json")
    p.add_argument("--adapt-rate", action="store_true",
                   help="accept a source at another rate than the model's input rate (filter and resample)")
    p.add_argument("--no-watch", action="store_true", help="do not pick up newly published bridges")
    p.add_argument("--demo-minutes", type=float, default=5.0,
                   help="length of the demo recording when --source is not given (default 5)")
    p.add_argument("--self-test-only", action="store_true",
                   help="verify, build the engines (cached), self-test, then exit without streaming")
    p.add_argument("--summary-json", type=Path, metavar="FILE", help="also write the summary as JSON")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from deploy.live import LabelTrack, LiveConfig, LivePipeline
    from deploy.runtime import CompositeRunner
    from deploy.sinks import make_sinks
    from edge_bridge.bundle import Bundle
    from edge_bridge.errors import EdgeBridgeError

    if args.duration is not None and not args.duration > 0:
        raise EdgeBridgeError(f"--duration must be a positive number of seconds, got {args.duration}")
    if args.threads < 1:
        raise EdgeBridgeError(f"--threads must be >= 1, got {args.threads}")

    # 1. the bundle
    if args.bundle is None:
        from edge_bridge.commands._demo_bundle import ensure_demo_bundle  # may build with torch, first use

        root = ensure_demo_bundle(report=_say, progress=not args.quiet)
    else:
        root = args.bundle
    t0 = time.perf_counter()
    bundle = Bundle.load(root)
    m = bundle.manifest
    _say(f"bundle {bundle.root}: task {m.task}, {m.target.modality} -> {m.source.modality}, classes "
         f"{', '.join(m.classes)}, bridge v{m.current_bridge:04d}; verified in "
         f"{1e3 * (time.perf_counter() - t0):.0f} ms")

    # 2. engines, warm-up, self-test
    runner = CompositeRunner(bundle, args.device, threads=args.threads)
    try:
        warm = runner.warm_up()
        report = runner.self_test()
        _say(f"engines on {args.device} ({runner.engines['target_front'].backend}), warm-up "
             f"{1e3 * warm:.0f} ms; self-test against golden.npz passed:")
        for check in report.checks:
            _say(f"  {check.line()}")
        if args.self_test_only:
            return 0

        # 3. source (+ labels for the demo)
        labels_path = args.labels
        if args.source is None:
            from edge_bridge.commands._demo_bundle import demo_recording

            csv, labels_path = demo_recording(bundle, minutes=args.demo_minutes)
            spec = f"playback:{csv}"
            _say(f"source: simulated recording of an unseen subject, {args.demo_minutes:g} min, through "
                 f"BrainFlow's playback board ({csv})")
        else:
            spec = args.source
            if labels_path is None and spec.startswith("playback:"):
                guess = Path(spec.split(":", 1)[1].split(",", 1)[0] + ".labels.json")
                labels_path = guess if guess.is_file() else None
        labels = LabelTrack.load(labels_path) if labels_path is not None else None

        from firmware_interface import open_source

        source = open_source(spec, verbose=True if args.verbose else None)
        config = LiveConfig(smoothing=args.smoothing, alpha=args.alpha, majority=args.majority,
                            duration=args.duration, watch_bridge=not args.no_watch,
                            adapt_rate=args.adapt_rate)
        sinks = make_sinks(args.out, lsl=args.lsl, classes=list(m.classes), rate=1.0 / m.target.hop_s)
        try:
            pipe = LivePipeline(runner, source, sinks, config, labels)
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
        where = args.out if args.out else "stdout"
        _say(f"streaming: {m.target.window_s:g} s windows every {m.target.hop_s:g} s; predictions to {where}"
             f"{' and LSL' if args.lsl else ''}; Ctrl-C to stop")
        summary = pipe.run()
    finally:
        runner.close()

    lines = summary.lines()
    out = sys.stdout if args.out else sys.stderr
    print("\nsummary", file=out)
    for line in lines:
        print(f"  {line}", file=out)
    out.flush()
    if args.summary_json:
        args.summary_json.write_text(json.dumps(_summary_json(summary, args), indent=1) + "\n")
    return 130 if summary.stop_reason in ("SIGINT", "SIGTERM") else 0


def _summary_json(summary: Any, args: argparse.Namespace) -> dict[str, Any]:
    d = summary.to_dict()
    d["device"] = args.device
    return d
