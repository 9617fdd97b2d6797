"""Building the demo bundle (host side): simulate, pretrain, fit the source model, select, train, export.

``edge-bridge deploy`` with no ``--bundle`` needs a model, and one cannot be downloaded where edge-bridge is
built. So the demo bundle is made from simulated data, with the same verbs a user runs::

    simulate -> pretrain -> fit-source -> select -> train -> export

with the method's data and backbones (30 simulated subjects of 10 minutes, 60 s windows every 5 s in
training, every 1 s live) and the epochs cut to where they pay (:class:`deploy.demo_bundle.DemoSettings`),
so it takes a few minutes on two CPU cores and reports in steps as it goes. This is host code (torch, the
method packages); the device side (:mod:`deploy.demo_bundle`) only finds the cached bundle, names its
folder (the settings' key) and writes the demo recording. The one documented command that builds it by hand::

    python -c "from edge_bridge.commands._demo_bundle import ensure_demo_bundle; print(ensure_demo_bundle())"

The export is export's default (INT8 where the accuracy guard allows it); :func:`precision_line` is the
line ``make demo`` prints about it, so a degraded bundle says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_bridge import __version__
from edge_bridge.bundle import Bundle, write_manifest

logger = logging.getLogger(__name__)

Report = Callable[[str], None]


def build_demo_bundle(settings: Any, home: Path, *, report: Report | None = None,
                      progress: bool = True) -> Path:
    """Simulate, pretrain, fit the source model, select, train the bridge and export; returns the bundle.

    Parameters
    ----------
    settings : deploy.demo_bundle.DemoSettings
        What decides the bundle (read by field; this module does not import the device package).
    home : Path
        The cache folder named by the settings' key; rebuilt from scratch.

    Raises
    ------
    EdgeBridgeError
        If a step fails; the work folder is kept for inspection and the next call starts over.
    """
    say = report or (lambda text: logger.info("%s", text))
    import torch

    from edge_bridge import pipeline as P
    from edge_bridge.export import export
    from edge_bridge.fitting import FitConfig
    from edge_bridge.runs import Run
    from edge_bridge.selection.run import select_run
    from edge_bridge.selection.trial import TrialSettings
    from edge_bridge.simulate import simulate_dataset
    from edge_bridge.splits import ROLES
    from edge_bridge.tasks import get_task
    from edge_bridge.train import TrainConfig

    torch.set_num_threads(settings.threads)
    work = home / "work"
    if home.exists():
        shutil.rmtree(home)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    s = settings
    say(f"building the demo bundle in {home} (first use only; a few minutes on 2 cores)")

    steps: dict[str, float] = {}

    def step(k: int, text: str) -> None:
        now = time.perf_counter() - t0
        steps[text.split(" ")[0]] = round(now, 1)  # when each step started, for bench/demo.py
        say(f"  [{k}/6] {text} ({now:.0f} s so far)")

    step(1, f"simulating {s.subjects} subjects x {s.minutes:g} min of paired ECG + wrist PPG")
    data = work / "data"
    simulate_dataset(data, s.task, subjects=s.subjects, minutes=s.minutes, seed=s.seed, progress=progress)
    task = get_task(s.task).with_window(s.window_s, s.hop_s)
    # Run.open would bring back the preset's 60 s windows; write run.json, then use the short-window task
    fractions = {r: n / s.subjects for r, n in zip(ROLES, s.roles, strict=True)}
    Run.open(work / "run", data=data, task=s.task, seed=s.seed, fractions=fractions)
    run = Run(work / "run", task, data.resolve(), s.seed, fractions)
    run.windows(progress=progress)
    step(2, "pretraining the target (PPG) backbone without labels")
    P.pretrain(run, FitConfig(epochs=s.pretrain_epochs, batch_size=64, seed=s.seed), config=s.target_config,
               progress=progress)
    step(3, "fitting the source (ECG) model with labels")
    # the source recipe of bench/method.py: augmentation (circular shift + gain), dropout, weight decay;
    # without it a small model memorises the beat positions of the few training subjects
    source_fit = FitConfig(epochs=s.source_epochs, seed=s.seed, lr=5e-4, weight_decay=0.05, augment=True)
    P.fit_source(run, source_fit, config=s.source_config, progress=progress)
    step(4, f"selecting the bridge positions ({s.rule} rule)")
    trials = TrialSettings(shortlist=s.trial_shortlist, rungs=tuple(s.trial_rungs), seed=s.seed)
    sel = select_run(run, rule=s.rule, settings=trials if s.rule == "trial" else None, progress=progress)
    step(5, f"training the bridge at i={sel.i}, j={sel.j}")
    P.train(run, TrainConfig(epochs=s.bridge_epochs, seed=s.seed), P.BridgeSettings(), progress=progress)
    step(6, f"exporting ({s.precision})")
    out = home / "bundle"
    export(run.path, out, calibration=data, precision=s.precision, target="cpu")
    _set_live_hop(Bundle.load(out), s.live_hop_s)
    say(precision_line(Bundle.load(out)))
    (home / "settings.json").write_text(json.dumps({**dataclasses.asdict(s), "tool_version": __version__,
                                                    "seconds": round(time.perf_counter() - t0, 1),
                                                    "step_started_at_s": steps}, indent=1))
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


def precision_line(bundle: Bundle) -> str:
    """One line on what the bundle ships: per part its precision and FP32 nodes, the guard's verdict."""
    m = bundle.manifest
    q = m.quantization or {}
    parts = q.get("parts", {})
    shown = []
    for p in ("target_front", "source_back", "source_front"):
        if p not in m.parts:
            continue
        kept = len(parts.get(p, {}).get("fp32_nodes", []))
        total = parts.get(p, {}).get("quantized_nodes")
        mixed = f" ({kept} of {total} nodes FP32)" if kept and total else ""
        shown.append(f"{p} {m.parts[p].precision}{mixed}")
    acc = q.get("accuracy", {})
    agree = acc.get("shipped", {}).get("agreement")
    guard = ("passed" if acc.get("passed") else "FAILED") if acc else "n/a"
    return (f"precision: {', '.join(shown)}; accuracy guard {guard}"
            + (f" (agreement {agree:.3f})" if agree is not None else "")
            + f"; degraded: {str(bool(q.get('degraded', False))).lower()}")
