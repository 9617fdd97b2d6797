"""Refit a bundle's bridge on site from a few minutes of paired recordings, and swap it in if it is better.

A new user or a new sensor shifts the target signal (PPG morphology, gain, pulse-transit time). This refits
only the bridge, on paired windows cut with the bundle's own preprocessing: target_front on the target
signal gives the bridge inputs, source_front on the source signal the tokens to reproduce. Closed form
(reduced-rank ridge regression, numpy, well under a second); with torch installed, also gradient steps on
the paper's objective through the source model (its weights ship in the bundle; --run for one exported
with --no-source-weights). The new bridge is validated on held-out windows
(the end of each recording) against the current one, and published (bridges/vNNNN.onnx + .safetensors,
then the manifest's pointer, atomically) only if it beats it by a margin. Otherwise the bundle is unchanged
and the output says why. A running `edge-bridge deploy` picks the new bridge up between windows.

Paired data: one recording with both modalities, or one recording per modality with overlapping time
stamps (they are aligned and cropped to the shared span). Or record them now with --record/--board.

Examples:
  edge-bridge calibrate --bundle stress.bundle --paired calib/S01.csv
  edge-bridge calibrate --bundle stress.bundle --paired chest.edf wrist.csv --method closed-form --json
  edge-bridge calibrate --bundle stress.bundle --record 300 --board CYTON_BOARD,serial_port=/dev/ttyUSB0 \\
      --profile chest-wrist.json
  edge-bridge calibrate --bundle stress.bundle --rollback           # the version before the current one
  edge-bridge calibrate --bundle stress.bundle --rollback 1         # a given version
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_bridge.errors import EdgeBridgeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle directory (it must include source_front)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--paired", nargs="+", metavar="REC",
                      help="paired recordings (EDF+, BrainFlow CSV, mixed: one file with both modalities, or "
                           "one per modality with overlapping time stamps); a file given twice is refused")
    what.add_argument("--record", type=float, metavar="SECONDS",
                      help="record this many seconds of paired data now (needs --board)")
    what.add_argument("--rollback", nargs="?", type=int, const=0, metavar="VERSION",
                      help="make an earlier bridge current again (default: the one before the current)")
    from edge_bridge.commands._method import add_map_arguments

    add_map_arguments(p, labels=False)
    p.add_argument("--board", metavar="NAME[,k=v...]",
                   help="with --record: BrainFlow board and its parameters, e.g. "
                        "CYTON_BOARD,serial_port=/dev/ttyUSB0 or synthetic")
    p.add_argument("--profile", help="with --record: device profile JSON naming the ECG/PPG rows")
    p.add_argument("--record-dir", help="with --record: where the recording is kept "
                                        "(default: BUNDLE.calibration/ beside the bundle)")
    p.add_argument("--method", choices=("auto", "closed-form", "gradient"), default="auto",
                   help="auto: closed form, then gradient steps when torch and the source model's weights "
                        "(in the bundle, or --run) are available, keeping whichever validates better "
                        "(default)")
    p.add_argument("--run", help="training run directory whose source model weights the gradient steps use "
                                 "instead of the bundle's (needed for a bundle exported with "
                                 "--no-source-weights)")
    p.add_argument("--epochs", type=int, default=30, help="gradient epochs (default 30)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="fraction at the end of each recording kept for validation (default 0.2)")
    p.add_argument("--margin-agreement", type=float, default=0.02,
                   help="accept if agreement with the source model rises by at least this (default 0.02)")
    p.add_argument("--margin-loss", type=float, default=0.01,
                   help="or if agreement is no lower and the alignment loss falls by this fraction "
                        "(default 0.01)")
    p.add_argument("--min-states", type=int, default=2,
                   help="keep the current bridge unless the source model sees at least this many of its "
                        "classes in the paired windows, and accept on alignment loss alone (at equal "
                        "agreement) only if the validation windows show that many (default 2: minutes at "
                        "rest alone cannot show that a refit still tells states apart)")
    p.add_argument("--device", default="cpu", help="engine device for the fronts: cpu, cuda, jetson")
    p.add_argument("--dry-run", action="store_true", help="validate and report; never publish")
    p.add_argument("--json", action="store_true", help="print the full report as JSON on stdout")
    p.add_argument("--report", help="also write the JSON report to this file")


def _paired(paths: list[str], channels: str | None) -> list:
    """The ``--paired`` files, each once; read and mapped here when ``--channels`` names their channels."""
    from edge_bridge.recordings.dataset import apply_modality_map, check_distinct, parse_map, read_labelled

    files = [Path(p) for p in paths]
    check_distinct(files, "--paired recordings")
    cmap = parse_map(channels, "--channels")
    if not cmap:
        return files
    recs = [read_labelled(f, cmap) for f in files]
    for modality, value in cmap.items():  # one map for all files: each name must be in one of them at least
        names = value if isinstance(value, list) else [value]
        if not any(set(names) <= set(r.channel_names) for r in recs):
            have = "; ".join(f"{f}: {r.channel_names}" for f, r in zip(files, recs, strict=True))
            raise EdgeBridgeError(f"--channels maps {modality} to {names}, but none of the --paired files "
                                  f"has such a channel ({have})")
    return [apply_modality_map(r, {m: v for m, v in cmap.items()
                                   if set(v if isinstance(v, list) else [v]) <= set(r.channel_names)})
            for r in recs]


def run(args: argparse.Namespace) -> int:
    from calibrate.core import calibrate, rollback

    if args.rollback is not None:
        before, now = rollback(args.bundle, args.rollback or None)
        print(f"{args.bundle}: bridge v{now:04d} is current (was v{before:04d})")
        return 0
    if args.record is not None:
        if not args.board:
            raise EdgeBridgeError("--record needs --board NAME[,k=v...] (e.g. --board synthetic)")
        from calibrate.record import record_paired

        recordings = [record_paired(args.bundle, args.board, args.record, profile=args.profile,
                                    out_dir=args.record_dir)]
    else:
        if args.board or args.profile:
            raise EdgeBridgeError("--board/--profile go with --record, not with --paired")
        recordings = _paired(args.paired, args.channels)
    report = calibrate(args.bundle, recordings, method=args.method, holdout=args.holdout,
                       margin_agreement=args.margin_agreement, margin_loss=args.margin_loss,
                       device=args.device, run_dir=args.run, epochs=args.epochs, dry_run=args.dry_run,
                       min_states=args.min_states,
                       verbose="DEBUG" if args.verbose else "WARNING" if args.quiet else None)
    data = report.to_dict()
    if args.report:
        from edge_bridge.fileio import atomic_write_text

        atomic_write_text(args.report, json.dumps(data, indent=2) + "\n")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        w = report.windows
        print(f"{w['paired']} paired windows ({w['fit']} fit, {w['validate']} validate, {w['purged']} "
              f"dropped between them; {sum(report.skipped.values())} failed the quality gate)",
              file=sys.stderr)
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
        print(report.verdict)
    return 0
