"""Refit the bridge on cached features: closed form (numpy) and gradient steps (torch, optional).

Closed form: the prototype bridge is linear in ``h``, ``z = Pi reshape(B A h)``, of rank <= r. Keeping the
prototypes ``Pi`` (they are source block-*j* tokens, and the source model did not change), the best
coefficients for a target token set ``z*`` are its least-squares coordinates on the prototypes. So:

1. ``Pi = U S V^T``; a window's target becomes ``u = U_k^T z*`` (shape (k, T), k = rank of Pi). Fitting
   ``u`` in the Euclidean metric is the same as fitting ``z*`` (up to the part no prototype mix can reach).
2. Ridge regression from the features ``h`` (columns scaled to unit RMS) to ``u``, no intercept (the bridge
   has none), shrunk towards the current bridge (not towards zero), for a small grid of penalties; each is
   scored by blocked cross-validation on the fit windows.
3. Reduced-rank regression: project the fitted values on their top ``r`` right singular vectors, which gives
   the rank-r map closest to the ridge solution on the data (``u_hat = V_r V_r^T W h``).
4. Back to coefficients: ``c = V_k S_k^-1 u`` per token, then a balanced factorisation ``B A`` (both factors
   carry sqrt of the singular values, a good start for gradient steps).

Milliseconds for the sizes of a bundle bridge (d_in ~ 64, P*T ~ 1000, a few hundred windows).

A fused bridge (K target modalities) is refit the same way, on the concatenated features
``h = concat(h_k)`` with ``A = [A_0 | ... | A_{K-1}]`` (``sum_k A_k h_k = A h``): one code path, K = 1 the
concatenation of one; :class:`~calibrate.weights.PrototypeWeights` splits ``A`` back for the files.

Gradient (:func:`gradient_refit`): the paper's objective, ``1 - cos(vec Y_hat, vec Y)`` on the source
model's last-block output, Adam on the bridge only, warm-started. It needs the source model's blocks after
*j* as torch modules, which the ONNX graphs are not: the caller builds them from the source model's weights
(the bundle's ``source_model/`` or the training run's, :mod:`calibrate.torch_tail`). Torch is imported only
inside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibrate.data import blocked_folds
from calibrate.errors import CalibrationError
from calibrate.weights import PrototypeWeights

logger = logging.getLogger(__name__)

# ridge penalty relative to the mean squared singular value of the features; large values keep the current
# bridge (the fit is shrunk towards it), small ones fit the new data freely
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


@dataclass
class RefitResult:
    """A candidate bridge and how it was made."""

    weights: PrototypeWeights
    method: str
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    #: gradient only: the weights after each epoch named in ``checkpoints`` (the last is ``weights``)
    ladder: dict[int, PrototypeWeights] = field(default_factory=dict)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run numpy's BLAS on one thread where threadpoolctl is installed.

    Why: these are small matrices; on a small shared CPU (a Jetson running the live loop, a 2-core host)
    BLAS threads spin against other work and the refit runs 10x slower than on one thread.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _prototype_basis(Pi: np.ndarray, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """``(U_k, V_k S_k^-1)``: the prototypes' column space and the map from its coordinates to mixtures."""
    U, s, Vt = np.linalg.svd(Pi.astype(np.float64), full_matrices=False)
    k = int((s > rtol * s[0]).sum()) if s.size and s[0] > 0 else 0
    if k == 0:
        raise CalibrationError("the bridge's prototypes are all zero; the bundle's bridge is broken, "
                               "re-export it")
    return U[:, :k], Vt[:k].T / s[:k]


def _to_u(Z: np.ndarray, Uk: np.ndarray) -> np.ndarray:
    """(N, T, D) tokens -> (N, k*T) coordinates on the prototypes, laid out (k, T) like ``c``."""
    return (Z @ Uk).transpose(0, 2, 1).reshape(len(Z), -1)


