"""Hostile input, class *bundle paths and links*: a bundle never reaches outside itself.

Every case breaks a private copy of a real bundle, runs the real CLI and asserts: exit 2, one error line
naming the culprit, no traceback, the bundle's bytes unchanged, nothing written outside the sentinel.
A manifest edit that points a path elsewhere also updates the hash to match (an attacker can), so only
containment stands between the device and the foreign bytes.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Case, assert_clean_refusal, edit, read_manifest, run_cli, sha, write_raw_manifest

TF = "target_front.onnx"


def _point(part: str, rel: str, source: str = TF) -> Callable[[Case], None]:
    """Point ``part``'s file at ``rel`` (made to exist with the real bytes where it can), hash updated."""

    def mutate(c: Case) -> None:
        target = (c.bundle / rel) if not rel.startswith("/") else Path(rel)
        try:
            target = target.resolve()
            if not target.exists() and (c.tmp in target.parents):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(c.bundle / source, target)
        except (OSError, ValueError):
            pass
        digest = sha(c.bundle / source)

        def fn(m):
            spec = m["bridges"]["versions"]["0001"]["onnx"] if part == "bridge" else m["parts"][part]
            spec["file"], spec["sha256"] = rel, digest
        edit(c.bundle, fn)
    return mutate


def _outside_copy(c: Case, name: str) -> Path:
    return c.outside / "copy.bundle" / name


def _symlink_part(name: str, inside: str | None = None) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        p = c.bundle / name
        p.unlink()
        os.symlink(c.bundle / inside if inside else _outside_copy(c, name), p)
    return mutate


def _link_dir(name: str) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        shutil.rmtree(c.bundle / name)
        os.symlink(_outside_copy(c, name), c.bundle / name)
    return mutate


def _weights_path(rel: str) -> Callable[[Case], None]:
    def fn(m):
        m["bridges"]["versions"]["0001"]["weights_file"] = rel
    return lambda c: edit(c.bundle, fn)


def _golden_path(rel: str) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        edit(c.bundle, lambda m: m["golden"].update(file=rel))
    return mutate


def _fifo(name: str) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        (c.bundle / name).unlink()
        os.mkfifo(c.bundle / name)  # reading it would block forever: must be refused before any read
    return mutate


def _dir_instead(name: str) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        (c.bundle / name).unlink()
        (c.bundle / name).mkdir()
    return mutate


def _manifest_link(c: Case) -> None:
    p = c.bundle / "manifest.json"
    p.unlink()
    os.symlink(_outside_copy(c, "manifest.json"), p)


def _golden_link_own(c: Case) -> None:
    p = c.bundle / "bridges" / "v0001.golden.npz"
    p.unlink()
    os.symlink(_outside_copy(c, "bridges/v0001.golden.npz"), p)


def _parent_is_file(c: Case) -> None:
    _point("target_front", "golden.npz/target_front.onnx")(c)


