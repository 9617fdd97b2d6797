"""SIGKILL at random points while publishing: the bundle always loads and verifies, old or new current."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edge_bridge.bundle import Bundle

# Publishes refits of the current bridge in a tight loop, so a kill lands inside publish_bridge (writing a
# version's files, renaming them, writing or renaming the manifest) almost every time.
CHILD = r"""
import sys
import numpy as np
from calibrate.core import publish_candidate
from calibrate.weights import read_weights
from edge_bridge.bundle import Bundle

root = sys.argv[1]
rng = np.random.default_rng(int(sys.argv[2]))
print("ready", flush=True)
while True:
    b = Bundle.load(root)
    w = read_weights(b.root / b.current_bridge.weights_file)
    w.B = (w.B + 0.01 * rng.standard_normal(w.B.shape)).astype(np.float32)
    publish_candidate(b.root, b.manifest.current_bridge, w.onnx_bytes(), w.safetensors_bytes(), {"k": 1})
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_during_publish_never_breaks_the_bundle(bundle):
    rng = np.random.default_rng(7)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    seen = []
    for k in range(6):
        before = Bundle.load(bundle).manifest.current_bridge
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(bundle), str(k)], stdout=subprocess.PIPE,
                                 text=True, env=env)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.4)))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        b = Bundle.load(bundle)  # verifies the current bridge's hashes and every part's shape
        b.verify(all_bridges=True)  # every version the manifest lists is whole
        now = b.manifest.current_bridge
        assert now >= before and sorted(b.manifest.bridges) == list(range(1, now + 1))
        seen.append(now - before)
    assert sum(seen) > 0, "the child never got to publish; the test did not exercise anything"
