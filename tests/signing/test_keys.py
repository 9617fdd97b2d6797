"""Key files and trust: modes, refusals, roles, and the `edge-bridge keys` verb."""

from __future__ import annotations

import json
import os
import stat

import pytest

from edge_bridge import signing
from tests.hostile.conftest import run_cli


def test_new_key_is_0600_and_never_overwritten(tmp_path):
    key, pub = signing.new_key("acme", tmp_path / "k")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub).st_mode) == 0o644
    assert b"PRIVATE KEY" in key.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    before = key.read_bytes()
    with pytest.raises(signing.SigningError, match="exists already"):
        signing.new_key("acme", tmp_path / "k")
    assert key.read_bytes() == before
    assert signing.load_private_key(key).public.raw == signing.load_public_key(pub).raw


def test_a_private_key_others_can_read_is_refused(tmp_path):
    key, _ = signing.new_key("acme", tmp_path)
    os.chmod(key, 0o644)
    with pytest.raises(signing.SigningError, match="chmod 600"):
        signing.load_private_key(key)


def test_non_ed25519_and_garbage_keys_are_refused(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    ecdsa = tmp_path / "ec.key"
    ecdsa.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    os.chmod(ecdsa, 0o600)
    with pytest.raises(signing.SigningError, match="Ed25519 keys only"):
        signing.load_private_key(ecdsa)
    junk = tmp_path / "junk.pub"
    junk.write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(signing.SigningError, match="not a PEM public key"):
        signing.load_public_key(junk)


def test_policy_gives_roles_and_an_unnamed_key_gains_nothing(tmp_path):
    signing.new_key("acme", tmp_path)
    signing.new_key("site7", tmp_path)
    signing.new_key("dropped", tmp_path)
    t = tmp_path / "trust"
    signing.trust_key(tmp_path / "acme.pub", t, "publisher")
    signing.trust_key(tmp_path / "site7.pub", t, "device")
    (t / "dropped.pub").write_bytes((tmp_path / "dropped.pub").read_bytes())  # no policy entry
    store = signing.TrustStore.load([t])
    roles = {store.keys[k].name: r for k, r in store.roles.items()}
    assert roles == {"acme": "publisher", "site7": "device"}
    with pytest.raises(signing.SigningError, match="both as device and as publisher"):
        signing.TrustStore.load([t, tmp_path / "site7.pub"])  # a .pub alone means publisher
    (t / "policy.json").write_text(json.dumps({"keys": {"acme": {"role": "root"}}}))
    with pytest.raises(signing.SigningError, match="role"):
        signing.TrustStore.load([t])


def test_keys_verb_round_trip(tmp_path, capsys):
    d, t = tmp_path / "keys", tmp_path / "trust"
    rc, out, err = run_cli(["keys", "new", "site7", "--dir", d], capsys)
    assert rc == 0 and "mode 0600" in out, err
    assert stat.S_IMODE(os.stat(d / "site7.key").st_mode) == 0o600
    rc, out, err = run_cli(["keys", "trust", d / "site7.pub", "--role", "device", "--trust-dir", t], capsys)
    assert rc == 0 and "as device" in out, err
    rc, out, err = run_cli(["keys", "list", "--trust-dir", t], capsys)
    assert rc == 0 and "site7" in out and "device" in out
    rc, out, err = run_cli(["keys", "new", "site7", "--dir", d], capsys)  # no overwrite, one line
    assert rc == 2 and "exists already" in err and "Traceback" not in err
    rc, out, err = run_cli(["keys", "new", "../evil", "--dir", d], capsys)
    assert rc == 2 and "key name" in err
    rc, out, err = run_cli(["keys", "new", "acme"], capsys)  # default: the user config's keys folder
    assert rc == 0 and (signing.paths.keys_dir() / "acme.key").is_file()
