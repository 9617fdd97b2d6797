"""Freshness on the device: the highest signed bundle version deploy ran, per bundle name (TUF's rule).

``$XDG_STATE_HOME/edge-bridge/freshness.json``::

    {"schema_version": 1, "bundles": {"stress": {"version": 20261203150000, "digest": "…", "seq": 2}}}

Refused unless ``--allow-downgrade``: an older version (a withdrawn bundle replayed), the same version with
another publisher statement (two different bundles released under one version), and the same statement
with fewer on-site acts than already seen (a calibrate publish or rollback undone by copying back an old
bundle). The record only grows: a permitted downgrade leaves it as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edge_bridge.fileio import atomic_write_text
from edge_bridge.signing import paths
from edge_bridge.signing.bundle_sig import Verified
from edge_bridge.signing.errors import SigningError


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        bundles = data["bundles"]
        if not isinstance(bundles, dict):
            raise TypeError
        return {str(k): v for k, v in bundles.items() if isinstance(v, dict)}
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise SigningError(f"{path}: the record of bundle versions this device ran is unreadable "
                           f"({type(exc).__name__}); fix or remove it (removing forgets which versions ran, "
                           "so an old bundle could be replayed once)") from None


def check(v: Verified, *, allow_downgrade: bool = False, path: str | os.PathLike[str] | None = None
          ) -> str | None:
    """Refuse a replayed or rolled-back bundle; with ``allow_downgrade`` return the reason instead.

    Returns None when the bundle is as fresh as anything this device ran.
    """
    path = Path(path) if path is not None else paths.freshness_file()
    seen = _read(path).get(v.name)
    if not seen:
        return None
    version, digest, seq = int(seen.get("version", 0)), seen.get("digest"), int(seen.get("seq", 0))
    reason = None
    if v.version < version:
        reason = (f"bundle {v.name} version {v.version} is older than version {version}, which this device "
                  "already ran (a withdrawn or replayed bundle)")
    elif v.version == version and digest and v.digest != digest:
        reason = (f"bundle {v.name} version {v.version} is not the version {version} this device ran "
                  "(another statement under the same version); the publisher must sign a new release with "
                  "a higher version")
    elif v.version == version and v.seq < seq:
        reason = (f"bundle {v.name} version {v.version} carries {v.seq} on-site act(s), but this device "
                  f"already ran it with {seq} (a calibration or rollback was undone by an older copy)")
    if reason is None:
        return None
    if allow_downgrade:
        return reason
    raise SigningError(f"{v.root}: {reason}; refusing it. Deploy a newer bundle, or pass --allow-downgrade "
                       f"to run it on purpose (record: {path})")


def record(v: Verified, path: str | os.PathLike[str] | None = None) -> None:
    """Remember ``v`` if it is newer than what was seen (atomic write); never lowers the record."""
    path = Path(path) if path is not None else paths.freshness_file()
    bundles = _read(path)
    seen = bundles.get(v.name) or {}
    old = (int(seen.get("version", 0)), int(seen.get("seq", 0)))
    if (v.version, v.seq) < old:
        return
    bundles[v.name] = {"version": v.version, "digest": v.digest, "seq": v.seq}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"schema_version": 1, "bundles": bundles}, indent=1,
                                           sort_keys=True) + "\n")
    except OSError as exc:
        raise SigningError(f"{path}: cannot record the bundle version ({exc.strerror or exc}); check the "
                           "folder's permissions") from None
