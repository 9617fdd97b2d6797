"""Stream a recording as edge-bridge frames over TCP on 127.0.0.1, in real time.

A stand-in for a custom-firmware wearable, to try the live loop and the frame decoder without hardware.
Connect with the source spec tcp:127.0.0.1:PORT. Options damage the stream on purpose (bit flips, dropped
frames, garbage) to watch the decoder resynchronise and count the losses.

Examples:
  edge-bridge emulate --recording demo-out/data/S01.edf --port 5555 --channels PPG
  edge-bridge emulate --recording S01.edf --port 5555 --modality ppg --bit-flip 0.01 --drop 0.01 --loop
  edge-bridge emulate --recording S01.edf --port 5555 --channels PPG --duration 60
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from edge_bridge.commands._options import (
    fraction,
    input_file,
    non_negative_int,
    old_spellings,
    output_file,
    port,
    positive,
    positive_int,
)
from edge_bridge.errors import EdgeBridgeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recording", required=True,
                   help="recording file (EDF/EDF+, or any format inspect reads)")
    p.add_argument("--port", type=port, required=True, help="TCP port on 127.0.0.1 (0 picks a free one)")
    p.add_argument("--channels",
                   help="which channels to send: a channel map as the other verbs take (ppg=Wrist), or "
                        "comma-separated channel names (default: all at the first channel's rate)")
    p.add_argument("--modality", help="only channels of this modality (ecg, ppg, eeg, ...)")
    p.add_argument("--format", choices=["int16", "int24"], default="int16",
                   help="sample format of the frames")
    p.add_argument("--samples-per-frame", type=positive_int, default=10,
                   help="samples per channel in each frame")
    p.add_argument("--loop", action="store_true", help="start over at the end of the recording")
    p.add_argument("--speed", type=positive, default=1.0,
                   help="play this many times faster than real time (default 1; e.g. 10 to try a 60 s window "
                        "in 6 s: the receiver's windows are the same at any speed)")
    p.add_argument("--duration", "--seconds", type=positive, metavar="S",
                   action=old_spellings("--duration", "--seconds"), help="stop after S seconds (> 0)")
    p.add_argument("--bit-flip", type=fraction, default=0.0,
                   help="probability that a frame gets flipped bits, in [0, 1]")
    p.add_argument("--drop", type=fraction, default=0.0,
                   help="probability that a frame is not sent, in [0, 1]")
    p.add_argument("--garbage", type=fraction, default=0.0,
                   help="probability of random bytes before a frame, in [0, 1]")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed for the damage")
    p.add_argument("--profile-out", help="write a device profile (names, units) for the receiving side here")


def preflight(args: argparse.Namespace) -> None:
    input_file(args.recording, "--recording")
    output_file(args.profile_out, "--profile-out")


def _read(path: str) -> Any:
    from edge_bridge import recordings

    reader = getattr(recordings, "read_recording", None)
    if reader is None or Path(path).suffix.lower() in (".edf", ".rec", ".bdf"):
        reader = recordings.read_edf
    return reader(path)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from edge_bridge.commands.convert import pick_channels
    from edge_bridge.recordings.dataset import read_with_channels
    from firmware_interface import Corruption, FrameEmulator

    if args.channels and "=" in args.channels:  # a channel map, as every verb's --channels takes
        rec, args.channels = read_with_channels(args.recording, args.channels)
    else:
        rec = _read(args.recording)
    chans = pick_channels(rec, str(args.recording), names=args.channels, modality=args.modality,
                          into="a frame stream", verb="send")
    n = min(len(c.data) for c in chans)
    data = np.stack([c.data[:n] for c in chans])
    rate = chans[0].rate
    try:
        emu = FrameEmulator(data, rate, modalities=[c.modality for c in chans], sample_format=args.format,
                            samples_per_frame=args.samples_per_frame, port=args.port, loop=args.loop,
                            speed=args.speed,
                            corruption=Corruption(args.bit_flip, args.drop, args.garbage, args.seed),
                            wait_for_client=True)
    except ValueError as exc:
        raise EdgeBridgeError(str(exc)) from exc
    if args.profile_out:
        profile = {"board": "frames", "sampling_rate": rate,
                   "channels": [{"name": c.name, "row": i, "modality": c.modality, "unit": c.unit}
                                for i, c in enumerate(chans)]}
        Path(args.profile_out).write_text(json.dumps(profile, indent=2) + "\n", encoding="utf-8")
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    began = time.monotonic()
    try:
        emu.start()
        print(f"emulating {len(chans)} channel(s) ({', '.join(c.name for c in chans)}) at {rate:g} Hz, "
              f"{n / rate:.1f} s{' looped' if args.loop else ''}, on 127.0.0.1:{emu.port}; connect with "
              f"tcp:127.0.0.1:{emu.port}", file=sys.stderr, flush=True)
        while not emu.done.is_set():
            if args.duration is not None and time.monotonic() - began >= args.duration:
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise EdgeBridgeError(str(exc)) from exc
    finally:
        emu.stop()
        signal.signal(signal.SIGTERM, old_term)
    log = emu.log
    print(f"sent {len(log.sent)} frame(s) intact, {len(log.corrupted)} damaged, {len(log.dropped)} "
          f"dropped, {len(log.unsent)} with no client, {log.garbage_bytes} garbage byte(s), "
          f"{log.connections} client(s)")
    return 0
