"""The one preprocessing implementation: window, band-pass, notch, resample, normalise.

Training, export checks, calibration and the live loop all call :func:`process_windows` (or its
single-window form), so a window cut from a file on the host and the same samples arriving through a live
buffer on the device become identical tensors. Everything is numpy/scipy; no torch.

Filtering is done per window (zero-phase, forward-backward) rather than once over a whole recording,
precisely so that the host and the streaming device compute the same thing. Its cost is a whole window
per hop; the device batches the windows of all its streams into one call of :func:`process_windows`.

The causal alternative (``Preprocessing.filtering = "causal"``: :class:`~edge_bridge.signals.
StreamPreprocessor` on a stream, :func:`~edge_bridge.signals.process_recording` on a file, one
implementation) filters only each hop's new samples with the state carried. It is not the default because
a bundle serves what it was trained on, and every bundle so far was trained zero-phase. Measured on the
demo bundle (``bench/streams.py``, ``filtering_decision``: 813 windows of three unseen simulated subjects,
5 min each), serving it with causal filtering changed 24.5 % of its decisions (7 % to 42 % per subject);
balanced accuracy against the simulated labels was 0.38 zero-phase vs 0.36 causal, both near chance for
this small demo bundle on these subjects, so the disagreement is the firm figure. A bundle trained on
``process_recording`` windows (spec ``filtering="causal"``) streams causally and matches its training.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from edge_bridge.errors import QualityError, SignalError
from edge_bridge.signals.filters import filter_sos
from edge_bridge.signals.quality import Quality, assess_quality, describe_flags
from edge_bridge.signals.spec import Preprocessing

_filter_sos = filter_sos  # the name stream.py imports (the design lives in edge_bridge.signals.filters)


def cut_windows(data: np.ndarray, spec: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Cut raw ``(n_channels, n_samples)`` data at ``spec.input_rate`` into overlapping windows.

    Returns
    -------
    windows : ndarray, shape (n_windows, n_channels, spec.window_samples)
        A view where possible; copy before writing to it.
    starts : ndarray of int, shape (n_windows,)
        Start sample of each window.
    """
    x = np.asarray(data)
    if x.ndim != 2 or x.shape[0] != spec.n_channels:
        raise SignalError(
            f"expected data of shape ({spec.n_channels}, n_samples) for channels {list(spec.channels)}, "
            f"got {x.shape}"
        )
    n, w, h = x.shape[1], spec.window_samples, spec.hop_samples
    if n < w:
        return np.empty((0, spec.n_channels, w), dtype=x.dtype), np.empty(0, dtype=np.int64)
    starts = np.arange(0, n - w + 1, h, dtype=np.int64)
    view = np.lib.stride_tricks.sliding_window_view(x, w, axis=1)  # (n_ch, n - w + 1, w)
    return view[:, starts].transpose(1, 0, 2), starts


def process_windows(windows: np.ndarray, spec: Preprocessing, *, check_quality: bool = True) -> np.ndarray:
    """Turn raw windows into model inputs.

    Parameters
    ----------
    windows : ndarray, shape (n_windows, n_channels, spec.window_samples)
        Raw samples in physical units at ``spec.input_rate``.
    spec : Preprocessing
        The modality's spec.
    check_quality : bool
        If True (default), refuse any broken window (NaN, flat, clipped, out of range: the limits' checks).
        This is the last guard, not the selector: callers choose windows with ``assess_quality(windows,
        spec)``, whose physiological checks (LOW_SQI, MOTION) judge whether a window is worth a decision,
        and pass the good ones, with ``check_quality=False`` when they gated already. A non-finite window
        is refused either way.

    Returns
    -------
    x : ndarray of float32, shape (n_windows, n_channels, spec.output_samples)

    Raises
    ------
    QualityError
        If a window contains NaN/inf (always) or fails the quality gate (when ``check_quality``).
    """
    x = np.asarray(windows, dtype=np.float64)
    expected = (spec.n_channels, spec.window_samples)
    if x.ndim != 3 or x.shape[1:] != expected:
        raise SignalError(
            f"expected windows of shape (n, {expected[0]}, {expected[1]}) "
            f"({spec.window_s:g} s of {list(spec.channels)} at {spec.input_rate:g} Hz), got {x.shape}; "
            "check the sampling rate and channel order"
        )
    if spec.filtering != "zerophase":
        raise SignalError("this spec filters causally, so a window's model input depends on the signal "
                          "before it: use process_recording() on the whole recording, or a "
                          "StreamPreprocessor on a stream")
    if len(x) == 0:
        return np.empty((0, *spec.input_shape), dtype=np.float32)
    if check_quality:  # a broken window (NaN, flat, clipped, out of range) must never reach a model
        flags = assess_quality(x, spec.quality)
    else:  # the caller gated already; only a NaN must never be filtered into the model's input
        flags = np.where(np.isfinite(x).all(axis=-1), 0, int(Quality.NONFINITE)).astype(np.uint8)
    bad_mask = flags != 0
    if bad_mask.any():
        k = int(np.flatnonzero(bad_mask.any(axis=1))[0])
        raise QualityError(
            f"{int(bad_mask.any(axis=1).sum())} of {len(x)} window(s) fail the quality gate, first is window "
            f"{k}: {describe_flags(flags[k], spec.channels)}; run assess_quality() and skip them",
            flags=flags,
        )

    sos = filter_sos(float(spec.input_rate), spec.bandpass, spec.notch, spec.filter_order)
    if sos is not None:  # padding in samples only when re-based on another rate (spec.pad_s), else scipy's
        pad = None if spec.pad_s is None else min(spec.filter_padding(), spec.window_samples - 1)
        x = sps.sosfiltfilt(sos, x, axis=-1, padlen=pad)
    up, down = spec.resample_ratio
    if (up, down) != (1, 1):
        x = sps.resample_poly(x, up, down, axis=-1)
    if spec.normalise == "zscore":
        mean = x.mean(axis=-1, keepdims=True)
        std = x.std(axis=-1, keepdims=True)
        x = (x - mean) / np.maximum(std, 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


def process_window(window: np.ndarray, spec: Preprocessing, *, check_quality: bool = True) -> np.ndarray:
    """Single-window form of :func:`process_windows` (the live loop's entry point); same maths."""
    w = np.asarray(window)
    if w.ndim != 2:
        raise SignalError(f"expected one window of shape (n_channels, n_samples), got {w.shape}")
    return process_windows(w[None], spec, check_quality=check_quality)[0]
