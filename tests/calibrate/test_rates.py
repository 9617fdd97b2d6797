"""Calibration takes paired recordings from another device: chest ECG at 256 Hz with a wrist PPG at 128 Hz.

The bundle's specs say ECG 250 Hz and PPG 64 Hz; both recordings are resampled to the model's rates by the
one preprocessing path, and the report says which rates it saw.
"""

from __future__ import annotations

import json

import numpy as np
from scipy.signal import resample_poly

from calibrate.core import calibrate
from calibrate.data import load_paired
from edge_bridge.bundle import Bundle
from edge_bridge.recordings import read_recording
from edge_bridge.recordings.recording import Channel


def _at(rec, name, up, down, rate):
    ch = rec.channel(name)
    rec.channels[rec.channel_names.index(name)] = Channel(name, resample_poly(ch.data, up, down), rate,
                                                          ch.modality, ch.unit)


def test_chest_ecg_256_hz_and_wrist_ppg_128_hz_calibrate(bundle, paired_edf):
    m = Bundle.load(bundle).manifest
    native = read_recording(paired_edf)
    other = native.copy()
    _at(other, "ECG", 128, 125, 256.0)
    _at(other, "PPG", 2, 1, 128.0)
    assert (other.channel("ECG").rate, other.channel("PPG").rate) == (256.0, 128.0)

    a, b = load_paired([native], m.source, m.target), load_paired([other], m.source, m.target)
    assert b.rates == {"source": [256.0], "target": [128.0]}
    assert a.rates == {"source": [250.0], "target": [64.0]}
    assert abs(len(a) - len(b)) <= 2  # the same seconds; the gate may judge a window at the margin otherwise
    both = np.intersect1d(a.windows.starts, b.windows.starts)
    assert len(both) >= len(a) - 2
    for role in ("source", "target"):
        xa = a.windows.x[role][np.isin(a.windows.starts, both)]
        xb = b.windows.x[role][np.isin(b.windows.starts, both)]
        assert xa.shape == xb.shape  # the model's input shape, whatever the sensor's rate
        corr = [np.corrcoef(p.ravel(), q.ravel())[0, 1] for p, q in zip(xa, xb, strict=True)]
        assert np.median(corr) > 0.95, (role, np.median(corr))

    report = calibrate(bundle, [other], dry_run=True)
    assert report.input_rates_hz == {"source": [256.0], "target": [128.0]}
    d = json.loads(json.dumps(report.to_dict()))
    assert d["input_rates_hz"]["target"] == [128.0] and "quality_flags" in d
    assert report.windows["paired"] == len(b)


def test_cli_says_which_rates_it_saw(bundle, paired_edf, tmp_path, capsys):
    from edge_bridge.cli import main
    from edge_bridge.recordings import write_edf

    other = read_recording(paired_edf)
    _at(other, "ECG", 128, 125, 256.0)
    _at(other, "PPG", 2, 1, 128.0)
    path = write_edf(other, tmp_path / "other_device.edf")
    assert main(["calibrate", "--bundle", str(bundle), "--paired", str(path), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "input: source 256 Hz, target 128 Hz" in err, err
