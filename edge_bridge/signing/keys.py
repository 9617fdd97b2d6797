"""Ed25519 key files and the trust store: which public keys a device trusts, and for which role.

A key is two PEM files side by side: ``NAME.key`` (PKCS#8, mode 0600, refused when others may read it, as
ssh does) and ``NAME.pub`` (SubjectPublicKeyInfo). The crypto is the ``cryptography`` package's Ed25519;
nothing here computes a signature by hand. A key is known by its *keyid*, the sha256 of its raw 32-byte
public key, which every signature names.

A trust store is built from ``--trust`` paths: a ``.pub`` file (trusted as a publisher) or a directory of
them. A directory may hold ``policy.json``, which gives each key its role (secure-boot style separation)::

    {"schema_version": 1, "keys": {"acme": {"role": "publisher"}, "site-7": {"role": "device"}}}

- ``publisher`` signs the base parts: graphs, source weights, golden files, reference statistics, the
  manifest, the exported bridge(s) and the bundle's name and version;
- ``device`` signs only what calibrate changes on site: ``bridges/vNNNN.*`` and the current-bridge pointer.

With a policy, a ``.pub`` it does not name is not trusted (a key dropped into the folder gains nothing);
without one, every ``.pub`` in the folder is a publisher key. ``edge-bridge keys trust`` writes the policy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_bridge.fileio import atomic_path, atomic_write_text
from edge_bridge.signing.errors import SigningError

ROLES = ("publisher", "device")
KEY_SUFFIX, PUB_SUFFIX = ".key", ".pub"
POLICY = "policy.json"
MAX_KEY_BYTES = 16 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith((KEY_SUFFIX, PUB_SUFFIX)):
        raise SigningError(f"key name {name!r}: use 1-64 letters, digits, '_', '.' or '-' (no suffix; "
                           f"{KEY_SUFFIX} and {PUB_SUFFIX} are added)")
    return name


def keyid_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _read_small(path: Path, what: str) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SigningError(f"{path}: no such {what} file (make one with `edge-bridge keys new NAME`)"
                           ) from None
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise SigningError(f"{path}: not a regular file; give the {what} file itself")
    if st.st_size > MAX_KEY_BYTES:
        raise SigningError(f"{path}: {st.st_size} bytes is too large for a {what} file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class PublicKey:
    """A trusted (or about to be trusted) Ed25519 public key."""

    name: str
    raw: bytes
    source: str

    @property
    def keyid(self) -> str:
        return keyid_of(self.raw)

    def describe(self) -> str:
        return f"{self.name} (ed25519 {self.keyid[:16]})"

    def verifies(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except InvalidSignature:
            return False
        return True


@dataclass
class PrivateKey:
    """A loaded private key: signs, and knows its keyid and file name."""

    name: str
    path: Path
    _key: Any = field(repr=False)

    @property
    def public(self) -> PublicKey:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return PublicKey(self.name, raw, str(self.path))

    def sign(self, data: bytes) -> bytes:
        sig: bytes = self._key.sign(data)
        return sig


def new_key(name: str, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Make ``DIR/NAME.key`` (mode 0600) and ``DIR/NAME.pub``; never overwrites either.

    Raises
    ------
    SigningError
        The name is not a plain name, or either file exists already.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    check_name(name)
    d = Path(directory)
    key_path, pub_path = d / f"{name}{KEY_SUFFIX}", d / f"{name}{PUB_SUFFIX}"
    for p in (key_path, pub_path):
        if p.exists() or p.is_symlink():
            raise SigningError(f"{p} exists already; choose another name or move it away (nothing was "
                               "overwritten)")
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        with atomic_path(key_path) as tmp:  # mkstemp makes the file 0600 before a byte is written
            os.chmod(tmp, 0o600)
            tmp.write_bytes(pem)
        pub = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        with atomic_path(pub_path) as tmp:
            tmp.write_bytes(pub)
            os.chmod(tmp, 0o644)
    except OSError as exc:
        raise SigningError(f"{d}: cannot write the key files ({exc.strerror or exc})") from None
    return key_path, pub_path


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Read an Ed25519 private key file; refuse one that group or others may read."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    p = Path(path)
    data = _read_small(p, "private key")
    mode = stat.S_IMODE(os.stat(p).st_mode)
    if mode & 0o077:
        raise SigningError(f"{p}: the private key is readable by others (mode {mode:04o}); run "
                           f"`chmod 600 {p}` (a key others can read may already be copied)")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{p}: not an unencrypted PEM private key ({str(exc)[:80]}); make one with "
                           "`edge-bridge keys new NAME`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{p}: a {type(key).__name__.lstrip('_')} key; edge-bridge signs with Ed25519 "
                           "keys only (`edge-bridge keys new NAME`)")
    name = p.name[: -len(KEY_SUFFIX)] if p.name.endswith(KEY_SUFFIX) else p.stem
    return PrivateKey(name, p, key)


def load_public_key(path: str | os.PathLike[str], name: str | None = None) -> PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

    p = Path(path)
    data = _read_small(p, "public key")
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{p}: not a PEM public key ({str(exc)[:80]}); give the NAME.pub that "
                           "`edge-bridge keys new` wrote") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{p}: not an Ed25519 public key; edge-bridge trusts Ed25519 keys only")
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PublicKey(name or (p.name[: -len(PUB_SUFFIX)] if p.name.endswith(PUB_SUFFIX) else p.stem), raw,
                     str(p))


@dataclass
class TrustStore:
    """Trusted public keys by keyid, each with its role."""

    keys: dict[str, PublicKey] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def add(self, key: PublicKey, role: str) -> None:
        if role not in ROLES:
            raise SigningError(f"{key.source}: role {role!r} is not one of {list(ROLES)}")
        old = self.roles.get(key.keyid)
        if old is not None and old != role:
            raise SigningError(f"{key.source}: key {key.describe()} is trusted both as {old} and as {role}; "
                               "give each key one role (a device key must never sign base parts)")
        self.keys[key.keyid] = key
        self.roles[key.keyid] = role

    def names(self) -> str:
        return ", ".join(f"{k.describe()} as {self.roles[i]}" for i, k in self.keys.items()) or "none"

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike[str]]) -> TrustStore:
        """Trust the keys of each path: a ``.pub`` file (publisher) or a trust directory (its policy).

        Raises
        ------
        SigningError
            A path is missing, a key unreadable, the policy malformed, or no key was found at all.
        """
        store = cls()
        for given in paths:
            p = Path(given)
            store.sources.append(str(p))
            if p.is_dir():
                store._add_dir(p)
            elif p.is_file():
                store.add(load_public_key(p), "publisher")
            else:
                raise SigningError(f"--trust {p}: no such public key file or trust directory")
        if not store.keys:
            raise SigningError(f"--trust {', '.join(store.sources)}: no public key (NAME.pub) found there; "
                               "add one with `edge-bridge keys trust NAME.pub --trust-dir DIR`")
        return store

    def _add_dir(self, d: Path) -> None:
        policy = read_policy(d)
        pubs = sorted(d.glob(f"*{PUB_SUFFIX}"))
        if policy is None:
            for pub in pubs:
                self.add(load_public_key(pub), "publisher")
            return
        for name, role in policy.items():
            pub = d / f"{name}{PUB_SUFFIX}"
            if not pub.is_file():
                raise SigningError(f"{d / POLICY}: names key {name!r}, but {pub} does not exist; add the "
                                   "public key or remove the entry")
            self.add(load_public_key(pub, name), role)


def read_policy(d: Path) -> dict[str, str] | None:
    """``{key name: role}`` from ``DIR/policy.json``, or None when the folder has none."""
    path = d / POLICY
    if not path.exists():
        return None
    try:
        data = json.loads(_read_small(path, "trust policy").decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SigningError(f"{path}: not valid JSON ({str(exc)[:80]}); fix it or rewrite it with "
                           "`edge-bridge keys trust`") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, dict):
        raise SigningError(f"{path}: expected {{\"schema_version\": 1, \"keys\": {{NAME: {{\"role\": "
                           "ROLE}}}; rewrite it with `edge-bridge keys trust`")
    out: dict[str, str] = {}
    for name, entry in keys.items():
        role = entry.get("role") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _NAME.match(name) or role not in ROLES:
            raise SigningError(f"{path}: entry {str(name)[:40]!r} needs a plain key name and a role in "
                               f"{list(ROLES)}, got {str(entry)[:60]}")
        out[name] = role
    return out


def trust_key(pub: str | os.PathLike[str], trust_dir: str | os.PathLike[str], role: str,
              name: str | None = None) -> Path:
    """Copy a public key into a trust directory and give it ``role`` in the policy (atomic writes)."""
    if role not in ROLES:
        raise SigningError(f"--role {role!r} is not one of {list(ROLES)}")
    key = load_public_key(pub, name)
    check_name(key.name)
    d = Path(trust_dir)
    policy = read_policy(d) if d.is_dir() else None
    if policy is None:  # a folder without a policy trusted every key as publisher: keep saying so
        policy = {p.name[: -len(PUB_SUFFIX)]: "publisher" for p in sorted(d.glob(f"*{PUB_SUFFIX}"))} \
            if d.is_dir() else {}
    dest = d / f"{key.name}{PUB_SUFFIX}"
    if dest.exists() and load_public_key(dest).raw != key.raw:
        raise SigningError(f"{dest}: another key of that name is trusted already; choose another name "
                           "(--name) or remove it first (nothing was changed)")
    policy[key.name] = role
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not dest.exists():
            with atomic_path(dest) as tmp:
                tmp.write_bytes(_read_small(Path(pub), "public key"))
                os.chmod(tmp, 0o644)
        entries = {n: {"role": r} for n, r in sorted(policy.items())}
        atomic_write_text(d / POLICY, json.dumps({"schema_version": 1, "keys": entries}, indent=2) + "\n")
    except OSError as exc:
        raise SigningError(f"{d}: cannot write the trust directory ({exc.strerror or exc})") from None
    return dest
