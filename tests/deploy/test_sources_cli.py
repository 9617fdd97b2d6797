"""Every source from the CLI: tcp: from `emulate`, serial:, playback: of BrainFlow CSV and EDF+, `convert`.

Real processes, real BrainFlow playback boards, the real frame protocol over loopback TCP, a real (tiny) ONNX
bundle (``bundle_dir`` from conftest). Labels come from a sidecar or from EDF+ annotations; windows that
straddle a label change are counted apart and left out of the match rate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.live import LabelTrack
from edge_bridge.cli import main
from edge_bridge.recordings import Annotation, Channel, Recording, read_brainflow_csv, write_edf

from .conftest import CLASSES, ppg_like

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


def _edf(path: Path, seconds: float, spans: list[tuple[float, float, str]] = ()) -> Path:
    rec = Recording([Channel("PPG", ppg_like(seconds), 64.0, "ppg", "au")],
                    [Annotation(*s) for s in spans], start_time=dt.datetime(2024, 5, 1, 9, 30))
    return write_edf(rec, path)


def _cli(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_bridge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, **kw)


def test_emulate_over_loopback_tcp_into_deploy(bundle_dir, tmp_path):
    """The wearable's own protocol from the CLI: `emulate` serves frames, `deploy --source tcp:` predicts."""
    rec = _edf(tmp_path / "wrist.edf", 30)
    emu = subprocess.Popen([sys.executable, "-m", "edge_bridge.cli", "emulate", "--recording", str(rec),
                            "--port", "0", "--seconds", "40"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        port = None
        t0 = time.monotonic()
        while port is None and time.monotonic() - t0 < 30:
            line = emu.stderr.readline()
            found = re.search(r"connect with tcp:127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
            assert line or emu.poll() is None, "emulate ended before it served"
        assert port, "emulate never said its port"
        out = tmp_path / "p.jsonl"
        summary = tmp_path / "s.json"
        t1 = time.monotonic()
        proc = _cli("deploy", "--bundle", str(bundle_dir), "--source", f"tcp:127.0.0.1:{port}",
                    "--duration", "8", "--out", str(out), "--summary-json", str(summary))
        elapsed = time.monotonic() - t1
    finally:
        emu.terminate()
        emu.communicate(timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "TypeError" not in proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) >= 3, records  # 4 s windows every 1 s over about 8 s
    assert all(r["class"] in CLASSES and r["quality"] == "ok" for r in records)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-3 for r in records)
    s = json.loads(summary.read_text())
    assert s["stop_reason"].startswith("--duration") and s["reconnects"] == 0 and s["lost_samples"] == 0
    assert elapsed < 30  # the run ended by itself


def test_serial_source_fails_in_one_line_not_a_type_error(bundle_dir, capsys):
    pytest.importorskip("serial")
    rc = main(["deploy", "--bundle", str(bundle_dir), "--source", "serial:/dev/ttyEDGEBRIDGE_NONE",
               "--duration", "30"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(errors) == 1 and "/dev/ttyEDGEBRIDGE_NONE" in errors[0], err
    assert "TypeError" not in err and "verbose" not in err


def test_convert_writes_a_playback_file_its_sidecar_and_labels(tmp_path, capsys):
    rec = _edf(tmp_path / "S01.edf", 8, [(0, 5, "baseline"), (5, 3, "stress"), (2.0, 0, "marker")])
    out = tmp_path / "S01.csv"
    assert main(["convert", str(rec), "-o", str(out)]) == 0
    back = read_brainflow_csv(out)  # the project's reader, sidecar included
    assert back.channel_names == ["PPG"] and back.channels[0].rate == 64.0
    assert len(back.channels[0].data) == 512
    assert back.start_time == dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)
    labels = json.loads(Path(f"{out}.labels.json").read_text())["annotations"]
    assert [(a["onset"], a["duration"], a["label"]) for a in labels] == [(0, 5, "baseline"), (5, 3, "stress")]
    assert "playback:" in capsys.readouterr().err
    # an existing output is kept unless --force
    before = out.read_bytes()
    assert main(["convert", str(rec), "-o", str(out)]) == 2
    assert out.read_bytes() == before and "--force" in capsys.readouterr().err
    assert main(["convert", str(rec), "-o", str(tmp_path / "x.txt")]) == 2


def test_convert_makes_a_host_side_csv_playable(tmp_path, capsys):
    """write_brainflow_csv's compact layout is refused for playback (wrong rows) and converts cleanly."""
    from edge_bridge.commands.convert import check_playback_csv
    from edge_bridge.errors import RecordingError
    from edge_bridge.recordings import write_brainflow_csv

    compact = write_brainflow_csv(Recording([Channel("PPG", ppg_like(6), 64.0, "ppg", "au")], []),
                                  tmp_path / "compact.csv")
    with pytest.raises(RecordingError, match="edge-bridge convert"):
        check_playback_csv(compact)
    out = tmp_path / "playable.csv"
    assert main(["convert", str(compact), "-o", str(out)]) == 0
    checked = check_playback_csv(out, window_s=4.0)
    assert checked.samples == 384 and checked.rate == 64.0
    assert not Path(f"{out}.labels.json").exists()  # no labelled span, no labels file


def test_playback_of_converted_and_of_edf_reports_straddling_windows(bundle_dir, tmp_path):
    """Both ways of playing an EDF+ (converted first, or directly) score the same windows the same way."""
    rec = _edf(tmp_path / "S02.edf", 6, [(0, 4, "baseline"), (4, 2, "stress")])
    csv = tmp_path / "S02.csv"
    assert main(["convert", str(rec), "-o", str(csv)]) == 0
    runs = {}
    procs = {}
    for name, target in (("csv", csv), ("edf", rec)):
        summary = tmp_path / f"{name}.json"
        procs[name] = (subprocess.Popen(
            [sys.executable, "-m", "edge_bridge.cli", "deploy", "--bundle", str(bundle_dir), "--source",
             f"playback:{target}", "--duration", "60", "--out", str(tmp_path / f"{name}.jsonl"),
             "--summary-json", str(summary)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=ENV), summary)
    for name, (proc, summary) in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        runs[name] = json.loads(summary.read_text())
        assert "straddling a label change: 2 window(s)" in out
    for s in runs.values():
        # window [0,4) is baseline; [1,5) and [2,6) cross the change at 4 s
        assert s["stop_reason"] == "end of the recording" and s["samples"] == 384
        assert (s["labelled"], s["straddling"], s["predicted"]) == (1, 2, 3)
    assert runs["csv"]["matched"] == runs["edf"]["matched"]
    lines = [json.loads(x) for x in (tmp_path / "edf.jsonl").read_text().splitlines()]
    assert [r.get("straddling", False) for r in lines] == [False, True, True]
    assert lines[0]["label"] == "baseline" and lines[1]["label"] is None


def test_labels_from_an_edf_file_for_a_csv_playback(bundle_dir, tmp_path, capsys):
    from firmware_interface import write_playback_file

    csv = write_playback_file([("PPG", "ppg", "au", ppg_like(6))], 64.0, tmp_path / "r.csv",
                              start_timestamp=1.7e9)
    labels = _edf(tmp_path / "labels.edf", 6, [(0, 6, "stress")])
    summary = tmp_path / "s.json"
    assert main(["deploy", "--bundle", str(bundle_dir), "--source", f"playback:{csv}", "--labels",
                 str(labels), "--summary-json", str(summary), "--out", str(tmp_path / "p.jsonl")]) == 0
    s = json.loads(summary.read_text())
    assert s["labelled"] == 3 and s["straddling"] == 0


def test_label_track_straddling():
    track = LabelTrack([(0.0, 10.0, "baseline"), (10.0, 10.0, "stress"), (30.0, 5.0, "stress")])
    assert track.classify(0, 10) == ("baseline", False)
    assert track.classify(5, 15) == (None, True)  # a label change inside
    assert track.classify(15, 25) == (None, False)  # partly unlabelled: not scored, not straddling
    assert track.classify(18, 32) == (None, False)  # one label on both sides of an unlabelled gap
    assert track.classify(10, 20) == ("stress", False)
