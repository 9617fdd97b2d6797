"""Closed-form refit recovers a known bridge, keeps prototypes and rank, and is fast; gradient steps help."""

from __future__ import annotations

import numpy as np
import pytest

from calibrate.refit import closed_form_refit
from calibrate.weights import PrototypeWeights


def _problem(n=240, d_in=16, tokens=6, d_out=8, rank=3, prototypes=5, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    truth = PrototypeWeights(rng.standard_normal((rank, d_in)),
                             rng.standard_normal((prototypes * tokens, rank)),
                             rng.standard_normal((d_out, prototypes)), tokens)
    H = rng.standard_normal((n, d_in)) * rng.uniform(0.1, 10, d_in)  # badly scaled features
    Z = truth.forward(H) + noise * rng.standard_normal((n, tokens, d_out))
    start = PrototypeWeights(rng.standard_normal((rank, d_in)), np.zeros((prototypes * tokens, rank)),
                             truth.Pi, tokens)
    starts = np.arange(n) * 5.0
    return truth, start, H, Z, starts


def _rel_err(w, truth, H):
    return float(np.linalg.norm(w.forward(H) - truth.forward(H)) / np.linalg.norm(truth.forward(H)))


def test_closed_form_recovers_a_low_rank_prototype_bridge():
    truth, start, H, Z, starts = _problem()
    res = closed_form_refit(H, Z, start, starts=starts, groups=np.zeros(len(H), int), window_s=60.0)
    w = res.weights
    assert w.config == start.config
    np.testing.assert_array_equal(w.Pi, start.Pi)  # prototypes kept
    assert np.linalg.matrix_rank(w.B.astype(np.float64) @ w.A.astype(np.float64)) <= start.rank
    assert _rel_err(w, truth, H) < 1e-2


def test_closed_form_with_noise_and_few_windows_still_generalises():
    truth, start, H, Z, starts = _problem(n=40, noise=0.5, seed=1)
    res = closed_form_refit(H, Z, start, starts=starts, groups=np.zeros(len(H), int), window_s=60.0)
    _, _, H_new, _, _ = _problem(n=200, seed=2)
    assert _rel_err(res.weights, truth, H_new) < 0.5
    assert res.info["folds"] >= 2


def test_wide_prototypes_more_than_token_width():
    """P > D_out: mixtures are not unique; the fit still reproduces z (minimum-norm coefficients)."""
    truth, start, H, Z, starts = _problem(d_out=3, prototypes=7)
    res = closed_form_refit(H, Z, start, starts=starts, groups=np.zeros(len(H), int), window_s=60.0)
    assert _rel_err(res.weights, truth, H) < 1e-2
    assert res.info["prototype_rank"] == 3


def test_closed_form_at_paper_size_keeps_structure():
    """d_in 64, T 60, D_out 64, r 8, P 16, 300 windows (its speed is measured in bench/calibrate.py)."""
    truth, start, H, Z, starts = _problem(n=300, d_in=64, tokens=60, d_out=64, rank=8, prototypes=16,
                                          noise=0.1)
    w = closed_form_refit(H, Z, start, starts=starts, groups=np.repeat(np.arange(3), 100),
                          window_s=60.0).weights
    assert w.config == start.config
    assert np.linalg.matrix_rank(w.B.astype(np.float64) @ w.A.astype(np.float64)) <= 8
    assert _rel_err(w, truth, H) < 0.1


def test_gradient_refit_lowers_the_objective_and_touches_only_the_bridge():
    torch = pytest.importorskip("torch")
    from calibrate.refit import gradient_refit

    _, start, H, Z, _ = _problem(n=64, noise=0.0)
    torch.manual_seed(0)
    tail = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6 * 8, 10), torch.nn.Tanh())
    before = {k: v.clone() for k, v in tail.state_dict().items()}
    with torch.no_grad():
        Y = tail(torch.as_tensor(Z, dtype=torch.float32)).numpy()
    res = gradient_refit(H.astype(np.float32), Y, start, tail, epochs=40, lr=1e-2)
    assert res.info["loss_last"] < 0.6 * res.info["loss_first"]
    for k, v in tail.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert all(not p.requires_grad for p in tail.parameters())
