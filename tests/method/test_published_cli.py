"""`--target-model` / `--source-model NAME:CHECKPOINT` and `train --preset` on a tiny simulated stress run.

The published models are the golden *small* ones (``shared/golden/<name>/small.*``) written as checkpoint
files in their published layouts: PaPaGei-S as a ``torch.save`` state dict with DataParallel's ``module.``
prefix, HuBERT-ECG as ``{"model_state_dict": ...}``. The stress task's windows already have the published
models' shapes: target PPG (1, 7500) for PaPaGei, source ECG (1, 6000) for HuBERT-ECG.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge_bridge.cli import main
from tests.helpers.golden import golden_dir, skip_without_golden

pytestmark = [skip_without_golden("papagei"), skip_without_golden("hubert_ecg")]

torch.set_num_threads(1)


def _small_config(name: str) -> dict:
    return json.loads((golden_dir(name) / "small.json").read_text())["config"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from edge_bridge.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("sim")
    simulate_dataset(out, "stress", subjects=4, minutes=3, seed=0)
    return out


@pytest.fixture(scope="module")
def papagei_ckpt(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """PaPaGei-S small weights as ``papagei_s.pt`` is published: a plain state dict, ``module.`` keys."""
    from safetensors.torch import load_file

    tensors = load_file(str(golden_dir("papagei") / "small.safetensors"))
    path = tmp_path_factory.mktemp("ckpt") / "papagei_s.pt"
    torch.save({f"module.{k}": v for k, v in tensors.items()}, path)
    return path, tensors


@pytest.fixture(scope="module")
def hubert_ckpt(tmp_path_factory) -> tuple[Path, dict]:
    """A HuBERT-ECG checkpoint in the published ``{"model_state_dict": ...}`` layout.

    The golden small model has 2 encoder layers; the wesad_ecg2ppg preset bridges into layer 2, so the test
    model has 3 (same small sizes, seeded random weights).
    """
    from edge_bridge.models import build_backbone

    cfg = {**_small_config("hubert_ecg"), "num_hidden_layers": 3, "input_samples": 6000}
    torch.manual_seed(0)
    model = build_backbone("hubert_ecg", cfg)
    path = tmp_path_factory.mktemp("ckpt") / "hubert_ecg_small.pt"
    torch.save({"model_state_dict": model.state_dict()}, path)
    return path, cfg


def _common(run: Path) -> list[str]:
    return ["--run", str(run), "--no-progress", "-q"]


def test_published_target_source_and_preset(tmp_path, data_dir, papagei_ckpt, hubert_ckpt, capsys):
    from edge_bridge.models import load_backbone
    from edge_bridge.models.io import read_backbone_config

    run = tmp_path / "run"
    ckpt, tensors = papagei_ckpt
    assert main(["pretrain", *_common(run), "--data", str(data_dir), "--task", "stress",
                 "--target-model", f"papagei:{ckpt}", "--model-config",
                 json.dumps(_small_config("papagei"))]) == 0
    assert "published target backbone papagei" in capsys.readouterr().out
    model, meta = load_backbone(run / "target_backbone")  # round trip: rebuilt from config.json
    assert meta["recipe"] == "published:papagei" and meta["checkpoint"] == str(ckpt.resolve())
    assert read_backbone_config(run / "target_backbone")["kind"] == "papagei"
    assert model.input_shape == (1, 7500) and model.n_blocks == 8
    state = model.state_dict()
    assert set(state) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(state[k], v), k

    src, cfg = hubert_ckpt
    assert main(["fit-source", *_common(run), "--epochs", "1", "--batch-size", "16",
                 "--source-model", f"hubert_ecg:{src}", "--model-config", json.dumps(cfg)]) == 0
    assert "from published hubert_ecg" in capsys.readouterr().out
    source, smeta = load_backbone(run / "source_model")
    assert source.kind == "hubert_ecg" and source.n_classes == 3 and source.n_blocks == 3
    assert smeta["recipe"] == "published:hubert_ecg + supervised"

    assert main(["train", *_common(run), "--preset", "wesad_ecg2ppg", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "preset wesad_ecg2ppg: i=4, j=2, rank r=8, prototypes P=150" in out
    summary = json.loads((run / "bridge" / "train_summary.json").read_text())
    assert (summary["i"], summary["j"]) == (4, 2)
    from edge_bridge.bridge import load_bridge

    bridge = load_bridge(run / "bridge")
    assert bridge.meta["settings"]["rank"] == 8 and bridge.meta["settings"]["prototypes"] == 150

    # explicit options win over the preset, and the report says so
    assert main(["train", *_common(run), "--preset", "wesad_ecg2ppg", "--epochs", "1", "--rank", "4",
                 "--prototypes", "6", "--i", "3"]) == 0
    out = capsys.readouterr().out
    assert "i=3, j=2, rank r=4, prototypes P=6" in out and "overridden by --i, --rank, --prototypes" in out
    bridge = load_bridge(run / "bridge")
    assert bridge.meta["settings"]["rank"] == 4 and bridge.meta["settings"]["prototypes"] == 6

    # a preset whose models are not the run's backbones
    assert main(["train", *_common(run), "--preset", "isruc_eeg2ecg", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "'papagei'" in err and "expected 'hubert_ecg'" in err
    assert main(["train", *_common(run), "--preset", "wesad_ecg2pg"]) == 2
    assert "did you mean 'wesad_ecg2ppg'" in capsys.readouterr().err


def test_target_model_input_shape_mismatch(tmp_path, data_dir, papagei_ckpt, capsys):
    ckpt, _ = papagei_ckpt
    cfg = {**_small_config("papagei"), "input_samples": 1250}
    code = main(["pretrain", *_common(tmp_path / "run"), "--data", str(data_dir), "--task", "stress",
                 "--target-model", f"papagei:{ckpt}", "--model-config", json.dumps(cfg)])
    assert code == 2
    err = capsys.readouterr().err
    assert "(1, 1250)" in err and "(1, 7500)" in err and "Traceback" not in err
    assert "papagei's own preprocessing" in err and '"output_rate": 125.0' in err
    assert not (tmp_path / "run" / "target_backbone").exists()


@pytest.mark.parametrize(("value", "expected"), [
    ("papagai:{ckpt}", "unknown model 'papagai' (did you mean 'papagei'?); choose one of"),
    ("papagei", "expects NAME:CHECKPOINT, e.g. --target-model papagei:"),
    ("papagei:", "expects NAME:CHECKPOINT"),
    ("papagei:{missing}", "is not a file; download the published papagei checkpoint"),
])
def test_target_model_argument_errors(tmp_path, data_dir, papagei_ckpt, capsys, value, expected):
    ckpt, _ = papagei_ckpt
    value = value.format(ckpt=ckpt, missing=tmp_path / "nope.pt")
    code = main(["pretrain", *_common(tmp_path / "run"), "--data", str(data_dir), "--task", "stress",
                 "--target-model", value])
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err, err
    if "unknown model" in expected:
        assert "hubert_ecg" in err and "labram" in err and "normwear" in err
    assert not (tmp_path / "run").exists()  # rejected before the run directory is made


def test_model_config_needs_a_model_and_excludes_backbone(tmp_path, data_dir, papagei_ckpt, capsys):
    ckpt, _ = papagei_ckpt
    base = ["pretrain", *_common(tmp_path / "run"), "--data", str(data_dir), "--task", "stress"]
    assert main([*base, "--model-config", "{}"]) == 2
    assert "pass --target-model NAME:CHECKPOINT" in capsys.readouterr().err
    assert main([*base, "--target-model", f"papagei:{ckpt}", "--backbone", "resnet1d"]) == 2
    assert "pass one or the other" in capsys.readouterr().err
    assert main([*base, "--target-model", f"papagei:{ckpt}", "--model-config", "[1]"]) == 2
    assert "--model-config must be a JSON object" in capsys.readouterr().err


def test_help_shows_examples(capsys):
    for verb, text in (("pretrain", "--target-model papagei:"), ("fit-source", "--source-model hubert_ecg:"),
                       ("train", "--preset wesad_ecg2ppg")):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        assert text in capsys.readouterr().out
