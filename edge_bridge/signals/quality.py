"""Signal-quality flags per window and channel.

Bad windows are flagged, never silently repaired: the caller decides to skip them and reports how many.
The checks run on the raw window, in physical units, before any filtering can smear a NaN or hide a
flat line.
"""

from __future__ import annotations

import enum

import numpy as np

from edge_bridge.signals.spec import Preprocessing, QualityLimits


class Quality(enum.IntFlag):
    """Bit flags; a window/channel is good when its flags are 0."""

    OK = 0
    NONFINITE = 1  # NaN or inf anywhere in the window
    FLAT = 2  # peak-to-peak below QualityLimits.flat_ptp (lead off, dead sensor)
    CLIPPED = 4  # too many samples pinned at the extreme value (saturation)
    AMPLITUDE = 8  # a sample beyond QualityLimits.max_abs (implausible for the modality)


def assess_quality(windows: np.ndarray, limits: QualityLimits | Preprocessing) -> np.ndarray:
    """Flag every channel of every window.

    Parameters
    ----------
    windows : ndarray, shape (..., n_channels, n_samples)
        Raw windows in physical units.
    limits : QualityLimits or Preprocessing
        Thresholds, or a spec whose ``quality`` is used.

    Returns
    -------
    flags : ndarray of uint8, shape (..., n_channels)
        Bitwise OR of :class:`Quality` values.
    """
    if isinstance(limits, Preprocessing):
        limits = limits.quality
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim < 2 or x.shape[-1] < 2:
        raise ValueError(f"windows must have shape (..., n_channels, n_samples >= 2), got {x.shape}")
    finite = np.isfinite(x)
    flags = np.where(finite.all(axis=-1), 0, int(Quality.NONFINITE)).astype(np.uint8)

    # Statistics over finite samples only, so one NaN does not also mark the channel flat or clipped.
    hi = np.where(finite, x, -np.inf).max(axis=-1)
    lo = np.where(finite, x, np.inf).min(axis=-1)
    any_finite = finite.any(axis=-1)
    ptp = np.where(any_finite, hi - lo, 0.0)
    flags |= np.where(ptp < limits.flat_ptp, int(Quality.FLAT), 0).astype(np.uint8)
    if limits.flat_ptp == 0:
        flags |= np.where(ptp == 0, int(Quality.FLAT), 0).astype(np.uint8)

    big = np.where(finite, np.abs(x), 0.0).max(axis=-1)
    flags |= np.where(big > limits.max_abs, int(Quality.AMPLITUDE), 0).astype(np.uint8)

    # Clipping: a saturated amplifier holds the rail value for many samples. A clean signal touches its
    # maximum once per peak at most, so count samples within a hair of either extreme.
    tol = 1e-6 * np.maximum(ptp, 1e-12)[..., None]
    at_top = finite & (x >= hi[..., None] - tol)
    at_bottom = finite & (x <= lo[..., None] + tol)
    n = x.shape[-1]
    pinned = np.maximum(at_top.sum(axis=-1), at_bottom.sum(axis=-1)) / n
    clipped = (pinned > limits.clip_fraction) & (ptp > 0)
    flags |= np.where(clipped, int(Quality.CLIPPED), 0).astype(np.uint8)
    return flags


def describe_flags(flags: np.ndarray, channels: tuple[str, ...] | list[str]) -> str:
    """Human-readable summary of one window's flags, e.g. ``"ECG: flat; PPG: nonfinite, clipped"``."""
    flags = np.asarray(flags).reshape(-1)
    if len(flags) != len(channels):
        raise ValueError(f"got {len(flags)} flags for {len(channels)} channels")
    parts = []
    for name, f in zip(channels, flags, strict=True):
        if f:
            names = [q.name.lower() for q in Quality if q and (int(f) & int(q))]  # type: ignore[union-attr]
            parts.append(f"{name}: {', '.join(names)}")
    return "; ".join(parts) if parts else "ok"
