"""A few hostile cases through the installed entry point in a fresh process (``python -m edge_bridge.cli``).

The table-driven suites call ``edge_bridge.cli.main`` in-process for speed; these prove the same refusals
hold for the real command line: exit 2, one error line on stderr, no traceback, no byte changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import Case, edit, sha

ROOT = Path(__file__).resolve().parents[2]


def _run(case: Case, *argv: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edge_bridge.cli", *map(str, argv)], cwd=case.sentinel,
                          env=env, capture_output=True, text=True, timeout=120)


def _escape(c: Case) -> None:
    edit(c.bundle, lambda m: m["parts"]["target_front"].update(file="/etc/hostname",
                                                               sha256=sha("/etc/hostname")))


def _dup_classes(c: Case) -> None:
    edit(c.bundle, lambda m: m.update(classes=["a", "a", "b"]))


def _nan_golden(c: Case) -> None:
    p = c.bundle / "bridges" / "v0001.golden.npz"
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["source_back.logits"] = arrays["source_back.logits"] * np.nan
    np.savez(p, **arrays)
    edit(c.bundle, lambda m: m["bridges"]["versions"]["0001"]["golden"].update(sha256=sha(p)))


def _bridges_link(c: Case) -> None:
    import shutil

    shutil.copytree(c.bundle / "bridges", c.outside / "bridges")
    shutil.rmtree(c.bundle / "bridges")
    os.symlink(c.outside / "bridges", c.bundle / "bridges")


CASES = [
    ("paths: absolute part", _escape, ("bundle", "verify"), "parts.target_front.file"),
    ("paths: bridges link", _bridges_link, ("deploy", "--self-test-only", "--bundle"), "symbolic link"),
    ("fields: duplicate classes", _dup_classes, ("bundle", "verify"), "field classes"),
    ("golden: NaN expected", _nan_golden, ("deploy", "--self-test-only", "--bundle"), "NaN"),
]


@pytest.mark.parametrize(("name", "mutate", "argv", "culprit"), CASES, ids=[c[0] for c in CASES])
def test_real_binary_refuses_cleanly(case, name, mutate, argv, culprit):
    if os.path.exists("/etc/hostname") is False and "absolute" in name:
        pytest.skip("no /etc/hostname here")
    mutate(case)
    case.snapshot()
    p = _run(case, *argv, case.bundle)
    assert "Traceback" not in p.stderr + p.stdout
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert ": error: " in lines[-1] and culprit in lines[-1]
    assert sum(": error: " in ln for ln in lines) == 1
    case.unchanged()


def test_real_binary_accepts_the_real_bundle(case):
    p = _run(case, "bundle", "verify", case.bundle)
    assert p.returncode == 0, p.stderr
    assert json.loads((case.bundle / "manifest.json").read_text())["bridges"]["current"] == 1