# (id, mutate, culprit named in the error line)
VERIFY_CASES: list[tuple[str, Callable[[Case], None], str | tuple[str, ...]]] = [
    ("absolute-part-path", _point("target_front", "/etc/hostname"), "/etc/hostname"),
    ("absolute-into-outside", lambda c: _point("target_front", str(_outside_copy(c, TF)))(c),
     "parts.target_front.file"),
    ("dotdot-part-path", _point("target_front", "../../outside/copy.bundle/target_front.onnx"), "../"),
    ("dotdot-inside-bridges", _point("bridge", "bridges/../target_front.onnx"), "bridges/../"),
    ("dot-segment", _point("target_front", "./target_front.onnx"), "./target_front.onnx"),
    ("double-slash", _point("bridge", "bridges//v0001.onnx", "bridges/v0001.onnx"), "bridges//v0001.onnx"),
    ("trailing-slash", _point("target_front", "target_front.onnx/"), "target_front.onnx/"),
    ("empty-path", _point("target_front", ""), "parts.target_front.file"),
    ("backslash-path", _point("target_front", "..\\outside\\x.onnx"), "parts.target_front.file"),
    ("windows-drive", _point("target_front", "C:/Windows/x.onnx"), "C:/Windows"),
    ("hidden-file", _point("source_back", ".hidden.onnx", "source_back.onnx"), ".hidden.onnx"),
    ("home-tilde", _point("target_front", "~/x.onnx"), "~/x.onnx"),
    ("nul-byte", _point("target_front", "target_front.onnx\x00.txt"), "parts.target_front.file"),
    ("unicode-lookalike", _point("target_front", "target_front\u2024onnx"), "parts.target_front.file"),
    ("overlong-path", _point("target_front", "a/" * 200 + "x.onnx"), "parts.target_front.file"),
    ("weights-absolute", _weights_path("/etc/passwd"), "weights_file"),
    ("weights-dotdot", _weights_path("../b.bundle/bridges/v0001.safetensors"), "weights_file"),
    ("golden-dotdot", _golden_path("../golden.npz"), "golden.file"),
    ("golden-absolute", _golden_path("/tmp/golden.npz"), "golden.file"),
    ("source-model-name-escape", lambda c: edit(c.bundle, lambda m: m.update(
        source_model={"files": {"../../x": "0" * 64}})), "source_model.files"),
    ("part-symlink-outside", _symlink_part(TF), "symbolic link"),
    ("part-symlink-inside", _symlink_part("source_back.onnx", "source_back.onnx.real"), "source_back.onnx"),
    ("bridge-symlink", _symlink_part("bridges/v0001.onnx"), "bridges/v0001.onnx"),
    ("weights-symlink", _symlink_part("bridges/v0001.safetensors"), "bridges/v0001.safetensors"),
    ("golden-symlink", _symlink_part("golden.npz"), "golden.npz"),
    ("own-golden-symlink", _golden_link_own, "v0001.golden.npz"),
    ("bridges-dir-symlink", _link_dir("bridges"), "symbolic link bridges"),
    ("manifest-symlink", _manifest_link, "manifest.json"),
    ("part-is-fifo", _fifo(TF), "not a regular file"),
    ("golden-is-fifo", _fifo("golden.npz"), "golden.npz"),
    ("part-is-directory", _dir_instead("source_back.onnx"), "source_back.onnx"),
    ("parent-is-a-file", _parent_is_file, "not a directory"),
    ("dangling-symlink", lambda c: ((c.bundle / TF).unlink(), os.symlink("/nonexistent/x", c.bundle / TF)),
     "symbolic link"),
]


def _prepare_inside_link(c: Case) -> None:
    shutil.copy(c.bundle / "source_back.onnx", c.bundle / "source_back.onnx.real")


@pytest.mark.parametrize("command", ["verify", "self-test"])
@pytest.mark.parametrize(("name", "mutate", "culprit"), VERIFY_CASES, ids=[c[0] for c in VERIFY_CASES])
def test_path_and_link_refused(case, capsys, name, mutate, culprit, command):
    if name == "part-symlink-inside":
        _prepare_inside_link(case)
    mutate(case)
    case.snapshot()
    argv = (["bundle", "verify", case.bundle, "--all-bridges"] if command == "verify"
            else ["deploy", "--bundle", case.bundle, "--self-test-only"])
    assert_clean_refusal(*run_cli(argv, capsys), culprit)
    case.unchanged()


# --- pack, unpack and writes -------------------------------------------------------------------------------
def _stray_link(c: Case) -> None:
    os.symlink("/etc/passwd", c.bundle / "notes.txt")


def _stray_dir_link(c: Case) -> None:
    os.symlink(c.outside, c.bundle / "extra")


def _stray_fifo(c: Case) -> None:
    os.mkfifo(c.bundle / "pipe")


PACK_CASES = [
    ("stray-file-link", _stray_link, None, "notes.txt"),
    ("stray-dir-link", _stray_dir_link, None, "extra"),
    ("stray-fifo", _stray_fifo, None, "pipe"),
    ("tar-inside-bundle", lambda c: None, "b.bundle/x.tar", "inside the bundle"),
    ("tar-is-the-bundle", lambda c: None, "b.bundle", ("b.bundle", "is a directory")),
    ("tar-in-missing-dir", lambda c: None, "no/such/dir/x.tar", ("no/such/dir", "x.tar")),
    ("old-version-link", lambda c: _symlink_part("bridges/v0001.safetensors")(c), None,
     "bridges/v0001.safetensors"),
]


