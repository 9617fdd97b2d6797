"""The paper's six bridging directions, as data: models, positions, rank and prototype count.

Values are those of the ``--mode train`` step of BioX-Bridge's ``bash_scripts/<direction>.sh``
(``chenqi-li/BioX-Bridge`` at commit 3a84fba): ``fm_old`` is the **source** (the model with the task head),
``fm_new`` the **target** (the modality the wearable measures). ``--bridge_input_location`` is target block
*i* (its output feeds the bridge), ``--bridge_output_location`` is source block *j* (the bridge produces its
input), ``--bridge_rank`` is r and ``--bridge_proto_init rand_P`` gives P prototypes.

Positions are stored as block indices plus BioX's own spelling; :func:`resolve_positions` checks them against
built backbones (``Backbone.position``), so a renamed block path fails loudly rather than silently.

>>> p = get_preset("wesad_ecg2ppg")
>>> (p.source_model, p.target_model, p.i, p.j, p.rank, p.prototypes)
('hubert_ecg', 'papagei', 4, 2, 8, 150)
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

from edge_bridge.models.backbone import Backbone, BackboneError

# source/target model configs per dataset (window shapes as BioX-Bridge feeds them)
_HUBERT_WESAD: dict[str, Any] = {"in_channels": 1, "input_samples": 6000, "lead_expansion": "none"}  # T=93
_HUBERT_ISRUC: dict[str, Any] = {"in_channels": 1, "input_samples": 3000, "lead_expansion": "none"}  # T=46
# BioX-Bridge's LaBraM: 30-entry time embedding, no channel embedding, pretrained time embedding not loaded
_LABRAM_ISRUC: dict[str, Any] = {"in_channels": 6, "input_samples": 6000, "time_embed_length": 30,
                                 "use_abs_pos_emb": False, "checkpoint_compat": "biox"}  # 181 tokens
# FOG: 'labram_base_patch200_200_16' (16-entry time embedding, so labram-base.pth's loads), 3-s windows
_LABRAM_FOG: dict[str, Any] = {"in_channels": 6, "input_samples": 600, "time_embed_length": 16,
                               "use_abs_pos_emb": False, "checkpoint_compat": "biox"}  # 19 tokens


@dataclass(frozen=True)
class DirectionPreset:
    """One bridging direction of the paper.

    Attributes
    ----------
    name : str
        BioX-Bridge's experiment name, ``<dataset>_<source>2<target>``.
    source_model, target_model : str
        Registry names (``hubert_ecg``, ``labram``, ``papagei``, ``normwear``).
    i, j : int
        Target block whose output feeds the bridge; source block whose input the bridge produces.
    biox_input_location, biox_output_location : str
        The same positions as BioX-Bridge's command line spells them.
    rank, prototypes : int
        Bridge rank r and prototype count P.
    lr, epochs, batch_size : float, int, int
        Bridge training settings of the script.
    criterion : str
        The script's ``--bridge_criterion``.
    source_config, target_config : dict
        Backbone config overrides for this dataset's windows (empty where the model's defaults apply).
    notes : str
        Anything a user reproducing the paper should know.
    """

    name: str
    dataset: str
    source_model: str
    target_model: str
    source_modality: str
    target_modality: str
    i: int
    j: int
    biox_input_location: str
    biox_output_location: str
    rank: int
    prototypes: int
    lr: float
    epochs: int
    batch_size: int = 16
    criterion: str = "CosineEmbeddingLoss"
    n_classes: int = 2
    window_s: float = 30.0
    hop_s: float = 30.0
    source_config: dict[str, Any] = field(default_factory=dict)
    target_config: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, DirectionPreset] = {p.name: p for p in (
    DirectionPreset(
        name="wesad_ecg2ppg", dataset="WESAD", source_model="hubert_ecg", target_model="papagei",
        source_modality="ecg", target_modality="ppg", i=4, j=2,
        biox_input_location="basicblock_list[4]", biox_output_location="encoder.layers[2]",
        rank=8, prototypes=150, lr=1e-6, epochs=100, n_classes=3, window_s=60.0, hop_s=5.0,
        source_config=dict(_HUBERT_WESAD)),
    DirectionPreset(
        name="wesad_ppg2ecg", dataset="WESAD", source_model="papagei", target_model="hubert_ecg",
        source_modality="ppg", target_modality="ecg", i=7, j=11,
        biox_input_location="encoder.layers[7]", biox_output_location="basicblock_list[11]",
        rank=32, prototypes=50, lr=1e-4, epochs=50, n_classes=3, window_s=60.0, hop_s=5.0,
        target_config=dict(_HUBERT_WESAD)),
    DirectionPreset(
        name="isruc_eeg2ecg", dataset="ISRUC", source_model="labram", target_model="hubert_ecg",
        source_modality="eeg", target_modality="ecg", i=7, j=2,
        biox_input_location="encoder.layers[7]", biox_output_location="blocks[2]",
        rank=32, prototypes=300, lr=1e-5, epochs=50,
        source_config=dict(_LABRAM_ISRUC), target_config=dict(_HUBERT_ISRUC)),
    DirectionPreset(
        name="isruc_ecg2eeg", dataset="ISRUC", source_model="hubert_ecg", target_model="labram",
        source_modality="ecg", target_modality="eeg", i=11, j=0,
        biox_input_location="blocks[11]", biox_output_location="encoder.layers[0]",
        rank=4, prototypes=200, lr=1e-4, epochs=50,
        source_config=dict(_HUBERT_ISRUC), target_config=dict(_LABRAM_ISRUC)),
    DirectionPreset(
        name="fog_eeg2emg", dataset="FOG", source_model="labram", target_model="normwear",
        source_modality="eeg", target_modality="emg", i=3, j=11,
        biox_input_location="backbone.encoder_blocks[3]", biox_output_location="blocks[11]",
        rank=256, prototypes=200, lr=1e-5, epochs=100, window_s=3.0, hop_s=3.0,
        source_config=dict(_LABRAM_FOG),
        notes="the script's train step passes --bridge_criterion InfoNCE, which train_bridge.py's argparse "
              "choices (L1Loss, MSELoss, CosineEmbeddingLoss) reject; its store_features step uses "
              "CosineEmbeddingLoss, which is kept here"),
    DirectionPreset(
        name="fog_emg2eeg", dataset="FOG", source_model="normwear", target_model="labram",
        source_modality="emg", target_modality="eeg", i=6, j=10,
        biox_input_location="blocks[6]", biox_output_location="backbone.encoder_blocks[10]",
        rank=8, prototypes=50, lr=1e-4, epochs=100, window_s=3.0, hop_s=3.0,
        target_config=dict(_LABRAM_FOG)),
)}


def available_presets() -> list[str]:
    """Names :func:`get_preset` accepts."""
    return sorted(PRESETS)


def get_preset(name: str) -> DirectionPreset:
    """The preset called ``name`` (e.g. ``"isruc_ecg2eeg"``).

    Raises
    ------
    BackboneError
        For an unknown name; the message lists the valid ones and the closest match.
    """
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BackboneError(f"unknown preset {name!r}{hint}; choose one of {', '.join(available_presets())}")
    return PRESETS[name]


def resolve_positions(preset: DirectionPreset, target: Backbone, source: Backbone) -> tuple[int, int]:
    """Check the preset's positions against built backbones and return ``(i, j)``.

    Raises
    ------
    BackboneError
        If a backbone is not the preset's model or a position is out of range.
    """
    for role, bb, want in (("target", target, preset.target_model), ("source", source, preset.source_model)):
        if bb.kind != want:
            raise BackboneError(f"preset {preset.name}: the {role} backbone is {bb.kind!r}, expected "
                                f"{want!r}")
    return target.position(preset.i), source.position(preset.j)
