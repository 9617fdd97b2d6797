"""Golden fixtures shared by the published-model tests: each test module names its folder as ``GOLDEN``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def small(request: pytest.FixtureRequest) -> dict:
    """``small.json``: how the reduced reference model was built."""
    return json.loads((request.module.GOLDEN / "small.json").read_text())


@pytest.fixture(scope="module")
def schema(request: pytest.FixtureRequest) -> dict:
    """``schema.json``: the full-size published architecture."""
    return json.loads((request.module.GOLDEN / "schema.json").read_text())


@pytest.fixture(scope="module")
def io(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    """``io.npz``: the seeded input and every block output of the reduced model."""
    with np.load(request.module.GOLDEN / "io.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these small models run faster than with two threads on a busy CI box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
