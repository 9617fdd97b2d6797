"""The report of a labelled recording: metrics against hand-computed ones, the summary, the PNG timeline."""

from __future__ import annotations

import json

import pytest

from deploy.report import ReportError, WindowScores, classification_report, timeline_path, write_timeline
from edge_bridge.cli import main

from .conftest import CLASSES, ppg_like

B, S, A = CLASSES  # baseline, stress, amusement
P = {B: 0.6, S: 0.3, A: 0.1}


def _scores() -> WindowScores:
    """A small labelled stream: a straddling window, an unlabelled one, and amusement never predicted."""
    ws = WindowScores(list(CLASSES))
    rows = [((0, 4), B, False, B), ((1, 5), B, False, S), ((2, 6), B, False, B),
            ((3, 7), None, True, A),  # across the change at 6 s: counted apart, its amusement never scored
            ((6, 10), S, False, S), ((7, 11), S, False, B),
            ((8, 12), A, False, S), ((9, 13), A, False, S),
            ((20, 24), None, False, A)]  # outside every label
    for (t0, t1), truth, straddles, pred in rows:
        ws.add(t0, t1, truth, straddles, pred, P)
    return ws


def test_metrics_match_the_hand_computed_ones():
    r = _scores().report()
    # by hand: baseline 2 of 3 right, stress 1 of 2, amusement 0 of 2 (predicted only where not scored)
    assert r["windows"] == 7 and r["straddling"] == 1 and r["unlabelled"] == 1
    assert r["recall"] == pytest.approx({B: 2 / 3, S: 1 / 2, A: 0.0})
    assert r["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert r["accuracy"] == pytest.approx(3 / 7)
    assert r["confusion"]["matrix"] == [[2, 1, 0], [1, 1, 0], [0, 2, 0]]
    assert r["never_predicted"] == [A]
    text = "\n".join(_scores().lines())
    assert "balanced accuracy 0.389 over 7" in text and "1 straddling" in text
    assert "never predicted: amusement" in text and "amusement 0.00 (2)" in text


def test_a_class_absent_from_the_labels_does_not_enter_the_balanced_accuracy():
    r = classification_report([B, B, S], [B, S, S], CLASSES)
    assert r["recall"][A] is None and r["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    with pytest.raises(ReportError, match="not among the model's classes"):
        classification_report(["sleep"], [B], CLASSES)
    with pytest.raises(ReportError, match="pair up"):
        classification_report([B], [], CLASSES)


def test_timeline_png_is_written_beside_the_predictions(tmp_path):
    path = write_timeline(timeline_path(tmp_path / "predictions.jsonl"), _scores(),
                          [(0, 6, B), (6, 2, S), (8, 6, A)])
    assert path == tmp_path / "predictions.timeline.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ReportError, match="no predicted window"):
        write_timeline(tmp_path / "empty.png", WindowScores(list(CLASSES)), [])


def test_deploy_summary_reports_any_labelled_recording(bundle_dir, tmp_path, capsys):
    """A labels sidecar beside a playback CSV (not the demo): the summary's report equals the one worked
    out here from the predictions file and the labels, straddling windows apart, and the PNG is drawn."""
    from firmware_interface import write_playback_file

    csv = write_playback_file([("PPG", "ppg", "au", ppg_like(12))], 64.0, tmp_path / "r.csv",
                              start_timestamp=1.7e9)
    spans = [(0.0, 6.0, B), (6.0, 6.0, A)]  # 4 s windows every 1 s: 3 + 3 pure, 3 straddling
    (tmp_path / "r.csv.labels.json").write_text(json.dumps(
        {"annotations": [{"onset": o, "duration": d, "label": label} for o, d, label in spans]}))
    out, summary = tmp_path / "p.jsonl", tmp_path / "s.json"
    assert main(["deploy", "--bundle", str(bundle_dir), "--source", f"playback:{csv}", "--out", str(out),
                 "--summary-json", str(summary)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    truth = [B if r["end_s"] <= 6 else A if r["start_s"] >= 6 else None for r in rows]
    scored = [(t, r["class"]) for t, r in zip(truth, rows, strict=True) if t is not None]
    assert len(rows) == 9 and len(scored) == 6
    expected = classification_report([t for t, _ in scored], [p for _, p in scored], CLASSES)
    report = json.loads(summary.read_text())["labels_report"]
    assert report["straddling"] == 3 and report["windows"] == 6
    assert report["confusion"]["matrix"] == expected["confusion"]["matrix"]
    assert report["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"])
    assert report["recall"][S] is None  # stress is no label here: not in the balanced accuracy
    text = capsys.readouterr().out
    assert f"balanced accuracy {expected['balanced_accuracy']:.3f} over 6" in text
    png = tmp_path / "p.timeline.png"
    assert f"timeline: {png}" in text and png.stat().st_size > 5000