@pytest.mark.parametrize(("name", "mutate", "out", "culprit"), PACK_CASES, ids=[c[0] for c in PACK_CASES])
def test_pack_refuses(case, capsys, name, mutate, out, culprit):
    mutate(case)
    if name == "tar-in-missing-dir":
        (case.sentinel / "no").mkdir()
        (case.sentinel / "no" / "such").write_text("a file, not a folder")
    case.snapshot()
    before_sentinel = sorted(p.name for p in case.sentinel.iterdir())
    rc, o, e = run_cli(["bundle", "pack", case.bundle, "-o", case.sentinel / (out or "x.tar")], capsys)
    assert_clean_refusal(rc, o, e, culprit)
    case.unchanged()
    assert sorted(p.name for p in case.sentinel.iterdir()) == before_sentinel  # no tar left behind


def _tar(c: Case, members: list[tuple[tarfile.TarInfo, bytes | None]], base: bool = True) -> Path:
    path = c.sentinel / "in.tar"
    with tarfile.open(path, "w") as tar:
        if base:
            for p in sorted(c.master.rglob("*")):
                if p.is_file():
                    tar.add(p, arcname=p.relative_to(c.master).as_posix())
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, data: bytes = b"x", **kw) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    return info, (data if info.isfile() else None)


def _tar_with_manifest(c: Case, change) -> Path:
    m = read_manifest(c.master)
    change(m)
    import json

    data = json.dumps(m).encode()
    path = c.sentinel / "in.tar"
    with tarfile.open(path, "w") as tar:
        for p in sorted(c.master.rglob("*")):
            if p.is_file() and p.name != "manifest.json":
                tar.add(p, arcname=p.relative_to(c.master).as_posix())
        info, payload = _member("manifest.json", data)
        tar.addfile(info, io.BytesIO(payload))
    return path


