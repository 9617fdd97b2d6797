"""The embedded default of ``edge-bridge deploy``: a demo bundle and a demo recording, built on first use.

``edge-bridge deploy`` with no ``--bundle`` needs a model, and one cannot be downloaded where edge-bridge is
built. So the demo bundle is made here from simulated data, with the same verbs a user runs::

    simulate -> pretrain -> fit-source -> select -> train -> export

with small backbones, 30 s windows (every 5 s in training, every 1 s live) and a few epochs, so it takes
a few minutes on two CPU cores.
It is cached under ``$XDG_CACHE_HOME/edge-bridge/demo-bundle-<key>/`` where the key hashes the settings
below and the tool version; a cached bundle that no longer verifies is rebuilt. The same bundle can be made
by hand (this is the one documented command)::

    python -c "from deploy.demo_bundle import ensure_demo_bundle; print(ensure_demo_bundle())"

With no ``--source``, deploy streams a simulated recording of a subject the bundle never saw through
BrainFlow's playback board (:func:`demo_recording`). The playback file holds the channels the bundle's
target model needs, at its input rate (the stress task: wrist PPG at 64 Hz; BrainFlow's playback board paces
by the file's timestamps, and the sidecar tells the source the true rate), and a label sidecar keeps the
simulated protocol blocks so the loop can report how often its predictions matched them.

This module is host side: building the bundle imports torch and the method packages, but only inside
:func:`build_demo_bundle`. Importing the module, finding a cached bundle and writing the demo recording
stay torch-free, so the device path never loads torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_bridge import __version__
from edge_bridge.bundle import Bundle, BundleError, write_manifest
from edge_bridge.errors import EdgeBridgeError

logger = logging.getLogger(__name__)

Report = Callable[[str], None]
SIMULATE_MIN_MINUTES = 3.0  # the stress simulator's shortest protocol (one 60 s block per class)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edge-bridge`` (default ``~/.cache/edge-bridge``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-bridge"


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides the demo bundle; its hash names the cache folder.

    The defaults keep the build to a few minutes on two cores: 12 simulated subjects of 6 minutes, 30 s
    windows every 5 s, small backbones, few epochs. The bundle is for showing the live loop, not for
    reporting accuracy (``bench/method.py`` does that with the full presets).
    """

    task: str = "stress"
    subjects: int = 12
    minutes: float = 6.0
    window_s: float = 30.0
    hop_s: float = 5.0
    live_hop_s: float = 1.0
    seed: int = 0
    pretrain_epochs: int = 3
    source_epochs: int = 15
    bridge_epochs: int = 15
    target_config: dict[str, Any] = field(default_factory=lambda: {"widths": [16, 16, 16, 16],
                                                                   "strides": [1, 2, 2, 2], "kernel": 5})
    source_config: dict[str, Any] = field(default_factory=lambda: {"d_model": 32, "n_blocks": 3,
                                                                   "n_heads": 2, "dropout": 0.1})
    precision: str = "int8"
    threads: int = 2

    def key(self) -> str:
        text = json.dumps({**dataclasses.asdict(self), "tool_version": __version__}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def demo_bundle_dir(settings: DemoSettings | None = None) -> Path:
    settings = settings or DemoSettings()
    return user_cache_dir() / f"demo-bundle-{settings.key()}"


def find_demo_bundle(settings: DemoSettings | None = None) -> Path | None:
    """The cached demo bundle if it exists and verifies, else ``None`` (torch-free)."""
    root = demo_bundle_dir(settings) / "bundle"
    if not (root / "manifest.json").is_file():
        return None
    try:
        Bundle.load(root)
    except BundleError as exc:
        logger.warning("cached demo bundle %s does not verify (%s); rebuilding it", root, exc)
        return None
    return root


def ensure_demo_bundle(settings: DemoSettings | None = None, *, report: Report | None = None,
                       progress: bool = True) -> Path:
    """The demo bundle's directory, building it first if there is no valid cached one."""
    found = find_demo_bundle(settings)
    if found is not None:
        if report:
            report(f"demo bundle: {found} (cached)")
        return found
    return build_demo_bundle(settings, report=report, progress=progress)


def build_demo_bundle(settings: DemoSettings | None = None, *, report: Report | None = None,
                      progress: bool = True) -> Path:
    """Simulate, pretrain, fit the source model, select, train the bridge and export; returns the bundle.

    Raises
    ------
    EdgeBridgeError
        If a step fails; the work folder is kept for inspection and the next call starts over.
    """
    settings = settings or DemoSettings()
    say = report or (lambda text: logger.info("%s", text))
    import torch

    from edge_bridge import pipeline as P
    from edge_bridge.export import export
    from edge_bridge.fitting import FitConfig
    from edge_bridge.runs import Run
    from edge_bridge.simulate import simulate_dataset
    from edge_bridge.splits import DEFAULT_FRACTIONS
    from edge_bridge.tasks import get_task
    from edge_bridge.train import TrainConfig

    torch.set_num_threads(settings.threads)
    home = demo_bundle_dir(settings)
    work = home / "work"
    if home.exists():
        shutil.rmtree(home)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    s = settings
    say(f"building the demo bundle in {home} (first use only; a few minutes on 2 cores)")

    def step(k: int, text: str) -> None:
        say(f"  [{k}/6] {text} ({time.perf_counter() - t0:.0f} s so far)")

    step(1, f"simulating {s.subjects} subjects x {s.minutes:g} min of paired ECG + wrist PPG")
    data = work / "data"
    simulate_dataset(data, s.task, subjects=s.subjects, minutes=s.minutes, seed=s.seed, progress=progress)
    task = get_task(s.task).with_window(s.window_s, s.hop_s)
    # Run.open would bring back the preset's 60 s windows; write run.json, then use the short-window task
    Run.open(work / "run", data=data, task=s.task, seed=s.seed)
    run = Run(work / "run", task, data.resolve(), s.seed, dict(DEFAULT_FRACTIONS))
    run.windows(progress=progress)
    step(2, "pretraining the target (PPG) backbone without labels")
    P.pretrain(run, FitConfig(epochs=s.pretrain_epochs, batch_size=64, seed=s.seed), config=s.target_config,
               progress=progress)
    step(3, "fitting the source (ECG) model with labels")
    # the source recipe of bench/method.py: augmentation (circular shift + gain), dropout, weight decay;
    # without it a small model memorises the beat positions of the few training subjects
    source_fit = FitConfig(epochs=s.source_epochs, seed=s.seed, lr=5e-4, weight_decay=0.05, augment=True)
    P.fit_source(run, source_fit, config=s.source_config, progress=progress)
    step(4, "selecting the bridge positions")
    sel = P.select(run, progress=progress)
    step(5, f"training the bridge at i={sel.i}, j={sel.j}")
    P.train(run, TrainConfig(epochs=s.bridge_epochs, seed=s.seed), P.BridgeSettings(), progress=progress)
    step(6, f"exporting ({s.precision})")
    out = home / "bundle"
    export(run.path, out, calibration=data, precision=s.precision, target="cpu")
    _set_live_hop(Bundle.load(out), s.live_hop_s)
    (home / "settings.json").write_text(json.dumps({**dataclasses.asdict(s), "tool_version": __version__,
                                                    "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    say(f"demo bundle ready: {out} ({time.perf_counter() - t0:.0f} s)")
    return out


def _set_live_hop(bundle: Bundle, hop_s: float) -> None:
    """Let the live loop predict every ``hop_s`` seconds although training used a longer hop.

    The hop only spaces the windows; each window (length, rate, filters) and so every model input stays
    exactly what the models were trained on. A short live hop makes the demo answer every second; a long
    training hop keeps the build to a few minutes.
    """
    m = bundle.manifest
    m.target = dataclasses.replace(m.target, hop_s=hop_s)
    m.source = dataclasses.replace(m.source, hop_s=hop_s)
    write_manifest(bundle.root, m)
    Bundle.load(bundle.root)


# --- the demo recording -----------------------------------------------------------------------------------
def demo_recording(bundle: Bundle, *, minutes: float = 5.0, seed: int = 1000, subject: str = "D01",
                   cache: Path | None = None) -> tuple[Path, Path]:
    """A playback file of the channels the bundle's target model needs, and its label sidecar.

    A subject the demo bundle never saw (``seed`` differs from the training data's) is simulated for the
    bundle's task, the target channels are written at the spec's input rate with
    :func:`firmware_interface.write_playback_file`, and the protocol blocks go to ``<csv>.labels.json``.
    Cached by task, channels, rate, length and seed.

    Returns
    -------
    (csv, labels) : tuple of Path

    Raises
    ------
    EdgeBridgeError
        If the bundle's task has no simulator or the recording lacks a channel the model needs.
    """
    from firmware_interface import write_playback_file

    m = bundle.manifest
    spec = m.target
    key = hashlib.sha256(json.dumps([m.task, list(spec.channels), spec.input_rate, minutes, seed, subject,
                                     __version__]).encode()).hexdigest()[:12]
    folder = (cache or user_cache_dir()) / f"demo-recording-{key}"
    csv, labels = folder / "recording.csv", folder / "recording.csv.labels.json"
    if csv.is_file() and labels.is_file() and Path(f"{csv}.json").is_file():
        return csv, labels
    from edge_bridge.simulate import SimulationError, simulate_subject

    try:
        # the simulator wants room for every class's block; a shorter demo is the start of a longer one
        rec = simulate_subject(m.task, subject, max(minutes, SIMULATE_MIN_MINUTES), seed)
        if minutes < SIMULATE_MIN_MINUTES:
            rec.crop(0.0, minutes * 60.0)
    except SimulationError as exc:
        raise EdgeBridgeError(f"no demo recording for the bundle's task {m.task!r} ({exc}); pass --source "
                              "playback:FILE, synthetic, board:NAME or tcp:HOST:PORT") from None
    missing = [c for c in spec.channels if c not in rec.channel_names]
    if missing:
        raise EdgeBridgeError(f"the simulated {m.task} recording has no channel(s) {missing} that the "
                              "bundle's "
                              f"model needs (it has {rec.channel_names}); pass --source")
    channels = []
    for name in spec.channels:
        ch = rec.channel(name)
        data = ch.data
        if abs(ch.rate - spec.input_rate) > 1e-9:  # exact rational resampling, the same tool as signals uses
            from fractions import Fraction

            from scipy.signal import resample_poly

            r = Fraction(spec.input_rate).limit_denominator(1000) / Fraction(ch.rate).limit_denominator(1000)
            data = resample_poly(data, r.numerator, r.denominator)
        channels.append((name, ch.modality, ch.unit or "a.u.", data))
    folder.mkdir(parents=True, exist_ok=True)
    write_playback_file(channels, float(spec.input_rate), csv, subject=subject)
    annotations = [{"onset": a.onset, "duration": a.duration, "label": a.label} for a in rec.annotations]
    labels.write_text(json.dumps({"subject": subject, "task": m.task, "annotations": annotations}, indent=1))
    logger.info("demo recording: %s (%g min of %s at %g Hz, subject %s)", csv, minutes,
                ", ".join(spec.channels), spec.input_rate, subject)
    return csv, labels
