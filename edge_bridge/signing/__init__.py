"""Signed bundles: a device runs only models and bridges signed by keys it trusts, and never an older one.

Hashes in the manifest catch a flipped byte, but whoever can write the bundle can rewrite the manifest too.
Signatures add authenticity (who made it), role separation (the publisher signs the model; a device key
signs only the bridges calibrate publishes on site) and freshness (a signed, growing bundle version; the
device refuses one older than it ran). Modules:

- :mod:`~edge_bridge.signing.keys`        Ed25519 key files (``cryptography``) and the trust store/policy
- :mod:`~edge_bridge.signing.envelope`    DSSE envelopes: the signature file format
- :mod:`~edge_bridge.signing.bundle_sig`  what is signed (statements) and how a bundle is checked
- :mod:`~edge_bridge.signing.freshness`   the per-device record of versions run (rollback/replay)

This package is torch-free, like :mod:`edge_bridge.bundle` (the device imports it); ``cryptography`` is
imported only when a key is read or a signature checked.

Examples
--------
>>> from edge_bridge import signing
>>> signing.new_key("acme", "keys/")                               # doctest: +SKIP
>>> signing.sign_bundle("stress.bundle", "keys/acme.key")           # doctest: +SKIP
>>> signing.verify_signatures("stress.bundle", signing.TrustStore.load(["keys/acme.pub"]))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_bridge.signing import paths
from edge_bridge.signing.bundle_sig import (
    PUBLISHER_SIG,
    Verified,
    is_signed,
    sign_act,
    sign_bundle,
    verify_signatures,
)
from edge_bridge.signing.errors import SigningError, UnsignedBundleError
from edge_bridge.signing.keys import (
    ROLES,
    PrivateKey,
    PublicKey,
    TrustStore,
    load_private_key,
    load_public_key,
    new_key,
    trust_key,
)

__all__ = [
    "PUBLISHER_SIG",
    "ROLES",
    "DeployTrust",
    "PrivateKey",
    "PublicKey",
    "SigningError",
    "TrustStore",
    "UnsignedBundleError",
    "Verified",
    "deploy_trust",
    "is_signed",
    "load_private_key",
    "load_public_key",
    "new_key",
    "paths",
    "resolve_trust",
    "sign_act",
    "sign_bundle",
    "sign_demo_bundle",
    "trust_key",
    "verify_signatures",
]


def resolve_trust(given: Sequence[str | os.PathLike[str]] | None, *, demo: bool = False
                  ) -> tuple[TrustStore | None, str]:
    """The trust deploy uses, and where it came from.

    ``--trust`` paths win; else the user's trust directory (``$XDG_CONFIG_HOME/edge-bridge/trust``) once it
    exists; else, for the demo bundle, the demo's trust in the user cache. None when nothing is configured
    (the bundle is then hash-checked only, and deploy says so).
    """
    if given:
        return TrustStore.load(list(given)), "--trust " + " ".join(str(g) for g in given)
    if paths.trust_dir().is_dir():
        return TrustStore.load([paths.trust_dir()]), str(paths.trust_dir())
    if demo and paths.demo_trust_dir().is_dir():
        return TrustStore.load([paths.demo_trust_dir()]), f"{paths.demo_trust_dir()} (the demo's keys)"
    return None, ""


@dataclass
class DeployTrust:
    """What deploy decided about a bundle's signatures: the lines to print, and the record to keep."""

    verified: Verified | None
    start_line: str
    summary_line: str
    trust: TrustStore | None = None
    allow_downgrade: bool = False

    def recheck(self, root: str | os.PathLike[str]) -> None:
        """Check a bundle changed under the running deploy (a bridge calibrate published) the same way."""
        if self.trust is None or self.verified is None:
            return
        from edge_bridge.signing import freshness

        v = verify_signatures(root, self.trust)
        if not freshness.check(v, allow_downgrade=self.allow_downgrade):
            freshness.record(v)

    def record(self) -> None:
        if self.verified is not None:
            from edge_bridge.signing import freshness

            freshness.record(self.verified)


def deploy_trust(root: str | os.PathLike[str], given: Sequence[str | os.PathLike[str]] | None, *,
                 demo: bool = False, allow_unsigned: bool = False, allow_downgrade: bool = False,
                 bundle: object = None) -> DeployTrust:
    """Check a loaded bundle's signatures and freshness before deploy runs it.

    Raises
    ------
    SigningError
        Unsigned (without ``allow_unsigned``), an unknown key, a file that differs from what the signatures
        cover, a device key that signed a base part, or an older version than this device ran (without
        ``allow_downgrade``).
    """
    from edge_bridge.signing import freshness

    trust, where = resolve_trust(given, demo=demo)
    if trust is None:
        line = ("signature: not checked (no --trust, and no trust directory at "
                f"{paths.trust_dir()}); the bundle's hashes were checked")
        return DeployTrust(None, line, "signature: not checked (no trusted keys configured)")
    try:
        v = verify_signatures(root, trust, bundle=bundle)  # type: ignore[arg-type]
    except UnsignedBundleError:
        if not allow_unsigned:
            raise
        return DeployTrust(None, "signature: UNSIGNED bundle run on purpose (--allow-unsigned); trust "
                           f"{where}", "signature: UNSIGNED, run with --allow-unsigned", trust)
    downgrade = freshness.check(v, allow_downgrade=allow_downgrade)
    start = f"{v.line()}; trust {where}"
    summary = f"signature: bundle {v.name} v{v.version} by {v.publisher}"
    if downgrade:
        start += f"; DOWNGRADE allowed (--allow-downgrade): {downgrade}"
        summary += " (DOWNGRADE, run with --allow-downgrade)"
    return DeployTrust(v, start, summary, trust, allow_downgrade)


def sign_demo_bundle(root: str | os.PathLike[str]) -> str:
    """Sign the demo bundle with keys made in the user cache, trusted there; returns the signer.

    No set-up for the demo: on first use ``$XDG_CACHE_HOME/edge-bridge/keys/`` gets ``demo-publisher.key``
    and ``device.key`` (for calibrate's on-site acts), and ``.../trust/`` trusts them as publisher and device.
    A bundle that already verifies against that trust is left as it is.
    """
    keys, trust_d = paths.demo_keys_dir(), paths.demo_trust_dir()
    for name, role in (("demo-publisher", "publisher"), ("device", "device")):
        if not (keys / f"{name}.key").is_file():
            new_key(name, keys)
        if not (trust_d / f"{name}.pub").is_file():
            trust_key(keys / f"{name}.pub", trust_d, role)
    store = TrustStore.load([trust_d])
    try:
        v = verify_signatures(root, store)
        return v.publisher
    except SigningError:
        pass
    v = sign_bundle(root, keys / "demo-publisher.key", name="demo")
    return v.publisher


def key_for(root: str | os.PathLike[str]) -> Path | None:
    """The device key calibrate signs with, for a signed bundle (None for an unsigned one)."""
    return paths.device_key() if is_signed(root) else None
