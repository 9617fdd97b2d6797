"""The gradient path's guard: the --run source model must be the one the bundle's source_back came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibrate.errors import CalibrationError
from calibrate.torch_tail import SourceTail, check_matches
from edge_bridge.models import build_backbone

CONFIG = {"in_channels": 1, "input_samples": 400, "patch": 20, "d_model": 16, "n_blocks": 3, "n_heads": 2,
          "n_classes": 2}


def _tail(seed: int) -> SourceTail:
    torch.manual_seed(seed)
    return SourceTail(build_backbone("transformer", CONFIG), 1).eval()


def _logits(tail: SourceTail, z: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tail.logits(torch.as_tensor(z)).numpy()


def test_quantization_noise_passes_even_when_it_flips_classes():
    tail = _tail(0)
    z = np.random.default_rng(0).standard_normal((200, 20, 16)).astype(np.float32)
    ours = _logits(tail, z)
    # INT8-like drift: small next to the logits' spread, yet it flips the windows near the boundary
    noisy = ours + 0.15 * ours.std() * np.random.default_rng(1).standard_normal(ours.shape)
    flipped = np.mean(noisy.argmax(1) != ours.argmax(1))
    assert flipped > 0.02  # an argmax check with a 0.98 bar would refuse this, the right run
    assert check_matches(ours, noisy) < 0.5


def test_windows_at_rest_with_hardly_varying_logits_pass():
    """A homogeneous calibration set (one state): logits nearly equal across windows, small drift."""
    tail = _tail(0)
    z = np.random.default_rng(0).standard_normal((1, 20, 16)).astype(np.float32)
    z = np.repeat(z, 100, axis=0) + 0.01 * np.random.default_rng(2).standard_normal((100, 20, 16))
    ours = _logits(tail, z.astype(np.float32))
    drifted = ours + 0.05 * np.abs(ours).mean() * np.random.default_rng(3).standard_normal(ours.shape)
    assert check_matches(ours, drifted) < 0.5


def test_another_runs_source_model_is_refused():
    z = np.random.default_rng(0).standard_normal((200, 20, 16)).astype(np.float32)
    other = _logits(_tail(1), z)
    with pytest.raises(CalibrationError, match="not the ones this bundle was exported from"):
        check_matches(_logits(_tail(0), z), other)
