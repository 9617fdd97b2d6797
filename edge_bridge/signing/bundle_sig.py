"""Signatures over a bundle: who vouches for which file, and which bridge is current.

A bundle's signatures live in ``signatures/`` (DSSE envelopes, :mod:`edge_bridge.signing.envelope`)::

    signatures/publisher.json     the publisher's statement: bundle name and version, the digest of the
                                  manifest without its ``bridges`` section, each exported bridge entry's
                                  digest, the current bridge, and the sha256 of every file in the bundle
    signatures/device-0001.json   one per on-site act of calibrate, numbered 1, 2, ...: "publish" (a new
    signatures/device-0002.json   bridge version: its entry and its bridges/vNNNN.* files) or "rollback"
                                  (the current-bridge pointer only); each names the publisher statement
                                  it extends, so an act cannot move to another bundle

Why a statement over a canonical manifest and not over ``manifest.json``'s bytes: calibrate rewrites the
manifest on site (new versions, the current pointer), and the publisher's signature must survive that
while still covering everything but the bridges. The device key (secure-boot style separation) may sign
only ``bridges/vNNNN.*`` files and pointer moves; a device statement that covers a graph is refused.

Verification accepts a bundle only if every regular file (but the manifest, ``signatures/`` and dot files,
which are locks and temporary files) is covered by exactly one trusted signature with its sha256, every
file a signature covers is there, the manifest matches what was signed, every bridge version in the
manifest was signed, and the current bridge is the one the last signed act (else the publisher) chose.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_bridge import __version__
from edge_bridge.bundle import MANIFEST, Bundle, contained, sha256_file, write_target
from edge_bridge.fileio import atomic_path, fsync_dir
from edge_bridge.signing.envelope import canonical, open_envelope, payload_digest, seal
from edge_bridge.signing.errors import SigningError, UnsignedBundleError
from edge_bridge.signing.keys import PrivateKey, TrustStore, load_private_key

SIG_DIR = "signatures"
PUBLISHER_SIG = f"{SIG_DIR}/publisher.json"
PUBLISHER_TYPE = "edge-bridge/publisher/v1"
DEVICE_TYPE = "edge-bridge/device-act/v1"
ACTS = ("publish", "rollback")
_ACT_FILE = re.compile(r"^device-(\d{4})\.json$")
# what a device key may sign: the files of a bridge version, nothing else
DEVICE_FILES = re.compile(r"^bridges/v\d{4}\.(onnx|safetensors|golden\.npz)$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def act_file(seq: int) -> str:
    return f"{SIG_DIR}/device-{seq:04d}.json"


def default_version() -> int:
    """A bundle version that grows with time (UTC ``YYYYMMDDHHMMSS``), for signers who give none."""
    return int(dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S"))


@dataclass
class Verified:
    """What a successful verification found (the signer line deploy prints, the freshness record)."""

    root: Path
    name: str
    version: int
    publisher: str
    digest: str
    seq: int = 0
    devices: list[str] = field(default_factory=list)
    current: int = 1
    files: int = 0

    def line(self) -> str:
        acts = f", {self.seq} on-site act(s) signed by {', '.join(sorted(set(self.devices)))}" if self.seq \
            else ""
        return (f"signed: bundle {self.name} version {self.version} by {self.publisher}{acts}; "
                f"{self.files} files covered")


# --- reading the bundle as signatures see it ------------------------------------------------------------
def _raw_manifest(root: Path) -> dict[str, Any]:
    path = contained(root, MANIFEST, "the manifest")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SigningError(f"{path}: cannot read the manifest ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise SigningError(f"{path}: not a JSON object")
    return data


def _core_digest(raw: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in raw.items() if k != "bridges"})).hexdigest()


def _entries(raw: dict[str, Any]) -> dict[str, str]:
    versions = (raw.get("bridges") or {}).get("versions") or {}
    return {k: hashlib.sha256(canonical(v)).hexdigest() for k, v in versions.items()}


def _current(raw: dict[str, Any]) -> int:
    return int((raw.get("bridges") or {}).get("current", 0))


def bundle_files(root: Path) -> dict[str, Path]:
    """Every regular file of the bundle but the manifest, ``signatures/`` and dot files, by relative path.

    Raises
    ------
    SigningError
        A link or a special file anywhere in the bundle (a signature covers regular files only).
    """
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            if name.startswith("."):
                continue
            path = base / name
            rel = path.relative_to(root).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise SigningError(f"{root}: {rel} is a symbolic link; a signed bundle holds regular files "
                                   "only, refusing it")
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise SigningError(f"{root}: {rel} is not a regular file; refusing it")
            if rel != MANIFEST and not rel.startswith(f"{SIG_DIR}/"):
                out[rel] = path
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return out


def _acts_on_disk(root: Path) -> list[int]:
    """The act numbers in ``signatures/``; anything else there is refused as a stray file."""
    d = root / SIG_DIR
    if not d.is_dir():
        return []
    seqs = []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or p.name == "publisher.json":
            continue
        m = _ACT_FILE.match(p.name)
        if not m:
            raise SigningError(f"{root}: {SIG_DIR}/{p.name} is not a signature file edge-bridge writes (a "
                               "stray file); remove it, the bundle is refused until then")
        seqs.append(int(m.group(1)))
    return sorted(seqs)


def _read_sig(root: Path, rel: str) -> bytes:
    path = contained(root, rel, "a signature file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _write_sig(root: Path, rel: str, data: bytes) -> Path:
    path = write_target(root, rel, "a signature file")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise SigningError(f"{root}: cannot write {rel} ({exc.strerror or exc}); nothing was signed"
                           ) from None
    return path


# --- checking a statement's fields ------------------------------------------------------------------------
def _field(st: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = st.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise SigningError(f"{where}: the signed statement's {key!r} is missing or malformed; sign again")
    return value


def _files(st: dict[str, Any], where: str) -> dict[str, str]:
    files = _field(st, "files", dict, where)
    for rel, sha in files.items():
        if not isinstance(sha, str) or not _SHA.match(sha) or not isinstance(rel, str) or len(rel) > 255:
            raise SigningError(f"{where}: the signed file list has a malformed entry {str(rel)[:60]!r}")
    return files


def _bundle_id(st: dict[str, Any], where: str) -> tuple[str, int]:
    b = _field(st, "bundle", dict, where)
    name, version = b.get("name"), b.get("version")
    if not isinstance(name, str) or not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SigningError(f"{where}: the signed bundle name/version is malformed; sign again")
    return name, version


# --- signing ----------------------------------------------------------------------------------------------
def sign_bundle(root: str | os.PathLike[str], key: str | os.PathLike[str] | PrivateKey, *,
                name: str | None = None, version: int | None = None) -> Verified:
    """Sign a bundle as its publisher: every file, the manifest, its bridges, its name and version.

    The bundle is verified first (every bridge version's hashes); a file the manifest does not list is
    refused rather than blessed. Earlier on-site acts are dropped: the new statement covers their bridges.

    Parameters
    ----------
    name : str, optional
        The bundle's name, the key of deploy's freshness record (default: the previous signature's, else
        the manifest's task).
    version : int, optional
        Must grow with every release (default: the current UTC time as ``YYYYMMDDHHMMSS``, or one more
        than the previous signature's when that is higher).

    Raises
    ------
    SigningError, BundleError
    """
    root = Path(root)
    pk = key if isinstance(key, PrivateKey) else load_private_key(key)
    bundle = Bundle.load(root, verify=False)
    bundle.verify(all_bridges=True)
    raw = _raw_manifest(root)
    m = bundle.manifest
    listed = {p.file: p.sha256 for p in m.parts.values()}
    for b in m.bridges.values():
        listed.update(dict(b.files()))
    if m.golden_sha256:
        listed[m.golden_file] = m.golden_sha256
    if m.reference:
        listed[m.reference["file"]] = m.reference["sha256"]
    listed.update({f"source_model/{n}": sha for n, sha in m.source_model.items()})
    on_disk = bundle_files(root)
    stray = sorted(set(on_disk) - set(listed))
    if stray:
        raise SigningError(f"{root}: {stray[0]} is not listed in the manifest; remove it (or re-export) "
                           "before signing, a signature never blesses an unknown file. Nothing was signed")
    prev_version, prev_name = 0, None
    if (root / PUBLISHER_SIG).is_file():
        try:
            _, st = payload_digest(_read_sig(root, PUBLISHER_SIG), str(root / PUBLISHER_SIG))
            prev_name, prev_version = _bundle_id(st, str(root / PUBLISHER_SIG))
        except SigningError:
            pass
    name = name or prev_name or m.task
    if not _BUNDLE_NAME.match(name):
        raise SigningError(f"bundle name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
    if version is None:
        version = max(default_version(), prev_version + 1)
    if version < 1:
        raise SigningError(f"bundle version {version}: must be a positive integer")
    statement = {"_type": PUBLISHER_TYPE, "bundle": {"name": name, "version": int(version)},
                 "manifest": _core_digest(raw), "bridges": _entries(raw), "current": _current(raw),
                 "files": {rel: sha256_file(p) for rel, p in sorted(on_disk.items())},
                 "signed": _now(), "tool_version": __version__}
    data = seal(statement, pk)
    _write_sig(root, PUBLISHER_SIG, data)
    for seq in _acts_on_disk(root):  # the new statement covers what they vouched for
        (root / act_file(seq)).unlink()
    fsync_dir(root / SIG_DIR)
    return Verified(root, name, int(version), pk.public.describe(), hashlib.sha256(
        canonical(statement)).hexdigest(), current=_current(raw), files=len(on_disk))


def sign_act(root: str | os.PathLike[str], key: str | os.PathLike[str] | PrivateKey, act: str, *,
             version: int | None = None) -> Path:
    """Record an on-site act of calibrate, signed by the device key: ``publish`` (bridge ``version``, its
    entry and files; it becomes current) or ``rollback`` (the manifest's current pointer, as it is now).

    Call it right after the manifest changed. Raises :class:`UnsignedBundleError` for a bundle with no
    publisher signature (nothing to extend).
    """
    root = Path(root)
    if act not in ACTS:
        raise SigningError(f"act {act!r} is not one of {list(ACTS)}")
    pk = key if isinstance(key, PrivateKey) else load_private_key(key)
    if not (root / PUBLISHER_SIG).is_file():
        raise UnsignedBundleError(f"{root}: not signed, so there is no statement to extend")
    digest, pub = payload_digest(_read_sig(root, PUBLISHER_SIG), str(root / PUBLISHER_SIG))
    name, bversion = _bundle_id(pub, str(root / PUBLISHER_SIG))
    raw = _raw_manifest(root)
    current = _current(raw)
    entries: dict[str, str] = {}
    files: dict[str, str] = {}
    if act == "publish":
        v = current if version is None else version
        key_v = f"{v:04d}"
        entries = {key_v: _entries(raw)[key_v]}
        for rel, p in bundle_files(root).items():
            if rel.startswith(f"bridges/v{key_v}."):
                files[rel] = sha256_file(p)
    seqs = _acts_on_disk(root)
    seq = (seqs[-1] if seqs else 0) + 1
    statement = {"_type": DEVICE_TYPE, "bundle": {"name": name, "version": bversion}, "publisher": digest,
                 "seq": seq, "act": act, "current": current, "bridges": entries, "files": files,
                 "signed": _now(), "tool_version": __version__}
    return _write_sig(root, act_file(seq), seal(statement, pk))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --- verifying --------------------------------------------------------------------------------------------
def is_signed(root: str | os.PathLike[str]) -> bool:
    return (Path(root) / PUBLISHER_SIG).is_file()


def verify_signatures(root: str | os.PathLike[str], trust: TrustStore, *, bundle: Bundle | None = None
                      ) -> Verified:
    """Check the bundle's signatures against ``trust``; return who signed what.

    ``bundle`` is the already loaded (hash-verified) bundle; without it the bundle is loaded first.

    Raises
    ------
    UnsignedBundleError
        No ``signatures/publisher.json``.
    SigningError
        Anything else, in one line naming the file or key.
    """
    root = Path(root)
    if bundle is None:
        Bundle.load(root)
    sig_path = root / PUBLISHER_SIG
    if not sig_path.exists() and not sig_path.is_symlink():
        raise UnsignedBundleError(f"{root}: the bundle is not signed (no {PUBLISHER_SIG}); sign it with "
                                  "`edge-bridge bundle sign`, or deploy it anyway with --allow-unsigned")
    where = str(sig_path)
    opened = open_envelope(_read_sig(root, PUBLISHER_SIG), where, trust)
    st, pub_key = opened.statement, opened.key
    if trust.roles[pub_key.keyid] != "publisher":
        raise SigningError(f"{where}: signed by {pub_key.describe()}, a device key; only a publisher key may "
                           "sign the base parts (graphs, source weights, golden files, reference statistics)")
    if st.get("_type") != PUBLISHER_TYPE:
        raise SigningError(f"{where}: not a publisher statement ({str(st.get('_type'))[:40]!r}); a "
                           "signature file was swapped in from elsewhere")
    name, version = _bundle_id(st, where)
    raw = _raw_manifest(root)
    if _field(st, "manifest", str, where) != _core_digest(raw):
        raise SigningError(f"{root / MANIFEST}: differs from what {PUBLISHER_SIG} covers (a field outside "
                           "'bridges' was changed after signing, or the signature belongs to another bundle)")
    covered = {rel: (sha, PUBLISHER_SIG) for rel, sha in _files(st, where).items()}
    entries: dict[str, tuple[str, str]] = {}
    for k, d in _field(st, "bridges", dict, where).items():
        entries[str(k)] = (str(d), PUBLISHER_SIG)
    current, decided_by = _field(st, "current", int, where), PUBLISHER_SIG
    devices: list[str] = []
    seqs = _acts_on_disk(root)
    for n, seq in enumerate(seqs, start=1):
        rel = act_file(seq)
        if seq != n:
            raise SigningError(f"{root}: {act_file(n)} is missing (the acts must run 1..{seqs[-1]}); an "
                               "on-site act was removed, refusing the bundle")
        current, signer = _check_act(root, rel, trust, opened.digest, (name, version), seq, covered, entries)
        devices.append(signer)
        decided_by = rel
    in_manifest = _entries(raw)
    for k, digest in in_manifest.items():
        signed = entries.get(k)
        if signed is None:
            raise SigningError(f"{root}: bridge v{k} is in the manifest, but no trusted signature covers it "
                               "(published by hand, or by calibrate without the device key)")
        if signed[0] != digest:
            raise SigningError(f"{root / MANIFEST}: the entry of bridge v{k} differs from what {signed[1]} "
                               "signed; the manifest was edited after signing")
    if _current(raw) != current:
        raise SigningError(f"{root / MANIFEST}: makes bridge v{_current(raw):04d} current, but {decided_by} "
                           f"signed v{current:04d} as current; the pointer was moved without a signed act "
                           "(calibrate --rollback signs one)")
    on_disk = bundle_files(root)
    for rel in sorted(set(on_disk) - set(covered)):
        raise SigningError(f"{root}: {rel} is not covered by any signature (a stray file); remove it, the "
                           "bundle is refused until then")
    for rel, (sha, by) in sorted(covered.items()):
        if rel not in on_disk:
            raise SigningError(f"{root}: {rel} is covered by {by} but missing from the bundle; copy the "
                               "bundle again")
        actual = sha256_file(on_disk[rel])
        if actual != sha:
            raise SigningError(f"{root}: {rel} differs from what {by} covers (signed sha256 {sha[:12]}…, on "
                               f"disk {actual[:12]}…); the file was changed after signing. Copy the bundle "
                               "again")
    return Verified(root, name, version, pub_key.describe(), opened.digest, len(seqs), devices, current,
                    len(covered))


def _check_act(root: Path, rel: str, trust: TrustStore, publisher: str, bundle_id: tuple[str, int],
               seq: int, covered: dict[str, tuple[str, str]], entries: dict[str, tuple[str, str]]
               ) -> tuple[int, str]:
    """Check one on-site act; add what it vouches for to ``covered``/``entries``; return its current bridge
    and its signer."""
    where = str(root / rel)
    opened = open_envelope(_read_sig(root, rel), where, trust)
    st, key = opened.statement, opened.key
    if trust.roles[key.keyid] != "device":
        raise SigningError(f"{where}: signed by {key.describe()}, a publisher key; on-site acts are signed "
                           "by a device key (trust it with role device)")
    if st.get("_type") != DEVICE_TYPE or st.get("act") not in ACTS:
        raise SigningError(f"{where}: not an on-site act statement; a signature file was swapped in")
    if _bundle_id(st, where) != bundle_id or st.get("publisher") != publisher:
        raise SigningError(f"{where}: extends another publisher statement (another bundle, or an earlier "
                           "signing of this one); refusing it")
    if _field(st, "seq", int, where) != seq:
        raise SigningError(f"{where}: is act {st.get('seq')} saved as act {seq}; the acts were reordered")
    files = _files(st, where)
    for f, sha in files.items():
        if not DEVICE_FILES.match(f):
            raise SigningError(f"{where}: the device key {key.describe()} signed {f}; a device key may sign "
                               "only bridge versions (bridges/vNNNN.*), refusing the bundle")
        if f in covered:
            raise SigningError(f"{where}: signs {f} again (already covered by {covered[f][1]}); refusing it")
        covered[f] = (sha, rel)
    for k, d in _field(st, "bridges", dict, where).items():
        if k in entries:
            raise SigningError(f"{where}: signs bridge v{k} again (already signed by {entries[k][1]})")
        entries[str(k)] = (str(d), rel)
    return int(_field(st, "current", int, where)), key.describe()
