"""A tiny composite sized for short stress-task windows, and bundles exported from it once per session.

The dynamo export is the slow step (seconds per part), so the cpu and jetson bundles are exported once and
shared; tests that need to change a bundle copy it first. They are exported with ``int8_search="off"``
(every node of the op set INT8, MinMax, whole-part fallback only): the tests that share them check the
bundle, not how its INT8 graphs were chosen; ``test_int8_sensitivity.py`` exports its own with the default
search.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

WINDOW_S, HOP_S = 4.0, 2.0
TARGET_CFG = {"input_samples": 500, "patch": 5, "widths": [8, 8], "strides": [1, 2], "kernel": 3}
SOURCE_CFG = {"input_samples": 400, "patch": 20, "d_model": 16, "n_blocks": 2, "n_heads": 2, "n_classes": 3}
POS_I, POS_J = 1, 1


def tiny_task():
    from edge_bridge.tasks import get_task

    return get_task("stress").with_window(WINDOW_S, HOP_S)


def tiny_composite():
    """Seeded tiny backbones + a prototype bridge with non-zero B (so every output is non-trivial)."""
    from edge_bridge.bridge import PrototypeBridge
    from edge_bridge.composite import Composite
    from edge_bridge.models import build_backbone

    torch.manual_seed(0)
    target = build_backbone("resnet1d", TARGET_CFG).eval()
    source = build_backbone("transformer", SOURCE_CFG).eval()
    t_out, s_in = target.block_output(POS_I), source.block_input(POS_J)
    bridge = PrototypeBridge(t_out.features, s_in.tokens, s_in.features, rank=4, prototypes=6)
    with torch.no_grad():
        bridge.B.normal_(0.0, 0.5)
    bridge.meta.update({"i": POS_I, "j": POS_J})
    return Composite(target, source, bridge, POS_I, POS_J).eval()


def tiny_windows(n: int, seed: int):
    """Paired windows shaped like the tiny task's preprocessing output (z-scored noise + a slow sine)."""
    from edge_bridge.export.exporter import WindowSet

    rng = np.random.default_rng(seed)
    task = tiny_task()
    t = np.linspace(0, 8 * np.pi, task.target.input_shape[1])
    s = np.linspace(0, 8 * np.pi, task.source.input_shape[1])
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    xt = (np.sin(t + phase) + 0.5 * rng.standard_normal((n, *task.target.input_shape))).astype(np.float32)
    xs = (np.sin(s + phase) + 0.5 * rng.standard_normal((n, *task.source.input_shape))).astype(np.float32)
    return WindowSet(xt, xs, rng.integers(0, 3, n), f"synthetic seed {seed}")


def export_tiny(out: Path, **kw):
    from edge_bridge.export import export_composite

    task = tiny_task()
    args = {"task": "stress", "classes": task.classes, "source_spec": task.source, "target_spec": task.target,
            "holdout": tiny_windows(48, 1), "calibration": tiny_windows(64, 2), "precision": "int8",
            "target": "cpu", "int8_search": "off", **kw}
    return export_composite(tiny_composite(), out, **args)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """{"cpu": Bundle, "jetson": Bundle} exported once (INT8, no search: see the module docstring)."""
    root = tmp_path_factory.mktemp("bundles")
    return {t: export_tiny(root / f"{t}.bundle", target=t) for t in ("cpu", "jetson")}


@pytest.fixture
def bundle_copy(bundles, tmp_path):
    """A private copy of the cpu bundle, to break on purpose."""
    dst = tmp_path / "copy.bundle"
    shutil.copytree(bundles["cpu"].root, dst)
    return dst


@pytest.fixture(scope="session")
def tiny():
    """The helpers above as one object (conftest modules are not importable under importlib mode)."""
    return SimpleNamespace(I=POS_I, J=POS_J, task=tiny_task, composite=tiny_composite, windows=tiny_windows,
                           export=export_tiny)


def edit_manifest(root: Path, edit: Callable[[dict], object]) -> None:
    """Apply ``edit`` to a bundle's manifest.json in place (hostile-manifest tests); hashes are not redone."""
    path = root / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
