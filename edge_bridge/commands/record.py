"""Record a BrainFlow board to disk, durably, for calibration data.

Writes a BrainFlow CSV and its JSON sidecar (FILE.json: board, rate, which row is which channel). Samples are
appended in chunks, each flushed and fsynced, so a crash, a killed process or a power loss keeps everything
up to the last chunk. Ctrl-C stops cleanly and keeps the file. The result opens with `edge-bridge inspect`.

Examples:
  edge-bridge record --board synthetic --seconds 60 -o calib/S01.csv
  edge-bridge record --board CYTON_BOARD --param serial_port=/dev/ttyUSB0 --profile chest-ecg.json \\
      --seconds 300 -o calib/S01.csv
  edge-bridge record --board PLAYBACK_FILE_BOARD --param file=demo.csv --param master_board=SYNTHETIC_BOARD \\
      --seconds 10 -o copy.csv
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from edge_bridge.errors import EdgeBridgeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", required=True,
                   help="BrainFlow board name or id: synthetic, SYNTHETIC_BOARD, CYTON_BOARD, "
                        "PLAYBACK_FILE_BOARD")
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="BrainFlowInputParams field, repeatable: serial_port=/dev/ttyUSB0, mac_address=..., "
                        "ip_address=..., ip_port=..., file=..., master_board=..., timeout=...")
    p.add_argument("--profile", help="device profile JSON naming the rows to record as which channels")
    p.add_argument("--seconds", type=float, required=True, help="length of the recording in seconds")
    p.add_argument("-o", "--output", required=True, help="output .csv (the sidecar goes to OUTPUT.json)")
    p.add_argument("--subject", default="", help="subject id stored in the sidecar")
    p.add_argument("--chunk-seconds", type=float, default=0.5,
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


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from firmware_interface import BrainFlowSource, FirmwareError, record, set_brainflow_logging
    from firmware_interface._brainflow import BoardIds, resolve_board

    set_brainflow_logging(bool(args.verbose))
    params = parse_params(args.param)
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
        if resolve_board(args.board) == BoardIds.PLAYBACK_FILE_BOARD.value:
            if "file" not in params:
                raise EdgeBridgeError("the playback board needs --param file=PATH (a BrainFlow CSV)")
            file, master = params.pop("file"), params.pop("master_board", None)
            if params:
                raise EdgeBridgeError(f"the playback board takes only file= and master_board=, "
                                      f"got {sorted(params)}")
            source = BrainFlowSource.playback(file, master_board=master, profile=args.profile)
        else:
            source = BrainFlowSource(args.board, params, profile=args.profile)
        print(f"recording {source.name} at {source.sampling_rate:g} Hz, {len(source.channels)} channel(s), "
              f"{args.seconds:g} s -> {args.output}", file=sys.stderr)
        began = time.monotonic()
        result = record(source, args.output, args.seconds, subject=args.subject,
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
