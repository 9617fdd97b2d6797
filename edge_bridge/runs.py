"""The run directory: where each method step reads its inputs and writes its outputs.

Every verb takes ``--run RUN``; the first one also takes ``--data DIR`` (EDF+, BrainFlow CSV, WESAD, ISRUC
recordings), ``--task`` and, for one's own recordings, ``--channels`` and ``--label-map``. Later steps,
including export, read only this folder and reuse the maps it records::

    RUN/
      run.json              task, data folder, seed, split fractions, channel and label maps (written once)
      recordings.json       what was read: per file its subject, rates, channels used and labels found
      splits.json           subjects per role: train (source head) / val / paired (bridge) / test
      windows.npz           paired, preprocessed windows of every subject (cache; plain arrays)
      target_backbone/      model.safetensors + config.json    `edge-bridge pretrain` (no labels)
      target_backbone_eda/  a fused task's extra target (e.g. stress-binary+eda), one per modality, `pretrain`
      source_model/         model.safetensors + config.json    `edge-bridge fit-source` (backbone + head)
      selection.json        `edge-bridge select`: scores, the chosen (i, j); fused: one i per target
      selection.png         F1 per target block, CKA per source block
      bridge/               bridge_config.json + bridge.safetensors, history.json, last/   `edge-bridge train`
      kd_student/           target backbone + head trained on source soft labels   `train --kd`
      target_supervised/    target backbone + head trained with labels (upper bound)   `evaluate`
      metrics.json          `edge-bridge evaluate`: test-subject metrics of every model

Backbone folders carry ``meta`` in their ``config.json``: the role, the class names and the preprocessing
spec of the modality they read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.errors import EdgeBridgeError
from edge_bridge.recordings.paired import Windows
from edge_bridge.splits import DEFAULT_FRACTIONS, ROLES, check_disjoint, split_subjects
from edge_bridge.tasks import Task, get_task

logger = logging.getLogger(__name__)


class RunError(EdgeBridgeError, ValueError):
    """The run directory lacks what a step needs (the message names the command that makes it)."""


@contextlib.contextmanager
def undo_on_failure(path: str | os.PathLike[str]) -> Iterator[None]:
    """On an exception, remove what the block added to the run folder ``path`` (and the folder if it is new).

    Why: a verb that fails must leave the run as it was. A pretrain on an empty data folder used to leave
    run.json behind, and the retry with the right ``--data`` was then refused as "made from other data".
    Files the block *replaced* are not restored: every step writes them atomically, last. An interrupt
    (Ctrl-C) keeps everything, so ``train --resume`` still finds its resume point.
    """
    root = Path(path)
    existed = root.is_dir()
    before = {p for p in root.rglob("*")} if existed else set()
    try:
        yield
    except Exception:
        if not existed:
            shutil.rmtree(root, ignore_errors=True)
        elif root.is_dir():
            added = [p for p in root.rglob("*") if p not in before]
            for p in sorted(added, key=lambda q: len(q.parts), reverse=True):
                with contextlib.suppress(OSError):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
        logger.debug("run folder %s: removed what the failed step added", root)
        raise


@dataclass
class Run:
    """A run directory; see the module docstring for its layout."""

    path: Path
    task: Task
    data: Path
    seed: int
    fractions: dict[str, float]
    channel_map: dict[str, Any] = field(default_factory=dict)
    """``--channels`` as given: modality or preset channel -> the recordings' channel name(s)."""
    user_label_map: dict[str, str] = field(default_factory=dict)
    """``--label-map`` as given: annotation -> class (already folded into ``task.label_map``)."""

    # --- paths ---------------------------------------------------------------------------------------
    @property
    def target_backbone(self) -> Path:
        return self.path / "target_backbone"

    @property
    def source_model(self) -> Path:
        return self.path / "source_model"

    @property
    def selection(self) -> Path:
        return self.path / "selection.json"

    @property
    def bridge(self) -> Path:
        return self.path / "bridge"

    @property
    def kd_student(self) -> Path:
        return self.path / "kd_student"

    @property
    def target_supervised(self) -> Path:
        return self.path / "target_supervised"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    # --- opening -------------------------------------------------------------------------------------
    @staticmethod
    def open(path: str | os.PathLike[str], data: str | os.PathLike[str] | None = None,
             task: str | None = None,
             seed: int | None = None, fractions: dict[str, float] | None = None, *,
             channels: str | os.PathLike[str] | dict[str, Any] | None = None,
             label_map: str | os.PathLike[str] | dict[str, Any] | None = None) -> Run:
        """Open ``path``; create ``run.json`` from ``data``/``task`` when it does not exist yet.

        ``channels`` and ``label_map`` (``--channels``, ``--label-map``: ``k=v`` text, a JSON/TOML file or a
        dict) are checked against the task and recorded in ``run.json``; on an existing run they must match
        what it recorded (the cached windows were cut with them). A new run is written only after its data
        folder is found to hold recordings, so a mistyped ``--data`` leaves nothing behind.
        """
        from edge_bridge.fileio import atomic_write_text
        from edge_bridge.recordings.dataset import check_channel_map, compose_label_map, parse_map

        path = Path(path)
        meta_file = path / "run.json"
        if meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text())
                if not isinstance(meta, dict) or not {"task", "data", "seed", "fractions"} <= set(meta):
                    raise ValueError("not a run.json object with task, data, seed and fractions")
            except (ValueError, UnicodeDecodeError) as exc:
                raise RunError(f"{meta_file} is not a readable run.json ({exc}); use another --run folder "
                               "or remove that file to start the run again") from None
            if data is not None and Path(data).resolve() != Path(meta["data"]).resolve():
                raise RunError(f"{path} was made from data {meta['data']}, not {data}; use another "
                               "--run folder")
            if task is not None and task != meta["task"]:
                raise RunError(f"{path} is a {meta['task']!r} run, not {task!r}; use another --run folder")
        else:
            if data is None:
                raise RunError(f"{path} is not a run directory yet (no run.json); pass --data DIR with the "
                               "recordings (e.g. from `edge-bridge simulate`) to start one")
            meta = {"task": task or "stress", "data": str(Path(data).resolve()),
                    "seed": 0 if seed is None else seed,
                    "fractions": fractions or DEFAULT_FRACTIONS}
        preset = get_task(meta["task"])
        cmap = check_channel_map(parse_map(channels, "--channels"), [preset.source, preset.target])
        given = {"channels": cmap, "label_map": parse_map(label_map, "--label-map")}
        compose_label_map(given["label_map"], preset.classes, preset.label_map)  # refuse unknown classes now
        for key, flag in (("channels", "--channels"), ("label_map", "--label-map")):
            if not meta_file.is_file():
                meta[key] = given[key]
            elif given[key] and given[key] != meta.get(key, {}):  # a run from before the maps had none
                raise RunError(f"{path} was made with {flag} {_pairs(meta.get(key, {})) or '(none)'}, not "
                               f"{_pairs(given[key])}; its windows were cut with the first; use another "
                               "--run folder")
        if not meta_file.is_file():
            from edge_bridge.recordings.dataset import recording_files

            recording_files(meta["data"])  # raises before anything is written
            path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(meta_file, json.dumps(meta, indent=1))
        lmap = dict(meta.get("label_map") or {})
        run_task = _at_recorded_rates(path, dataclasses.replace(
            preset, label_map=compose_label_map(lmap, preset.classes, preset.label_map)))
        return Run(path, run_task, Path(meta["data"]), int(meta["seed"]), dict(meta["fractions"]),
                   dict(meta.get("channels") or {}), lmap)

    # --- data ----------------------------------------------------------------------------------------
    def windows(self, *, progress: bool = False) -> Windows:
        """All paired windows (cached in ``windows.npz`` after the first read)."""
        cache = self.path / "windows.npz"
        if cache.is_file():
            return Windows.load(cache)
        from edge_bridge.recordings.dataset import recording_files
        from edge_bridge.recordings.paired import windows_from_files

        files = recording_files(self.data)
        report: list[dict[str, Any]] = []
        w = windows_from_files(files, self.task.source, self.task.target, self.task.classes,
                               label_map=self.task.label_map, channel_map=self.channel_map, progress=progress,
                               report=report, extra_targets=self.task.extra_targets,
                               min_label_fraction=self.task.min_label_fraction)
        if self.task.classes and not (w.labels >= 0).any():
            logger.warning("no window of %s carries a label of the task's classes (%s); fit-source and "
                           "evaluate need them: map your annotations with --label-map LABEL=CLASS",
                           self.data, ", ".join(self.task.classes))
        from edge_bridge.fileio import atomic_write_text

        seen = {"channel_map": self.channel_map, "label_map": self.task.label_map, "recordings": report}
        atomic_write_text(self.path / "recordings.json", json.dumps(seen, indent=1))
        w.save(cache)
        self.task = _at_recorded_rates(self.path, self.task)
        logger.info("cut %d paired windows from %d recordings (%d skipped by quality)", len(w), len(files),
                    w.skipped)
        return w

    def splits(self) -> dict[str, list[str]]:
        """Subjects per role (``splits.json``, made on first use from ``run.json``'s seed and fractions)."""
        f = self.path / "splits.json"
        if f.is_file():
            split = json.loads(f.read_text())
        else:
            from edge_bridge.fileio import atomic_write_text

            split = split_subjects(np.unique(self.windows().subjects).tolist(), self.fractions, self.seed)
            atomic_write_text(f, json.dumps(split, indent=1))
        check_disjoint(split)
        return {r: list(split[r]) for r in ROLES}

    def role(self, role: str, *, labelled: bool = False) -> Windows:
        """Windows of one role's subjects; ``labelled`` keeps only windows inside one labelled segment."""
        if role not in ROLES:
            raise RunError(f"role must be one of {ROLES}, got {role!r}")
        w = self.windows().by_subjects(self.splits()[role])
        if labelled:
            w = w.subset(w.labels >= 0)
        if len(w) == 0:
            classes = ", ".join(self.task.classes)
            hint = (f"; label the recordings with the task's classes ({classes}), or map their annotations "
                    "with --label-map LABEL=CLASS when the run is made" if labelled else "")
            raise RunError(f"no {'labelled ' if labelled else ''}windows for the {role!r} subjects "
                           f"{self.splits()[role]}{hint}")
        return w

    def require(self, what: Path, command: str) -> Path:
        """``what`` if it exists, else a :class:`RunError` naming the command that makes it."""
        if not what.exists():
            raise RunError(f"{what} does not exist yet; run `edge-bridge {command} --run {self.path}` first")
        return what

    def spec_meta(self, role: str) -> dict[str, Any]:
        """``meta`` for a backbone reading the ``"source"`` or ``"target"`` modality."""
        spec = self.task.source if role == "source" else self.task.target
        return {"task": self.task.name, "modality_role": role, "classes": list(self.task.classes),
                "preprocessing": spec.to_dict()}


def _at_recorded_rates(path: Path, task: Task) -> Task:
    """``task`` at the raw rates its recordings share (``recordings.json``), so the bundle asks the device
    for the rate the user's sensor has; recordings at mixed rates keep the preset's (each was resampled)."""
    f = path / "recordings.json"
    if not f.is_file():
        return task
    try:
        recs = json.loads(f.read_text())["recordings"]
    except (OSError, ValueError, KeyError, TypeError):
        return task
    rates = {}
    for role, spec in (("source", task.source), ("target", task.target)):
        seen = {float(r["rates"][spec.modality]) for r in recs if spec.modality in r.get("rates", {})}
        rates[role] = seen.pop() if len(seen) == 1 else None
    return task.with_rates(source_rate=rates["source"], target_rate=rates["target"])


def _pairs(m: dict[str, Any]) -> str:
    return ",".join(f"{k}={'|'.join(v) if isinstance(v, list) else v}" for k, v in m.items())
