"""Record mode: the board is checked for both modalities at the spec rates before a second is recorded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from calibrate.errors import CalibrationError
from calibrate.record import check_channels, parse_board
from edge_bridge.cli import main
from edge_bridge.tasks import TASKS

TASK = TASKS["stress"].with_window(10, 5)


def test_parse_board():
    assert parse_board("synthetic") == ("synthetic", {})
    assert parse_board("CYTON_BOARD, serial_port=/dev/ttyUSB0,timeout=5") == (
        "CYTON_BOARD", {"serial_port": "/dev/ttyUSB0", "timeout": "5"})
    with pytest.raises(CalibrationError, match="key=value"):
        parse_board("CYTON_BOARD,/dev/ttyUSB0")


def _ch(name, modality):
    return SimpleNamespace(name=name, modality=modality)


def test_check_channels_by_name_modality_and_rate():
    specs = {"source": TASK.source, "target": TASK.target}
    with pytest.raises(CalibrationError, match="no source signal"):
        check_channels([_ch("PPG1", "ppg")], 64.0, specs, "b")
    check_channels([_ch("ECG", "ecg"), _ch("PPG", "ppg")], 250.0, specs, "b")  # 250 Hz PPG: resampled
    with pytest.raises(CalibrationError, match=r"at 64 Hz, too slow for the bundle.s source.*above 80 Hz"):
        check_channels([_ch("ECG", "ecg"), _ch("PPG", "ppg")], 64.0, specs, "b")
    one_rate = {"target": TASK.target}
    check_channels([_ch("wrist", "ppg")], 64.0, one_rate, "b")  # by modality when the name differs


def test_cli_record_with_synthetic_board_fails_before_recording(bundle, tmp_path, capsys, snapshot):
    """BrainFlow's synthetic board has no ECG rows: a clear error, no session opened, nothing written."""
    pytest.importorskip("brainflow")
    before = snapshot(bundle)
    code = main(["calibrate", "--bundle", str(bundle), "--record", "60", "--board", "synthetic",
                 "--record-dir", str(tmp_path / "rec")])
    err = capsys.readouterr().err
    assert code == 2 and "gives no source signal" in err and "Nothing was recorded" in err
    assert not (tmp_path / "rec").exists()
    assert snapshot(bundle) == before


def test_cli_record_needs_board(bundle, capsys):
    assert main(["calibrate", "--bundle", str(bundle), "--record", "5"]) == 2
    assert "--record needs --board" in capsys.readouterr().err
