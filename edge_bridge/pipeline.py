"""The method's steps over a run directory (:mod:`edge_bridge.runs`), one function per CLI verb.

``pretrain`` -> ``fit_source`` -> ``select`` -> ``train`` (+ KD baseline) -> ``evaluate``. Each step reads
what earlier steps wrote and writes its own folder, so the CLI verbs stay thin and the benchmark can call
the same functions.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_bridge.fitting import FitConfig
from edge_bridge.models import Backbone, build_backbone, load_backbone, save_backbone
from edge_bridge.runs import Run, RunError
from edge_bridge.signals.spec import Preprocessing

logger = logging.getLogger(__name__)


def default_backbone(spec: Preprocessing) -> tuple[str, dict[str, Any]]:
    """Reference backbone for a modality: a 1-D ResNet for PPG (PaPaGei-like), a patch transformer otherwise.

    Patches are sized so a window becomes about 60 tokens (transformer) or 150 steps (ResNet stem). The PPG
    ResNet stands in for a foundation model, so it is wider than the task model it is bridged to
    (~0.4 M parameters against the ECG transformer's ~0.14 M; published PPG foundation models are larger
    still), which is the setting where training only a bridge pays.
    """
    c, n = spec.input_shape
    if spec.modality == "ppg":
        patch = max(1, round(spec.output_rate * 0.4))
        return "resnet1d", {"in_channels": c, "input_samples": n, "patch": patch, "widths": [48, 64, 96, 128]}
    patch = max(1, n // 60)
    while n % patch:
        patch -= 1
    return "transformer", {"in_channels": c, "input_samples": n, "patch": patch}


def _new_backbone(spec: Preprocessing, name: str | None, config: dict[str, Any] | None) -> Backbone:
    kind, cfg = default_backbone(spec)
    if name is not None and name != kind:
        kind, cfg = name, {"in_channels": cfg["in_channels"], "input_samples": cfg["input_samples"]}
    return build_backbone(kind, {**cfg, **(config or {})})


# --- published foundation models ---------------------------------------------------------------------------
def model_preprocessing(name: str) -> Preprocessing | None:
    """The published model's own :class:`Preprocessing` (its module's ``preprocessing()``), if it has one."""
    try:
        module = importlib.import_module(f"edge_bridge.models.{name}")
    except ImportError:
        return None
    fn = getattr(module, "preprocessing", None)
    spec = fn() if callable(fn) else None
    return spec if isinstance(spec, Preprocessing) else None


def check_input_shape(model: Backbone, name: str, run: Run, role: str) -> None:
    """Raise a :class:`RunError` unless ``model`` reads windows of the run's ``role`` preprocessing shape."""
    spec = run.task.source if role == "source" else run.task.target
    want, have = tuple(model.input_shape), tuple(spec.input_shape)
    if want == have:
        return
    own = model_preprocessing(name)
    own_txt = (f" {name}'s own preprocessing is {json.dumps(own.to_dict())} (input_shape {own.input_shape})."
               if own is not None else "")
    if len(want) != 2:
        raise RunError(f"--{role}-model {name} reads transformed input of shape {want}, not raw windows "
                       f"(channels, samples); the run's {role} windows are {have}, so it cannot be used in "
                       f"this pipeline as built.{own_txt} Models that can compute their transform in the "
                       f"graph take raw windows with --model-config (NormWear: '{{\"raw_input\": true}}').")
    raise RunError(
        f"--{role}-model {name} expects {role} windows of shape {want} (channels, samples), but the run's "
        f"{role} preprocessing (task {run.task.name!r}: {spec.modality}, {len(spec.channels)} channel(s) at "
        f"{spec.output_rate:g} Hz, {spec.window_s:g} s windows) gives {have}. Use a run whose {role} spec "
        f"matches the model, or, if the checkpoint's architecture accepts another length, pass "
        f"--model-config '{{\"in_channels\": {have[0]}, \"input_samples\": {have[1]}}}'.{own_txt}")


def load_published(run: Run, role: str, name: str, checkpoint: str | os.PathLike[str],
                   config: dict[str, Any] | None = None) -> Backbone:
    """Registry model ``name`` with its published ``checkpoint`` loaded, checked to read the run's windows.

    The shape is checked before the (possibly large) checkpoint is read.
    """
    model = build_backbone(name, config)
    check_input_shape(model, name, run, role)
    loader = getattr(model, "load_checkpoint", None)
    if callable(loader):  # published models: their own checkpoint layouts
        loader(checkpoint)
    else:
        from edge_bridge.models.io import load_weights

        load_weights(model, checkpoint)
    return model


