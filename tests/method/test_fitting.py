"""Whole-backbone recipes: the supervised fit with its label-preserving augmentation."""

from __future__ import annotations

import numpy as np
import torch

from edge_bridge.fitting import FitConfig, fit_supervised, shift_and_scale


def test_shift_and_scale_is_a_seeded_circular_shift_with_a_small_gain():
    x = torch.randn(5, 2, 40)
    a = shift_and_scale(x, torch.Generator().manual_seed(3))
    b = shift_and_scale(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    for k in range(len(x)):
        gain = float(a[k].norm() / x[k].norm())
        assert 0.9 <= gain <= 1.1
        shifted = [torch.allclose(a[k], gain * torch.roll(x[k], s, dims=1), atol=1e-5) for s in range(40)]
        assert sum(shifted) == 1  # one shift, the same for every channel


def test_fit_supervised_with_augmentation_learns_a_shift_invariant_class(tiny):
    model = tiny("transformer")  # 3 classes, 240 samples
    g = np.random.default_rng(0)
    y = np.arange(60) % 3
    t = np.arange(240)
    x = np.stack([np.sin(2 * np.pi * (2 + 3 * c) * t / 240 + g.uniform(0, 6.3)) for c in y])[:, None]
    x = (x + 0.1 * g.standard_normal(x.shape)).astype(np.float32)
    res = fit_supervised(model, x[:45], y[:45], x[45:], y[45:],
                         FitConfig(epochs=8, batch_size=15, lr=3e-3, augment=True))
    assert res.best_score >= 0.6 and len(res.history) == 8
    assert res.seconds_per_epoch == float(np.median([h["seconds"] for h in res.history]))
