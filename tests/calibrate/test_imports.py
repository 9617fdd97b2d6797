"""The closed-form path runs without torch: proven in a subprocess by ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys


def test_closed_form_calibration_does_not_import_torch(bundle, paired_edf):
    code = (
        "import sys, json\n"
        "from calibrate import calibrate\n"
        f"r = calibrate({str(bundle)!r}, [{str(paired_edf)!r}], validation='holdout', verbose='WARNING')\n"
        "print(json.dumps([r.accepted, sorted(sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    accepted, modules = json.loads(out.strip().splitlines()[-1])
    assert accepted
    heavy = sorted(m for m in modules if m.split(".")[0] in ("torch", "onnx", "sklearn", "matplotlib"))
    assert not heavy, f"calibrate imported {heavy}; import them inside the gradient path only"
