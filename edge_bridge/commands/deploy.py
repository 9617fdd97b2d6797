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

Signatures: with --trust (or once $XDG_CONFIG_HOME/edge-bridge/trust exists; the demo trusts its own keys
in the user cache) deploy refuses an unsigned bundle, one signed by an unknown key, a device key's signature
on a base part, any file that differs from what the signatures cover, and a bundle older than the highest
version this device ran (--allow-unsigned and --allow-downgrade run them on purpose, said in the summary).

Examples:
  edge-bridge deploy                                   # the demo: simulated bundle and playback
  edge-bridge deploy --bundle stress.bundle --source playback:S01.csv -o predictions.jsonl
  edge-bridge deploy --device jetson --bundle b/ --source board:CYTON_BOARD,serial_port=/dev/ttyUSB0
  edge-bridge deploy --bundle stress.bundle --source tcp:127.0.0.1:5555 --duration 60 --smoothing ema
  edge-bridge deploy --bundle stress.bundle --source playback:bed1.csv --source tcp:10.0.0.7:5555
  edge-bridge deploy --bundle stress.bundle --sources ward.json      # {"streams": [{"id", "source"}, ...]}
  edge-bridge deploy --bundle fused.bundle --source playback:wrist_ppg_eda.csv     # fused PPG + EDA bundle
  edge-bridge deploy --bundle fused.bundle --source playback:ppg64.csv --modality-source eda=playback:eda4.csv

A fused bundle (several target modalities feeding one bridge, e.g. task stress+eda: wrist PPG + EDA) finds
every modality among the source's channels (one board carrying PPG and EDA), or takes a modality from its own
source at its own rate (--modality-source KEY=SPEC). Windows of all modalities are cut in lockstep over the
same span, each through its own preprocessing, and predicted in one call; a window is predicted only when
every modality's window passes the quality gate, otherwise it is skipped with the modality named
(--missing-modality fallback would use the modalities present, but only where the bundle has a bridge for
them: bundles carry one fused bridge today, so it says so at start and skips). Each JSON line names the
modalities its prediction used. Drift is scored on the main target's features; --auto-calibrate is refused.

Several sources run in one process on one set of engines: each hop, the windows of every stream go through
the model in one batched call, and every JSON line (and LSL outlet) names its stream; a stream that stalls,
reconnects, fails or fails the quality gate changes only its own windows.

A source at another rate than the bundle's spec is resampled to the model's rate (polyphase, anti-aliased)
as long as it is above twice the band's upper edge; a slower one is refused, naming the minimum. The rate
seen is logged and written to the summary (--adapt-rate, which used to be needed for this, is a no-op).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge_bridge.commands._options import (
    bundle_dir,
    deprecated,
    fraction,
    input_file,
    open_fraction,
    output_dir,
    output_file,
    positive,
    positive_int,
)

