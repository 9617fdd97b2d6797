"""The run directory: where each method step reads its inputs and writes its outputs.

Every verb takes ``--run RUN``; the first one also takes ``--data DIR`` (EDF recordings) and ``--task``.
Later steps, including export, read only this folder::

    RUN/
      run.json              task, data folder, seed, split fractions (written once, then read)
      splits.json           subjects per role: train (source head) / val / paired (bridge) / test
      windows.npz           paired, preprocessed windows of every subject (cache; plain arrays)
      target_backbone/      model.safetensors + config.json    `edge-bridge pretrain` (no labels)
      source_model/         model.safetensors + config.json    `edge-bridge fit-source` (backbone + head)
      selection.json        `edge-bridge select`: every candidate's score and the chosen (i, j)
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
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
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
             seed: int | None = None, fractions: dict[str, float] | None = None) -> Run:
        """Open ``path``; create ``run.json`` from ``data``/``task`` when it does not exist yet."""
        from edge_bridge.fileio import atomic_write_text

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
            get_task(meta["task"])
            path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(meta_file, json.dumps(meta, indent=1))
        return Run(path, get_task(meta["task"]), Path(meta["data"]), int(meta["seed"]),
                   dict(meta["fractions"]))

    # --- data ----------------------------------------------------------------------------------------
    def windows(self, *, progress: bool = False) -> Windows:
        """All paired windows (cached in ``windows.npz`` after the first read)."""
        cache = self.path / "windows.npz"
        if cache.is_file():
            return Windows.load(cache)
        from edge_bridge.recordings.paired import windows_from_files

        files = sorted(self.data.glob("*.edf"))
        if not files:
            raise RunError(f"{self.data} holds no .edf recordings; make some with `edge-bridge simulate "
                           f"{self.data}` or point --data at your recordings in a new --run folder")
        w = windows_from_files(files, self.task.source, self.task.target, self.task.classes,
                               label_map=self.task.label_map, progress=progress)
        w.save(cache)
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
            raise RunError(f"no {'labelled ' if labelled else ''}windows for the {role!r} subjects "
                           f"{self.splits()[role]}")
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
