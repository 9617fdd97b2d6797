"""The export entry point: a trained bridge run -> a verified bundle (DESIGN.md, "Bundle").

:func:`export` reads a run directory (:mod:`edge_bridge.runs`) and hands the composite to
:func:`export_composite`, which does the work in this order:

1. one FP32 ONNX graph per part (:data:`~edge_bridge.export.onnx_export.PARTS`), each checked;
2. parity of ONNX Runtime vs PyTorch per part and chained, on held-out windows (the run's test subjects);
3. static INT8 (or FP16) of ``target_front``, ``source_back`` and ``source_front`` in the flavour of
   ``target``, mixed precision, chosen per part by the guard's own measure (decision agreement with FP32)
   on the calibration windows (``_Job._mixed_int8``; seconds per part): the op set (cpu: the ops with an
   INT8 kernel, or the compute ops alone; the fewest nodes after ONNX Runtime's optimisation among those
   that reach the guard's threshold plus headroom), the calibration method (MinMax, Percentile, Entropy),
   then, if the part still misses it, the fewest nodes kept in FP32 (:mod:`edge_bridge.export.sensitivity`;
   listed in the manifest with their measured effect). Attention's MatMuls of two activations stay FP32
   by rule (:func:`~edge_bridge.export.quantize.activation_matmuls`; listed too). Calibration: target
   windows for ``target_front``, source windows for ``source_front``, and for ``source_back`` both things
   it is fed at run time: the
   bridge outputs ``z`` of the target windows
   (the live composite) and ``source_front``'s tokens of the source windows (on-site calibration reads the
   source model's decisions through it; calibrating on bridge outputs alone clipped the real tokens and
   flipped 13 % of the source model's decisions). The bridge stays FP32: it is refit on site. ``jetson``
   graphs must pass the TensorRT audit;
4. the accuracy guard: FP32 vs quantized composite on the held-out windows (argmax agreement, balanced
   accuracy, max logit drift). Below ``agreement_threshold`` the node search runs once more for full
   agreement on the calibration windows; still below, parts fall back whole one step at a time
   (int8 -> fp16 -> fp32), the part whose step helps most first, each step logged as a warning and written
   to the manifest: a degraded bundle is never shipped silently. The same for the source model's decisions
   as calibration computes them (``source_front`` then ``source_back`` at their shipped precisions): the
   step that helps most, ``source_front`` on a tie (it feeds nothing else);
5. ``bridges/v0001.onnx`` + ``v0001.safetensors`` + ``v0001.golden.npz`` (its own expected outputs),
   ``golden.npz``, ``source_model/`` (the source model's safetensors weights and config, for calibrate's
   gradient path on site; ``source_weights=False`` leaves them out) and ``manifest.json``; the
   bundle is built in a temporary sibling directory, verified with :meth:`Bundle.load`, and renamed into
   place, so a failed export leaves nothing behind.

A fused composite (a bridge fed by K target modalities, ``Composite(..., extra_targets=...)``) exports the
same way with one more graph per extra target, ``target_front_<key>.onnx`` (``x_target_<key> -> h_<key>``),
and a bridge graph with the inputs ``h, h_<key>, ...``; the manifest (schema 2) records each extra target's
preprocessing and position. ``target_front``, ``source_back`` and ``source_front`` quantize as above, with
the fused chain (every front, the K-input bridge) in the search, the calibration of ``source_back`` and the
guard; the calibration windows then carry every target modality in lockstep. Each extra front goes
through the same steps as ``target_front`` (``_Job._mixed_int8`` on its own target's calibration windows,
searched after ``target_front`` and before ``source_back`` with the parts already chosen in place, scored
by the fused chain's decisions; then the guard and its fallback ladder, in which every front is one more
rung), and is recorded per part (``quantization.parts.target_front_<key>``, ``export --report``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationMethod

from edge_bridge import __version__
from edge_bridge.bundle import (
    GOLDEN,
    SOURCE_MODEL_DIR,
    BridgeVersion,
    Bundle,
    ExtraTarget,
    Manifest,
    TensorSpec,
    bridge_file,
    part_spec,
    sha256_file,
    write_bridge_golden,
    write_manifest,
)
from edge_bridge.export.errors import ExportError
from edge_bridge.export.golden import golden_arrays, run_fused_bridge, write_golden
from edge_bridge.export.onnx_export import (
    PARTS,
    check_graph,
    export_part,
    ort_session,
    part_info,
    part_inputs,
    part_shapes,
    run_session,
    save_model,
    stamp,
)
from edge_bridge.export.quantize import (
    Precision,
    QuantConfig,
    Target,
    WindowReader,
    parse_enum,
    pick_windows,
    quantize_part,
    to_fp16,
)
from edge_bridge.export.reference import write_reference
from edge_bridge.log import resolve_level
from edge_bridge.signals.spec import Preprocessing

logger = logging.getLogger(__name__)

LADDER = (Precision.INT8, Precision.FP16, Precision.FP32)
PARITY_TOLERANCE = 1e-4
DEFAULT_THRESHOLD = 0.98
MAX_FP32_SHARE = 0.25  # more sensitive nodes than this: the part falls back whole (the last resort)
# the search fits on the calibration windows, the guard judges held-out subjects: the search aims at half
# the allowed disagreement so that the mixed graph still passes on subjects it never saw
SEARCH_HEADROOM = 0.5
GREEDY_STEPS = 4  # "thorough": emulated greedy steps; the real-build prefix search may still keep more nodes
SEARCHED_METHODS = 2  # "thorough": the node search runs for the best two calibration methods at most
# the default ("fast"): lowest-SQNR nodes measured alone in FP32 (emulated, each an ORT session over the
# calibration windows) before the prefix search; "thorough" measures sensitivity.FIRST_ROUND
FAST_ROUND = 16
INT8_SEARCHES = ("off", "fast", "thorough")


@dataclass
class WindowSet:
    """Paired windows for calibration or evaluation.

    Attributes
    ----------
    target : ndarray, shape (n, C_t, L_t)
    source : ndarray, shape (n, C_s, L_s)
    labels : ndarray of int, shape (n,)
        -1 where unlabelled; balanced accuracy uses the labelled ones only.
    origin : str
        Where they come from, for the log (may hold host paths).
    provenance : dict or None
        Where they come from, for the manifest: file or folder names and sha256, never a host path
        (:func:`provenance`); ``None`` records the origin with every absolute path cut to its last part.
    subjects : ndarray or None
        The subject of each window, when known: the drift reference's within-session null needs it.
    extras : dict of key -> ndarray, shape (n, C_k, L_k)
        A fused bridge's extra targets' windows, in lockstep with ``target`` (empty otherwise).
    """

    target: np.ndarray
    source: np.ndarray
    labels: np.ndarray
    origin: str
    provenance: dict[str, Any] | None = None
    subjects: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.target)

    @staticmethod
    def from_windows(w: Any, origin: str, extra_keys: tuple[str, ...] = ()) -> WindowSet:
        """From :class:`edge_bridge.recordings.paired.Windows` with ``x["source"]`` and ``x["target"]``
        (and ``x[key]`` for each of a fused bridge's ``extra_keys``)."""
        missing = [k for k in ("source", "target", *extra_keys) if k not in w.x]
        if missing:
            raise ExportError(f"{origin}: windows lack the {missing} modality (have {sorted(w.x)}); export "
                              "needs paired source and target windows")
        subjects = getattr(w, "subjects", None)
        return WindowSet(np.asarray(w.x["target"], np.float32), np.asarray(w.x["source"], np.float32),
                         np.asarray(w.labels, np.int64), origin,
                         subjects=None if subjects is None else np.asarray(subjects),
                         extras={k: np.asarray(w.x[k], np.float32) for k in extra_keys})

    def head(self, n: int) -> WindowSet:
        return WindowSet(self.target[:n], self.source[:n], self.labels[:n], self.origin, self.provenance,
                         extras={k: v[:n] for k, v in self.extras.items()})

    def take(self, idx: np.ndarray) -> WindowSet:
        """The windows at ``idx`` (every modality in lockstep)."""
        return WindowSet(self.target[idx], self.source[idx], self.labels[idx], self.origin, self.provenance,
                         None if self.subjects is None else self.subjects[idx],
                         {k: v[idx] for k, v in self.extras.items()})

    def record(self) -> dict[str, Any]:
        """The manifest's record of where the windows come from (no host path)."""
        if self.provenance is not None:
            return dict(self.provenance)
        return {"name": _strip_paths(self.origin)}


def _strip_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its last component."""
    import re

    return re.sub(r"(?<![\w.])/[^\s'\"\]\[,()]+", lambda m: Path(m.group(0)).name, text)


def provenance(path: str | os.PathLike[str], files: list[Path] | None = None) -> dict[str, Any]:
    """A file or folder as the manifest records it: its name and sha256, never the builder's path.

    A folder's sha256 is over the sorted (relative path, file sha256) lines of ``files`` (default: every
    regular file below it), so the same recordings give the same digest wherever they lie.
    """
    import hashlib

    p = Path(path)
    if p.is_file():
        return {"name": p.name, "sha256": sha256_file(p)}
    listed = sorted(files if files is not None else [f for f in p.rglob("*") if f.is_file()])
    h = hashlib.sha256()
    for f in listed:
        rel = f.relative_to(p).as_posix() if f.is_relative_to(p) else f.name
        h.update(f"{rel} {sha256_file(f)}\n".encode())
    return {"name": p.name, "files": len(listed), "sha256": h.hexdigest()}


@contextlib.contextmanager
def _log_level(verbose: bool | int | str | None) -> Iterator[None]:
    """MNE-style per-call ``verbose``: change the package logger's level for this call only."""
    if verbose is None:
        yield
        return
    pkg = logging.getLogger("edge_bridge")
    old = pkg.level
    pkg.setLevel(resolve_level(verbose))
    try:
        yield
    finally:
        pkg.setLevel(old)


