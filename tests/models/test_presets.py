"""The paper's six directions: the table agrees with BioX-Bridge's spelling and with built backbones."""

from __future__ import annotations

import re

import pytest

from edge_bridge.models import BackboneError, build_backbone
from edge_bridge.models.presets import available_presets, get_preset, resolve_positions


def test_six_directions_with_positions_rank_and_prototypes():
    assert available_presets() == ["fog_eeg2emg", "fog_emg2eeg", "isruc_ecg2eeg", "isruc_eeg2ecg",
                                   "wesad_ecg2ppg", "wesad_ppg2ecg"]
    table = {n: (get_preset(n).i, get_preset(n).j, get_preset(n).rank, get_preset(n).prototypes)
             for n in available_presets()}
    assert table == {"wesad_ecg2ppg": (4, 2, 8, 150), "wesad_ppg2ecg": (7, 11, 32, 50),
                     "isruc_eeg2ecg": (7, 2, 32, 300), "isruc_ecg2eeg": (11, 0, 4, 200),
                     "fog_eeg2emg": (3, 11, 256, 200), "fog_emg2eeg": (6, 10, 8, 50)}
    for name in available_presets():
        p = get_preset(name)
        assert int(re.search(r"\[(\d+)\]", p.biox_input_location).group(1)) == p.i
        assert int(re.search(r"\[(\d+)\]", p.biox_output_location).group(1)) == p.j
        src, tgt = name.split("_")[1].split("2")
        assert (p.source_modality, p.target_modality) == (src, tgt)
    with pytest.raises(BackboneError, match="did you mean 'isruc_ecg2eeg'"):
        get_preset("isruc_ecg2eg")


def test_isruc_ecg2eeg_positions_resolve_on_the_published_models():
    p = get_preset("isruc_ecg2eeg")
    target = build_backbone(p.target_model, config=p.target_config)
    source = build_backbone(p.source_model, config=p.source_config)
    assert resolve_positions(p, target, source) == (11, 0)
    # BioX-Bridge's num_tokens: 181 LaBraM tokens for 6 ch x 30 s, 46 HuBERT frames for 30 s
    assert target.block_output(p.i).tokens == 181 and source.block_input(p.j).tokens == 46
    with pytest.raises(BackboneError, match="expected 'labram'"):
        resolve_positions(p, source, source)


def test_fog_labram_window_has_nineteen_tokens():
    p = get_preset("fog_emg2eeg")
    cfg = {**p.target_config, "depth": 1}
    assert build_backbone("labram", config=cfg).boundaries[0].tokens == 19
