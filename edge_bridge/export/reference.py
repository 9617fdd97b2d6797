"""Reference statistics for drift detection: what the device should see, measured at export.

The device cannot tell a drifted user from a normal one without knowing what normal looks like, so the
bundle carries a summary of the held-out windows as the shipped graphs see them (ONNX Runtime, shipped
precision), never the windows themselves:

``mean``, ``covariance``
    of ``target_front``'s pooled output ``h`` (the bridge's input), the covariance shrunk with Ledoit-Wolf
    (scikit-learn) because a few hundred windows do not pin down a full ``d_in x d_in`` matrix and the
    device weighs distances with it; ``precision`` is its inverse on the principal directions that carry 99 %
    of the variance (a pseudo-inverse: near-copies of one feature would otherwise get huge weights), and
    ``shrinkage`` the weight Ledoit-Wolf chose. The
    shrinkage acts on the correlation matrix (features standardised first, scales put back after), so
    features of small variance keep their weight.
``prior``
    the composite's class prior: mean softmax probability per class (``prior_argmax``: how often each
    class wins).
``clip_center``, ``clip_spread``, ``clip``
    every feature is clipped to ``clip_center +- clip * clip_spread`` (median and robust standard deviation
    of the held-out windows) before anything is computed, here and on the device: one artefact window that
    passed the gate then cannot move a minute's mean, nor inflate the reference covariance.
``gate_pass_rate``
    the fraction of the held-out subjects' windows that passed the quality gate (NaN when the windows
    came without that count).
``block``, ``block_means``
    the device scores the mean ``h`` of its last ``block`` gate-passing windows; ``block_means`` are the
    same means over every run of ``block`` consecutive held-out windows (a minute of features each, not
    raw signal). The device scores them with its own score function and sets its alarm threshold from
    their spread and the false-alarm budget (``deploy/drift.py``), so the score is written once.
``session_precision``, ``session_baseline``, ``session_diffs`` (only when the rows name their subjects)
    for the within-session detector: a sensor change moves ``h`` less than one user differs from another,
    so the population score above cannot see it at a once-a-day budget, but it moves ``h`` far more than
    a user's own minute-to-minute spread. ``session_precision`` is the principal-direction inverse of the
    *within-subject* covariance (each subject's rows minus that subject's mean, Ledoit-Wolf as above);
    ``session_diffs`` are, per held-out subject, the mean of every later run of ``block`` windows minus
    the mean of its first ``session_baseline`` windows (the "baseline" and "later" parts of one unshifted
    user: what the device compares, so their scores are the detector's null distribution).
    ``session_span`` (the median held-out session's windows) caps how far back the device's baseline may
    lie: the null only covers the lags the held-out sessions had, so in a longer session the baseline slides
    forward and stays ``session_span`` windows behind.

The file is ``reference.npz`` (plain arrays, loaded without pickle), hashed in the manifest and covered by
the publisher's signature like every other base file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.bundle import REFERENCE
from edge_bridge.export.golden import write_golden
from edge_bridge.export.onnx_export import ort_session, run_session
from edge_bridge.signals import Preprocessing

logger = logging.getLogger(__name__)

#: windows per drift estimate with 5 s hops (a minute); with another hop, as many as fill BLOCK_S
BLOCK = 12
BLOCK_S = 60.0


def block_for(hop_s: float | None) -> int:
    """Windows in one drift estimate: a minute of hops, at least 4 (the device reads it from the file)."""
    return BLOCK if hop_s is None or not hop_s > 0 else max(4, round(BLOCK_S / hop_s))
#: features are clipped at median +- CLIP robust standard deviations, here and on the device
CLIP = 4.0


#: the drift score weighs the principal directions that carry this share of the (standardised) variance.
#: Why 0.9 and not more: the trailing directions are estimated from a handful of held-out subjects, and an
#: unseen user's own minute-to-minute spread there is far wider than theirs. Measured on the demo bundle
#: (6 held-out simulated subjects, 6 unseen unshifted users, 3 users whose PPG sensor changes): at 0.99
#: the unseen users' largest within-session score (4.4) matched the sensor change's (4.1-5.2) and ran 3x
#: above the threshold the held-out null gave (1.43); at 0.9 it is 0.57 against a threshold of 0.90 and
#: sensor changes of 0.55-1.55 (the largest population score 0.10 against 0.14)
VARIANCE = 0.9
#: prefix of the signal descriptors' statistics in ``reference.npz`` (see :func:`reference_arrays`)
SIGNAL = "signal_"
#: the descriptors' share: they are 7 per channel, each estimated from thousands of held-out windows, so
#: the reason for 0.9 above (dozens of near-copied directions) does not hold. Measured on the demo bundle
#: (8 held-out subjects, 4 unseen users, each clean and with bench/calibrate.py's sensor change): at 0.99
#: every changed sensor's largest population score was 1.24-1.52 x the threshold and every clean user's
#: 0.38-0.67 x; at 0.9 one changed sensor stayed below (0.73-1.41 x, clean 0.36-0.60 x)
SIGNAL_VARIANCE = 0.99


def _principal_precision(cov: np.ndarray, share: float) -> np.ndarray:
    """The inverse of ``cov`` on its leading principal directions only (a pseudo-inverse).

    Why: directions of almost no variance (near-copies of one feature, common in pooled backbone outputs)
    get huge weights in a full inverse, and any small difference between users there would read as drift.
    """
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    k = int(np.searchsorted(np.cumsum(vals) / vals.sum(), share) + 1)
    k = min(max(k, 1), len(vals))
    return (vecs[:, :k] / vals[:k]) @ vecs[:, :k].T


def robust_limits(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature median and robust standard deviation (1.4826 x MAD, floored) of ``h`` (n, d)."""
    center = np.median(h, axis=0)
    spread = 1.4826 * np.median(np.abs(h - center), axis=0)
    floor = 1e-6 * max(float(np.abs(h).max()), 1e-12)
    return center, np.maximum(spread, floor)


