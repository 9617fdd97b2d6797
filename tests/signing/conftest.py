"""Signed bundles for the signing tests: the deploy tests' tiny real bundle, signed by real Ed25519 keys.

Every test gets its own XDG config/state/cache folders (keys, trust and the freshness record never touch the
user's), a publisher key, a device key and a trust directory whose policy gives each its role.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_bridge import signing
from tests.deploy.conftest import build_bundle


@dataclass
class Keys:
    dir: Path
    publisher: Path
    device: Path
    other: Path  # a key nobody trusts
    trust: Path  # trust dir: publisher as publisher, device as device


@pytest.fixture(autouse=True)
def _xdg(tmp_path, monkeypatch):
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "xdg" / var.lower()))
    monkeypatch.delenv("EDGE_BRIDGE_DEVICE_KEY", raising=False)


@pytest.fixture(scope="session")
def _master_keys(tmp_path_factory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    for name in ("acme", "site7", "mallory"):
        signing.new_key(name, d)
    trust = d / "trust"
    signing.trust_key(d / "acme.pub", trust, "publisher")
    signing.trust_key(d / "site7.pub", trust, "device")
    return Keys(d, d / "acme.key", d / "site7.key", d / "mallory.key", trust)


@pytest.fixture
def keys(_master_keys, tmp_path) -> Keys:
    d = tmp_path / "keys"
    shutil.copytree(_master_keys.dir, d)
    return Keys(d, d / "acme.key", d / "site7.key", d / "mallory.key", d / "trust")


@pytest.fixture(scope="session")
def _signed_master(tmp_path_factory, _master_keys) -> Path:
    root = build_bundle(tmp_path_factory.mktemp("signed") / "master.bundle").root
    signing.sign_bundle(root, _master_keys.publisher, name="tiny", version=5)
    return root


@pytest.fixture
def signed(_signed_master, tmp_path) -> Path:
    """A private copy of a bundle signed by the publisher key as ``tiny`` version 5."""
    dst = tmp_path / "b" / "tiny.bundle"
    shutil.copytree(_signed_master, dst)
    return dst


@pytest.fixture
def trust(keys) -> signing.TrustStore:
    return signing.TrustStore.load([keys.trust])


def publish_signed_v2(root: Path, device_key: Path, seed: int = 7) -> int:
    """What calibrate does on site: publish a new bridge (real ONNX, its own golden outputs), sign the act."""
    import numpy as np
    import onnx

    from calibrate.core import publish_candidate
    from tests.deploy.conftest import bridge_model

    onnx_bytes = bridge_model(np.random.default_rng(seed)).SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
    os.environ["EDGE_BRIDGE_DEVICE_KEY"] = str(device_key)
    try:
        return publish_candidate(root, 1, onnx_bytes, b"weights v2", {"agreement": 1.0})
    finally:
        del os.environ["EDGE_BRIDGE_DEVICE_KEY"]


@pytest.fixture(scope="session")
def unsigned_master(tmp_path_factory) -> Path:
    """The same tiny bundle, never signed (copy it before changing it)."""
    return build_bundle(tmp_path_factory.mktemp("unsigned") / "master.bundle").root
