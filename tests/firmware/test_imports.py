"""firmware_interface is a leaf: importing it (and every submodule) loads no edge_bridge, torch or scipy."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import firmware_interface

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("edge_bridge", "torch", "scipy", "deploy", "calibrate", "serial")


def test_firmware_interface_is_a_leaf() -> None:
    modules = sorted(m.name for m in pkgutil.iter_modules(firmware_interface.__path__, "firmware_interface."))
    assert len(modules) >= 10
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import firmware_interface as fi\n"
        "[getattr(fi, n) for n in fi.__all__]\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    extra = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert not extra, (f"importing firmware_interface loaded {extra}; the package may import only numpy, "
                       "brainflow and the standard library (pyserial inside SerialTransport.open). Move the "
                       "import inside the function that needs it")
    assert out.stderr == "", f"importing printed to stderr: {out.stderr}"


def test_bare_import_is_free() -> None:
    code = "import sys, firmware_interface; print('brainflow' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


def test_modalities_match_edge_bridge() -> None:
    from edge_bridge.signals import MODALITIES

    assert tuple(MODALITIES) == firmware_interface.MODALITIES