# --- data ---------------------------------------------------------------------------------------------------
def load_calibration(path: str | os.PathLike[str], source: Preprocessing, target: Preprocessing,
                     classes: tuple[str, ...] = (), exclude_subjects: tuple[str, ...] = (),
                     label_map: dict[str, str] | None = None,
                     channel_map: dict[str, Any] | None = None,
                     min_label_fraction: float = 1.0,
                     extra_targets: dict[str, Preprocessing] | None = None) -> WindowSet:
    """Calibration windows from a directory of recordings (EDF+, BrainFlow CSV, ...; ``channel_map`` as
    the run's ``--channels``) (cut with THE preprocessing of the manifest)
    or from a ``.npz`` written by ``Windows.save``.

    The windows are labelled by the run's task rule (``min_label_fraction``, as training labelled them),
    so a report over them counts the same windows per class as the run's own splits. ``extra_targets``
    (a fused bridge's further target specs, by key) are windowed in lockstep with the target.

    Windows of ``exclude_subjects`` (the held-out subjects the accuracy guard uses) are dropped, so the
    guard never measures on windows the ranges were fitted to.

    Raises
    ------
    ExportError
        If the path holds no recordings, or the windows' shapes do not match the specs.
    """
    from edge_bridge.recordings.paired import Windows, windows_from_files

    path = Path(path)
    if path.is_dir():
        from edge_bridge.recordings.dataset import recording_files

        files = recording_files(path, "--calibration-data")
        w = windows_from_files(files, source, target, classes, label_map=label_map, channel_map=channel_map,
                               min_label_fraction=min_label_fraction,
                               extra_targets=tuple((extra_targets or {}).values()))
        origin = f"{path} ({len(files)} recordings)"
        prov = provenance(path, [Path(f) for f in files])
    elif path.is_file() and path.suffix == ".npz":
        w = Windows.load(path)
        origin = str(path)
        prov = provenance(path)
    else:
        raise ExportError(f"{path}: calibration data must be a directory of .edf recordings or a .npz of "
                          "windows, and this is neither")
    if exclude_subjects and len(w):
        keep = ~np.isin(w.subjects, list(exclude_subjects))
        if not keep.all():
            logger.info("calibration: left out %d windows of the held-out subjects %s", int((~keep).sum()),
                        sorted(set(w.subjects[~keep].tolist())))
            w = w.subset(keep)
    extra = extra_targets or {}
    ws = WindowSet.from_windows(w, origin, tuple(extra))
    ws.provenance = prov
    for name, x, spec in (("target", ws.target, target), ("source", ws.source, source),
                          *((k, ws.extras[k], extra[k]) for k in extra)):
        if len(x) and tuple(x.shape[1:]) != tuple(spec.input_shape):
            raise ExportError(f"{origin}: {name} windows have shape {tuple(x.shape[1:])} but the "
                              f"{spec.modality} preprocessing gives {tuple(spec.input_shape)}; cut them with "
                              "the run's preprocessing")
    logger.info("calibration: %d paired windows from %s", len(ws), origin)
    return ws


# --- the entry points ---------------------------------------------------------------------------------------
def export(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
           calibration: str | os.PathLike[str] | WindowSet | None = None, precision: str = "int8",
           target: str = "cpu", agreement_threshold: float = DEFAULT_THRESHOLD, overwrite: bool = False,
           golden_windows: int = 4, holdout_max: int = 512, source_weights: bool = True,
           int8_search: str = "fast", quant_config: QuantConfig | None = None,
           reference_data: str | os.PathLike[str] | WindowSet | None = None,
           verbose: bool | int | str | None = None) -> Bundle:
    """Export a trained run (``edge-bridge train`` done) as a bundle; see the module docstring.

    Parameters
    ----------
    run_dir : path
        The run directory; reads ``target_backbone/``, ``source_model/``, ``bridge/`` and the test subjects'
        windows (held-out windows for parity, the accuracy guard and ``golden.npz``).
    out_dir : path
        The bundle directory to create.
    calibration : path or WindowSet
        Directory of EDF+ recordings of both modalities, or a windows ``.npz``; required for int8.
    precision : {"int8", "fp16", "fp32"}
        Of target_front, source_back and source_front; the bridge is always FP32.
    target : {"cpu", "jetson"}
        INT8 flavour: ONNX Runtime CPU, or TensorRT-compatible explicit QDQ.
    agreement_threshold : float
        Minimum argmax agreement of the shipped composite with FP32 before parts fall back.
    overwrite : bool
        Replace an existing ``out_dir`` (only after the new bundle verified).
    golden_windows : int
    holdout_max : int
        At most this many held-out windows are used.
    int8_search : {"fast", "thorough", "off"}
        How each INT8 part is chosen (``export --int8-search``; see ``_Job._mixed_int8``). ``"fast"`` (the
        default; seconds per part): op set and calibration method by the guard's measure on the
        calibration windows, then, if the part misses it, the fewest FP32 nodes from a one-pass per-node
        ranking. ``"thorough"``: greedy emulated steps and the runner-up calibration method too (minutes).
        ``"off"``: every node of the configured op set INT8 with MinMax, whole-part fallback only.
    quant_config : QuantConfig or None
        Replaces the ``target`` flavour's defaults (its op set is then the only one tried).
    source_weights : bool
        Ship the source model's weights (``source_model/``, safetensors) so that ``edge-bridge calibrate``
        can take gradient steps on the paper's objective on site without the training run. Off: the bundle
        is ONNX only and calibrate needs ``--run`` for gradient steps.
    reference_data : path or WindowSet or None
        Recordings (a directory, as ``calibration``) or windows of subjects the run never trained on, to
        compute the drift reference from instead of the run's test subjects. Why: the reference's null
        (how far an unshifted user's statistics stray) is only as wide as the subjects it saw, and a run
        with one or two test subjects under-states it, so every new user looks drifted. Their subject
        names give the within-session null; labels are not needed.
    verbose : bool, int, str or None

    Returns
    -------
    Bundle
        The verified bundle.

    Raises
    ------
    RunError
        If the run lacks a step (the message names the command).
    ExportError
        For bad options, too few calibration windows, a failed check or audit.
    """
    with _log_level(verbose):
        from edge_bridge.bridge import load_bridge
        from edge_bridge.composite import Composite
        from edge_bridge.models import load_backbone
        from edge_bridge.runs import Run

        run = Run.open(run_dir)
        t_dir = run.require(run.target_backbone, "pretrain")
        s_dir = run.require(run.source_model, "fit-source")
        b_dir = run.require(run.bridge, "train")
        target_model, t_meta = load_backbone(t_dir)
        source_model, s_meta = load_backbone(s_dir)
        bridge = load_bridge(b_dir)
        if "i" not in bridge.meta or "j" not in bridge.meta:
            raise ExportError(f"{b_dir}: the bridge does not record its positions (i, j); re-run "
                              f"`edge-bridge train --run {run.path}`")
        extra_keys = tuple(run.task.target_keys[1:])
        positions_i = bridge.meta["i"]
        extra, extra_specs, extra_weights = [], {}, {}
        if isinstance(positions_i, list):  # a fused bridge: one position per target, main target first
            n_in = getattr(bridge, "n_inputs", 1)
            if len(positions_i) != 1 + len(extra_keys) or n_in != len(positions_i):
                raise ExportError(f"{b_dir}: the bridge takes {n_in} target inputs at positions "
                                  f"{positions_i}, but task {run.task.name!r} has the targets "
                                  f"{list(run.task.target_keys)}; train the bridge for this task's targets")
            from edge_bridge.pipeline import target_backbone_path

            for key, ik, spec in zip(extra_keys, positions_i[1:], run.task.targets[1:], strict=True):
                k_dir = run.require(target_backbone_path(run, key), "pretrain")
                k_model, k_meta = load_backbone(k_dir)
                extra.append((key, k_model, ik))
                extra_specs[key] = _spec(k_meta, spec)
                extra_weights[f"target_front_{key}"] = sha256_file(k_dir / "model.safetensors")
            positions_i = positions_i[0]
        else:
            extra_keys = ()  # a single-target bridge of a fused task: the main target alone, as before
        composite = Composite(target_model, source_model, bridge, positions_i, bridge.meta["j"],
                              extra_targets=extra)
        src_spec = _spec(s_meta, run.task.source)
        tgt_spec = _spec(t_meta, run.task.target)
        test = run.role("test")
        subjects = sorted(set(test.subjects.tolist()))
        holdout = WindowSet.from_windows(test, f"{run.path} test subjects {subjects}", extra_keys)
        wfile = run.path / "windows.npz"
        holdout.provenance = {"run": run.path.name, "subjects": subjects,
                              **({"windows_sha256": sha256_file(wfile)} if wfile.is_file() else {})}
        every = holdout  # the drift reference wants every held-out window at the spec's hop (see below)
        if len(holdout) > holdout_max:
            idx = np.linspace(0, len(holdout) - 1, holdout_max).round().astype(int)
            holdout = holdout.take(idx)
        if calibration is not None and not isinstance(calibration, WindowSet):
            calibration = load_calibration(calibration, src_spec, tgt_spec, tuple(run.task.classes),
                                           exclude_subjects=tuple(run.splits()["test"]),
                                           label_map=run.task.label_map, channel_map=run.channel_map,
                                           min_label_fraction=run.task.min_label_fraction,
                                           extra_targets=extra_specs)
        if reference_data is not None and extra_keys:
            raise ExportError("--reference-data is not supported for a fused bridge yet (its windows would "
                              f"need the {list(extra_keys)} modalities in lockstep); export without it to "
                              "take the drift reference from the run's test subjects")
        if reference_data is not None:
            every = (reference_data if isinstance(reference_data, WindowSet) else
                     load_calibration(reference_data, src_spec, tgt_spec, tuple(run.task.classes),
                                      label_map=run.task.label_map, channel_map=run.channel_map,
                                      min_label_fraction=run.task.min_label_fraction))
            if not len(every):
                raise ExportError(f"{every.origin}: no window for the drift reference")
            n_subj = len(set(every.subjects.tolist())) if every.subjects is not None else 0
            logger.info("drift reference: %d windows of %d subject(s) from %s", len(every), n_subj,
                        every.origin)
        weights = {"target_front": sha256_file(t_dir / "model.safetensors"),
                   "source_back": sha256_file(s_dir / "model.safetensors"),
                   "source_front": sha256_file(s_dir / "model.safetensors"),
                   "bridge": sha256_file(b_dir / "bridge.safetensors"), **extra_weights}
        return export_composite(composite, out_dir, task=run.task.name, classes=tuple(run.task.classes),
                                source_spec=src_spec, target_spec=tgt_spec, holdout=holdout,
                                calibration=calibration, precision=precision, target=target,
                                agreement_threshold=agreement_threshold, overwrite=overwrite,
                                golden_windows=golden_windows, weights_sha256=weights,
                                source_weights=source_weights, int8_search=int8_search,
                                quant_config=quant_config, reference_windows=every,
                                run_dir=str(run.path), label_map=run.task.label_map,
                                extra_specs=extra_specs)


