"""Record a BrainFlow board to disk, durably, for calibration data.

Writes a BrainFlow CSV and its JSON sidecar (FILE.json: board, rate, which row is which channel). Samples are
appended in chunks, each flushed and fsynced, so a crash, a killed process or a power loss keeps everything
up to the last chunk. Ctrl-C stops cleanly and keeps the file. The result opens with `edge-bridge inspect`.

Examples:
  edge-bridge record --board synthetic --duration 60 -o calib/S01.csv
  edge-bridge record --board CYTON_BOARD,serial_port=/dev/ttyUSB0 --profile chest-ecg.json \\
      --duration 300 -o calib/S01.csv
  edge-bridge record --board PLAYBACK_FILE_BOARD,file=demo.csv,master_board=SYNTHETIC_BOARD \\
      --duration 10 -o copy.csv

Old spellings (--seconds, --output, --param K=V) still work for one release, with a warning.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from edge_bridge.commands._options import (
    OptionError,
    deprecated,
    input_file,
    old_spellings,
    output_file,
    parse_board,
    positive,
)
from edge_bridge.errors import EdgeBridgeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", required=True, metavar="NAME[,k=v...]",
                   help="BrainFlow board name or id and its BrainFlowInputParams fields: synthetic, "
                        "CYTON_BOARD,serial_port=/dev/ttyUSB0, PLAYBACK_FILE_BOARD,file=X.csv (fields: "
                        "serial_port, mac_address, ip_address, ip_port, file, master_board, timeout, ...)")
    p.add_argument("--param", action=deprecated(argparse._AppendAction, "--board NAME,K=V"), default=[],
                   metavar="K=V", help=argparse.SUPPRESS)
    p.add_argument("--profile", help="device profile JSON naming the rows to record as which channels")
    p.add_argument("--duration", "--seconds", type=positive, required=True, metavar="S",
                   action=old_spellings("--duration", "--seconds"),
                   help="length of the recording in seconds (> 0)")
    p.add_argument("-o", "--out", "--output", dest="output", required=True, metavar="FILE",
                   action=old_spellings("-o/--out", "--output"),
                   help="output .csv (the sidecar goes to FILE.json)")
    p.add_argument("--subject", default="", help="subject id stored in the sidecar")
    p.add_argument("--chunk-seconds", type=positive, default=0.5,
                   help="how often a chunk is written and fsynced (at most this much is lost on a crash)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def parse_params(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise EdgeBridgeError(f"--param must look like key=value (e.g. serial_port=/dev/ttyUSB0), "
                                  f"got {item!r}")
        out[key.strip()] = value.strip()
    return out


def preflight(args: argparse.Namespace) -> None:
    """Before the board opens: the output can be written (and is new unless --overwrite), inputs exist."""
    output_file(args.output, "--out", create_parents=True)  # record makes missing folders
    output_file(args.output + ".json", "--out (its sidecar)", create_parents=True)
    if Path(args.output).exists() and not args.overwrite:
        raise OptionError(f"--out {args.output!r} exists; choose another file or pass --overwrite")
    input_file(args.profile, "--profile")
    _, params = parse_board(args.board)
    params |= parse_params(args.param)
    if "file" in params:
        input_file(params["file"], "--board ...,file=")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from firmware_interface import BrainFlowSource, FirmwareError, record, set_brainflow_logging
    from firmware_interface._brainflow import BoardIds, resolve_board

    set_brainflow_logging(bool(args.verbose))
    board, params = parse_board(args.board)
    params |= parse_params(args.param)
    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(p: Any) -> None:
        if p.seconds - last[0] < (1.0 if tty else 5.0):
            return
        last[0] = p.seconds
        print(f"  {p.seconds:6.1f} s  {p.samples:>9} samples  {p.gaps} gap(s)  {p.lost_samples} lost  "
              f"{p.reconnects} reconnect(s)", end="\r" if tty else "\n", file=sys.stderr, flush=True)

    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` and systemd stop like Ctrl-C
    try:
        if resolve_board(board) == BoardIds.PLAYBACK_FILE_BOARD.value:
            if "file" not in params:
                raise EdgeBridgeError("the playback board needs a file: --board "
                                      "PLAYBACK_FILE_BOARD,file=PATH (a BrainFlow CSV)")
            file, master = params.pop("file"), params.pop("master_board", None)
            if params:
                raise EdgeBridgeError(f"the playback board takes only file= and master_board=, "
                                      f"got {sorted(params)}")
            source = BrainFlowSource.playback(file, master_board=master, profile=args.profile)
        else:
            source = BrainFlowSource(board, params, profile=args.profile)
        print(f"recording {source.name} at {source.sampling_rate:g} Hz, {len(source.channels)} channel(s), "
              f"{args.duration:g} s -> {args.output}", file=sys.stderr)
        began = time.monotonic()
        result = record(source, args.output, args.duration, subject=args.subject,
                        chunk_seconds=args.chunk_seconds, overwrite=args.overwrite, progress=progress)
    except (FirmwareError, FileExistsError) as exc:
        raise EdgeBridgeError(str(exc)) from exc
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if tty:
        print(file=sys.stderr)
    state = "interrupted" if result.interrupted else "done"
    print(f"{state}: {result.samples} samples ({result.seconds:.1f} s at {result.sampling_rate:g} Hz) in "
          f"{time.monotonic() - began:.1f} s; {result.gaps} gap(s), {result.lost_samples} sample(s) lost, "
          f"{result.reconnects} reconnect(s)")
    print(f"wrote {result.path} and {result.sidecar}")
    return 130 if result.interrupted else 0