UNPACK_CASES = [
    ("member-dotdot", lambda c: _tar(c, [_member("../escape.txt")]), "../escape.txt"),
    ("member-absolute", lambda c: _tar(c, [_member("/tmp/escape.txt")]), "/tmp/escape.txt"),
    ("member-symlink", lambda c: _tar(c, [_member("evil", type=tarfile.SYMTYPE, linkname="/etc")]), "evil"),
    ("member-hardlink", lambda c: _tar(c, [_member("hl", type=tarfile.LNKTYPE, linkname="golden.npz")]),
     "hl"),
    ("member-fifo", lambda c: _tar(c, [_member("fifo", type=tarfile.FIFOTYPE)]), "fifo"),
    ("member-device", lambda c: _tar(c, [_member("dev", type=tarfile.CHRTYPE)]), "dev"),
    ("member-duplicate-manifest", lambda c: _tar(c, [_member("manifest.json", b"{}")]), "manifest.json"),
    ("member-backslash", lambda c: _tar(c, [_member("..\\escape")]), "escape"),
    ("not-a-tar", lambda c: _write(c.sentinel / "in.tar", b"not a tar at all" * 100), "in.tar"),
    ("zero-byte-tar", lambda c: _write(c.sentinel / "in.tar", b""), "in.tar"),
    ("gzip-garbage", lambda c: _write(c.sentinel / "in.tar", b"\x1f\x8b\x08" + b"\0" * 64), "in.tar"),
    ("truncated-tar", lambda c: _truncate(_tar(c, [])), "in.tar"),
    ("empty-tar", lambda c: _tar(c, [], base=False), "manifest.json"),
    ("manifest-escapes", lambda c: _tar_with_manifest(c, lambda m: m["parts"]["target_front"].update(
        file="../outside.onnx")), "parts.target_front.file"),
    ("manifest-absolute", lambda c: _tar_with_manifest(c, lambda m: m["golden"].update(file="/etc/passwd")),
     "golden.file"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    return path


@pytest.mark.parametrize(("name", "make", "culprit"), UNPACK_CASES, ids=[c[0] for c in UNPACK_CASES])
def test_unpack_refuses(case, capsys, name, make, culprit):
    tar = make(case)
    case.snapshot()
    before = sorted(p.name for p in case.sentinel.iterdir())
    rc, o, e = run_cli(["bundle", "unpack", tar, "-o", case.sentinel / "dest.bundle"], capsys)
    assert_clean_refusal(rc, o, e, culprit)
    case.unchanged()
    assert sorted(p.name for p in case.sentinel.iterdir()) == before  # no dest, no staging left behind
    assert not (case.tmp / "escape.txt").exists()


def test_pack_then_unpack_round_trip_still_works(case, capsys):
    """The refusals above are not a bundle that cannot travel at all."""
    rc, _, err = run_cli(["bundle", "pack", case.bundle, "-o", case.sentinel / "ok.tar"], capsys)
    assert rc == 0, err
    rc, _, err = run_cli(["bundle", "unpack", case.sentinel / "ok.tar", "-o", case.sentinel / "u.bundle"],
                         capsys)
    assert rc == 0, err
    assert sha(case.sentinel / "u.bundle" / "manifest.json") == sha(case.bundle / "manifest.json")


# --- writes never go through a link -------------------------------------------------------------------------
def _two_versions(c: Case) -> None:
    from deploy.runtime import bridge_golden
    from edge_bridge.bundle import Bundle, publish_bridge

    b = Bundle.load(c.bundle)
    data = (c.bundle / "bridges" / "v0001.onnx").read_bytes()
    publish_bridge(b, data, b"w2", origin="calibrate", golden=bridge_golden(b, data))


def _lock_link(c: Case) -> None:
    _two_versions(c)
    os.symlink(c.outside / "copy.bundle" / "golden.npz", c.bundle / ".calibrate.lock")


def _manifest_link_rollback(c: Case) -> None:
    _two_versions(c)
    shutil.copy(c.bundle / "manifest.json", c.outside / "manifest.json")
    (c.bundle / "manifest.json").unlink()
    os.symlink(c.outside / "manifest.json", c.bundle / "manifest.json")


def _bridges_link_rollback(c: Case) -> None:
    _two_versions(c)
    shutil.copytree(c.bundle / "bridges", c.outside / "bridges")
    shutil.rmtree(c.bundle / "bridges")
    os.symlink(c.outside / "bridges", c.bundle / "bridges")


WRITE_CASES = [
    ("lock-is-a-link", _lock_link, ".calibrate.lock"),
    ("manifest-is-a-link", _manifest_link_rollback, "manifest.json"),
    ("bridges-is-a-link", _bridges_link_rollback, "bridges"),
]


@pytest.mark.parametrize(("name", "mutate", "culprit"), WRITE_CASES, ids=[c[0] for c in WRITE_CASES])
def test_rollback_never_writes_through_a_link(case, capsys, name, mutate, culprit):
    mutate(case)
    case.snapshot()
    rc, o, e = run_cli(["calibrate", "--bundle", case.bundle, "--rollback"], capsys)
    assert_clean_refusal(rc, o, e, culprit)
    case.unchanged()


def test_publish_refuses_a_bridges_link(case):
    """Calibrate's publish with ``bridges/`` a link to another folder: refused, nothing written there."""
    from calibrate.core import publish_candidate
    from edge_bridge.bundle import BundleError

    shutil.copytree(case.bundle / "bridges", case.outside / "bridges")
    shutil.rmtree(case.bundle / "bridges")
    os.symlink(case.outside / "bridges", case.bundle / "bridges")
    write_raw_manifest(case.bundle, read_manifest(case.bundle))
    case.snapshot()
    data = (case.outside / "bridges" / "v0001.onnx").read_bytes()
    with pytest.raises(BundleError, match="symbolic link"):
        publish_candidate(case.bundle, 1, data, b"w2", {})
    case.unchanged()
    assert not (case.outside / "bridges" / "v0002.onnx").exists()