DEVICES = ["cpu", "cuda", "jetson"]  # the one list of engine devices (deploy, calibrate, export's subset)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where the model runs (default cpu)")
    p.add_argument("--bundle", type=Path,
                   help="bundle directory (default: the demo bundle, built on first use)")
    p.add_argument("--source", metavar="SPEC", action="append",
                   help="playback:FILE | synthetic | board:NAME[,k=v...] | tcp:HOST:PORT | serial:PORT "
                        "(default: a simulated recording through BrainFlow's playback board); repeat it to "
                        "serve several wearables in one process (stream ids 0, 1, ...)")
    p.add_argument("--modality-source", metavar="KEY=SPEC", action="append", default=None,
                   help="a fused bundle's further modality from its own source (at its own rate), e.g. "
                        "--modality-source eda=playback:eda4.csv; repeatable, one --source only (in a "
                        '--sources file: "modality_sources": {KEY: SPEC} per stream)')
    p.add_argument("--missing-modality", choices=["skip", "fallback"], default="skip",
                   help="a fused bundle's window where a modality is missing or fails the quality gate: "
                        "skip it (default), or fall back to the modalities present where the bundle has a "
                        "bridge for them (today's bundles carry one fused bridge: said at start, then skip)")
    p.add_argument("--sources", type=Path, metavar="FILE",
                   help='JSON file naming each stream: {"streams": [{"id": "bed1", "source": SPEC, '
                        '"labels": FILE (optional)}, ...]}; relative paths are from the file\'s folder')
    p.add_argument("--duration", type=positive, metavar="S", help="stop after S seconds (> 0)")
    p.add_argument("-o", "--out", type=Path, metavar="FILE", help="JSON lines to FILE instead of stdout")
    p.add_argument("--lsl", action="store_true", help="also publish probabilities as an LSL stream (pylsl)")
    p.add_argument("--smoothing", choices=["none", "ema", "majority"], default="none",
                   help="smooth probabilities over windows (default none)")
    p.add_argument("--alpha", type=open_fraction, default=0.5,
                   help="EMA weight of the newest window, in (0, 1) (default 0.5)")
    p.add_argument("--majority", type=positive_int, default=5,
                   help="windows in the majority vote (default 5)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="ONNX Runtime threads per part (default 1)")
    p.add_argument("--labels", type=Path, metavar="FILE",
                   help="label sidecar {annotations: [{onset, duration, label}]} to score predictions; found "
                        "automatically next to a playback file as FILE.labels.json")
    p.add_argument("--adapt-rate", action=deprecated(argparse._StoreTrueAction,
                                                     "nothing: any source rate above the band's minimum is "
                                                     "now resampled by default"),
                   help=argparse.SUPPRESS)
    p.add_argument("--quality", choices=["physiology", "basic"], default=None,
                   help="the quality gate: physiology (default; broken signal, beats that do not repeat "
                        "their shape, motion on an accelerometer) or basic (broken signal only: NaN, flat, "
                        "clipped, out of range); --source synthetic defaults to basic, as BrainFlow's "
                        "synthetic board's signals are not physiological, e.g. --source synthetic "
                        "--quality basic")
    p.add_argument("--no-watch", action="store_true", help="do not pick up newly published bridges")
    p.add_argument("--demo-minutes", type=positive, default=5.0,
                   help="length of the demo recording when --source is not given (default 5)")
    p.add_argument("--self-test-only", action="store_true",
                   help="verify, build the engines (cached), self-test, then exit without streaming")
    p.add_argument("--summary-json", type=Path, metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--trust", action="append", metavar="PUBKEY_OR_DIR", default=None,
                   help="run only bundles signed by these keys: a NAME.pub (publisher) or a trust directory "
                        "(keys + policy.json); repeatable (default: $XDG_CONFIG_HOME/edge-bridge/trust once "
                        "it exists)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="run an unsigned bundle although keys are trusted (said in the summary)")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="run a signed bundle older than one this device ran (said in the summary)")
    drift = p.add_argument_group("drift and recalibration")
    drift.add_argument("--drift-false-alarms-per-day", type=positive, default=1.0, metavar="N",
                       help="drift alarm budget: the thresholds on the two drift scores (mean target "
                            "features of the last minute of gate-passing windows vs the bundle's reference, "
                            "and vs the stream's own first minute) are each set so an unshifted user raises "
                            "about N false alarms a day (default 1), e.g. --drift-false-alarms-per-day 0.5")
    drift.add_argument("--no-drift", action="store_true", help="do not score drift")
    drift.add_argument("--no-paired-watch", action="store_true",
                       help="do not run the source model on a source that also carries the source modality "
                            "(the paired watch reports how often the composite agrees with it)")
    drift.add_argument("--auto-calibrate", action="store_true",
                       help="on drift, with the source modality on the stream: record paired minutes, run "
                            "calibrate in a low-priority child process, hot-swap the validated bridge and "
                            "roll back if the paired agreement gets worse, e.g. --source playback:pair.csv "
                            "--auto-calibrate --auto-calibrate-minutes 3")
    drift.add_argument("--auto-calibrate-minutes", type=positive, default=3.0, metavar="M",
                       help="paired minutes to record before calibrating (default 3)")
    drift.add_argument("--auto-calibrate-states", type=positive_int, default=2, metavar="N",
                       help="record on past the minutes until the source model has decided N classes "
                            "(default 2; calibrate cannot judge a refit on one state), for at most 3 times "
                            "the minutes")
    drift.add_argument("--auto-calibrate-dir", type=Path, metavar="DIR",
                       help="where recordings and calibrate logs go (default BUNDLE.autocal/ beside it)")
    drift.add_argument("--auto-calibrate-margin", type=fraction, default=0.0, metavar="F",
                       help="keep the new bridge only if its paired agreement beats the old one's by F "
                            "(default 0: not worse)")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def preflight(args: argparse.Namespace) -> None:
    """Paths and the source spec, before the bundle loads or a stream starts (seconds, not minutes)."""
    from firmware_interface import parse_spec

    if args.bundle is not None:
        bundle_dir(args.bundle)
    for t in args.trust or []:
        if not Path(t).exists():
            from edge_bridge.commands._options import OptionError

            raise OptionError(f"--trust {t!r} does not exist; give a public key file (NAME.pub) or a trust "
                              "directory")
    output_file(args.out, "--out")
    output_file(args.summary_json, "--summary-json")
    input_file(args.labels, "--labels")
    for stream in stream_specs(args):
        kind, target, _ = parse_spec(stream.spec)
        if kind == "playback":
            input_file(target, f"{stream.where} playback:")
        for key, extra in stream.modality_sources.items():
            kind, target, _ = parse_spec(extra)
            if kind == "playback":
                input_file(target, f"{stream.where} --modality-source {key}=playback:")
        input_file(stream.labels, f"{stream.where} labels")
    if args.out is not None and args.summary_json is not None and \
            Path(args.out).absolute() == Path(args.summary_json).absolute():
        from edge_bridge.commands._options import OptionError

        raise OptionError("--out and --summary-json name the same file; give two different files")
    if getattr(args, "auto_calibrate", False):
        from edge_bridge.commands._options import OptionError

        if args.no_watch:
            raise OptionError("--auto-calibrate swaps the refit bridge in through the bridge watcher; leave "
                              "out --no-watch")
        if args.no_drift:
            raise OptionError("--auto-calibrate starts on a drift event; leave out --no-drift")
        if len(stream_specs(args)) > 1:
            raise OptionError("--auto-calibrate refits the one bridge all streams share, so it serves a "
                              "single --source")
        output_dir(args.auto_calibrate_dir, "--auto-calibrate-dir")


class StreamSpec:
    """One stream the user asked for: its id, source spec, labels and where it was given (for errors)."""

    def __init__(self, id: str, spec: str, labels: Path | None, where: str,
                 modality_sources: dict[str, str] | None = None) -> None:
        self.id, self.spec, self.labels, self.where = id, spec, labels, where
        self.modality_sources = dict(modality_sources or {})  # fused: key -> its own source spec


def stream_specs(args: argparse.Namespace) -> list[StreamSpec]:
    """The streams of ``--source`` (repeatable) and ``--sources FILE``; empty for the demo.

    Raises
    ------
    OptionError
        A sources file that cannot be read or has the wrong shape, repeated ids, or ``--labels`` with
        several streams (each stream names its own labels in the sources file).
    """
    from edge_bridge.commands._options import OptionError

    given = list(getattr(args, "source", None) or [])
    out = [StreamSpec(str(k), spec, None, f"--source {spec}") for k, spec in enumerate(given)]
    path = getattr(args, "sources", None)
    if path is not None:
        input_file(path, "--sources")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise OptionError(f"--sources {path}: not readable JSON ({exc}); expected "
                              '{"streams": [{"id": "bed1", "source": "playback:FILE"}, ...]}') from None
        items = data.get("streams") if isinstance(data, dict) else data
        if not isinstance(items, list) or not items:
            raise OptionError(f"--sources {path}: expected a non-empty list under \"streams\", each "
                              '{"id": NAME, "source": SPEC, "labels": FILE (optional)}')
        base = Path(path).parent
        for k, item in enumerate(items):
            if not (isinstance(item, dict) and isinstance(item.get("source"), str) and item["source"].strip()
                    and isinstance(item.get("id", ""), str | int)
                    and isinstance(item.get("labels", ""), str)):
                shown = repr(item)[:200]
                raise OptionError(f"--sources {path}: stream {k + 1} must be an object with a \"source\" "
                                  f'spec string and optional "id" and "labels" strings, got {shown}')
            sid = str(item.get("id", len(out)))
            spec = _relative_spec(item["source"].strip(), base)
            labels = Path(item["labels"]) if item.get("labels") else None
            if labels is not None and not labels.is_absolute():
                labels = base / labels
            extra = item.get("modality_sources", {})
            if not (isinstance(extra, dict) and all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                    for k, v in extra.items())):
                raise OptionError(f"--sources {path}: stream {sid!r}: \"modality_sources\" must map a fused "
                                  f'modality to a source spec, e.g. {{"eda": "playback:eda4.csv"}}, got '
                                  f"{repr(extra)[:200]}")
            out.append(StreamSpec(sid, spec, labels, f"--sources {path}: stream {sid!r}",
                                  {k: _relative_spec(v.strip(), base) for k, v in extra.items()}))
    ids = [st.id for st in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise OptionError(f"stream id(s) {dup} given twice ({path or '--source'}); give every stream its "
                          "own id")
    if len(out) > 1 and getattr(args, "labels", None) is not None:
        raise OptionError("--labels scores a single source; with several streams give each its labels in "
                          "--sources FILE (\"labels\": FILE per stream)")
    if len(out) == 1 and getattr(args, "labels", None) is not None:
        out[0].labels = args.labels
    given_extra = getattr(args, "modality_source", None) or []
    if given_extra:
        if len(given) != 1 or path is not None:
            raise OptionError("--modality-source names a further modality of the one --source; with several "
                              'streams give each its own in --sources FILE ("modality_sources": {KEY: SPEC})')
        for item in given_extra:
            key, sep, spec = item.partition("=")
            if not sep or not key.strip() or not spec.strip():
                raise OptionError(f"--modality-source {item!r}: expected KEY=SPEC, e.g. "
                                  "--modality-source eda=playback:eda4.csv")
            if key.strip() in out[0].modality_sources:
                raise OptionError(f"--modality-source gives {key.strip()!r} twice; give each modality once")
            out[0].modality_sources[key.strip()] = spec.strip()
    return out


def _relative_spec(spec: str, base: Path) -> str:
    """A playback file in a sources file is relative to that file's folder, as a reader expects."""
    kind, _, rest = spec.partition(":")
    if kind.strip().lower() != "playback" or not rest:
        return spec
    target, sep, opts = rest.partition(",")
    if Path(target).is_absolute():
        return spec
    return f"{kind}:{base / target}{sep}{opts}"


class _BufferReport:
    """Say on stderr how full the first window's buffer is, every few seconds, until the first window.

    Why: the first prediction needs a whole window of signal (30-60 s); silence that long looks like a hang.
    Reads the live loop's counters from its own thread (ints: a stale read is harmless).
    """

    def __init__(self, pipe: Any, window_s: float, every: float = 5.0) -> None:
        self.pipe, self.window_s, self.every = pipe, window_s, every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="buffer-report", daemon=True)

    def __enter__(self) -> _BufferReport:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._done.wait(self.every):
            s = self.pipe.summary
            if s.windows > 0:
                return
            rate = float(self.pipe.spec.input_rate) * len(getattr(self.pipe, "streams", [None]))
            have = min(s.samples / rate, self.window_s) if rate > 0 else 0.0
            _say(f"  buffering: {have:4.1f} / {self.window_s:g} s of signal for the first window")


def run(args: argparse.Namespace) -> int:
    from deploy.live import LabelTrack, LiveConfig, LiveError, LivePipeline, StreamInput
    from deploy.runtime import CompositeRunner
    from deploy.sinks import make_sinks
    from edge_bridge.bundle import Bundle
    from edge_bridge.errors import EdgeBridgeError

    # 1. the bundle
    if args.bundle is None:
        from edge_bridge.commands._demo_bundle import ensure_demo_bundle  # may build with torch, first use

        root = ensure_demo_bundle(report=_say, progress=not args.quiet)
    else:
        root = args.bundle
    t0 = time.perf_counter()
    bundle = Bundle.load(root)
    m = bundle.manifest
    fused = bundle.extra_keys
    if fused and args.auto_calibrate:  # refused before any engine loads
        raise LiveError(f"{bundle.root}: --auto-calibrate cannot refit a fused bridge yet (targets "
                        f"{' + '.join([m.target.modality, *fused])}: calibrate refits one input map); run it "
                        "without --auto-calibrate")
    modalities = " + ".join([m.target.modality, *fused])
    _say(f"bundle {bundle.root}: task {m.task}, {modalities} -> {m.source.modality}"
         f"{' (fused bridge)' if fused else ''}, classes "
         f"{', '.join(m.classes)}, bridge v{m.current_bridge:04d}; verified in "
         f"{1e3 * (time.perf_counter() - t0):.0f} ms")
    from edge_bridge.signing import deploy_trust

    t0 = time.perf_counter()
    trust = deploy_trust(bundle.root, args.trust, demo=args.bundle is None,
                         allow_unsigned=args.allow_unsigned, allow_downgrade=args.allow_downgrade,
                         bundle=bundle)
    _say(f"{trust.start_line} ({1e3 * (time.perf_counter() - t0):.0f} ms)")

    # 2. engines, warm-up, self-test
    scratch = tempfile.TemporaryDirectory(prefix="edge-bridge-deploy-")  # an EDF+ converted for playback
    runner = CompositeRunner(bundle, args.device, threads=args.threads)
    try:
        warm = runner.warm_up()
        report = runner.self_test()
        _say(f"engines on {args.device} ({runner.engines['target_front'].backend}), warm-up "
             f"{1e3 * warm:.0f} ms; self-test of bridge v{runner.bridge_version:04d} against "
             f"{runner.golden_name} passed:")
        for check in report.checks:
            _say(f"  {check.line()}")
        trust.record()  # the highest signed version this device ran (refuses older ones from now on)
        if args.self_test_only:
            return 0

        # 3. sources (+ labels for the demo)
        streams = stream_specs(args)
        demo = not streams and args.bundle is None
        if not streams:
            from edge_bridge.commands._demo_bundle import demo_recording

            csv, demo_labels = demo_recording(bundle, minutes=args.demo_minutes)
            streams = [StreamSpec("0", f"playback:{csv}", args.labels or demo_labels, "--source")]
            _say(f"source: simulated recording of an unseen subject, {args.demo_minutes:g} min, through "
                 f"BrainFlow's playback board ({csv})")

        from firmware_interface import open_source
        from firmware_interface.errors import FirmwareError

        quality = args.quality
        if quality is None:
            synthetic = all(st.spec.split(":", 1)[0].strip() == "synthetic" for st in streams)
            quality = "basic" if synthetic else "physiology"
            if synthetic:
                _say("quality gate: basic (BrainFlow's synthetic board's signals are not physiological, "
                     "so the beat and motion checks would skip every window; --quality physiology keeps "
                     "them)")
        config = LiveConfig(quality=quality, smoothing=args.smoothing, alpha=args.alpha,
                            majority=args.majority,
                            duration=args.duration, watch_bridge=not args.no_watch,
                            bundle_check=trust.recheck if trust.verified is not None else None,
                            missing_modality=args.missing_modality, **_watch_options(args))
        inputs: list[StreamInput] = []
        file_counts: dict[str, dict[str, int]] = {}
        try:
            for st in streams:
                spec, labels_path, open_options, counts = _recorded_input(st.spec, st.labels, m.target,
                                                                          scratch)
                file_counts[st.id] = counts
                labels = LabelTrack.load(labels_path) if labels_path is not None else None
                try:
                    source = open_source(spec, verbose=True if args.verbose else None, **open_options)
                except FirmwareError as exc:
                    raise EdgeBridgeError(f"{st.where}: {exc}") from None
                inputs.append(StreamInput(st.id, source, labels))
                extra_specs = {e.key: e.spec for e in m.extra_targets}
                for key, extra in st.modality_sources.items():  # a fused modality on its own source
                    if key not in extra_specs:
                        raise LiveError(f"{st.where}: --modality-source {key}=...: this bundle's further "
                                        f"modalities are {list(extra_specs) or 'none (one target)'}")
                    espec, _lab, eopts, _counts = _recorded_input(extra, None, extra_specs[key], scratch)
                    try:
                        inputs[-1].extra_sources[key] = open_source(
                            espec, verbose=True if args.verbose else None, **eopts)
                    except FirmwareError as exc:
                        raise EdgeBridgeError(f"{st.where}: --modality-source {key}={extra}: {exc}") from None
            sinks = make_sinks(args.out, lsl=args.lsl, classes=list(m.classes), rate=1.0 / m.target.hop_s,
                               streams=len(inputs))
        except BaseException:
            for inp in inputs:
                for src in (inp.source, *inp.extra_sources.values()):
                    with contextlib.suppress(Exception):
                        src.stop()
            raise
        try:
            listed = len(inputs) > 1 or bool(inputs[0].extra_sources)  # a modality on its own source
            pipe = LivePipeline(runner, inputs if listed else inputs[0].source, sinks, config,
                                None if listed else inputs[0].labels)
        except LiveError as exc:  # the source does not deliver what the model needs: name the source
            for sink in sinks:
                sink.close()
            which = getattr(exc, "stream", None)
            bad = next((st.where for st in streams if st.id == which), streams[0].where)
            raise LiveError(f"{bad}: {exc}") from None
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
        if len(inputs) > 1:
            _say(f"streams: {len(inputs)} ({', '.join(i.id for i in inputs)}) in one process on one set of "
                 "engines, windows batched per hop")
        for line in [*pipe.notes, *pipe.watch.lines]:
            _say(line)
        where = args.out if args.out else "stdout"
        _say(f"streaming: {m.target.window_s:g} s windows every {m.target.hop_s:g} s; predictions to {where}"
             f"{' and LSL' if args.lsl else ''}; Ctrl-C to stop")
        _say(f"first window in about {m.target.window_s:g} s (the buffer fills with one window of signal "
             f"first), then one every {m.target.hop_s:g} s")
        try:
            if args.quiet:
                summary = pipe.run()
            else:
                with _BufferReport(pipe, float(m.target.window_s)):
                    summary = pipe.run()
        except FirmwareError as exc:  # the source failed for good (reconnects ran out, or a file ended bad)
            raise EdgeBridgeError(f"{streams[0].where}: {exc}") from None
        for sid, counts in file_counts.items():  # the playback board stamps samples anew: count the file's
            per = summary.streams.get(sid) if len(inputs) > 1 else None
            for key, count in counts.items():
                setattr(summary, key, getattr(summary, key) + count)
                if per is not None:
                    setattr(per, key, getattr(per, key) + count)

    finally:
        runner.close()
        scratch.cleanup()

    lines = [*summary.lines(), *_timelines(summary, inputs, args.out), trust.summary_line]
    # like for like only: the whole demo recording, as long as the build's unseen subjects
    demo_place = _demo_placement(summary, args.demo_minutes) if demo and args.duration is None else None
    if demo_place is not None:
        from edge_bridge.demo import placement_line

        lines.append(placement_line(demo_place))
    out = sys.stdout if args.out else sys.stderr
    print("\nsummary", file=out)
    for line in lines:
        print(f"  {line}", file=out)
    out.flush()
    if args.summary_json:
        from edge_bridge.fileio import atomic_write_text

        d = _summary_json(summary, args)
        if demo_place is not None:
            d["demo_placement"] = demo_place
        d["signature"] = trust.summary_line
        atomic_write_text(args.summary_json, json.dumps(d, indent=1) + "\n")
    return 130 if summary.stop_reason in ("SIGINT", "SIGTERM") else 0


def _recorded_input(spec: str, labels: Path | None, target: Any,
                    scratch: tempfile.TemporaryDirectory[str],
                    ) -> tuple[str, Path | None, dict[str, Any], dict[str, int]]:
    """Check a recording before it streams; EDF+ goes through a temporary BrainFlow CSV.

    Returns the spec to open, the labels to score with (``--labels``, else the EDF+ annotations or the
    ``FILE.labels.json`` beside a CSV), options for ``open_source`` and counts for the summary that only
    the file shows (BrainFlow's playback board stamps samples with the host clock as it replays them, so
    duplicate timestamps in the file are counted here). A playback's stall timeout covers
    its longest timestamp step, because BrainFlow's playback board sleeps out every step and a quiet
    file means its end.
    """
    from edge_bridge.commands.convert import check_playback_csv, convert_recording, is_edf, labels_path
    from edge_bridge.errors import EdgeBridgeError
    from firmware_interface import parse_spec
    from firmware_interface.errors import FirmwareError

    try:
        kind, target_file, _options = parse_spec(spec)
    except FirmwareError as exc:
        raise EdgeBridgeError(f"--source: {exc}") from None
    if kind != "playback":
        return spec, labels, {}, {}
    path = Path(target_file)
    if is_edf(path):
        from edge_bridge.commands.convert import check_path

        check_path(path)
        csv = Path(scratch.name) / (path.stem + ".csv")
        csv, found = convert_recording(path, csv, modality=target.modality)
        _say(f"source: {path} is EDF+; streaming it through BrainFlow's playback board as {csv}")
        spec = spec.replace(target_file, str(csv), 1)
        labels = labels if labels is not None else found
        path = csv
    elif labels is None:
        guess = labels_path(path)
        labels = guess if guess.is_file() else None
    try:
        checked = check_playback_csv(path, window_s=target.window_s)
    except EdgeBridgeError as exc:
        if path == Path(target_file):
            raise
        # the temporary CSV means nothing to the user: name the EDF+ they gave
        raise EdgeBridgeError(str(exc).replace(str(path), f"{target_file} (as converted for playback)")) \
            from None
    if checked.notes:
        _say(f"source: {path}: " + "; ".join(checked.notes))
    return (spec, labels, {"stall_timeout": max(3.0, checked.max_step_s + 2.0)},
            {"duplicate_timestamps": checked.duplicate_timestamps})


def _watch_options(args: argparse.Namespace) -> dict[str, Any]:
    """LiveConfig's drift, paired-watch and auto-calibrate settings from the options."""
    from deploy.autocal import AutoCalibrateConfig

    auto = None
    if args.auto_calibrate:
        auto = AutoCalibrateConfig(minutes=args.auto_calibrate_minutes, record_dir=args.auto_calibrate_dir,
                                   margin=args.auto_calibrate_margin, min_states=args.auto_calibrate_states)
    return {"drift_false_alarms_per_day": None if args.no_drift else args.drift_false_alarms_per_day,
            "paired_watch": not args.no_paired_watch, "auto_calibrate": auto}


def _timelines(summary: Any, inputs: list[Any], out: Path | None) -> list[str]:
    """Draw the labelled streams' timelines beside the predictions file (``deploy.report``); summary lines."""
    if out is None or str(out) == "-":
        return []
    from deploy.report import ReportError, timeline_path, write_timeline

    lines = []
    for inp in inputs:
        s = summary.streams.get(inp.id, summary) if len(inputs) > 1 else summary
        if inp.labels is None or s.scores is None:
            continue
        path = timeline_path(out, inp.id if len(inputs) > 1 else None)
        try:
            write_timeline(path, s.scores, inp.labels.spans, title=f"stream {inp.id}")
        except (ReportError, OSError) as exc:
            lines.append(f"timeline: not drawn ({exc})")
            continue
        lines.append(f"timeline: {path} (true blocks and predicted class probabilities over time)")
    return lines


def _demo_placement(summary: Any, minutes: float) -> dict[str, Any] | None:
    """The demo subject's balanced accuracy beside the build's unseen subjects of ``minutes`` (or None)."""
    from edge_bridge.commands._demo_bundle import demo_heldout
    from edge_bridge.demo import placement

    held = demo_heldout()
    ba = summary.scores.report()["balanced_accuracy"] if summary.scores is not None else None
    if held is None or ba is None or held.get("minutes") != minutes:
        return None
    try:
        return placement(held, ba)
    except ValueError:
        return None


def _summary_json(summary: Any, args: argparse.Namespace) -> dict[str, Any]:
    d = summary.to_dict()
    d["device"] = args.device
    return d
