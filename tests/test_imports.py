"""Light imports, proven in a subprocess: the device-side modules never pull in torch.

If this fails, the message names each heavy module; move that import inside the function that needs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "sklearn", "matplotlib")


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True,
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import edge_bridge",
        "import edge_bridge.signals",
        "import edge_bridge.recordings",
        "import edge_bridge.tasks",
        "import edge_bridge.bundle",
        "import deploy, deploy.engines, deploy.runtime, deploy.live",
        "import calibrate",
        "from edge_bridge.cli import build_parser; build_parser()",
    ],
)
def test_light_modules_do_not_import_heavy_packages(code):
    loaded = _loaded_after(code)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"`{code}` imported {heavy}; move those imports inside the functions that need them"
