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

import numpy as np

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
        say(f"  [{k}/7] {text} ({now:.0f} s so far)")

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
    step(6, f"exporting ({s.precision}; drift reference from {s.reference_subjects} fresh subjects)")
    out = home / "bundle"
    reference = work / "reference"
    simulate_dataset(reference, s.task, subjects=s.reference_subjects, minutes=s.reference_minutes,
                     seed=s.reference_seed, progress=progress)
    export(run.path, out, calibration=data, precision=s.precision, target="cpu", reference_data=reference)
    _set_live_hop(Bundle.load(out), s.live_hop_s)
    say(precision_line(Bundle.load(out)))
    # what a newcomer should expect on a subject the bundle never saw: the shipped bundle on fresh
    # simulated subjects (a seed of their own), so the demo subject's figure can be read against it
    # (as long as the demo recording, windows at the live hop: scored as the demo subject is)
    step(7, f"checking the bundle on {s.heldout_subjects} unseen simulated subjects")
    files = simulate_dataset(work / "heldout", s.task, subjects=s.heldout_subjects,
                             minutes=s.heldout_minutes, seed=s.heldout_seed)
    held = score_bundle(out, files, hop_s=s.live_hop_s, source_model=False)
    held.update(seed=s.heldout_seed, minutes=s.heldout_minutes, hop_s=s.live_hop_s)
    say(heldout_line(held))
    (home / "settings.json").write_text(json.dumps({**dataclasses.asdict(s), "tool_version": __version__,
                                                    "seconds": round(time.perf_counter() - t0, 1),
                                                    "step_started_at_s": steps, "heldout": held}, indent=1))
    say(f"demo bundle ready: {out} ({time.perf_counter() - t0:.0f} s)")
    return out


def score_bundle(bundle_root: Path, recordings: list[Path], *, hop_s: float = 5.0,
                 source_model: bool = True) -> dict[str, Any]:
    """3-class balanced accuracy of the bundle's composite on labelled recordings, per subject and pooled.

    The shipped ONNX files run in ONNX Runtime (``target_front -> bridge -> source_back``, what the device
    runs); with ``source_model`` also the bundle's source model on the paired source signal
    (``source_front -> source_back``), so a weak composite can be told from a weak source model. Windows
    every ``hop_s`` seconds; windows not inside one labelled block are not scored.
    """
    from edge_bridge.recordings.paired import windows_from_files

    bundle = Bundle.load(bundle_root)
    m = bundle.manifest
    target = dataclasses.replace(m.target, hop_s=hop_s)
    source = dataclasses.replace(m.source, hop_s=hop_s)
    w = windows_from_files(recordings, source, target, m.classes)
    front, bridge, back = (_session(bundle.part_path("target_front")), _session(bundle.bridge_path()),
                           _session(bundle.part_path("source_back")))
    logits = _run(back, _run(bridge, _run(front, w.x["target"])))
    out = _metrics(w.labels, logits.argmax(1), w.subjects, len(m.classes))
    if source_model:
        src = _run(back, _run(_session(bundle.part_path("source_front")), w.x["source"]))
        out["source_model"] = _metrics(w.labels, src.argmax(1), w.subjects, len(m.classes))
    return out


def heldout_line(held: dict[str, Any]) -> str:
    """The line the demo prints about the bundle on unseen subjects (what to expect of the demo subject)."""
    p = held["per_subject"]
    how = (f" of {held['minutes']:g} min, windows every {held['hop_s']:g} s" if "minutes" in held
           and "hop_s" in held else "")
    return (f"on {p['n']} unseen simulated subjects{how} (seed {held.get('seed', '?')}) this bundle scores "
            f"balanced accuracy {held['pooled']['balanced_accuracy']:.2f} over all their windows; per "
            f"subject mean {p['mean']:.2f}, sd {p['sd']:.2f}, range {p['min']:.2f}-{p['max']:.2f} "
            "(chance: 0.33)")


def placement(held: dict[str, Any], balanced_accuracy: float) -> dict[str, Any]:
    """Where one recording's balanced accuracy lies among the unseen subjects' (the demo's last line).

    One five-minute recording is a single draw from a wide spread, so the demo subject's figure alone
    reads as the product's quality; beside the spread it reads as what it is. ``at_or_above``: how many
    unseen subjects scored at least as well.
    """
    scores = [float(v["balanced_accuracy"]) for v in held.get("subjects", {}).values()
              if v.get("balanced_accuracy") is not None]
    if not scores:
        raise ValueError("the held-out check has no per-subject scores")
    at_or_above = sum(v >= balanced_accuracy - 1e-9 for v in scores)
    return {"balanced_accuracy": float(balanced_accuracy), "subjects": len(scores),
            "at_or_above": at_or_above, "inside_range": min(scores) <= balanced_accuracy <= max(scores),
            "mean": float(np.mean(scores)), "min": min(scores), "max": max(scores)}


def placement_line(p: dict[str, Any]) -> str:
    """:func:`placement` as the line the demo ends with."""
    where = ("inside" if p["inside_range"] else "outside") + f" their range {p['min']:.2f}-{p['max']:.2f}"
    return (f"this recording against the {p['subjects']} unseen subjects of the build's check: "
            f"{p['balanced_accuracy']:.2f} vs their mean {p['mean']:.2f}; {p['at_or_above']} of "
            f"{p['subjects']} scored as well or better ({where}); one recording is one draw, their mean is "
            "what to expect")


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(session: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[k:k + batch]})[0] for k in range(0, len(x), batch)])


def _metrics(labels: np.ndarray, pred: np.ndarray, subjects: np.ndarray, n_classes: int) -> dict[str, Any]:
    import warnings

    from edge_bridge.evaluate import classification_metrics

    keep = labels >= 0
    with warnings.catch_warnings():  # a subject whose pure windows miss a class is scored on the rest
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        per = {str(subj): classification_metrics(labels[keep & (subjects == subj)],
                                                 pred[keep & (subjects == subj)], n_classes)
               for subj in np.unique(subjects[keep])}
    bas = np.array([v["balanced_accuracy"] for v in per.values()])
    return {"subjects": per, "pooled": classification_metrics(labels[keep], pred[keep], n_classes),
            "per_subject": {"mean": float(bas.mean()), "sd": float(bas.std(ddof=1)) if len(bas) > 1 else 0.0,
                            "min": float(bas.min()), "max": float(bas.max()), "n": len(bas)}}


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
