"""Refit a bundle's bridge on site from a few minutes of paired recordings, and swap it in if it is better.

A new user or a new sensor shifts the target signal (PPG morphology, gain, pulse-transit time). This refits
only the bridge, on paired windows cut with the bundle's own preprocessing: target_front on the target
signal gives the bridge inputs, source_front on the source signal the tokens to reproduce. Closed form
(reduced-rank ridge regression, numpy, well under a second); with torch installed, also gradient steps on
the paper's objective through the source model (its weights ship in the bundle; --run for one exported
with --no-source-weights). The new bridge is validated against the current one out of fold (each of
--folds blocks of windows by refits on the rest, so every state recorded is validated), and published
(bridges/vNNNN.onnx + .safetensors, then the manifest's pointer, atomically) only if it beats it by a
margin of balanced agreement with the source model (each class it decides weighs alike, so a bridge
that decides the majority state everywhere wins nothing). Otherwise the bundle is unchanged and the output
says why. A running `edge-bridge deploy` picks
the new bridge up between windows.

Paired data: one recording with both modalities, or one recording per modality with overlapping time
stamps (they are aligned and cropped to the shared span). Or record them now with --record --duration S
--board NAME[,k=v...] (the old spelling --record SECONDS still works, with a warning, for one release).

A fused bundle (one bridge fed by several target modalities, e.g. wrist PPG + EDA) needs every modality
at the same time: one recording with all of them, or one file per sensor or modality, aligned by start
time. They are windowed in lockstep and a window is used only when every modality passes its quality gate;
each target front's features are concatenated and the bridge's input maps A_k refit together. --channels
maps each modality's channel (ecg=..., ppg=..., eda=...) in every file.

Examples:
  edge-bridge calibrate --bundle stress.bundle --paired calib/S01.csv
  edge-bridge calibrate --bundle stress.bundle --paired chest.edf wrist.csv --method closed-form --json
  edge-bridge calibrate --bundle stress-eda.bundle --paired chest.edf wrist.edf \\
      --channels ecg=Chest,ppg=Wrist,eda=GSR                          # a fused (PPG + EDA) bundle
  edge-bridge calibrate --bundle stress.bundle --record --duration 300 \\
      --board CYTON_BOARD,serial_port=/dev/ttyUSB0 --profile chest-wrist.json
  edge-bridge calibrate --bundle stress.bundle --rollback           # the version before the current one
  edge-bridge calibrate --bundle stress.bundle --rollback 1         # a given version
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from edge_bridge.commands._options import (
    OptionError,
    _warn_deprecated,
    bundle_dir,
    fraction,
    input_dir,
    input_file,
    open_fraction,
    output_dir,
    output_file,
    parse_board,
    positive,
    positive_int,
)
from edge_bridge.commands.deploy import DEVICES
from edge_bridge.errors import EdgeBridgeError


class _Record(argparse.Action):
    """``--record`` (a switch; the length is --duration), or the old ``--record SECONDS`` with a warning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        namespace.record = True
        if values is not True:  # a bare --record gives const=True (not None: argparse counts it as given)
            _warn_deprecated(f"--record {values:g}", f"--record --duration {values:g}")
            namespace.duration = values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle directory (it must include source_front)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--paired", nargs="+", metavar="REC",
                      help="paired recordings (EDF+, BrainFlow CSV, mixed: one file with both modalities, or "
                           "one per modality with overlapping time stamps); a file given twice is refused")
    what.add_argument("--record", nargs="?", type=positive, action=_Record, const=True, default=None,
                      metavar="SECONDS",
                      help="record paired data now, for --duration seconds (needs --board)")
    what.add_argument("--rollback", nargs="?", type=positive_int, const=0, metavar="VERSION",
                      help="make an earlier bridge current again (default: the one before the current)")
    p.add_argument("--duration", type=positive, metavar="S", help="with --record: seconds to record (> 0)")
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
    p.add_argument("--epochs", type=positive_int, default=30,
                   help="most gradient epochs; 2, 5, 10, 20 and this many are validated and the best length "
                        "kept (default 30)")
    p.add_argument("--validation", choices=("folds", "holdout"), default="folds",
                   help="folds: every window validated once, by refits on the other --folds blocks (windows "
                        "sharing a sample with the block left out), then the winner refitted on all "
                        "(default; a few minutes' tail often holds one state); holdout: the end of each "
                        "recording, publishing exactly what was validated")
    p.add_argument("--folds", type=positive_int, default=4, help="blocks for --validation folds (default 4)")
    p.add_argument("--holdout", type=open_fraction, default=0.2,
                   help="fraction at the end of each recording kept for validation with --validation "
                        "holdout (or when there are too few windows for folds), in (0, 1) (default 0.2)")
    p.add_argument("--margin-agreement", type=fraction, default=0.02,
                   help="accept if agreement with the source model (balanced over the classes it decides, "
                        "when there are two or more) rises by at least this (default 0.02)")
    p.add_argument("--margin-loss", type=fraction, default=0.01,
                   help="or if agreement is no lower and the alignment loss falls by this fraction "
                        "(default 0.01)")
    p.add_argument("--min-states", type=positive_int, default=2,
                   help="keep the current bridge unless the source model sees at least this many of its "
                        "classes in the paired windows, and accept on alignment loss alone (at equal "
                        "agreement) only if the validation windows show that many (default 2: minutes at "
                        "rest alone cannot show that a refit still tells states apart)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="engine device for the fronts (default cpu)")
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


def preflight(args: argparse.Namespace) -> None:
    """Before recording or loading an engine: the bundle can be written, inputs exist, outputs can be made."""
    bundle_dir(args.bundle)
    if args.rollback is not None or not args.dry_run:
        for folder in (Path(args.bundle), Path(args.bundle) / "bridges"):
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                raise OptionError(f"--bundle {args.bundle!r}: {str(folder)!r} is not writable, so a new "
                                  "bridge cannot be published; fix its permissions (or use --dry-run)")
    output_file(args.report, "--report")
    input_dir(args.run, "--run")
    input_file(args.profile, "--profile")
    if args.record:
        if args.duration is None:
            raise OptionError("--record needs --duration S (seconds of paired data to record, e.g. 300)")
        if not args.board:
            raise OptionError("--record needs --board NAME[,k=v...] (e.g. --board synthetic)")
        parse_board(args.board)
        output_dir(args.record_dir, "--record-dir")
    elif args.duration is not None:
        raise OptionError("--duration goes with --record (the seconds to record)")
    if args.paired:
        seen: dict[str, str] = {}
        for rec in args.paired:
            input_file(rec, "--paired")
            key = os.path.realpath(rec)
            if key in seen:
                raise OptionError(f"--paired names {seen[key]!r} and {rec!r}, the same file; give one "
                                  "recording with both modalities, or one per modality")
            seen[key] = rec
    from edge_bridge.bundle import Bundle

    Bundle.load(args.bundle, verify=False)  # last: a bad manifest is refused before the bundle is locked


def run(args: argparse.Namespace) -> int:
    from calibrate.core import calibrate, rollback

    if args.rollback is not None:
        before, now = rollback(args.bundle, args.rollback or None)
        print(f"{args.bundle}: bridge v{now:04d} is current (was v{before:04d})")
        return 0
    if args.record:
        if not args.board:
            raise EdgeBridgeError("--record needs --board NAME[,k=v...] (e.g. --board synthetic)")
        from calibrate.record import record_paired

        recordings = [record_paired(args.bundle, args.board, args.duration, profile=args.profile,
                                    out_dir=args.record_dir)]
    else:
        if args.board or args.profile:
            raise EdgeBridgeError("--board/--profile go with --record, not with --paired")
        recordings = _paired(args.paired, args.channels)
    report = calibrate(args.bundle, recordings, method=args.method, holdout=args.holdout,
                       margin_agreement=args.margin_agreement, margin_loss=args.margin_loss,
                       device=args.device, run_dir=args.run, epochs=args.epochs, dry_run=args.dry_run,
                       min_states=args.min_states, validation=args.validation, folds=args.folds,
                       verbose="DEBUG" if args.verbose else "WARNING" if args.quiet else None)
    data = report.to_dict()
    if args.report:
        from edge_bridge.fileio import atomic_write_text

        atomic_write_text(args.report, json.dumps(data, indent=2) + "\n")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        w = report.windows
        how = (f"all validated out of fold in {w['folds']} blocks, {w['purged']} fit windows dropped beside "
               f"them; the winner refitted on {w['fit']}" if report.validation == "folds" else
               f"{w['fit']} fit, {w['validate']} validate, {w['purged']} dropped between them")
        print(f"{w['paired']} paired windows ({how}; {sum(report.skipped.values())} failed the quality gate)",
              file=sys.stderr)
        rates = ", ".join(f"{role} {'/'.join(f'{r:g}' for r in rs)} Hz"
                          for role, rs in report.input_rates_hz.items())
        if rates or report.quality_flags:
            flags = "; ".join(f"{k} x{v}" for k, v in sorted(report.quality_flags.items()))
            print(f"input: {rates}" + (f"; quality flags: {flags}" if flags else ""), file=sys.stderr)
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
        print(report.verdict)
    return 0
