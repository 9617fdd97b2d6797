"""Test-wide settings: offline hubs, caches in a temporary folder, quiet BrainFlow."""

from __future__ import annotations

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="edge-bridge-test-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"
for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "MPLCONFIGDIR", "HF_HOME"):
    os.environ[var] = os.path.join(_CACHE, var.lower())
os.environ.setdefault("MPLBACKEND", "Agg")