def _ridge_path(X: np.ndarray, Y: np.ndarray, alphas: tuple[float, ...], W0t: np.ndarray | None = None
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge solutions shrunk towards ``W0t`` (the current bridge; zero if None), one SVD of ``X`` (n, d).

    Minimises ``|Y - X W^T|^2 + alpha * mean(s^2) * |W^T - W0t|^2`` for each relative penalty. Returns
    ``(W^T (d, m), G (d, m))`` per penalty, where the fitted values are ``X W^T = U_x G``: ``G`` has the
    fitted values' right singular vectors at the cost of a (d, m) matrix instead of (n, m).
    """
    Ux, s, Vt = np.linalg.svd(X, full_matrices=False)
    if W0t is None:
        W0t = np.zeros((X.shape[1], Y.shape[1]))
    base = s[:, None] * (Vt @ W0t)  # U_x^T X W0t
    UtR = Ux.T @ Y - base  # the residual the update must explain
    scale = float(np.mean(s**2)) if s.size else 1.0
    out = []
    for a in alphas:
        d = s / (s**2 + a * scale)
        out.append((W0t + Vt.T @ (d[:, None] * UtR), base + (s * d)[:, None] * UtR))
    return out


def _reduce_rank(Wt: np.ndarray, G: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank-r factors ``(left (d, r), right (m, r))``: the fitted values projected on their top r right
    singular vectors (reduced-rank regression), ``X W^T V_r V_r^T = X left right^T``."""
    # top right singular vectors of G via the small (d, d) Gram matrix: V_r = G^T U_r / s_r
    evals, evecs = np.linalg.eigh(G @ G.T)
    order = np.argsort(evals)[::-1][:rank]
    keep = order[evals[order] > 1e-12 * max(float(evals.max()), 1e-300)]
    Vr = (G.T @ evecs[:, keep]) / np.sqrt(evals[keep])  # (m, <= r), orthonormal columns
    if Vr.shape[1] < rank:  # fewer windows or features than the rank: pad with zero directions
        Vr = np.pad(Vr, ((0, 0), (0, rank - Vr.shape[1])))
    return Wt @ Vr, Vr


def _balanced(M_left: np.ndarray, M_right: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``B (m, r)``, ``A (r, d)`` with ``B A = M_right M_left^T`` and equal singular values in both."""
    Q1, R1 = np.linalg.qr(M_right)
    Q2, R2 = np.linalg.qr(M_left)
    Uc, s, Vct = np.linalg.svd(R1 @ R2.T)
    root = np.sqrt(s)
    B = (Q1 @ Uc) * root
    A = (root[:, None] * (Vct @ Q2.T))
    if A.shape[0] < rank:
        A = np.pad(A, ((0, rank - A.shape[0]), (0, 0)))
        B = np.pad(B, ((0, 0), (0, rank - B.shape[1])))
    return B, A


def closed_form_refit(H: np.ndarray, Z: np.ndarray, current: PrototypeWeights, *, starts: np.ndarray,
                      groups: np.ndarray, window_s: float, alphas: tuple[float, ...] = ALPHAS,
                      folds: int = 4, shrink_to_current: bool = True) -> RefitResult:
    """Reduced-rank ridge regression from target features to source block-*j* tokens, prototypes kept.

    Parameters
    ----------
    H : ndarray, shape (n, d_in)
        ``target_front`` outputs on the fit windows.
    Z : ndarray, shape (n, T, D_out)
        ``source_front`` outputs on the same windows (what the bridge should produce).
    current : PrototypeWeights
        The bundle's bridge: its prototypes and rank are kept.
    starts, groups : ndarray, shape (n,)
        Window start (s) and recording index, for the blocked cross-validation of the penalty.
    window_s : float
        Window length (s): fit windows overlapping a validation block by more than half are left out.
    alphas : tuple of float
        Relative ridge penalties tried.
    folds : int
        Blocked cross-validation folds.
    shrink_to_current : bool
        Shrink towards the current bridge (default) rather than towards zero. Why: a few minutes from one
        person cannot re-teach what the bridge learnt from many; the penalty then says how far the data
        move it, and a large penalty (chosen when the new data say little) keeps the current bridge.

    Returns
    -------
    RefitResult
        ``info`` holds the chosen penalty and the cross-validated error of each.
    """
    t0 = time.perf_counter()
    with one_blas_thread():
        weights, info = _closed_form(np.asarray(H, dtype=np.float64), np.asarray(Z, dtype=np.float64),
                                     current, starts, groups, window_s, alphas, folds, shrink_to_current)
    seconds = time.perf_counter() - t0
    logger.info("closed-form refit on %d windows: ridge alpha %g (of %s by %d-fold blocked CV), rank %d, "
                "%.1f ms", len(H), info["alpha"], list(alphas), info["folds"], current.rank, 1e3 * seconds)
    return RefitResult(weights, "closed-form", seconds, info)


def _closed_form(H: np.ndarray, Z: np.ndarray, current: PrototypeWeights, starts: np.ndarray,
                 groups: np.ndarray, window_s: float, alphas: tuple[float, ...], folds: int,
                 shrink_to_current: bool) -> tuple[PrototypeWeights, dict[str, Any]]:
    n, d_in = H.shape
    if d_in != current.d_in or Z.shape[1:] != (current.tokens, current.d_out):
        raise CalibrationError(f"features do not fit the bridge: h {H.shape}, z {Z.shape}, bridge "
                               f"{current.config}")
    Uk, C = _prototype_basis(current.Pi)  # C: (P, k) maps coordinates to mixtures
    Y = _to_u(Z, Uk)  # (n, k*T)
    col = np.sqrt(np.mean(H**2, axis=0)) + 1e-12  # unit-RMS columns, folded into A at the end
    X = H / col
    # the current bridge as a map from scaled features to prototype coordinates: the prior of the ridge
    k, T = Uk.shape[1], current.tokens
    to_u = np.linalg.pinv(C)  # (k, P): mixtures -> coordinates (S_k V_k^T)
    M0 = (current.B.astype(np.float64) @ current.A.astype(np.float64)).reshape(-1, T, d_in)  # (P, T, d)
    W0t = (col[:, None] * np.einsum("kp,ptd->dkt", to_u, M0).reshape(d_in, k * T)) if shrink_to_current \
        else None
    errors = np.zeros(len(alphas))
    cv = blocked_folds(starts, groups, window_s, folds)
    for fit, val in cv:
        for i, (Wt, G) in enumerate(_ridge_path(X[fit], Y[fit], alphas, W0t)):
            left, right = _reduce_rank(Wt, G, current.rank)
            pred = X[val] @ left @ right.T
            errors[i] += float(np.mean((pred - Y[val]) ** 2)) * len(val)
    best = int(np.argmin(errors)) if cv else len(alphas) // 2
    Wt, G = _ridge_path(X, Y, (alphas[best],), W0t)[0]
    left, right = _reduce_rank(Wt, G, current.rank)  # (d_in, r), (k*T, r)
    right_c = np.einsum("pk,ktr->ptr", C, right.reshape(k, T, -1)).reshape(C.shape[0] * T, -1)
    B, A = _balanced(left / col[:, None], right_c, current.rank)
    weights = dataclasses.replace(current, A=A, B=B)  # a fused bridge keeps its input layout
    cv_err = {f"{a:g}": float(e / max(1, sum(len(v) for _, v in cv))) for a, e in zip(alphas, errors,
                                                                                       strict=True)}
    return weights, {"alpha": alphas[best], "cv_mse": cv_err, "folds": len(cv), "windows": n,
                     "prototype_rank": k, "shrunk_to_current": shrink_to_current}


def torch_available() -> bool:
    from importlib.util import find_spec

    return find_spec("torch") is not None


def gradient_refit(H: np.ndarray, Y: np.ndarray, start: PrototypeWeights, tail: Any, *, epochs: int = 30,
                   lr: float = 1e-3, batch: int = 32, seed: int = 0, checkpoints: Sequence[int] = ()
                   ) -> RefitResult:
    """Adam on the bridge only, minimising ``1 - cos(vec tail(bridge(h)), vec Y)``, warm-started.

    Parameters
    ----------
    H : ndarray, shape (n, d_in)
        Cached ``target_front`` outputs.
    Y : ndarray, shape (n, ...)
        The source model's last-block output on the paired source windows (the paper's target).
    start : PrototypeWeights
        Warm start (the current or the closed-form bridge).
    tail : torch.nn.Module
        Frozen source blocks ``j..end`` mapping z ``(N, T, D_out)`` to the last-block output.
    checkpoints : sequence of int
        Epochs after which to keep a copy of the weights (``RefitResult.ladder``), so one run can be scored
        at several lengths: how far a few minutes should move the bridge is chosen by validation.
    """
    import torch

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread, as for BLAS above (10-30x faster on a busy CPU)
    try:
        return _gradient(torch, H, Y, start, tail, epochs, lr, batch, seed, t0, set(checkpoints))
    finally:
        torch.set_num_threads(threads)


def _gradient(torch: Any, H: np.ndarray, Y: np.ndarray, start: PrototypeWeights, tail: Any, epochs: int,
              lr: float, batch: int, seed: int, t0: float, checkpoints: set[int]) -> RefitResult:
    g = torch.Generator().manual_seed(seed)
    A = torch.nn.Parameter(torch.as_tensor(start.A.copy()))
    B = torch.nn.Parameter(torch.as_tensor(start.B.copy()))
    Pi = torch.nn.Parameter(torch.as_tensor(start.Pi.copy()))
    for p in tail.parameters():
        p.requires_grad_(False)
    tail.eval()
    h = torch.as_tensor(np.asarray(H, dtype=np.float32))
    y = torch.as_tensor(np.asarray(Y, dtype=np.float32)).reshape(len(H), -1)
    opt = torch.optim.Adam([A, B, Pi], lr=lr)
    P, T = start.prototypes, start.tokens

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        c = ((h[idx] @ A.T) @ B.T).view(-1, P, T)
        z = torch.matmul(Pi, c).transpose(1, 2)
        out = tail(z).reshape(len(idx), -1)
        return (1 - torch.nn.functional.cosine_similarity(out, y[idx], dim=1)).mean()

    losses = []
    ladder: dict[int, PrototypeWeights] = {}

    def weights() -> PrototypeWeights:  # a fused bridge keeps its input layout (A is the concatenation)
        return dataclasses.replace(start, A=A.detach().numpy().copy(), B=B.detach().numpy().copy(),
                                   Pi=Pi.detach().numpy().copy())

    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(h), generator=g)
        total = 0.0
        for i in range(0, len(h), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_of(idx)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(h))
        if epoch in checkpoints and epoch < epochs:
            ladder[epoch] = weights()
    w = weights()
    ladder[epochs] = w
    seconds = time.perf_counter() - t0
    logger.info("gradient refit: %d epochs, loss %.4f -> %.4f, %.2f s", epochs, losses[0], losses[-1],
                seconds)
    return RefitResult(w, "gradient", seconds, {"epochs": epochs, "lr": lr, "loss_first": losses[0],
                                                "loss_last": losses[-1]}, ladder)
