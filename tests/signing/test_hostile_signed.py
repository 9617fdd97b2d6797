"""Hostile cases against a signed bundle, through the real CLI (`bundle verify --trust`, `deploy --trust`).

For every file of the signed bundle: change one byte (with and without rewriting the manifest's sha256, as an
attacker who can write the bundle would), delete it; add stray files; swap in another bundle's signature;
re-sign with an untrusted key; a device key signing the base parts or a graph; an on-site act moved,
renumbered or removed; a pointer moved without an act; truncated signature files. Each case must end in
exit 2 with one error line naming the file or key, no traceback, and the bundle's bytes unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_bridge import signing
from edge_bridge.signing.envelope import seal
from tests.deploy.conftest import build_bundle
from tests.hostile.conftest import assert_clean_refusal, run_cli, tree_state

from .conftest import Keys, publish_signed_v2

FILES = ["target_front.onnx", "source_back.onnx", "source_front.onnx", "bridges/v0001.onnx",
         "bridges/v0001.safetensors", "golden.npz", "manifest.json", "signatures/publisher.json"]


def _flip(path: Path) -> None:
    if path.name == "manifest.json":  # one byte of a field the signature covers (keeps the JSON valid)
        text = path.read_text()
        path.write_text(text.replace('"task": "stress"', '"task": "strest"', 1))
        return
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _rehash(root: Path, rel: str) -> None:
    """Rewrite the manifest's sha256 of ``rel`` to match the changed file (the attack hashes cannot stop)."""
    m = json.loads((root / "manifest.json").read_text())
    sha = hashlib.sha256((root / rel).read_bytes()).hexdigest()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("file") == rel and "sha256" in node:
                node["sha256"] = sha
            if node.get("weights_file") == rel:
                node["weights_sha256"] = sha
            for v in node.values():
                walk(v)

    walk(m)
    (root / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")


Case = Callable[[Path, Keys, Path], None]


def _other_bundle(tmp: Path, keys: Keys) -> Path:
    other = build_bundle(tmp / "other.bundle", seed=1).root
    signing.sign_bundle(other, keys.publisher, name="tiny", version=5)
    return other


def _device_signs_graph(root: Path, keys: Keys, tmp: Path) -> None:
    """A valid-looking on-site act whose file list includes a graph (its sha256 unchanged)."""
    digest, pub = signing.bundle_sig.payload_digest((root / signing.PUBLISHER_SIG).read_bytes(), "x")
    graph = hashlib.sha256((root / "target_front.onnx").read_bytes()).hexdigest()
    st = {"_type": signing.bundle_sig.DEVICE_TYPE, "bundle": pub["bundle"], "publisher": digest, "seq": 1,
          "act": "publish", "current": 1, "bridges": {}, "files": {"target_front.onnx": graph},
          "signed": "now"}
    (root / "signatures" / "device-0001.json").write_bytes(seal(st, signing.load_private_key(keys.device)))


def _truncate(n: int | None) -> Case:
    def case(root: Path, keys: Keys, tmp: Path) -> None:
        p = root / signing.PUBLISHER_SIG
        data = p.read_bytes()
        p.write_bytes(data[: (len(data) // 2 if n is None else n)])
    return case


CASES: dict[str, tuple[Case, str | tuple[str, ...]]] = {}
for rel in FILES:
    CASES[f"flip {rel}"] = (lambda r, k, t, rel=rel: _flip(r / rel), rel)
    CASES[f"delete {rel}"] = (lambda r, k, t, rel=rel: (r / rel).unlink(), rel)
    if rel not in ("manifest.json", "signatures/publisher.json"):
        CASES[f"flip {rel} and rewrite its manifest hash"] = (
            lambda r, k, t, rel=rel: (_flip(r / rel), _rehash(r, rel)), (rel, "manifest.json"))
for stray in ("extra.onnx", "bridges/v0099.onnx", "source_model/config.json", "signatures/evil.json"):
    CASES[f"stray {stray}"] = (lambda r, k, t, s=stray: ((r / s).parent.mkdir(exist_ok=True),
                                                         (r / s).write_bytes(b"stray")), stray)
CASES.update({
    "another bundle's signature": (
        lambda r, k, t: shutil.copy(_other_bundle(t, k) / signing.PUBLISHER_SIG, r / signing.PUBLISHER_SIG),
        "manifest.json"),
    "re-signed with an untrusted key": (
        lambda r, k, t: signing.sign_bundle(r, k.other, name="tiny", version=9), "untrusted key"),
    "signed by the device key": (lambda r, k, t: signing.sign_bundle(r, k.device, name="tiny", version=9),
                                 "a device key"),
    "device key signs a graph": (_device_signs_graph, "may sign only bridge versions"),
    "truncated signature (half)": (_truncate(None), "signatures/publisher.json"),
    "truncated signature (1 byte)": (_truncate(1), "signatures/publisher.json"),
    "empty signature": (_truncate(0), "signatures/publisher.json"),
    "signature replaced by a directory": (
        lambda r, k, t: ((r / signing.PUBLISHER_SIG).unlink(), (r / signing.PUBLISHER_SIG).mkdir()),
        "signatures/publisher.json"),
})

# cases on a bundle that calibrate changed on site: v0002 published and signed by the device key
SITE_CASES: dict[str, tuple[Case, str | tuple[str, ...]]] = {
    "pointer moved back by hand": (lambda r, k, t: _set_current(r, 1), "without a signed act"),
    "act removed": (lambda r, k, t: (r / "signatures/device-0001.json").unlink(), "v0002"),
    "act renumbered": (lambda r, k, t: (r / "signatures/device-0001.json").rename(
        r / "signatures/device-0002.json"), "device-0001.json is missing"),
    "act from another bundle": (lambda r, k, t: _foreign_act(r, k, t), "another publisher statement"),
    "act truncated": (lambda r, k, t: (r / "signatures/device-0001.json").write_bytes(b'{"payloadType'),
                      "device-0001.json"),
    "flip bridges/v0002.onnx and rewrite its manifest hash": (
        lambda r, k, t: (_flip(r / "bridges/v0002.onnx"), _rehash(r, "bridges/v0002.onnx")),
        ("bridges/v0002.onnx", "bridge v0002")),
    "bridge entry edited": (lambda r, k, t: _edit_entry(r), "bridge v0002 differs"),
}


def _set_current(root: Path, v: int) -> None:
    m = json.loads((root / "manifest.json").read_text())
    m["bridges"]["current"] = v
    (root / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")


def _edit_entry(root: Path) -> None:
    m = json.loads((root / "manifest.json").read_text())
    m["bridges"]["versions"]["0002"]["metrics"] = {"agreement": 0.0}
    (root / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")


def _foreign_act(root: Path, keys: Keys, tmp: Path) -> None:
    other = _other_bundle(tmp, keys)
    publish_signed_v2(other, keys.device)
    shutil.copy(other / "signatures/device-0001.json", root / "signatures/device-0001.json")


def _refused(root: Path, keys: Keys, capsys, culprit: str | tuple[str, ...]) -> int:
    before = tree_state(root)
    n = 0
    for argv in (["bundle", "verify", root, "--trust", keys.trust],
                 ["deploy", "--bundle", root, "--trust", keys.trust, "--self-test-only"]):
        rc, out, err = run_cli(argv, capsys)
        assert_clean_refusal(rc, out, err, culprit)
        assert tree_state(root) == before, f"{argv[0]} changed the bundle"
        n += 1
    return n


@pytest.mark.parametrize("name", list(CASES))
def test_signed_bundle_case_is_refused(name, signed, keys, tmp_path, capsys):
    rc, out, err = run_cli(["bundle", "verify", signed, "--trust", keys.trust], capsys)
    assert rc == 0 and "signed: bundle tiny version 5 by acme" in out, out + err
    fn, culprit = CASES[name]
    fn(signed, keys, tmp_path)
    assert _refused(signed, keys, capsys, culprit) == 2


@pytest.fixture
def site(signed, keys) -> Path:
    """The signed bundle after calibrate published bridge v0002 on site (signed by the device key)."""
    assert publish_signed_v2(signed, keys.device) == 2
    v = signing.verify_signatures(signed, signing.TrustStore.load([keys.trust]))
    assert (v.seq, v.current) == (1, 2)
    return signed


@pytest.mark.parametrize("name", list(SITE_CASES))
def test_calibrated_bundle_case_is_refused(name, site, keys, tmp_path, capsys):
    fn, culprit = SITE_CASES[name]
    fn(site, keys, tmp_path)
    assert _refused(site, keys, capsys, culprit) == 2


def test_the_case_count():
    """The figure for the closing note: every case runs through two verbs."""
    assert len(CASES) + len(SITE_CASES) >= 40
