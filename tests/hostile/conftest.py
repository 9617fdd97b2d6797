"""The hostile-input suite's bundle and harness.

One small real bundle is built once per session (the deploy tests' ONNX graphs, golden outputs from ONNX
Runtime, plus bridge v0001's own golden file as export writes it). Every case gets a private copy inside a
*sentinel* folder; :class:`Case` hashes every byte of the bundle and of an ``outside`` folder (the targets
of links and escapes) before and after the command, so a case can assert that a refusal changed nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_bridge.bundle import Bundle, write_bridge_golden, write_manifest
from edge_bridge.bundle import read_golden as _read_golden
from tests.deploy.conftest import build_bundle


@pytest.fixture(scope="session")
def hostile_master(tmp_path_factory) -> Path:
    root = build_bundle(tmp_path_factory.mktemp("hostile") / "master.bundle").root
    b = Bundle.load(root)
    rel, sha = write_bridge_golden(root, 1, _read_golden(b))
    b.manifest.bridges[1].golden_file, b.manifest.bridges[1].golden_sha256 = rel, sha
    write_manifest(root, b.manifest)
    Bundle.load(root).verify(all_bridges=True)
    return root


def tree_state(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (not following links): file -> sha256, link -> its target, dir -> 'dir'."""
    out: dict[str, str] = {}
    if not root.exists() and not root.is_symlink():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link -> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = f"special {stat.S_IFMT(st.st_mode)}"
    return out


@dataclass
class Case:
    """Paths of one case: ``sentinel/b.bundle`` (the copy to break), ``outside/`` (never to be touched)."""

    tmp: Path
    sentinel: Path
    bundle: Path
    outside: Path
    master: Path
    before: dict[str, dict[str, str]] = field(default_factory=dict)

    def snapshot(self) -> None:
        self.before = {"bundle": tree_state(self.bundle), "outside": tree_state(self.outside),
                       "tmp": sorted(p.name for p in self.tmp.iterdir())}

    def unchanged(self) -> None:
        ignore = {".calibrate.lock"}  # an empty lock file beside the manifest is how a lock works
        now = {k: v for k, v in tree_state(self.bundle).items() if k not in ignore}
        was = {k: v for k, v in self.before["bundle"].items() if k not in ignore}
        assert now == was, "the bundle's bytes changed"
        assert tree_state(self.outside) == self.before["outside"], "something was written outside"
        assert sorted(p.name for p in self.tmp.iterdir()) == self.before["tmp"], "a new top-level entry"


@pytest.fixture
def case(hostile_master, tmp_path, monkeypatch) -> Case:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    bundle = sentinel / "b.bundle"
    shutil.copytree(hostile_master, bundle)
    outside = tmp_path / "outside"
    shutil.copytree(hostile_master, outside / "copy.bundle")  # real files to point links at
    monkeypatch.chdir(sentinel)
    return Case(tmp_path, sentinel, bundle, outside, hostile_master)


# --- helpers the case tables use ---------------------------------------------------------------------------
def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(bundle: Path) -> dict:
    import json

    return json.loads((bundle / "manifest.json").read_text())


def write_raw_manifest(bundle: Path, m: object) -> None:
    """A hostile edit: plain write, no schema check (what an attacker or a text editor does)."""
    import json

    (bundle / "manifest.json").write_text(json.dumps(m, indent=1))


def edit(bundle: Path, fn) -> None:
    m = read_manifest(bundle)
    fn(m)
    write_raw_manifest(bundle, m)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """The real CLI in this process (``edge_bridge.cli.main``); a traceback would fail the test."""
    from edge_bridge.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean_refusal(rc: int, out: str, err: str, culprit: str | tuple[str, ...]) -> str:
    """Exit 2, no traceback, and the last stderr line is the one error line, naming the culprit."""
    text = out + err
    assert "Traceback" not in text, text
    assert rc == 2, f"exit {rc}, expected 2:\n{text}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "no message"
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], f"not one error line:\n{err}"
    culprits = (culprit,) if isinstance(culprit, str) else culprit
    assert any(c in errors[0] for c in culprits), f"{culprits} not named in: {errors[0]}"
    return errors[0]
