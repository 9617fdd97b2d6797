"""The method verbs end to end on a few minutes of simulated data (tiny backbones, one or two epochs)."""

from __future__ import annotations

import json

import pytest

from edge_bridge.cli import main

TINY_TARGET = '{"widths": [8, 8, 8], "strides": [1, 2, 2], "kernel": 3}'
TINY_SOURCE = '{"d_model": 16, "n_blocks": 3, "n_heads": 2}'


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from edge_bridge.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("sim")
    simulate_dataset(out, "stress", subjects=4, minutes=5, seed=0)
    return out


def test_method_verbs_end_to_end(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    common = ["--run", str(run), "--no-progress", "-q"]
    assert main(["pretrain", *common, "--data", str(data_dir), "--task", "stress", "--epochs", "1",
                 "--backbone-config", TINY_TARGET]) == 0
    assert main(["fit-source", *common, "--epochs", "2", "--backbone-config", TINY_SOURCE]) == 0
    assert main(["select", *common]) == 0
    sel = json.loads((run / "selection.json").read_text())
    assert len(sel["f1"]) == 3 and len(sel["cka"]) == 3 and (run / "selection.png").is_file()
    assert main(["train", *common, "--epochs", "2", "--kd"]) == 0
    assert main(["train", *common, "--epochs", "3", "--resume"]) == 0
    hist = json.loads((run / "bridge" / "history.json").read_text())
    assert [h["epoch"] for h in hist["history"]] == [0, 1, 2]
    assert main(["evaluate", *common, "--epochs", "1"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["models"]) == {"bridge (composite)", "source model", "kd student", "target supervised"}
    for m in metrics["models"].values():
        assert 0.0 <= m["balanced_accuracy"] <= 1.0 and m["n"] > 0
    splits = json.loads((run / "splits.json").read_text())
    assert set(metrics["test_subjects"]) == set(splits["test"])
    out = capsys.readouterr().out
    assert "chosen i=" in out and "bal.acc" in out


def test_missing_step_is_one_clear_line(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    code = main(["select", "--run", str(run), "--data", str(data_dir), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "edge-bridge pretrain --run" in err and "Traceback" not in err
    assert main(["train", "--run", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "pass --data DIR" in capsys.readouterr().err