def _shrunk_covariance(h: np.ndarray, share: float = VARIANCE) -> tuple[np.ndarray, np.ndarray, float]:
    """Ledoit-Wolf on the standardised features: (covariance, principal precision, shrinkage).

    Why standardised: shrinking the covariance itself would pull features of very different scales
    towards one common variance, drowning the small-variance directions a sensor change moves.
    """
    from sklearn.covariance import LedoitWolf

    scale = h.std(axis=0)
    scale = np.where(scale > 1e-12 * max(float(scale.max()), 1e-30), scale, 1.0)
    lw = LedoitWolf().fit(h / scale)
    cov = lw.covariance_ * np.outer(scale, scale)
    return cov, _principal_precision(lw.covariance_, share) / np.outer(scale, scale), float(lw.shrinkage_)


def session_arrays(h: np.ndarray, groups: np.ndarray, block: int, baseline: int | None = None, *,
                   share: float = VARIANCE) -> dict[str, np.ndarray] | None:
    """The within-session detector's statistics (see the module) of clipped features ``h`` (n, d) whose
    rows belong to subjects ``groups`` (n,), in time order within each subject.

    Returns None when fewer than two subjects have ``baseline + block`` windows (no null to speak of).
    """
    baseline = block if baseline is None else int(baseline)
    groups = np.asarray(groups).reshape(-1)
    centred, diffs, lengths = [], [], []
    for g in dict.fromkeys(groups.tolist()):  # first-seen order
        hs = h[groups == g]
        if len(hs) < 2:
            continue
        centred.append(hs - hs.mean(axis=0))
        if len(hs) < baseline + block:
            continue
        lengths.append(len(hs))
        base = hs[:baseline].mean(axis=0)
        later = hs[baseline:]
        csum = np.cumsum(np.vstack([np.zeros((1, h.shape[1])), later]), axis=0)
        diffs.append((csum[block:] - csum[:-block]) / block - base)
    if len(lengths) < 2:
        return None
    _cov, precision, shrink = _shrunk_covariance(np.concatenate(centred), share)
    return {"session_precision": precision, "session_baseline": np.int64(baseline),
            "session_diffs": np.concatenate(diffs).astype(np.float32),
            "session_subjects": np.int64(len(lengths)), "session_span": np.int64(np.median(lengths)),
            "session_shrinkage": np.float64(shrink)}