def use_published_target(run: Run, name: str, checkpoint: str | os.PathLike[str],
                         config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save a published foundation model as the run's target backbone (instead of :func:`pretrain`)."""
    model = load_published(run, "target", name, checkpoint, config)
    save_backbone(model, run.target_backbone,
                  meta={**run.spec_meta("target"), "recipe": f"published:{name}",
                        "checkpoint": str(Path(checkpoint).resolve())})
    return {"parameters": model.num_parameters(), "n_blocks": model.n_blocks, "kind": model.kind}


def preset_positions(run: Run, name: str) -> tuple[Any, int, int]:
    """``(preset, i, j)``: the paper direction ``name``, its positions checked against the run's backbones."""
    from edge_bridge.models.presets import get_preset, resolve_positions

    if is_fused(run):
        raise RunError(f"--preset {name} is a paper direction with one target; run {run.path} is a fused "
                       f"{run.task.name!r} run (targets {', '.join(target_names(run))}): take the positions "
                       f"from `edge-bridge select --run {run.path}` or give --i I1,I2 --j J")
    preset = get_preset(name)
    target, _ = load_backbone(run.require(run.target_backbone, "pretrain"))
    source, _ = load_backbone(run.require(run.source_model, "fit-source"))
    i, j = resolve_positions(preset, target, source)
    return preset, i, j


# --- pretrain ---------------------------------------------------------------------------------------------
def is_fused(run: Run) -> bool:
    """Whether the run's task has several targets (``Task.extra_targets``): its bridge is fused."""
    return len(run.task.target_keys) > 1


def target_names(run: Run) -> list[str]:
    """The targets' modality names in :attr:`Task.target_keys` order (the main target's is its modality,
    e.g. ``ppg``, where its window key is ``"target"``)."""
    return [t.modality for t in run.task.targets]


def resolve_key(run: Run, key: str) -> str:
    """Window key of target ``key``: ``"target"`` or the main target's modality (``ppg``) give
    ``"target"``, an extra target's modality itself.

    Raises
    ------
    RunError
        For a key that names none of the task's targets (the valid ones are listed).
    """
    if key in ("target", run.task.target.modality):
        return "target"
    if key not in run.task.target_keys:
        raise RunError(f"task {run.task.name!r} has no target {key!r}; its targets are "
                       f"{', '.join(target_names(run))}")
    return key


def target_backbone_path(run: Run, key: str = "target") -> Path:
    """Where the backbone of target window key ``key`` lives: the run's ``target_backbone`` for the main
    target, ``target_backbone_<modality>`` beside it for an extra target of ``Task.extra_targets``."""
    key = resolve_key(run, key)
    if key == "target":
        return run.target_backbone
    return run.target_backbone.with_name(f"{run.target_backbone.name}_{key}")


def load_targets(run: Run) -> list[Backbone]:
    """Every target backbone of the run, main target first (one for a single-target task); a missing one
    names the ``pretrain`` command that makes it."""
    out = []
    for key in run.task.target_keys:
        how = "pretrain" if key == "target" or not is_fused(run) else f"pretrain --key {key}"
        out.append(load_backbone(run.require(target_backbone_path(run, key), how))[0])
    return out


def pretrain(run: Run, cfg: FitConfig, *, backbone: str | None = None, config: dict[str, Any] | None = None,
             progress: bool = False, key: str = "target") -> dict[str, Any]:
    """Self-supervised target backbone on the target signal of every non-test subject (no labels).

    ``key``: which target (``"target"``, or an extra target's modality such as ``"eda"``); the same recipe
    for every modality, saved at :func:`target_backbone_path`.
    """
    from edge_bridge.pretrain import pretrain_contrastive

    key = resolve_key(run, key)
    path = target_backbone_path(run, key)
    spec = run.task.targets[run.task.target_keys.index(key)]
    torch.manual_seed(cfg.seed)
    model = _new_backbone(spec, backbone, config)
    splits = run.splits()
    x = run.windows().by_subjects(splits["train"] + splits["paired"]).x[key]
    xv = run.role("val").x[key]
    res = pretrain_contrastive(model, x, xv, cfg, progress=progress)
    meta = run.spec_meta("target")
    if key != "target":
        meta = {**meta, "modality": spec.modality, "preprocessing": spec.to_dict(), "target_key": key}
    save_backbone(model, path, meta={**meta, "recipe": "contrastive", "fit": res.to_dict()})
    return {"windows": len(x), "best_epoch": res.best_epoch, "val_loss": -res.best_score,
            "seconds_per_epoch": res.seconds_per_epoch, "parameters": model.num_parameters()}


# --- fit-source --------------------------------------------------------------------------------------------
def fit_source(run: Run, cfg: FitConfig, *, backbone: str | None = None, config: dict[str, Any] | None = None,
               progress: bool = False,
               published: tuple[str, str | os.PathLike[str], dict[str, Any] | None] | None = None
               ) -> dict[str, Any]:
    """Source backbone + linear head trained with labels on the source signal of the train subjects.

    ``published=(name, checkpoint, config)`` starts from a published foundation model's weights (a fresh
    task head, then the same fine-tuning) instead of a backbone built from scratch.
    """
    from edge_bridge.evaluate import classification_metrics
    from edge_bridge.fitting import fit_supervised, predict

    torch.manual_seed(cfg.seed)
    recipe = "supervised"
    if published is not None:
        name, checkpoint, pconfig = published
        model = load_published(run, "source", name, checkpoint, pconfig)
        model.set_head(len(run.task.classes))
        recipe = f"published:{name} + supervised"
    else:
        model = _new_backbone(run.task.source, backbone,
                              {**(config or {}), "n_classes": len(run.task.classes)})
    tr, va = run.role("train", labelled=True), run.role("val", labelled=True)
    res = fit_supervised(model, tr.x["source"], tr.labels, va.x["source"], va.labels, cfg, progress=progress,
                         desc="source model")
    val = classification_metrics(va.labels, predict(model, va.x["source"]).argmax(1), model.n_classes)
    extra = {"checkpoint": str(Path(published[1]).resolve())} if published is not None else {}
    save_backbone(model, run.source_model, meta={**run.spec_meta("source"), "recipe": recipe, **extra,
                                                 "fit": res.to_dict(), "val": val})
    return {"windows": len(tr), "best_epoch": res.best_epoch, "val": val,
            "parameters": model.num_parameters()}


def supervised_target(run: Run, cfg: FitConfig, *, progress: bool = False) -> dict[str, Any]:
    """Upper bound: target backbone (pretrained weights) + head trained with labels on the target signal."""
    from edge_bridge.fitting import fit_supervised

    model, _ = load_backbone(run.require(run.target_backbone, "pretrain"))
    torch.manual_seed(cfg.seed)
    model.set_head(len(run.task.classes))
    tr, va = run.role("train", labelled=True), run.role("val", labelled=True)
    res = fit_supervised(model, tr.x["target"], tr.labels, va.x["target"], va.labels, cfg, progress=progress,
                         desc="target supervised")
    save_backbone(model, run.target_supervised,
                  meta={**run.spec_meta("target"), "recipe": "supervised (upper bound)",
                        "fit": res.to_dict()})
    return {"windows": len(tr), "best_epoch": res.best_epoch}


# --- select ------------------------------------------------------------------------------------------------
def select(run: Run, *, progress: bool = False) -> Any:
    """Two-stage position selection on the paired subjects; writes selection.json and selection.png."""
    from edge_bridge.select import select_positions

    target, _ = load_backbone(run.require(run.target_backbone, "pretrain"))
    source, _ = load_backbone(run.require(run.source_model, "fit-source"))
    paired = run.role("paired")
    sel = select_positions(target, source, paired.x["target"], paired.x["source"], subjects=paired.subjects,
                           progress=progress)
    sel.save(run.selection)
    sel.plot(run.path / "selection.png")
    return sel


def select_fused_run(run: Run, *, progress: bool = False) -> Any:
    """Positions of a fused run's bridge on the paired subjects: each target's ``i_k`` by its own stage-1
    probe, one ``j`` by CKA on the fused features (:func:`edge_bridge.select.select_fused`); writes
    selection.json (rule ``"fused"``, ``i`` a list in :attr:`Task.target_keys` order, ``f1`` one list per
    target, ``targets`` their modalities) and selection.png.

    Why not the trial rule: its label-free trial trainings are built for one target's (i, j) grid; the
    grid of K positions and one j grows as the product of the backbones' depths, so the cheap scores
    decide, as in ``bench/fusion.py``.
    """
    from edge_bridge.select import Selection, select_fused

    targets = load_targets(run)
    source, _ = load_backbone(run.require(run.source_model, "fit-source"))
    paired = run.role("paired")
    keys = run.task.target_keys
    res = select_fused(targets, source, [paired.x[k] for k in keys], paired.x["source"],
                       subjects=paired.subjects)
    first = res["per_target"][0]
    sel = Selection(i=[int(v) for v in res["i"]], j=int(res["j"]), f1=res["f1"], cka=res["cka"],
                    n_windows=len(paired), folds=first.folds, pseudo_label_counts=first.pseudo_label_counts,
                    seconds={"total": float(res["seconds"])},
                    target_paths=[t.block_paths for t in targets], source_paths=source.block_paths,
                    rule="fused", targets=target_names(run),
                    notes=[f"fused rule: {res['rule']}"])
    sel.save(run.selection)
    sel.plot(run.path / "selection.png")
    return sel


# --- train -------------------------------------------------------------------------------------------------
@dataclass
class BridgeSettings:
    kind: str = "prototype"
    rank: int = 8
    prototypes: int = 16
    prototype_init: str = "kmeans"


def make_bridge(target: Backbone | list[Backbone], source: Backbone, i: int | list[int], j: int,
                settings: BridgeSettings, x_source: np.ndarray, seed: int = 0) -> Any:
    """A fresh bridge sized for (i, j); prototypes from real source block-*j* tokens when it has them.

    A list of K target backbones with K positions ``i_k`` gives a fused prototype bridge
    (``d_in=[d_1, ..., d_K]``); a single backbone the paper's bridge, exactly as before.
    """
    from edge_bridge.bridge import build_bridge, init_prototypes
    from edge_bridge.features import source_tokens

    s_in = source.block_input(j)
    if isinstance(target, Backbone):
        d_in: int | list[int] = target.block_output(i).features  # type: ignore[arg-type]
    else:
        if settings.kind != "prototype":
            raise RunError(f"a fused bridge of several targets is a prototype bridge, got {settings.kind!r}")
        d_in = [tb.block_output(ik).features for tb, ik in zip(target, i, strict=True)]  # type: ignore
    torch.manual_seed(seed)
    kw: dict[str, Any] = {"d_in": d_in, "tokens": s_in.tokens, "d_out": s_in.features}
    if settings.kind in ("prototype", "lowrank"):
        kw["rank"] = settings.rank
    if settings.kind == "prototype":
        kw["prototypes"] = settings.prototypes
    bridge = build_bridge(settings.kind, **kw)
    if settings.kind == "prototype":
        tokens = source_tokens(source, x_source, j).flatten(0, 1)  # (n*T, D_out)
        init_prototypes(bridge, tokens, settings.prototype_init, seed=seed)
    kinds = target.kind if isinstance(target, Backbone) else [tb.kind for tb in target]
    bridge.meta.update({"i": i if isinstance(i, int) else list(i), "j": j, "target_kind": kinds,
                        "source_kind": source.kind})
    return bridge


def positions(run: Run, i: int | list[int] | None, j: int | None) -> tuple[int | list[int], int]:
    """(i, j) from the arguments, else from selection.json (a fused run's ``i``: one per target)."""
    if i is not None and j is not None:
        return i, j
    from edge_bridge.select import Selection

    sel = Selection.load(run.require(run.selection, "select"))
    return (sel.i if i is None else i), (sel.j if j is None else j)


def fused_positions(run: Run, targets: list[Backbone], i: int | list[int]) -> list[int]:
    """One checked block index per target of a fused run, in :attr:`Task.target_keys` order."""
    names = target_names(run)
    if not isinstance(i, list | tuple) or len(i) != len(targets):
        raise RunError(f"run {run.path} is a fused {run.task.name!r} run with {len(targets)} targets "
                       f"({', '.join(names)}); give one position per target in that order, e.g. --i "
                       f"{','.join(['1'] * len(targets))}, or take them from `edge-bridge select --run "
                       f"{run.path}`; got i={i}")
    return [tb.position(ik) for tb, ik in zip(targets, i, strict=True)]


def train(run: Run, cfg: Any, settings: BridgeSettings, *, i: int | list[int] | None = None,
          j: int | None = None, resume: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train the bridge on the paired subjects (validation: the val subjects' pairs); DDP under torchrun.

    A fused run (several targets) trains one fused prototype bridge from every target backbone at its
    ``i_k`` (``bridge_config.json`` meta: ``i`` a list, ``targets`` the modalities), as
    ``bench/fusion.py`` does; a single-target run the paper's bridge, as before.
    """
    from edge_bridge.features import bridge_cache
    from edge_bridge.train import init_distributed, train_bridge

    rank, world = init_distributed()
    targets = load_targets(run)
    source, _ = load_backbone(run.require(run.source_model, "fit-source"))
    i, j = positions(run, i, j)
    keys = run.task.target_keys
    paired, val = run.role("paired"), run.role("val")
    if is_fused(run):
        i = fused_positions(run, targets, i)
        target: Backbone | list[Backbone] = targets
        xt, xv = [paired.x[k] for k in keys], [val.x[k] for k in keys]
    else:
        if isinstance(i, list | tuple):
            raise RunError(f"run {run.path} has one target ({run.task.target.modality}), so one position i, "
                           f"got {i}")
        target, i = targets[0], targets[0].position(i)
        xt, xv = paired.x["target"], val.x["target"]
    j = source.position(j)
    t0 = time.perf_counter()
    cache = bridge_cache(target, source, xt, paired.x["source"], i, progress=progress)
    vcache = bridge_cache(target, source, xv, val.x["source"], i)
    t_feat = time.perf_counter() - t0
    bridge = make_bridge(target, source, i, j, settings, paired.x["source"], cfg.seed)
    bridge.meta["settings"] = settings.__dict__
    if is_fused(run):
        bridge.meta["targets"] = target_names(run)
    res = train_bridge(bridge, source, j, cache, vcache, cfg, out_dir=run.bridge, resume=resume,
                       progress=progress)
    trainable, _ = bridge.count_parameters()
    out = {"i": i, "j": j, "bridge": bridge.kind, "trainable_parameters": trainable,
           "best_epoch": res.best_epoch, "best_val_loss": res.best_val,
           "best_val_agreement": res.best.get("val_agreement"),
           "best_val_balanced_agreement": res.best.get("val_balanced_agreement"), "one_class": res.one_class,
           "seconds_per_epoch": res.seconds_per_epoch, "feature_seconds": t_feat, "world_size": world,
           "paired_windows": len(paired)}
    if is_fused(run):
        out["targets"] = target_names(run)
    if rank == 0:
        from edge_bridge.fileio import atomic_write_text

        atomic_write_text(run.bridge / "train_summary.json", json.dumps(out, indent=1))
    return out


def train_kd(run: Run, cfg: FitConfig, *, temperature: float = 2.0, progress: bool = False) -> dict[str, Any]:
    """KD baseline: target backbone + head on the paired subjects, soft labels from the source model."""
    from edge_bridge.fitting import predict
    from edge_bridge.kd import fit_kd

    student, _ = load_backbone(run.require(run.target_backbone, "pretrain"))
    source, _ = load_backbone(run.require(run.source_model, "fit-source"))
    torch.manual_seed(cfg.seed)
    student.set_head(source.n_classes)
    paired, val = run.role("paired"), run.role("val")
    teacher = predict(source, paired.x["source"])
    teacher_val = predict(source, val.x["source"])
    res = fit_kd(student, paired.x["target"], teacher, val.x["target"], teacher_val, cfg,
                 temperature=temperature, progress=progress)
    save_backbone(student, run.kd_student, meta={**run.spec_meta("target"), "recipe": "kd",
                                                 "temperature": temperature, "fit": res.to_dict()})
    return {"trainable_parameters": student.num_parameters(), "best_epoch": res.best_epoch,
            "seconds_per_epoch": res.seconds_per_epoch}


# --- evaluate ----------------------------------------------------------------------------------------------
def fused_composite(run: Run, source: Backbone, bridge: Any) -> Any:
    """The run's :class:`~edge_bridge.composite.Composite`: a fused bridge (``meta["i"]`` a list) gets every
    target backbone of the run as its fronts, a single-target bridge the main target's alone."""
    from edge_bridge.composite import Composite

    i = bridge.meta["i"]
    if not isinstance(i, list):
        target, _ = load_backbone(run.require(run.target_backbone, "pretrain"))
        return Composite(target, source, bridge, i, bridge.meta["j"])
    targets = load_targets(run)
    if len(i) != len(targets):
        raise RunError(f"{run.bridge}: the bridge takes {len(i)} target inputs, but task {run.task.name!r} "
                       f"has {len(targets)} targets ({', '.join(target_names(run))}); re-run "
                       f"`edge-bridge train --run {run.path}`")
    extra = [(k, tb, ik) for k, tb, ik in zip(run.task.target_keys[1:], targets[1:], i[1:], strict=True)]
    return Composite(targets[0], source, bridge, i[0], bridge.meta["j"], extra_targets=extra)


def predict_composite(comp: Any, w: Any, batch_size: int = 128) -> np.ndarray:
    """Logits of a (possibly fused) composite on windows ``w`` (``w.x[key]`` per target key)."""
    from edge_bridge.fitting import predict

    if not comp.extra_keys:
        return predict(comp, w.x["target"], batch_size)
    comp.eval()
    xs = [torch.as_tensor(w.x[k], dtype=torch.float32) for k in ("target", *comp.extra_keys)]
    with torch.no_grad():
        return torch.cat([comp(*(x[s:s + batch_size] for x in xs))
                          for s in range(0, len(xs[0]), batch_size)]).numpy()


def evaluate(run: Run, *, upper_bound_cfg: FitConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """Metrics on the test subjects' labelled windows; writes metrics.json.

    A fused run's composite reads every target (``input`` e.g. ``"target+eda"``); its KD student and
    supervised upper bound read the main target alone (a K-input student is not built) and say so in a
    ``note``.
    """
    from edge_bridge.bridge import load_bridge
    from edge_bridge.evaluate import classification_metrics
    from edge_bridge.fileio import atomic_write_text
    from edge_bridge.fitting import predict

    test = run.role("test", labelled=True)
    k = len(run.task.classes)
    source, _ = load_backbone(run.require(run.source_model, "fit-source"))
    bridge = load_bridge(run.require(run.bridge, "train"))
    comp = fused_composite(run, source, bridge)
    single: dict[str, str] = {}
    if comp.extra_keys:
        single = {"note": f"reads the main target ({run.task.target.modality}) alone: the fused bridge's "
                          f"KD and supervised counterparts for {len(run.task.target_keys)} inputs are not "
                          "built"}
    models: dict[str, dict[str, Any]] = {}
    describe = comp.describe()
    if comp.extra_keys:
        describe = {**describe, "i": [comp.i, *comp.extra_positions.values()], "targets": target_names(run)}
    models["bridge (composite)"] = {"input": "+".join(("target", *comp.extra_keys)), **classification_metrics(
        test.labels, predict_composite(comp, test).argmax(1), k), **describe}
    models["source model"] = {"input": "source", **classification_metrics(
        test.labels, predict(source, test.x["source"]).argmax(1), k)}
    if run.kd_student.exists():
        kd, _ = load_backbone(run.kd_student)
        models["kd student"] = {"input": "target", **classification_metrics(
            test.labels, predict(kd, test.x["target"]).argmax(1), k), **single}
    if upper_bound_cfg is not None and not run.target_supervised.exists():
        supervised_target(run, upper_bound_cfg, progress=progress)
    if run.target_supervised.exists():
        sup, _ = load_backbone(run.target_supervised)
        models["target supervised"] = {"input": "target", **classification_metrics(
            test.labels, predict(sup, test.x["target"]).argmax(1), k), **single}
    out = {"schema_version": 1, "task": run.task.name, "classes": list(run.task.classes),
           "test_subjects": run.splits()["test"], "models": models}
    atomic_write_text(run.metrics, json.dumps(out, indent=1))
    return out


__all__ = ["BridgeSettings", "RunError", "check_input_shape", "evaluate", "fit_source", "fused_composite",
           "is_fused", "load_published", "load_targets", "preset_positions", "pretrain", "resolve_key",
           "select", "select_fused_run", "target_backbone_path", "target_names", "train", "train_kd",
           "use_published_target"]
