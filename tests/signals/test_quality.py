"""Quality flags per window and channel: each defect is caught, clean signals pass."""

from __future__ import annotations

import numpy as np
import pytest

from edge_bridge.signals import Quality, QualityLimits, assess_quality, describe_flags

LIMITS = QualityLimits(flat_ptp=0.02, max_abs=20.0, clip_fraction=0.02)


def _clean(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 100
    return np.sin(2 * np.pi * 1.1 * t) + 0.05 * rng.standard_normal(n)


def _flags(x):
    return int(assess_quality(x[None, :], LIMITS)[0])


def test_clean_signal_passes():
    assert _flags(_clean()) == 0


@pytest.mark.parametrize(
    ("defect", "flag"),
    [
        (lambda x: np.where(np.arange(x.size) == 10, np.nan, x), Quality.NONFINITE),
        (lambda x: np.where(np.arange(x.size) == 10, np.inf, x), Quality.NONFINITE),
        (lambda x: np.full_like(x, 0.3), Quality.FLAT),
        (lambda x: 0.001 * x, Quality.FLAT),
        (lambda x: np.clip(x, -0.6, 0.6), Quality.CLIPPED),
        (lambda x: x + np.where(np.arange(x.size) == 500, 50.0, 0.0), Quality.AMPLITUDE),
    ],
    ids=["nan", "inf", "flat", "tiny", "clipped", "spike"],
)
def test_each_defect_is_flagged(defect, flag):
    assert _flags(defect(_clean())) & flag


def test_a_short_window_is_not_clipped_by_its_own_maximum():
    """16 samples (4 s of EDA at 4 Hz): one sample at each extreme is 1/16 > clip_fraction, yet no rail."""
    t = np.arange(16) / 4.0
    x = 5.0 + 0.2 * np.sin(2 * np.pi * 0.1 * t) + 0.01 * t
    assert not _flags(x) & Quality.CLIPPED
    assert _flags(np.minimum(x, np.sort(x)[-3])) & Quality.CLIPPED  # three samples held at a rail


def test_nan_does_not_also_claim_flat_or_clipped():
    x = _clean()
    x[3] = np.nan
    assert _flags(x) == Quality.NONFINITE


def test_flags_are_per_window_and_channel():
    w = np.stack([np.stack([_clean(seed=s), _clean(seed=s + 9)]) for s in range(4)])  # (4, 2, 1000)
    w[2, 1] = 0.0
    flags = assess_quality(w, LIMITS)
    assert flags.shape == (4, 2)
    assert flags[2, 1] & Quality.FLAT and flags.sum() == flags[2, 1]
    assert describe_flags(flags[2], ["ECG", "PPG"]) == "PPG: flat"
    assert describe_flags(flags[0], ["ECG", "PPG"]) == "ok"
