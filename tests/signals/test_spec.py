"""The preprocessing spec: validation with clear errors, and a JSON round trip (it travels in bundles)."""

from __future__ import annotations

import json
import re

import pytest

from edge_bridge.errors import SpecError
from edge_bridge.signals import Preprocessing, QualityLimits
from edge_bridge.tasks import TASKS, get_task


def _ppg(**kw):
    base = dict(modality="ppg", channels=("PPG",), input_rate=64, output_rate=125, window_s=60, hop_s=5,
                bandpass=(0.5, 8.0))
    base.update(kw)
    return Preprocessing(**base)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_specs_round_trip_through_json(task):
    for spec in (TASKS[task].source, TASKS[task].target):
        back = Preprocessing.from_json(spec.to_json())
        assert back == spec
        assert json.loads(spec.to_json())["schema_version"] == 1


def test_derived_sizes():
    spec = _ppg()
    assert spec.window_samples == 64 * 60
    assert spec.hop_samples == 64 * 5
    assert spec.output_samples == 125 * 60
    assert spec.resample_ratio == (125, 64)
    assert spec.input_shape == (1, 7500)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modality": "xyz"}, "modality must be one of"),
        ({"channels": ()}, "non-empty"),
        ({"channels": ("A", "A")}, "unique"),
        ({"input_rate": 0}, "input_rate must be a positive"),
        ({"output_rate": float("nan")}, "output_rate must be a positive"),
        ({"bandpass": (8.0, 0.5)}, "bandpass must satisfy"),
        ({"bandpass": (0.5, 40.0)}, "input_rate/2"),
        ({"notch": 50.0}, "notch must lie"),
        ({"normalise": "minmax"}, "normalise must be one of"),
        ({"window_s": 60.01}, "whole number of samples"),
        ({"hop_s": 0.001}, "whole number of samples"),
        ({"filter_order": 0}, "filter_order"),
    ],
)
def test_invalid_specs_name_the_problem(kwargs, match):
    with pytest.raises(SpecError, match=match):
        _ppg(**kwargs)


def test_from_dict_missing_and_unknown_keys():
    d = _ppg().to_dict()
    del d["hop_s"]
    with pytest.raises(SpecError, match=r"missing required key\(s\) \['hop_s'\]"):
        Preprocessing.from_dict(d)
    d = _ppg().to_dict()
    d["future_option"] = 1
    with pytest.warns(UserWarning, match="future_option"):
        assert Preprocessing.from_dict(d) == _ppg()
    d = _ppg().to_dict()
    d["schema_version"] = 99
    with pytest.raises(SpecError, match="upgrade edge-bridge"):
        Preprocessing.from_dict(d)
    with pytest.raises(SpecError, match="not valid JSON"):
        Preprocessing.from_json("{broken")


def test_quality_limits_validated_and_carried():
    with pytest.raises(SpecError, match="clip_fraction"):
        QualityLimits(flat_ptp=0.1, max_abs=1.0, clip_fraction=0)
    spec = _ppg(quality=QualityLimits(flat_ptp=0.5, max_abs=3.0, clip_fraction=0.1))
    assert Preprocessing.from_json(spec.to_json()).quality == spec.quality


def test_task_lookup_and_variants():
    with pytest.raises(SpecError, match=re.escape("choose one of " + ", ".join(TASKS))):  # every preset
        get_task("nope")
    binary = get_task("stress-binary")
    assert binary.source == get_task("stress").source and binary.classes == ("non-stress", "stress")
    assert set(binary.label_map) == set(get_task("stress").classes)  # every condition lands in a class
    assert set(binary.label_map.values()) == set(binary.classes)
    t = get_task("stress").with_rates(source_rate=700).with_window(10, 5)
    assert t.source.input_rate == 700 and t.source.output_rate == 100
    assert t.target.window_samples == 640
