"""Where keys, trust and freshness records live by default (XDG base directories).

- ``$XDG_CONFIG_HOME/edge-bridge/keys/``   this machine's own private keys (``device.key`` for calibrate)
- ``$XDG_CONFIG_HOME/edge-bridge/trust/``  the public keys deploy trusts by default, once the folder exists
- ``$XDG_STATE_HOME/edge-bridge/freshness.json``  the highest bundle version deploy ran, per bundle name
- ``$XDG_CACHE_HOME/edge-bridge/keys/`` and ``.../trust/``  the demo's generated keys and their trust
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, default: str) -> Path:
    base = os.environ.get(var) or os.path.join(os.path.expanduser("~"), default)
    return Path(base) / "edge-bridge"


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config")


def cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache")


def state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", os.path.join(".local", "state"))


def keys_dir() -> Path:
    return config_dir() / "keys"


def trust_dir() -> Path:
    return config_dir() / "trust"


def demo_keys_dir() -> Path:
    return cache_dir() / "keys"


def demo_trust_dir() -> Path:
    return cache_dir() / "trust"


def freshness_file() -> Path:
    return state_dir() / "freshness.json"


def device_key() -> Path | None:
    """The key calibrate signs its acts with: ``$EDGE_BRIDGE_DEVICE_KEY``, else ``device.key`` in the user
    config, else the demo's in the user cache; None when none exists."""
    env = os.environ.get("EDGE_BRIDGE_DEVICE_KEY")
    if env:
        return Path(env)
    for d in (keys_dir(), demo_keys_dir()):
        if (d / "device.key").is_file():
            return d / "device.key"
    return None
