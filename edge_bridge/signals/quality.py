"""Signal-quality flags per window and channel.

Bad windows are flagged, never silently repaired: the caller decides to skip them and reports how many.
The checks run on the raw window, in physical units, before any filtering can smear a NaN or hide a
flat line.

Two kinds of check: broken signals (NONFINITE, FLAT, CLIPPED, AMPLITUDE; any modality, thresholds in
:class:`~edge_bridge.signals.QualityLimits`) and physiology (:mod:`edge_bridge.signals.physio`): LOW_SQI
when an ECG or PPG channel's beats do not repeat their shape (``QualityLimits.min_beat_sqi``), MOTION when
an accelerometer recorded with the window moved more than ``QualityLimits.max_motion``. The physiological
checks need the sampling rate and modality, so they run when :func:`assess_quality` is given a
:class:`~edge_bridge.signals.Preprocessing` (as every caller in edge-bridge does), not bare limits.
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
    LOW_SQI = 16  # ECG/PPG beats unlike their template, or an infeasible beat train (motion, no contact)
    MOTION = 32  # the accelerometer beside the sensor moved more than QualityLimits.max_motion


#: the flags that say the window is broken (no model may see it), as opposed to physiologically poor
BROKEN = Quality.NONFINITE | Quality.FLAT | Quality.CLIPPED | Quality.AMPLITUDE


def assess_quality(windows: np.ndarray, limits: QualityLimits | Preprocessing, *,
                   acc: np.ndarray | None = None, acc_rate: float | None = None) -> np.ndarray:
    """Flag every channel of every window.

    Parameters
    ----------
    windows : ndarray, shape (..., n_channels, n_samples)
        Raw windows in physical units.
    limits : QualityLimits or Preprocessing
        Thresholds, or a spec whose ``quality`` is used. Only a spec gives the physiological checks
        (LOW_SQI, MOTION) the rate and modality they need.
    acc : ndarray, shape (..., n_axes, n_acc_samples), optional
        Raw accelerometer windows (g) covering the same seconds as ``windows``; with a spec whose
        ``quality.max_motion`` is set, every channel of a window whose motion energy exceeds it is flagged
        MOTION.
    acc_rate : float, optional
        The accelerometer's rate in Hz (required with ``acc``).

    Returns
    -------
    flags : ndarray of uint8, shape (..., n_channels)
        Bitwise OR of :class:`Quality` values.

    Examples
    --------
    >>> flags = assess_quality(raw_windows, spec)          # (n_windows, n_channels)
    >>> good = (flags == 0).all(axis=1)
    """
    spec = limits if isinstance(limits, Preprocessing) else None
    if spec is not None:
        limits = spec.quality
    if not isinstance(limits, QualityLimits):
        raise TypeError(f"limits must be QualityLimits or Preprocessing, got {type(limits).__name__}")
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
    # maximum once per peak at most, so count samples within a hair of either extreme. One sample is every
    # window's own maximum, never a rail: without the floor of two, any window shorter than
    # 1 / clip_fraction samples (4 s of EDA at 4 Hz is 16) was always "clipped".
    tol = 1e-6 * np.maximum(ptp, 1e-12)[..., None]
    at_top = finite & (x >= hi[..., None] - tol)
    at_bottom = finite & (x <= lo[..., None] + tol)
    n = x.shape[-1]
    pinned_n = np.maximum(at_top.sum(axis=-1), at_bottom.sum(axis=-1))
    clipped = (pinned_n / n > limits.clip_fraction) & (pinned_n >= 2) & (ptp > 0)
    flags |= np.where(clipped, int(Quality.CLIPPED), 0).astype(np.uint8)
    if spec is not None:
        flags |= _physiology(x, flags, spec, acc, acc_rate)
    return flags


def _physiology(x: np.ndarray, flags: np.ndarray, spec: Preprocessing, acc: np.ndarray | None,
                acc_rate: float | None) -> np.ndarray:
    """LOW_SQI and MOTION flags; the beat index is computed only on channels not already broken."""
    from edge_bridge.signals.physio import SQI_MODALITIES, beat_template_sqi

    limits = spec.quality
    out = np.zeros_like(flags)
    if limits.min_beat_sqi > 0 and spec.modality in SQI_MODALITIES:
        ok = flags == 0
        if ok.any():
            sqi = beat_template_sqi(x[ok], spec.input_rate, spec.modality)
            low = np.zeros(flags.shape, dtype=bool)
            low[ok] = sqi < limits.min_beat_sqi
            out |= np.where(low, int(Quality.LOW_SQI), 0).astype(np.uint8)
    if acc is not None and limits.max_motion is not None:
        if acc_rate is None:
            raise ValueError("assess_quality needs acc_rate (Hz) with acc")
        a = np.asarray(acc, dtype=np.float64)
        if a.shape[:-2] != flags.shape[:-1]:
            raise ValueError(f"acc windows {a.shape} do not match the {flags.shape[:-1]} signal windows")
        out |= motion_flags(a, acc_rate, limits)[..., None]  # every channel of a moving window
    return out


def motion_flags(acc: np.ndarray, acc_rate: float, limits: QualityLimits | Preprocessing) -> np.ndarray:
    """MOTION (or 0) per accelerometer window ``(..., n_axes, n_samples)``: shape ``(...)``, uint8.

    The live loop ORs this into the flags of the signal windows the accelerometer windows cover.
    """
    from edge_bridge.signals.physio import motion_energy

    if isinstance(limits, Preprocessing):
        limits = limits.quality
    a = np.asarray(acc, dtype=np.float64)
    if limits.max_motion is None:
        return np.zeros(a.shape[:-2], dtype=np.uint8)
    return np.where(motion_energy(a, acc_rate) > limits.max_motion, int(Quality.MOTION), 0).astype(np.uint8)


def accelerometer_spec(spec: Preprocessing, channels: tuple[str, ...] | list[str],
                       rate: float | None = None) -> Preprocessing:
    """A spec that cuts accelerometer ``channels`` into the same windows as ``spec`` (for the MOTION check).

    Same window and hop in seconds, at ``rate`` (default: ``spec.input_rate``, a board's rows share it);
    no filtering, since the windows are only ever judged, never fed to a model.
    """
    r = float(rate if rate is not None else spec.input_rate)
    return Preprocessing("acc", tuple(channels), input_rate=r, output_rate=r, window_s=spec.window_s,
                         hop_s=spec.hop_s, normalise="none")


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
