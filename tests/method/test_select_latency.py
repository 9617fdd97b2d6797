"""select's latency budget: real exported, INT8-quantized parts timed in ONNX Runtime, cached per part."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_bridge.pipeline import BridgeSettings
from edge_bridge.selection.latency import LatencyError, LatencyMeter
from edge_bridge.selection.trial import TrialSettings, select_trial

SETTINGS = BridgeSettings(rank=2, prototypes=4)


def _models(tiny):
    target, source = tiny("resnet1d-nohead"), tiny("transformer-2ch")
    with torch.no_grad():
        source.head.weight.mul_(50)
    return target, source


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Every candidate of a 2 x 2 grid measured once (5 parts: 2 fronts, 2 backs, 1 bridge shape)."""
    from tests.method.conftest import _build

    target, source = _build("resnet1d-nohead"), _build("transformer-2ch")
    cache = tmp_path_factory.mktemp("latency")
    meter = LatencyMeter(target, source, SETTINGS, cache_dir=cache, min_repeats=5, budget_s=0.05)
    table = {(i, j): meter.candidate(i, j) for i in range(2) for j in range(2)}
    return cache, meter, table


def test_parts_are_measured_once_and_cached(measured, tiny):
    cache, meter, table = measured
    assert meter.measured == 5  # front[:0], front[:1], back[0:], back[1:], one bridge shape
    for c in table.values():
        assert c.front_ms > 0 and c.bridge_ms > 0 and c.back_ms > 0
        assert c.total_ms == pytest.approx(c.front_ms + c.bridge_ms + c.back_ms)
    target, source = _models(tiny)  # other weights, same architecture: latency is read back, not measured
    again = LatencyMeter(target, source, SETTINGS, cache_dir=cache)
    assert again.candidate(1, 0) == table[(1, 0)] and again.measured == 0
    assert (cache / "cpu.json").is_file() and again.describe()["precision"].startswith("target_front and")


def _data(target, source, n=64):
    g = np.random.default_rng(0)
    z = g.normal(size=(n, 1, 1))
    xt = (g.normal(size=(n, *target.input_shape)) + z).astype(np.float32)
    xs = (g.normal(size=(n, *source.input_shape)) + z).astype(np.float32)
    return xt[:48], xs[:48], xt[48:], xs[48:], np.repeat(np.arange(4), 12)


def test_budget_drops_the_slow_candidates_with_the_reason(measured, tiny):
    cache, _, table = measured
    target, source = _models(tiny)
    totals = sorted(c.total_ms for c in table.values())
    budget = (totals[1] + totals[2]) / 2  # two candidates in, two over
    meter = LatencyMeter(target, source, SETTINGS, cache_dir=cache)
    sel = select_trial(target, source, *_data(target, source)[:4], subjects=_data(target, source)[4],
                       settings=TrialSettings(shortlist=4, rungs=(1, 2), batch_size=16),
                       bridge_settings=SETTINGS, latency_budget_ms=budget, meter=meter)
    over = [c for c in sel.candidates if c["status"] == "over budget"]
    assert len(over) == 2
    assert all(c["latency"]["total_ms"] > budget and "> budget" in c["reason"] for c in over)
    chosen = next(c for c in sel.candidates if c["status"] == "chosen")
    assert chosen["latency"]["total_ms"] <= budget and sel.latency["budget_ms"] == budget
    assert meter.measured == 0  # all from the cache


def test_a_budget_no_candidate_meets_names_the_fastest(measured, tiny):
    cache, _, table = measured
    target, source = _models(tiny)
    fastest = min(table.values(), key=lambda c: c.total_ms)
    meter = LatencyMeter(target, source, SETTINGS, cache_dir=cache)
    with pytest.raises(LatencyError, match=rf"the fastest is \(i={fastest.i}, j={fastest.j}\) at "
                                           rf"{fastest.total_ms:.1f} ms"):
        select_trial(target, source, *_data(target, source)[:4], subjects=_data(target, source)[4],
                     settings=TrialSettings(shortlist=4, rungs=(1, 2)), bridge_settings=SETTINGS,
                     latency_budget_ms=fastest.total_ms / 10, meter=meter)


def test_unknown_device_is_refused(tiny):
    target, source = _models(tiny)
    with pytest.raises(LatencyError, match="device must be one of cpu, jetson"):
        LatencyMeter(target, source, SETTINGS, device="gpu")
