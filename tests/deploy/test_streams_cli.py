"""`edge-bridge deploy` with several sources: repeated --source, a sources file, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

from edge_bridge.cli import main
from firmware_interface import write_playback_file

from .conftest import ppg_like


def _csv(path: Path, seconds: float, seed: int) -> Path:
    return write_playback_file([("PPG", "ppg", "a.u.", ppg_like(seconds, seed=seed))], 64.0, path)


def test_repeated_source_streams_in_one_process(bundle_dir, tmp_path, capsys):
    a, b = _csv(tmp_path / "a.csv", 6, 0), _csv(tmp_path / "b.csv", 6, 1)
    out, summ = tmp_path / "p.jsonl", tmp_path / "s.json"
    rc = main(["deploy", "--bundle", str(bundle_dir), "--source", f"playback:{a}", "--source",
               f"playback:{b}", "--out", str(out), "--summary-json", str(summ), "-q"])
    assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["stream"] for r in records} == {"0", "1"}
    assert all(sum(r["stream"] == k for r in records) == 3 for k in ("0", "1"))  # (6 - 4) / 1 + 1
    s = json.loads(summ.read_text())
    assert s["windows"] == 6 and set(s["streams"]) == {"0", "1"} and s["lost_samples"] == 0
    per = s["streams"].values()
    assert all(v["windows"] == 3 and v["stop_reason"] == "end of the recording" for v in per)
    text = capsys.readouterr().out  # the summary goes to stdout when the predictions go to --out
    assert "streams: 2 in one process" in text and "stream 1: 3 windows" in text


def test_sources_file_names_streams_and_their_labels(bundle_dir, tmp_path, capsys):
    (tmp_path / "ward").mkdir()
    _csv(tmp_path / "ward" / "bed1.csv", 6, 2)
    _csv(tmp_path / "ward" / "bed2.csv", 5, 3)
    (tmp_path / "ward" / "bed1.labels.json").write_text(json.dumps(
        {"annotations": [{"onset": 0, "duration": 100, "label": "stress"}]}))
    sources = tmp_path / "ward" / "ward.json"
    sources.write_text(json.dumps({"streams": [
        {"id": "bed1", "source": "playback:bed1.csv", "labels": "bed1.labels.json"},
        {"id": "bed2", "source": "playback:bed2.csv"}]}))
    summ = tmp_path / "s.json"
    rc = main(["deploy", "--bundle", str(bundle_dir), "--sources", str(sources), "--out",
               str(tmp_path / "p.jsonl"), "--summary-json", str(summ), "-q"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads(summ.read_text())["streams"]
    assert s["bed1"]["windows"] == 3 and s["bed2"]["windows"] == 2
    assert s["bed1"]["labelled"] == 3 and s["bed2"]["labelled"] == 0  # labels only where given


def test_bad_sources_files_fail_in_one_line_naming_the_file(bundle_dir, tmp_path, capsys):
    csv = _csv(tmp_path / "a.csv", 5, 0)
    cases = {
        "notjson.json": ("{streams:", "not readable JSON"),
        "empty.json": (json.dumps({"streams": []}), "non-empty list"),
        "nosource.json": (json.dumps({"streams": [{"id": "x"}]}), 'must be an object with a "source"'),
        "dup.json": (json.dumps({"streams": [{"id": "x", "source": f"playback:{csv}"},
                                             {"id": "x", "source": f"playback:{csv}"}]}), "given twice"),
        "missing.json": (json.dumps({"streams": [{"id": "x", "source": "playback:nope.csv"}]}),
                         "does not exist"),
    }
    for name, (text, words) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        rc = main(["deploy", "--bundle", str(bundle_dir), "--sources", str(path)])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert rc == 2 and len(errors) == 1 and words in errors[0], (name, err)
        assert name in errors[0] or "nope.csv" in errors[0], (name, err)
    rc = main(["deploy", "--bundle", str(bundle_dir), "--source", f"playback:{csv}", "--source",
               f"playback:{csv}", "--labels", str(tmp_path / "empty.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "--labels scores a single source" in err