def feature_arrays(h: np.ndarray, *, block: int, groups: np.ndarray | None = None,
                   share: float = VARIANCE) -> dict[str, np.ndarray]:
    """One feature set's drift statistics (clip limits, mean, covariance, precision, block means, and the
    within-session ones when ``groups`` is given) of finite rows ``h`` (n, d) in time order per subject."""
    center, spread = robust_limits(h)
    h = np.clip(h, center - CLIP * spread, center + CLIP * spread)
    cov, precision, shrinkage = _shrunk_covariance(h, share)
    csum = np.cumsum(np.vstack([np.zeros((1, h.shape[1])), h]), axis=0)
    block_means = (csum[block:] - csum[:-block]) / block
    session = None if groups is None else session_arrays(h, groups, block, share=share)
    return {**(session or {}), "mean": h.mean(axis=0), "covariance": cov, "precision": precision,
            "shrinkage": np.float64(shrinkage), "block": np.int64(block),
            "block_means": block_means.astype(np.float32), "clip_center": center, "clip_spread": spread,
            "clip": np.float64(CLIP)}


def reference_arrays(h: np.ndarray, logits: np.ndarray, *, gate_pass_rate: float | None = None,
                     block: int = BLOCK, groups: np.ndarray | None = None,
                     hop_s: float | None = None, signal: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The reference statistics of held-out features ``h`` (n, d_in) and the composite's ``logits`` (n, K).

    Rows must be in time order within each subject (held-out windows are), so that runs of ``block``
    consecutive rows are what a device sees in ``block`` hops; a run that crosses from one subject to the
    next only widens the spread the threshold is set from (fewer false alarms, slower detection).
    ``groups`` (the subject of each row) adds the within-session detector's statistics
    (:func:`session_arrays`); without it the bundle has the population score only. ``hop_s``, the rows'
    spacing in seconds, is recorded (``hop_s``) so that a device predicting at another hop can take as
    many windows per estimate as cover the same time (:meth:`deploy.drift.DriftReference.at_hop`).
    ``signal`` (n, k), the windows' :func:`edge_bridge.signals.descriptors.signal_descriptors`, adds the
    same statistics of those under the ``signal_`` prefix (``signal_mean``, ``signal_precision``, ...):
    the device's second pair of detectors, on what the sensor draws rather than what the front makes of it.

    Raises
    ------
    ValueError
        Fewer than ``block + 1`` finite rows (the null spread needs at least two runs).
    """
    h = np.asarray(h, np.float64).reshape(len(h), -1)
    logits = np.asarray(logits, np.float64)
    ok = np.isfinite(h).all(axis=1) & np.isfinite(logits).all(axis=1)
    if signal is not None:
        signal = np.asarray(signal, np.float64).reshape(len(signal), -1)
        if len(signal) != len(ok):
            raise ValueError(f"{len(signal)} descriptor rows for {len(ok)} held-out windows")
        ok &= np.isfinite(signal).all(axis=1)
    if groups is not None and len(groups) != len(ok):
        raise ValueError(f"{len(groups)} subject ids for {len(ok)} held-out windows")
    h, logits = h[ok], logits[ok]
    if len(h) < block + 1:
        raise ValueError(f"reference statistics need at least {block + 1} held-out windows with finite "
                         f"features, got {len(h)}")
    g = None if groups is None else np.asarray(groups)[ok]
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    k = logits.shape[1]
    extra = {} if signal is None else {
        f"{SIGNAL}{key}": v
        for key, v in feature_arrays(signal[ok], block=block, groups=g, share=SIGNAL_VARIANCE).items()}
    return {
        **feature_arrays(h, block=block, groups=g),
        **extra,
        "prior": p.mean(axis=0),
        "prior_argmax": np.bincount(p.argmax(axis=1), minlength=k) / len(p),
        "gate_pass_rate": np.float64(np.nan if gate_pass_rate is None else gate_pass_rate),
        "windows": np.int64(len(h)),
        **({"hop_s": np.float64(hop_s)} if hop_s is not None and hop_s > 0 else {}),
    }


def write_reference(root: str | os.PathLike[str], files: dict[str, Path], x_target: np.ndarray, *,
                    hop_s: float | None = None, gate_pass_rate: float | None = None,
                    groups: np.ndarray | None = None,
                    spec: Preprocessing | None = None,
                    logits: np.ndarray | None = None) -> dict[str, Any] | None:
    """Run the shipped graphs on the held-out target windows and write ``root/reference.npz``.

    Parameters
    ----------
    files : dict of part -> path
        The bundle's ``target_front``, ``bridge`` and ``source_back`` as shipped.
    x_target : ndarray, shape (n, C_t, L_t)
        Held-out target windows, preprocessed, in time order per subject.
    hop_s : float, optional
        The spec's hop: a drift estimate spans a minute of windows (:func:`block_for`).
    groups : ndarray, optional
        The subject of each window: adds the within-session detector (:func:`session_arrays`).
    spec : Preprocessing, optional
        The target spec the windows were cut with: adds the signal descriptors' statistics
        (:func:`edge_bridge.signals.descriptors.signal_descriptors`, ``signal_*`` keys).
    logits : ndarray, shape (n, n_classes), optional
        The composite's logits on these windows, when the bridge needs more than ``target_front``'s h (a
        fused bridge takes the extra targets' features too); otherwise the shipped graphs compute them.

    Returns
    -------
    dict or None
        ``{"file", "sha256"}`` for the manifest; None (logged) when there are too few windows, and the
        bundle is then written without drift detection, as older bundles are.
    """
    from edge_bridge.bundle import sha256_file

    x = np.asarray(x_target, np.float32)
    h = run_session(ort_session(files["target_front"]), "target_front", x)
    if logits is None:
        z = run_session(ort_session(files["bridge"]), "bridge", h)
        logits = run_session(ort_session(files["source_back"]), "source_back", z)
    signal = None
    if spec is not None:
        from edge_bridge.signals.descriptors import signal_descriptors

        signal = signal_descriptors(x, spec)
    try:
        arrays = reference_arrays(h, logits, gate_pass_rate=gate_pass_rate, block=block_for(hop_s),
                                  groups=groups, hop_s=hop_s, signal=signal)
    except ValueError as exc:
        logger.warning("no drift reference in the bundle: %s; deploy will run without drift detection", exc)
        return None
    path = Path(root) / REFERENCE
    write_golden(path, arrays)  # the same atomic, pickle-free .npz writer
    logger.info("drift reference: %d held-out windows, d_in %d, Ledoit-Wolf shrinkage %.3f, gate pass rate "
                "%s, within-session null: %s", int(arrays["windows"]), arrays["mean"].size,
                float(arrays["shrinkage"]), "unknown" if gate_pass_rate is None else f"{gate_pass_rate:.3f}",
                f"{len(arrays['session_diffs'])} later blocks of {int(arrays['session_subjects'])} subjects"
                if "session_diffs" in arrays else "none (no subject ids or too few windows per subject)")
    return {"file": REFERENCE, "sha256": sha256_file(path)}


__all__ = ["BLOCK", "BLOCK_S", "CLIP", "SIGNAL", "block_for", "feature_arrays", "reference_arrays",
           "robust_limits", "session_arrays", "write_reference"]