def _spec(meta: dict[str, Any], fallback: Preprocessing) -> Preprocessing:
    """The preprocessing the backbone was trained with (its saved meta), else the task preset."""
    d = meta.get("preprocessing")
    return Preprocessing.from_dict(d) if d else fallback


def export_composite(composite: Any, out_dir: str | os.PathLike[str], *, task: str, classes: tuple[str, ...],
                     source_spec: Preprocessing, target_spec: Preprocessing, holdout: WindowSet,
                     calibration: WindowSet | None = None, precision: str | Precision = "int8",
                     target: str | Target = "cpu", agreement_threshold: float = DEFAULT_THRESHOLD,
                     overwrite: bool = False, golden_windows: int = 4, source_weights: bool = True,
                     quant_config: QuantConfig | None = None,
                     weights_sha256: dict[str, str] | None = None, parity_tolerance: float = PARITY_TOLERANCE,
                     run_dir: str | None = None, verbose: bool | int | str | None = None,
                     label_map: dict[str, str] | None = None, int8_search: str = "fast",
                     reference_windows: WindowSet | None = None,
                     extra_specs: dict[str, Preprocessing] | None = None) -> Bundle:
    """Export a :class:`~edge_bridge.composite.Composite` as a bundle (the work behind :func:`export`).

    Parameters are those of :func:`export`, plus the pieces a run directory would give: ``task``,
    ``classes``, the two preprocessing specs, ``holdout`` windows, ``weights_sha256`` (sha256 of the weights
    file each part comes from; otherwise a digest of its state dict is recorded) and an optional
    ``quant_config`` replacing the ``target`` flavour's defaults, and the task's ``label_map``
    (annotation -> class, recorded so the device can score annotated recordings against merged classes).
    ``reference_windows``: the held-out windows the drift reference is computed from, when ``holdout`` is a
    thinned subset (the guard's cost grows with its windows; the reference's minute means need every window
    at the spec's hop, in time order per subject); default ``holdout``.
    ``extra_specs``: a fused composite's extra targets' preprocessing, by key (``composite.extra_keys``);
    ``holdout`` (and ``calibration``) then carry their windows in ``extras``; each extra front is exported at
    ``precision`` like ``target_front`` (see the module docstring).
    """
    with _log_level(verbose):
        prec = parse_enum(Precision, precision, "precision")
        tgt = parse_enum(Target, target, "target")
        qcfg = quant_config or QuantConfig.for_target(tgt)
        if qcfg.target is not tgt:
            raise ExportError(f"quant_config is for target {qcfg.target.value!r} but target is {tgt.value!r}")
        if not 0.0 < float(agreement_threshold) <= 1.01:
            raise ExportError(f"agreement_threshold must be in (0, 1.01] (1.01 forces the FP32 fallback), "
                              f"got {agreement_threshold!r}")
        if prec is Precision.INT8 and calibration is None:
            raise ExportError("--precision int8 needs calibration windows: pass --calibration-data DIR "
                              "(paired recordings) or a windows .npz; or export with --precision fp16/fp32")
        if len(holdout) == 0:
            raise ExportError("no held-out windows to check the export on (the run's test subjects have "
                              "none)")
        out = Path(out_dir)
        if out.exists() and not overwrite:
            raise ExportError(f"{out} already exists; choose a new bundle directory or pass --force to "
                              "replace it (it is replaced only after the new bundle verifies)")
        _check_specs(composite, classes, source_spec, target_spec)
        extra_specs = _check_fused(composite, prec, extra_specs or {}, holdout, calibration)
        job = _Job(composite, out, prec, tgt, qcfg, float(agreement_threshold), calibration, holdout,
                   dict(weights_sha256 or {}), parity_tolerance)
        if int8_search not in INT8_SEARCHES:
            raise ExportError(f"int8_search must be one of {', '.join(INT8_SEARCHES)}, got {int8_search!r}")
        job.int8_search = int8_search
        job.reference_windows = reference_windows if reference_windows is not None else holdout
        job.qcfg_given = quant_config is not None
        job.extra_specs = extra_specs
        t0 = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.exporting-", dir=out.parent))
        try:
            with tempfile.TemporaryDirectory(prefix="edge-bridge-export-") as work:
                job.work = Path(work)
                job.export_fp32()
                job.parity()
                job.quantize()
                job.guard()
                manifest = job.assemble(staging, task=task, classes=classes, source_spec=source_spec,
                                        target_spec=target_spec, golden_windows=golden_windows,
                                        source_weights=source_weights,
                                        run_dir=run_dir, label_map=label_map)
            Bundle.load(staging)
            _replace_dir(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        bundle = Bundle.load(out)
        acc = manifest.quantization.get("accuracy", {})
        logger.info("bundle %s written in %.1f s (%.1f kB; %s; agreement %s)", out,
                    time.perf_counter() - t0, manifest.report["bundle_bytes"] / 1e3,
                    ", ".join(f"{p} {s.precision}" for p, s in sorted(manifest.parts.items())),
                    f"{acc['shipped']['agreement']:.3f}" if acc else "n/a")
        return bundle


def _check_specs(composite: Any, classes: tuple[str, ...], source_spec: Preprocessing,
                 target_spec: Preprocessing) -> None:
    for what, model, spec in (("target", composite.target, target_spec), ("source", composite.source,
                                                                          source_spec)):
        if tuple(model.input_shape) != tuple(spec.input_shape):
            raise ExportError(f"the {what} backbone reads windows of shape {tuple(model.input_shape)} but "
                              f"the {spec.modality} preprocessing spec gives {tuple(spec.input_shape)}; "
                              "export with the spec the model was trained with")
    if len(classes) != composite.source.n_classes:
        raise ExportError(f"{len(classes)} class names {list(classes)} for a head with "
                          f"{composite.source.n_classes} outputs")


def _check_fused(composite: Any, prec: Precision, extra_specs: dict[str, Preprocessing],
                 holdout: WindowSet, calibration: WindowSet | None) -> dict[str, Preprocessing]:
    """A fused composite's extra targets: specs, held-out windows and (INT8) calibration windows for each;
    returns the specs in the bridge's input order. A single-target composite must be given none."""
    keys = tuple(getattr(composite, "extra_keys", ()))
    if sorted(extra_specs) != sorted(keys):
        raise ExportError(f"the composite's extra targets are {list(keys)} but preprocessing specs were "
                          f"given for {sorted(extra_specs)}; pass one spec per extra target (extra_specs)")
    if not keys:
        return {}
    for key in keys:
        model = composite.extra_fronts[key].target
        spec = extra_specs[key]
        if tuple(model.input_shape) != tuple(spec.input_shape):
            raise ExportError(f"the {key} backbone reads windows of shape {tuple(model.input_shape)} but its "
                              f"preprocessing spec gives {tuple(spec.input_shape)}; export with the spec the "
                              "model was trained with")
        sets = [("held-out", holdout)]
        if prec is Precision.INT8 and calibration is not None:
            sets.append(("calibration", calibration))
        for what, ws in sets:
            x = ws.extras.get(key)
            if x is None or len(x) != len(ws) or tuple(x.shape[1:]) != tuple(spec.input_shape):
                got = None if x is None else tuple(x.shape)
                raise ExportError(f"the {what} windows need the {key} windows in lockstep with the target's, "
                                  f"shape ({len(ws)}, {', '.join(map(str, spec.input_shape))}); got {got}. "
                                  "Give windows of every target modality (recordings with each channel)")
    return {k: extra_specs[k] for k in keys}


def _replace_dir(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    from edge_bridge.fileio import fsync_dir

    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --- the job ------------------------------------------------------------------------------------------------
class _Job:
    """State of one export between its steps (files per part and precision, measurements)."""

    def __init__(self, composite: Any, out: Path, precision: Precision, target: Target, qcfg: QuantConfig,
                 threshold: float, calibration: WindowSet | None, holdout: WindowSet,
                 weights: dict[str, str], parity_tolerance: float) -> None:
        self.composite = composite.eval()
        self.parts = composite.parts()
        self.shapes = part_shapes(composite)
        self.out = out
        self.precision = precision
        self.target = target
        self.qcfg = qcfg
        self.threshold = threshold
        self.calibration = calibration
        self.holdout = holdout
        self.weights = weights
        self.parity_tolerance = parity_tolerance
        self.work = Path()
        self.files: dict[str, dict[Precision, Path]] = {p: {} for p in PARTS}
        self.report: dict[str, Any] = {}
        self.quant: dict[str, Any] = {}
        self.chosen: dict[str, Precision] = {p: Precision.FP32 for p in PARTS}
        self._sessions: dict[Path, Any] = {}
        self._fp32_logits: np.ndarray | None = None
        self._fp32_source: tuple[np.ndarray, np.ndarray] | None = None  # (z, logits) of the source path
        self._upstream: dict[tuple[Any, ...], np.ndarray] = {}  # fixed parts' outputs during a search
        self.int8_search = "fast"  # one of INT8_SEARCHES (see _mixed_int8)
        self.qcfg_given = False  # the caller's QuantConfig: its op set only
        self._hidden: set[str] = set()  # parts _score reads in FP32 although an INT8 file exists
        self._readers: dict[str, WindowReader] = {}
        self.reference_windows = holdout  # the drift reference's windows (every held-out one)
        self._built = 0
        self.extra_keys: tuple[str, ...] = tuple(getattr(composite, "extra_keys", ()))
        self.extra_specs: dict[str, Preprocessing] = {}  # a fused composite's extra targets' specs
        self._cal_extras: dict[str, np.ndarray] = {}  # their calibration windows (the target's pick)
        self.inputs = part_inputs(composite)  # per part {input name: shape}; a fused bridge has several
        for p in self.parts:
            self.files.setdefault(p, {})

    @property
    def fronts(self) -> tuple[str, ...]:
        """Every target front: ``target_front``, then a fused composite's ``target_front_<key>``."""
        return ("target_front", *(f"target_front_{k}" for k in self.extra_keys))

    @property
    def quantized(self) -> tuple[str, ...]:
        """The parts ``--precision`` applies to, in the order the INT8 search picks them: the fronts (each
        feeds the bridge), then ``source_back`` behind them, then ``source_front`` in front of it."""
        return tuple(p for p in (*self.fronts, "source_back", "source_front") if part_info(p).quantizable)

    def session(self, path: Path) -> Any:
        if path not in self._sessions:
            self._sessions[path] = ort_session(path)
        return self._sessions[path]

    def run(self, part: str, prec: Precision, x: np.ndarray) -> np.ndarray:
        return run_session(self.session(self.files[part][prec]), part, x)

    def bridge_z(self, h: np.ndarray, extras: dict[str, np.ndarray] | None,
                 precisions: dict[str, Precision] | None = None) -> np.ndarray:
        """The bridge (FP32) on ``h``; a fused one also on each extra target's windows through its front,
        at ``precisions[target_front_<key>]`` (default FP32)."""
        if not self.extra_keys:
            return self.run("bridge", Precision.FP32, h)
        if extras is None or any(k not in extras for k in self.extra_keys):
            raise ExportError(f"the fused bridge needs the {list(self.extra_keys)} windows too")
        lv = precisions or {}
        hs = {f"h_{k}": self.run(f"target_front_{k}", lv.get(f"target_front_{k}", Precision.FP32), extras[k])
              for k in self.extra_keys}
        return run_fused_bridge(self.session(self.files["bridge"][Precision.FP32]), h, hs)

    # 1. graphs
    def export_fp32(self) -> None:
        (self.work / "fp32").mkdir()
        for part, module in self.parts.items():
            meta = {"weights_file_sha256": self.weights[part]} if part in self.weights else {}
            in_shape, out_shape = self.shapes[part]
            further = dict(list(self.inputs[part].items())[1:]) or None  # a fused bridge's h_<key>
            exp = export_part(module, part, in_shape, out_shape, self.work / "fp32" / f"{part}.onnx",
                              metadata=meta, extra_inputs=further)
            self.files[part][Precision.FP32] = exp.path

    # 2. parity
    def parity(self) -> None:
        import torch

        x, xs = self.holdout.target[:64], self.holdout.source[:64]
        ex = {k: self.holdout.extras[k][:64] for k in self.extra_keys}
        with torch.no_grad():
            tt = {"target_front": torch.from_numpy(x)}
            tt["bridge"] = self.parts["target_front"](tt["target_front"])
            hk = {k: self.parts[f"target_front_{k}"](torch.from_numpy(ex[k])) for k in self.extra_keys}
            tt["source_back"] = self.parts["bridge"](tt["bridge"], *hk.values())
            ref = {"target_front": tt["bridge"].numpy(), "bridge": tt["source_back"].numpy(),
                   "source_back": self.parts["source_back"](tt["source_back"]).numpy(),
                   "source_front": self.parts["source_front"](torch.from_numpy(xs)).numpy()}
        feeds = {p: t.numpy() for p, t in tt.items()}
        feeds["source_front"] = xs
        diffs = {p: float(np.abs(self.run(p, Precision.FP32, feeds[p]) - ref[p]).max())
                 for p in PARTS if p != "bridge" or not self.extra_keys}
        for k in self.extra_keys:  # fused: each extra front alone, and the bridge on the K torch features
            diffs[f"target_front_{k}"] = float(np.abs(self.run(f"target_front_{k}", Precision.FP32, ex[k])
                                                      - hk[k].numpy()).max())
        if self.extra_keys:
            z = run_fused_bridge(self.session(self.files["bridge"][Precision.FP32]), feeds["bridge"],
                                 {f"h_{k}": v.numpy() for k, v in hk.items()})
            diffs["bridge"] = float(np.abs(z - ref["bridge"]).max())
        chained = self.chain({p: Precision.FP32 for p in PARTS}, x, ex)
        diffs["chained"] = float(np.abs(chained - ref["source_back"]).max())
        self.report["parity"] = {"windows": len(x), "tolerance": self.parity_tolerance, "max_abs_diff": diffs,
                                 "ok": max(diffs.values()) <= self.parity_tolerance}
        bad = {p: d for p, d in diffs.items() if d > self.parity_tolerance}
        if bad:
            msg = (f"ONNX Runtime vs PyTorch FP32 differ by more than {self.parity_tolerance:g} on held-out "
                   f"windows: {bad}")
            if max(bad.values()) > 100 * self.parity_tolerance:
                raise ExportError(msg + "; the exported graphs do not compute the model (exporter bug?)")
            logger.warning("%s (recorded in the manifest report)", msg)
        else:
            logger.info("parity ORT vs PyTorch FP32: max abs diff %.2g (per part and chained, %d windows)",
                        max(diffs.values()), len(x))

    def chain(self, precisions: dict[str, Precision], x: np.ndarray,
              extras: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Logits of target windows ``x`` (and, fused, the extra targets' windows ``extras``)."""
        h = self.run("target_front", precisions["target_front"], x)
        z = self.bridge_z(h, extras, precisions)
        return self.run("source_back", precisions["source_back"], z)

    # 3. quantization
    def quantize(self) -> None:
        quantizable = self.quantized
        self.quant = {"precision": self.precision.value, "target": self.target.value,
                      "bridge": "fp32 (refit on site)"}
        if self.precision is Precision.FP32:
            return
        if self.precision is Precision.FP16:
            for p in quantizable:
                self._fp16(p)
            return
        cal = self.calibration
        if cal is None:  # checked earlier; kept for type checkers
            raise ExportError("int8 needs calibration windows")
        self.quant["config"] = self.qcfg.to_dict()
        logger.info("calibrating INT8 (%s flavour) on %d paired windows from %s", self.target.value, len(cal),
                    cal.origin)
        xt = pick_windows(cal.target, self.qcfg, "calibration (target windows)")
        xs = pick_windows(cal.source, self.qcfg, "calibration (source windows)")
        # a fused bridge's extra windows: the same evenly spaced pick as the target's (same count)
        ex = {k: pick_windows(cal.extras[k], self.qcfg, f"calibration ({k} windows)")
              for k in self.extra_keys}
        z = np.concatenate([self.bridge_z(self.run("target_front", Precision.FP32, xt), ex),
                            self.run("source_front", Precision.FP32, xs)])
        feeds = {"target": xt, "source": xs, "z": z, **ex}
        self.quant["calibration"] = {"origin": cal.record(), "windows_given": len(cal),
                                     "windows_used": {"target_front": len(xt), "source_front": len(xs),
                                                      "source_back": len(z),
                                                      **{f"target_front_{k}": len(v) for k, v in ex.items()}},
                                     "source_back_fed": "bridge outputs z of the target windows and "
                                                        "source_front tokens of the source windows"}
        (self.work / "int8").mkdir()
        (self.work / "pre").mkdir()
        self.quant["config"]["calibration_method"] = "per part: quantization.parts.<part>.calibration_method"
        none = np.full(len(xt), -1)
        fp32 = {p: Precision.FP32 for p in PARTS}
        self._cal_ref = {"target": self.chain(fp32, xt, ex),
                         "source": self.run("source_back", Precision.FP32, self.run("source_front",
                                                                                     Precision.FP32, xs))}
        self._cal_x = {"target": xt, "source": xs, "labels_t": none, "labels_s": np.full(len(xs), -1)}
        self._cal_extras = ex
        self.quant["parts"] = {}
        audits = {}
        # target_front first (the composite with the rest FP32), then a fused composite's other fronts
        # behind it, then source_back behind the mixed fronts, then source_front in front of the mixed
        # source_back: each search sees the parts already chosen, so the shipped combination is what was
        # measured
        for p in quantizable:
            t0 = time.perf_counter()
            info = part_info(p)
            reader = WindowReader(info.input, feeds[info.calibration])
            self._readers[p] = reader
            dst, record = self._mixed_int8(p, reader)
            self.files[p][Precision.INT8] = dst
            self.quant["parts"][p] = record
            if self.target is Target.JETSON:
                from edge_bridge.export.audit import audit_tensorrt

                rep = audit_tensorrt(dst)
                rep.file = f"{p}.onnx"
                rep.raise_if_failed()
                audits[p] = rep.to_dict()
            logger.info("%s: INT8 (%s flavour, %s calibration, %d of %d quantized nodes kept in FP32, "
                        "agreement %.4f on the calibration windows, %.1f kB, %.1f s)", p, self.target.value,
                        record["calibration_method"], len(record["fp32_nodes"]), record["quantized_nodes"],
                        record["calibration_agreement"], dst.stat().st_size / 1e3, time.perf_counter() - t0)
        if audits:
            self.quant["tensorrt_audit"] = audits

    def _score(self, part: str, path: Path, *, cache: bool = True) -> dict[str, Any]:
        """The guard's measure on the calibration windows with ``part`` read from ``path`` (the parts
        searched before it at their chosen INT8 files, the rest FP32). ``cache=False``: ``path`` is
        rewritten between calls, so its session is not kept."""
        x = self._cal_x
        own = self.session(path) if cache else ort_session(path)

        def file(p: str) -> Path:
            if p in self._hidden:
                return self.files[p][Precision.FP32]
            return self.files[p].get(Precision.INT8, self.files[p][Precision.FP32])

        def load(p: str) -> Any:
            return own if p == part else self.session(file(p))

        def upstream(p: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
            if p == part:  # the part being searched: never cached
                return compute()
            key = (p, file(p))  # a fixed part's outputs are the same for every trial of the search
            if key not in self._upstream:
                self._upstream[key] = compute()
            return self._upstream[key]

        def front_h(p: str, xp: np.ndarray) -> np.ndarray:
            return upstream(p, lambda: run_session(load(p), p, xp))

        def bridge_z() -> np.ndarray:
            h = front_h("target_front", x["target"])
            if not self.extra_keys:
                return self.run("bridge", Precision.FP32, h)
            hs = {f"h_{k}": front_h(f"target_front_{k}", self._cal_extras[k]) for k in self.extra_keys}
            return run_fused_bridge(self.session(self.files["bridge"][Precision.FP32]), h, hs)

        def composite() -> dict[str, Any]:
            if part in self.fronts:
                z = bridge_z()
            else:  # every front fixed: the bridge's outputs are the same for every trial of the search
                key = ("bridge", *(file(f) for f in self.fronts))
                if key not in self._upstream:
                    self._upstream[key] = bridge_z()
                z = self._upstream[key]
            return _compare(self._cal_ref["target"], run_session(load("source_back"), "source_back", z),
                            x["labels_t"])

        def source_path() -> dict[str, Any]:
            zs = upstream("source_front", lambda: run_session(load("source_front"), "source_front",
                                                              x["source"]))
            return _compare(self._cal_ref["source"], run_session(load("source_back"), "source_back", zs),
                            x["labels_s"])

        if part in self.fronts:
            return composite()
        if part == "source_front":
            return source_path()
        a, b = composite(), source_path()  # source_back is read by both paths
        return {"agreement": min(a["agreement"], b["agreement"]),
                "max_logit_drift": max(a["max_logit_drift"], b["max_logit_drift"]),
                "mean_logit_drift": max(a["mean_logit_drift"], b["mean_logit_drift"]),
                "composite": a["agreement"], "source_path": b["agreement"]}

    def _mixed_int8(self, part: str, reader: WindowReader,
                    target: float | None = None) -> tuple[Path, dict[str, Any]]:
        """The part's INT8 graph, chosen by the guard's measure on the calibration windows
        (:meth:`_score`), in three cheap steps (each a real ``quantize_static``; ranges are calibrated once
        per op set and method and read back from a cache):

        1. op set (cpu flavour): :data:`INT8_FLOW_OPS` or the compute ops alone, MinMax ranges; of those
           reaching ``target`` the one with the fewest nodes in ONNX Runtime's optimised graph (at batch 1
           every node costs a dispatch: fewer nodes, less time), else the best agreement;
        2. calibration method (MinMax, Percentile, Entropy) for that op set: best agreement, then lowest mean
           logit drift; MinMax on a tie;
        3. below ``target``: the fewest nodes kept in FP32 (:mod:`edge_bridge.export.sensitivity`): one
           qdq_loss_debug pass ranks the quantized nodes by the SQNR INT8 leaves at their inputs, one
           emulated pass measures each of the lowest-SQNR nodes alone in FP32, then prefixes of that order
           are built and measured (``int8_search="thorough"``: a few greedy emulated steps and the runner-up
           method too).

        ``int8_search="off"``: only the caller's op set with its method, no node search (the old
        whole-part fallback path). Returns the file and its manifest record."""
        import dataclasses

        import onnx

        from edge_bridge.export.quantize import COMPUTE_OPS, INT8_FLOW_OPS, activation_matmuls, preprocess
        from edge_bridge.export.sensitivity import (
            CALIBRATION_METHODS,
            FIRST_ROUND,
            fewest_fp32_nodes,
            node_errors,
            quantized_nodes,
            rank_by_effect,
            subsample,
        )

        pre = preprocess(self.files[part][Precision.FP32], self.work / "pre" / f"{part}.onnx")
        made: dict[tuple[Any, ...], Path] = {}

        def build(cfg: QuantConfig, exclude: tuple[str, ...]) -> Path:
            ops = cfg.op_types or ()
            key = (ops, cfg.calibration_method, exclude)
            if key not in made:
                self._built += 1  # unique names: sessions and upstream outputs are cached by path
                dst = self.work / "int8" / f"{part}-{self._built:04d}.onnx"
                tag = f"{cfg.calibration_method.name}.{'_'.join(ops) or 'all'}"
                cache = self.work / "pre" / f"{part}.{tag}.ranges.json"
                quantize_part(pre, dst, reader, cfg, nodes_to_exclude=exclude, preprocessed=True,
                              calibration_cache=cache)
                check_graph(dst, part, *self.shapes[part])
                made[key] = dst
            return made[key]

        if target is None:
            target = min(1.0, self.threshold + SEARCH_HEADROOM * (1.0 - self.threshold))
        search = self.int8_search
        # 1. op set
        if self.qcfg_given or search == "off" or self.target is Target.JETSON:
            op_sets = {"configured": self.qcfg.op_types}  # TensorRT's rule: Q/DQ on compute inputs only
        else:
            op_sets = {"int8_flow": INT8_FLOW_OPS, "compute": COMPUTE_OPS}
        by_set: dict[str, dict[str, Any]] = {}
        for name, ops in op_sets.items():
            f = build(dataclasses.replace(self.qcfg, op_types=ops), ())
            r = self._score(part, f)
            by_set[name] = {"agreement": r["agreement"], "mean_logit_drift": r["mean_logit_drift"],
                            "optimised_nodes": _optimised_nodes(f)}
        passing = [k for k, v in by_set.items() if v["agreement"] >= target]
        if passing:
            op_set = min(passing, key=lambda k: (by_set[k]["optimised_nodes"], -by_set[k]["agreement"]))
        else:
            op_set = max(by_set, key=lambda k: (by_set[k]["agreement"], -by_set[k]["mean_logit_drift"]))
        base = dataclasses.replace(self.qcfg, op_types=op_sets[op_set])
        # 2. calibration method
        methods: dict[str, dict[str, Any]] = {}
        for m in (self.qcfg.calibration_method,) if search == "off" else CALIBRATION_METHODS:
            methods[m.name] = self._score(part, build(dataclasses.replace(base, calibration_method=m), ()))
        order = sorted(methods, key=lambda k: (-methods[k]["agreement"], methods[k]["mean_logit_drift"]))
        cfg = dataclasses.replace(base, calibration_method=CalibrationMethod[order[0]])
        full = build(cfg, ())
        n_quantized = len(quantized_nodes(onnx.load(str(full))))
        by_rule = [] if cfg.activation_matmuls else activation_matmuls(onnx.load(str(pre)))
        record: dict[str, Any] = {
            "op_set": op_set, "op_types": list(cfg.op_types) if cfg.op_types else "all",
            "op_sets": by_set,
            "calibration_method": order[0],
            "calibration_methods": {k: {"agreement": v["agreement"], "max_logit_drift": v["max_logit_drift"],
                                        "mean_logit_drift": v["mean_logit_drift"]}
                                    for k, v in methods.items()},
            "measure": "argmax agreement with FP32 on the calibration windows"
                       + (" (min of the composite and the source path)" if part == "source_back" else ""),
            "quantized_nodes": n_quantized, "fp32_nodes": [],
            "fp32_by_rule": [{"node": n, "op_type": "MatMul", "why": "MatMul of two activations (attention)"}
                             for n in by_rule],
            "fp32_share": len(by_rule) / max(1, n_quantized + len(by_rule)),
            "calibration_agreement": methods[order[0]]["agreement"], "search_target": target}
        if methods[order[0]]["agreement"] >= target or self.threshold > 1.0 or search == "off":
            return full, record  # passes as is, or a threshold above 1 forces the whole-part fallback
        # 3. the fewest FP32 nodes
        info = part_info(part)
        max_nodes = max(1, int(MAX_FP32_SHARE * n_quantized))
        thorough = search == "thorough"
        searches = {}
        # methods in the order of their all-INT8 measure; the first whose search passes wins
        for method in order[:SEARCHED_METHODS if thorough else 1]:
            cfg = dataclasses.replace(base, calibration_method=CalibrationMethod[method])
            full = build(cfg, ())
            errors = node_errors(pre, full, WindowReader(info.input, subsample(reader.windows)))
            rank_dir = self.work / f"rank-{part}-{method}-{self._built}"  # sessions are cached by path
            rank_dir.mkdir(exist_ok=True)
            steps = min(max_nodes, GREEDY_STEPS) if thorough else 1
            errors = rank_by_effect(full, pre, errors, lambda f: self._score(part, f, cache=False), rank_dir,
                                    threshold=target, max_steps=steps,
                                    first_round=FIRST_ROUND if thorough else FAST_ROUND)
            found = fewest_fp32_nodes(errors, lambda ex, c=cfg: self._score(part, build(c, ex)),
                                      target, max_nodes=max_nodes, prune=thorough)
            searches[method] = {"passed": found.passed, "fp32_nodes": len(found.kept),
                                "agreement": found.result["agreement"], "trials": found.trials}
            if found.passed:
                break
        record["search"] = {"mode": search, "max_fp32_nodes": max_nodes, "by_method": searches}
        if not found.passed:
            logger.warning("%s: even with %d of %d quantized nodes in FP32 the agreement on the calibration "
                           "windows stays below %.4f; the accuracy guard decides on the held-out windows "
                           "(whole-part fallback is the last resort)", part, max_nodes, n_quantized, target)
            first = dataclasses.replace(base, calibration_method=CalibrationMethod[order[0]])
            return build(first, ()), record
        record.update({"calibration_method": method, "fp32_nodes": found.kept,
                       "fp32_share": (len(found.kept) + len(by_rule)) / max(1, n_quantized + len(by_rule)),
                       "calibration_agreement": found.result["agreement"]})
        for k in found.kept:
            logger.info("%s: %s (%s) kept in FP32: input SQNR %.1f dB; quantized too, agreement would be "
                        "%.4f", part, k["node"], k["op_type"], k["sqnr_db"], k.get("agreement_if_int8", 0.0))
        return build(cfg, found.names), record

    def _fp16(self, part: str) -> Path:
        if Precision.FP16 not in self.files[part]:
            (self.work / "fp16").mkdir(exist_ok=True)
            dst = to_fp16(self.files[part][Precision.FP32], self.work / "fp16" / f"{part}.onnx")
            check_graph(dst, part, *self.shapes[part])
            self.files[part][Precision.FP16] = dst
        return self.files[part][Precision.FP16]

    # 4. accuracy guard
    def measure(self, precisions: dict[str, Precision]) -> dict[str, Any]:
        """Composite with ``precisions`` vs FP32 (both ONNX Runtime) on the held-out windows."""
        x, ex = self.holdout.target, self.holdout.extras
        if self._fp32_logits is None:
            self._fp32_logits = self.chain({p: Precision.FP32 for p in PARTS}, x, ex)
        ref = self._fp32_logits
        got = self.chain(precisions, x, ex)
        out = _compare(ref, got, self.holdout.labels)
        out["precisions"] = {p: precisions[p].value for p in (*self.fronts, "source_back")}
        return out

    def measure_source_path(self, sf: Precision, sb: Precision) -> dict[str, Any]:
        """The source model's decisions as on-site calibration computes them, ``source_back(source_front(x))``
        at precisions ``sf``/``sb``, vs both in FP32, on the held-out source windows."""
        xs = self.holdout.source
        if self._fp32_source is None:  # the reference is the same for every trial of the guard
            z32 = self.run("source_front", Precision.FP32, xs)
            self._fp32_source = (z32, self.run("source_back", Precision.FP32, z32))
        zr, ref = self._fp32_source
        zg = self.run("source_front", sf, xs)
        out = _compare(ref, self.run("source_back", sb, zg), self.holdout.labels)
        out["max_z_drift"] = float(np.abs(zr - zg).max())
        out["precision"] = sf.value
        out["source_back_precision"] = sb.value
        return out

    def guard(self) -> None:
        levels = {p: self.precision for p in (*PARTS, *self.fronts)}
        levels["bridge"] = Precision.FP32
        fallback: list[dict[str, Any]] = []
        requested = self.measure(levels)
        if (requested["agreement"] < self.threshold and self.int8_search != "off" and self.threshold <= 1.0
                and self.precision is Precision.INT8):
            requested = self._search_harder(levels, requested)
        current = requested
        if self.precision is not Precision.FP32:
            logger.info("accuracy guard: %s composite vs FP32 on %d held-out windows: agreement %.4f, max "
                        "logit drift %.3g%s", self.precision.value.upper(), len(self.holdout),
                        requested["agreement"], requested["max_logit_drift"], _bal_text(requested))
        levels, current = self._fall_back(
            levels, current, (*self.fronts, "source_back"), self.measure, "composite decisions", fallback,
            prefer=lambda p, r: -r["max_logit_drift"])
        if current["agreement"] < self.threshold:
            logger.warning("ACCURACY GUARD: even with every part in FP32 the agreement %.4f is below the "
                           "threshold %.4f (a threshold above 1 can never be met: this forces the FP32 "
                           "fallback)",
                           current["agreement"], self.threshold)
        levels["source_front"] = self.precision
        sf_report = None
        if self.precision is not Precision.FP32:
            def source_path(lv: dict[str, Precision]) -> dict[str, Any]:
                return self.measure_source_path(lv["source_front"], lv["source_back"])

            # on a tie source_front first: it feeds nothing but calibration
            levels, sf_report = self._fall_back(
                levels, source_path(levels), ("source_front", "source_back"), source_path,
                "the source model's decisions through source_front and source_back (what calibration reads)",
                fallback, prefer=lambda p, r: p == "source_front")
            if levels["source_back"].value != current["precisions"]["source_back"]:
                current = self.measure(levels)  # source_back moved: the composite figures change too
        self.chosen = levels
        self._part_figures(levels)
        self.quant.update({
            "precisions": {p: levels[p].value for p in levels},
            "fallback": fallback,
            "degraded": bool(fallback),
            "accuracy": {"held_out": self.holdout.record(), "windows": len(self.holdout),
                         "labelled_windows": int((self.holdout.labels >= 0).sum()),
                         "threshold": self.threshold,
                         "requested": requested, "shipped": current,
                         "passed": current["agreement"] >= self.threshold,
                         "source_front": sf_report},
        })

    def _search_harder(self, levels: dict[str, Precision], failed: dict[str, Any]) -> dict[str, Any]:
        """The mixed composite fails on the held-out subjects: search target_front and source_back again
        for full agreement on the calibration windows (more FP32 nodes, still INT8) before any part falls
        back whole; a part whose first search already missed its target is not searched again (the same node
        budget cannot reach more). Logged and recorded."""
        chain = (*self.fronts, "source_back")
        logger.warning("accuracy guard: the mixed INT8 composite agrees %.4f < %.4f with FP32 on the "
                       "held-out windows; searching %s again for agreement 1.0 on the calibration windows "
                       "before any whole-part fallback", failed["agreement"], self.threshold,
                       " and ".join(chain))
        before = {p: (self.files[p][Precision.INT8], self.quant["parts"][p]) for p in chain}
        # a part whose search missed even the headroom target cannot reach 1.0 with the same node budget
        recs = self.quant["parts"]
        again_parts = [p for p in chain if recs[p]["calibration_agreement"] >= recs[p]["search_target"]]
        if not again_parts:
            return failed
        for p in again_parts:
            # as in the first pass, the fronts are measured with source_back in FP32
            self._hidden = {"source_back"} if p in self.fronts else set()
            try:
                dst, rec = self._mixed_int8(p, self._readers[p], target=1.0)
            finally:
                self._hidden = set()
            rec["escalated"] = {"held_out_agreement_before": failed["agreement"],
                                "why": "held-out guard failed at the headroom target"}
            self.files[p][Precision.INT8] = dst
            self.quant["parts"][p] = rec
        self._upstream.clear()
        again = self.measure(levels)
        if again["agreement"] < failed["agreement"]:  # no better: keep the first search's files
            for p, (f, rec) in before.items():
                self.files[p][Precision.INT8], self.quant["parts"][p] = f, rec
            self._upstream.clear()
            return failed
        return again

    def _part_figures(self, levels: dict[str, Precision]) -> None:
        """Per quantizable part, as shipped: agreement and max logit drift on the held-out windows with only
        that part at its precision (the rest FP32), and batch-1 latency on this CPU (one thread), shipped vs
        FP32: what ``export --report`` and ``bundle info`` print."""
        fp32 = {p: Precision.FP32 for p in PARTS}
        figures: dict[str, Any] = {}
        for p in self.quantized:
            if p not in levels:
                continue
            lv = {**fp32, **{f: Precision.FP32 for f in self.fronts}, p: levels[p]}
            if p == "source_front":
                r = self.measure_source_path(lv["source_front"], Precision.FP32)
            else:
                r = self.measure(lv)
            x1 = self._example(p)
            lat = {"fp32": _latency_ms(self.files[p][Precision.FP32], x1)}
            if levels[p] is not Precision.FP32:
                lat[levels[p].value] = _latency_ms(self.files[p][levels[p]], x1)
            figures[p] = {"precision": levels[p].value, "held_out_agreement": r["agreement"],
                          "held_out_max_logit_drift": r["max_logit_drift"], "latency_ms_batch1": lat}
            self.quant.setdefault("parts", {}).setdefault(p, {}).update(figures[p])
        logger.info("per part: %s", "; ".join(
            f"{p} {f['precision']} agreement {f['held_out_agreement']:.4f}, batch-1 "
            + ", ".join(f"{k} {v:.3f} ms" for k, v in f["latency_ms_batch1"].items())
            for p, f in figures.items()))

    def _example(self, part: str) -> np.ndarray:
        """One held-out input window of ``part`` (batch 1)."""
        x = self.holdout.target[:1]
        if part == "source_front":
            return self.holdout.source[:1]
        if part in self.fronts[1:]:
            return self.holdout.extras[part[len("target_front_"):]][:1]
        if part == "source_back":
            ex = {k: v[:1] for k, v in self.holdout.extras.items()}
            return self.bridge_z(self.run("target_front", Precision.FP32, x), ex)
        return x

    def _fall_back(self, levels: dict[str, Precision], report: dict[str, Any], parts: tuple[str, ...],
                   measure: Callable[[dict[str, Precision]], dict[str, Any]], what: str,
                   events: list[dict[str, Any]], *, prefer: Callable[[str, dict[str, Any]], Any]
                   ) -> tuple[dict[str, Precision], dict[str, Any]]:
        """Step ``parts`` down the ladder one at a time while ``measure(levels)`` agrees with FP32 below
        the threshold: each round tries every part's next step and keeps the one with the highest
        agreement (``prefer`` breaks ties). Every step is logged as a warning and appended to ``events``
        (the manifest's ``quantization.fallback``). Returns the levels and their report."""
        while report["agreement"] < self.threshold:
            steps = [p for p in parts if levels[p] is not Precision.FP32]
            if not steps:
                break
            trials = {p: {**levels, p: self._step(p, levels[p])} for p in steps}
            scored = {p: measure(t) for p, t in trials.items()}
            part = max(steps, key=lambda p: (scored[p]["agreement"], prefer(p, scored[p])))
            new = scored[part]
            event = {"part": part, "from": levels[part].value, "to": trials[part][part].value,
                     "agreement_before": report["agreement"], "agreement_after": new["agreement"],
                     "threshold": self.threshold, "path": what}
            logger.warning("ACCURACY GUARD FALLBACK: %s agree %.4f < %.4f with FP32; %s falls back from %s "
                           "to %s (agreement now %.4f). The bundle ships with reduced quantization; see "
                           "manifest quantization.fallback", what, report["agreement"], self.threshold, part,
                           event["from"], event["to"], new["agreement"])
            events.append(event)
            levels, report = trials[part], new
        return levels, report

    def _step(self, part: str, prec: Precision) -> Precision:
        nxt = LADDER[LADDER.index(prec) + 1]
        if nxt is Precision.FP16:
            self._fp16(part)
        return nxt

    # 5. files, golden, manifest
    def assemble(self, root: Path, *, task: str, classes: tuple[str, ...], source_spec: Preprocessing,
                 target_spec: Preprocessing, golden_windows: int, run_dir: str | None,
                 source_weights: bool = True,
                 label_map: dict[str, str] | None = None) -> Manifest:
        import onnx

        from edge_bridge.models.io import save_tensors

        specs = {}
        final: dict[str, Path] = {}
        fronts = list(self.fronts[1:])  # a fused composite's extra fronts, at their chosen precision
        for part in (*PARTS, *fronts):
            prec = self.chosen.get(part, Precision.FP32)
            rel = bridge_file(1, ".onnx") if part == "bridge" else f"{part}.onnx"
            model = onnx.load(str(self.files[part][prec]))
            stamp(model, {"precision": prec.value, "target": self.target.value, "exported": _now()})
            save_model(model, root / rel)
            final[part] = root / rel
            _, out_shape = self.shapes[part]
            out_name = PARTS[part].output if part in PARTS else f"h_{part[len('target_front_'):]}"
            specs[part] = part_spec(root, rel, prec.value,
                                    [TensorSpec(n, [None, *shape]) for n, shape in self.inputs[part].items()],
                                    [TensorSpec(out_name, [None, *out_shape])])
        bridge = self.composite.bridge
        wrel = bridge_file(1, ".safetensors")
        save_tensors(root / wrel, bridge.state_dict(),
                     metadata={"kind": bridge.kind, "config": json.dumps(bridge.config),
                               "meta": json.dumps(bridge.meta, default=str)})
        bv = BridgeVersion(1, specs.pop("bridge"), wrel, sha256_file(root / wrel), _now(), "export",
                           {"kind": bridge.kind, "config": bridge.config})

        source_files: dict[str, str] = {}
        if source_weights:  # for calibrate's gradient path only; loaded with safetensors, never unpickled
            from edge_bridge.models import save_backbone

            sdir = save_backbone(self.composite.source, root / SOURCE_MODEL_DIR,
                                 meta={"for": "edge-bridge calibrate (gradient steps through source[j:])"})
            source_files = {p.name: sha256_file(p) for p in sorted(sdir.iterdir()) if p.is_file()}

        n = max(1, min(golden_windows, len(self.holdout)))
        g = self.holdout.head(n)
        arrays = golden_arrays(final, g.target, g.source, g.extras or None)
        write_golden(root / GOLDEN, arrays)
        # v0001's own expected outputs, as every later version has (a fresh start self-tests the current one)
        bv.golden_file, bv.golden_sha256 = write_bridge_golden(root, 1, arrays)
        self.report["golden"] = self._golden_report(arrays, g)
        ref = self.reference_windows
        # drift watches the main target's h; a fused bundle's class prior comes from its fused logits
        ref_logits = (self.chain({p: Precision.FP32 for p in PARTS}, ref.target, ref.extras)
                      if self.extra_keys else None)
        reference = write_reference(root, final, ref.target, hop_s=target_spec.hop_s,  # drift
                                    groups=ref.subjects, spec=target_spec, logits=ref_logits)
        self.report["drift_reference"] = {
            "data": ref.record(), "windows": len(ref), "written": reference is not None,
            "subjects": None if ref.subjects is None else len(set(ref.subjects.tolist()))}

        sizes = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
        self.report.update({
            "tool_version": __version__, "run": _run_record(run_dir),
            "positions": {"i": self.composite.i, "j": self.composite.j},
            "parameters": dict(zip(("trainable", "total"), self.composite.count_parameters(), strict=True)),
            "tensorrt": self._tensorrt_check() if self.target is Target.JETSON else None,
            "file_bytes": sizes,
        })
        if self.extra_keys:
            self.report["fused"] = {
                "targets": [target_spec.modality, *self.extra_keys],
                "positions_i": {"target": int(self.composite.i), **self.composite.extra_positions},
                "extra_fronts": {f: self.chosen.get(f, Precision.FP32).value for f in fronts},
                "note": ("fused bridge: every part exported FP32" if self.precision is Precision.FP32 else
                         f"fused bridge: every target front ({', '.join(self.fronts)}), source_back and "
                         f"source_front exported {self.precision.value}, each searched and guarded on the "
                         "fused chain (every front, the K-input bridge), per part in "
                         "quantization.parts")}
        manifest = Manifest(task=task, classes=list(classes), label_map=dict(label_map or {}),
                            source=source_spec, target=target_spec,
                            positions={"i": int(self.composite.i), "j": int(self.composite.j)}, parts=specs,
                            bridges={1: bv}, current_bridge=1, golden_sha256=sha256_file(root / GOLDEN),
                            quantization=self.quant, report=self.report, source_model=source_files,
                            reference=reference,
                            extra_targets=[ExtraTarget(k, self.extra_specs[k],
                                                       self.composite.extra_positions[k])
                                           for k in self.extra_keys])
        write_manifest(root, manifest)
        manifest.report["bundle_bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        write_manifest(root, manifest)  # now including the manifest's own size (to within a few bytes)
        return manifest

    def _golden_report(self, arrays: dict[str, np.ndarray], g: WindowSet) -> dict[str, Any]:
        """How far the golden outputs (ORT, shipped precision) are from PyTorch FP32, per part."""
        import torch

        from edge_bridge.export.onnx_export import part_info

        with torch.no_grad():
            ref = {}
            for part in self.parts:
                info = part_info(part)
                xs = [torch.from_numpy(arrays[f"{part}.{name}"]) for name in self.inputs[part]]
                got = self.parts[part](*xs).numpy()
                ref[part] = float(np.abs(got - arrays[f"{part}.{info.output}"]).max())
            chained = self.composite(torch.from_numpy(g.target),
                                     *(torch.from_numpy(g.extras[k]) for k in self.extra_keys)).numpy()
        ref["chained"] = float(np.abs(chained - arrays["source_back.logits"]).max())
        return {"file": GOLDEN, "windows": len(g), "keys": sorted(arrays),
                "expected_by": "onnxruntime on the shipped files",
                "torch_fp32_max_abs_diff": ref,
                "precisions": {p: self.chosen.get(p, Precision.FP32).value for p in self.parts}}

    def _tensorrt_check(self) -> dict[str, Any]:
        """On a CUDA host with torch-tensorrt, compile the composite once as a host-side check."""
        import torch

        if self.extra_keys:
            reason = "a fused composite (several target inputs) is not compiled by this check"
        elif not torch.cuda.is_available():
            reason = "no CUDA device on this host"
        elif importlib.util.find_spec("torch_tensorrt") is None:
            reason = "torch-tensorrt is not installed (pip install 'edge-bridge[gpu]')"
        else:
            reason = ""
        if reason:
            logger.info("torch-tensorrt host check skipped: %s (TensorRT engines are built on the device)",
                        reason)
            return {"status": "skipped", "reason": reason}
        try:
            import torch_tensorrt

            model = self.composite.cuda().eval()
            x = torch.from_numpy(self.holdout.target[:8]).cuda()
            t0 = time.perf_counter()
            trt = torch_tensorrt.compile(model, ir="dynamo", inputs=[x],
                                         enabled_precisions={torch.float32, torch.float16})
            with torch.no_grad():
                diff = float((trt(x).float() - model(x)).abs().max())
            logger.info("torch-tensorrt host check: compiled in %.1f s, max abs diff %.3g vs eager",
                        time.perf_counter() - t0, diff)
            return {"status": "ok", "max_abs_diff": diff, "version": torch_tensorrt.__version__}
        except Exception as exc:  # a host-side check only: record and say so, the bundle is still valid
            logger.warning("torch-tensorrt host check failed: %s", exc)
            return {"status": "failed", "reason": str(exc)}
        finally:
            self.composite.cpu()


def _latency_ms(path: Path, x: np.ndarray, runs: int = 30) -> float:
    """Median batch-1 latency of one graph on this CPU with one ONNX Runtime thread, after a warm-up."""
    from edge_bridge.export.onnx_export import ort_session

    sess = ort_session(path, threads=1)
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x[:1], np.float32)}
    for _ in range(5):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(1e3 * np.median(times))


def _optimised_nodes(path: Path) -> int:
    """Nodes of ``path`` after ONNX Runtime's CPU graph optimisation (QDQ fusion into QLinearConv,
    MatMulIntegerToFloat, ...; ``ORT_ENABLE_EXTENDED``): what a batch-1 run dispatches one by one."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edge-bridge-opt-") as work:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(work) / "optimised.onnx")
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return len(onnx.load(opts.optimized_model_filepath).graph.node)


def _run_record(run_dir: str | None) -> dict[str, Any] | None:
    """The run a bundle came from, as the manifest records it: its folder name and run.json's sha256."""
    if run_dir is None:
        return None
    p = Path(run_dir)
    rj = p / "run.json"
    return {"name": p.name, **({"run_json_sha256": sha256_file(rj)} if rj.is_file() else {})}


def _compare(ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Argmax agreement, max logit drift and (where labelled) balanced accuracy of both."""
    pr, pg = ref.argmax(1), got.argmax(1)
    out: dict[str, Any] = {"agreement": float((pr == pg).mean()),
                           "max_logit_drift": float(np.abs(ref - got).max()),
                           "mean_logit_drift": float(np.abs(ref - got).mean())}
    lab = labels >= 0
    if lab.any():
        from sklearn.metrics import balanced_accuracy_score

        with contextlib.suppress(Exception), _no_warnings():
            out["balanced_accuracy_fp32"] = float(balanced_accuracy_score(labels[lab], pr[lab]))
            out["balanced_accuracy"] = float(balanced_accuracy_score(labels[lab], pg[lab]))
            drop = out["balanced_accuracy_fp32"] - out["balanced_accuracy"]
            out["balanced_accuracy_drop_points"] = 100 * drop
    return out


@contextlib.contextmanager
def _no_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _bal_text(m: dict[str, Any]) -> str:
    if "balanced_accuracy" not in m:
        return ""
    return (f", balanced accuracy {m['balanced_accuracy']:.3f} vs FP32 {m['balanced_accuracy_fp32']:.3f} "
            f"(drop {m['balanced_accuracy_drop_points']:.2f} points)")


__all__ = ["DEFAULT_THRESHOLD", "WindowSet", "export", "export_composite", "load_calibration"]
