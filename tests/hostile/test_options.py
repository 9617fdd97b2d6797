"""Hostile options and output paths: every refusal is one line naming the culprit, exit 2, before long work.

Table-driven: each case is a command line built in a fresh temp folder (the sentinel; also the working
directory). Each asserts: exit code 2, exactly one line on stderr besides deprecation warnings, that line
names the option or file, no traceback, nothing written or changed under the sentinel, and that the refusal
came in under 2 s (preflight: no engine loaded, no stream started, no model trained).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_bridge.cli import main

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _setup(tmp: Path) -> dict[str, str]:
    """Files and folders the cases refer to (made before the snapshot)."""
    (tmp / "bundle").mkdir()  # a folder with a manifest: the cases must fail before it is read
    (tmp / "bundle" / "manifest.json").write_text("{}")
    (tmp / "nob").mkdir()  # a folder without a manifest
    (tmp / "run").mkdir()
    (tmp / "data").mkdir()
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "rec.csv").write_text("0\t1\t2\n")
    (tmp / "file.txt").write_text("not a folder\n")
    (tmp / "exists.csv").write_text("already here\n")
    (tmp / "garbage.bin").write_bytes(bytes(range(256)) * 3)
    (tmp / "garbled").mkdir()
    (tmp / "garbled" / "run.json").write_bytes(b"\x00{not json")
    ro = tmp / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    return {k: str(v) for k, v in {
        "b": tmp / "bundle", "run": tmp / "run", "data": tmp / "data", "empty": tmp / "empty.csv",
        "rec": tmp / "rec.csv", "file": tmp / "file.txt", "exists": tmp / "exists.csv", "ro": ro,
        "missing": tmp / "no-such-dir", "tmp": tmp, "garbage": tmp / "garbage.bin",
        "garbled_run": tmp / "garbled", "nob": tmp / "nob"}.items()}


Case = tuple[str, Callable[[dict[str, str]], list[str]], str]

CASES: list[Case] = [
    # --- deploy: ranges -----
    ("deploy-duration-nan", lambda p: ["deploy", "--bundle", p["b"], "--duration", "nan"], "--duration"),
    ("deploy-duration-neg", lambda p: ["deploy", "--bundle", p["b"], "--duration", "-5"], "--duration"),
    ("deploy-duration-zero", lambda p: ["deploy", "--bundle", p["b"], "--duration", "0"], "--duration"),
    ("deploy-duration-inf", lambda p: ["deploy", "--bundle", p["b"], "--duration", "inf"], "--duration"),
    ("deploy-duration-word", lambda p: ["deploy", "--bundle", p["b"], "--duration", "ten"], "--duration"),
    ("deploy-alpha-zero", lambda p: ["deploy", "--bundle", p["b"], "--alpha", "0"], "--alpha"),
    ("deploy-alpha-big", lambda p: ["deploy", "--bundle", p["b"], "--alpha", "1.5"], "--alpha"),
    ("deploy-alpha-nan", lambda p: ["deploy", "--bundle", p["b"], "--alpha", "NaN"], "--alpha"),
    ("deploy-majority-zero", lambda p: ["deploy", "--bundle", p["b"], "--majority", "0"], "--majority"),
    ("deploy-majority-float", lambda p: ["deploy", "--bundle", p["b"], "--majority", "2.5"], "--majority"),
    ("deploy-threads-zero", lambda p: ["deploy", "--bundle", p["b"], "--threads", "0"], "--threads"),
    ("deploy-threads-neg", lambda p: ["deploy", "--bundle", p["b"], "--threads", "-2"], "--threads"),
    ("deploy-demo-minutes-nan", lambda p: ["deploy", "--demo-minutes", "nan"], "--demo-minutes"),
    ("deploy-device", lambda p: ["deploy", "--bundle", p["b"], "--device", "tpu"], "--device"),
    ("deploy-smoothing", lambda p: ["deploy", "--bundle", p["b"], "--smoothing", "kalman"], "--smoothing"),
    # --- deploy: paths -----
    ("deploy-summary-missing-dir",
     lambda p: ["deploy", "--bundle", p["b"], "--summary-json", f"{p['missing']}/s.json"], "--summary-json"),
    ("deploy-summary-is-dir", lambda p: ["deploy", "--bundle", p["b"], "--summary-json", p["data"]],
     "--summary-json"),
    ("deploy-summary-under-file",
     lambda p: ["deploy", "--bundle", p["b"], "--summary-json", f"{p['file']}/s.json"], "--summary-json"),
    ("deploy-out-missing-dir", lambda p: ["deploy", "--bundle", p["b"], "-o", f"{p['missing']}/p.jsonl"],
     "--out"),
    ("deploy-out-is-dir", lambda p: ["deploy", "--bundle", p["b"], "--out", p["data"]], "--out"),
    ("deploy-out-same-as-summary",
     lambda p: ["deploy", "--bundle", p["b"], "--out", f"{p['tmp']}/x.json", "--summary-json",
                f"{p['tmp']}/x.json"], "same file"),
    ("deploy-bundle-missing", lambda p: ["deploy", "--bundle", p["missing"]], "--bundle"),
    ("deploy-bundle-is-file", lambda p: ["deploy", "--bundle", p["file"]], "--bundle"),
    ("deploy-labels-missing", lambda p: ["deploy", "--bundle", p["b"], "--labels", f"{p['tmp']}/l.json"],
     "--labels"),
    ("deploy-labels-empty", lambda p: ["deploy", "--bundle", p["b"], "--labels", p["empty"]], "--labels"),
    ("deploy-labels-dir", lambda p: ["deploy", "--bundle", p["b"], "--labels", p["data"]], "--labels"),
    ("deploy-playback-missing", lambda p: ["deploy", "--bundle", p["b"], "--source", "playback:nope.csv"],
     "nope.csv"),
    ("deploy-playback-empty", lambda p: ["deploy", "--bundle", p["b"], "--source", f"playback:{p['empty']}"],
     "empty.csv"),
    ("deploy-source-kind", lambda p: ["deploy", "--bundle", p["b"], "--source", "wifi:abc"], "wifi"),
    ("deploy-source-no-target", lambda p: ["deploy", "--bundle", p["b"], "--source", "board:"], "board:"),
    ("deploy-source-bad-option", lambda p: ["deploy", "--bundle", p["b"], "--source", "tcp:h:1,oops"],
     "oops"),
    # --- calibrate -----
    ("cal-holdout-zero", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--holdout", "0"],
     "--holdout"),
    ("cal-holdout-one", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--holdout", "1"],
     "--holdout"),
    ("cal-holdout-nan", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--holdout", "nan"],
     "--holdout"),
    ("cal-holdout-neg", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--holdout=-0.2"],
     "--holdout"),
    ("cal-margin-neg",
     lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--margin-agreement=-0.1"],
     "--margin-agreement"),
    ("cal-margin-big", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"],
                                  "--margin-agreement", "2"], "--margin-agreement"),
    ("cal-margin-loss-nan", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"],
                                       "--margin-loss", "nan"], "--margin-loss"),
    ("cal-min-states-zero", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"],
                                       "--min-states", "0"], "--min-states"),
    ("cal-epochs-zero", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--epochs", "0"],
     "--epochs"),
    ("cal-epochs-neg", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--epochs", "-5"],
     "--epochs"),
    ("cal-record-duration-zero", lambda p: ["calibrate", "--bundle", p["b"], "--record", "--duration", "0",
                                            "--board", "synthetic"], "--duration"),
    ("cal-record-old-neg", lambda p: ["calibrate", "--bundle", p["b"], "--record=-5", "--board", "synthetic"],
     "--record"),
    ("cal-record-old-nan", lambda p: ["calibrate", "--bundle", p["b"], "--record", "nan"], "--record"),
    ("cal-record-no-duration",
     lambda p: ["calibrate", "--bundle", p["b"], "--record", "--board", "synthetic"], "--duration"),
    ("cal-duration-without-record", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"],
                                               "--duration", "5"], "--duration"),
    ("cal-record-no-board", lambda p: ["calibrate", "--bundle", p["b"], "--record", "--duration", "5"],
     "--board"),
    ("cal-board-empty-name", lambda p: ["calibrate", "--bundle", p["b"], "--record", "--duration", "5",
                                        "--board", ",serial_port=x"], "--board"),
    ("cal-board-bad-param", lambda p: ["calibrate", "--bundle", p["b"], "--record", "--duration", "5",
                                       "--board", "synthetic,port"], "--board"),
    ("cal-paired-and-record", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--record"],
     "--record"),
    ("cal-paired-missing", lambda p: ["calibrate", "--bundle", p["b"], "--paired", "gone.edf"], "gone.edf"),
    ("cal-paired-empty", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["empty"]], "empty.csv"),
    ("cal-paired-dir", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["data"]], "--paired"),
    ("cal-paired-twice", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], p["rec"]],
     "the same file"),
    ("cal-paired-twice-spelled-apart",
     lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "./rec.csv"], "the same file"),
    ("cal-report-missing-dir", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"],
                                          "--report", f"{p['missing']}/r.json"], "--report"),
    ("cal-bundle-missing", lambda p: ["calibrate", "--bundle", p["missing"], "--paired", p["rec"]],
     "--bundle"),
    ("cal-bundle-is-file", lambda p: ["calibrate", "--bundle", p["file"], "--rollback"], "--bundle"),
    ("cal-device", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--device", "gpu0"],
     "--device"),
    ("cal-rollback-zero", lambda p: ["calibrate", "--bundle", p["b"], "--rollback", "0"], "--rollback"),
    ("cal-rollback-neg", lambda p: ["calibrate", "--bundle", p["b"], "--rollback=-1"], "--rollback"),
    ("cal-run-missing", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"], "--run",
                                   p["missing"]], "--run"),
    ("cal-profile-missing", lambda p: ["calibrate", "--bundle", p["b"], "--record", "--duration", "5",
                                       "--board", "synthetic", "--profile", "p.json"], "--profile"),
    # --- record -----
    ("rec-duration-zero", lambda p: ["record", "--board", "synthetic", "--duration", "0", "-o", "o.csv"],
     "--duration"),
    ("rec-duration-nan", lambda p: ["record", "--board", "synthetic", "--duration", "nan", "-o", "o.csv"],
     "--duration"),
    ("rec-seconds-neg-old-spelling",
     lambda p: ["record", "--board", "synthetic", "--seconds=-1", "-o", "o.csv"], "--duration"),
    ("rec-chunk-zero", lambda p: ["record", "--board", "synthetic", "--duration", "1", "-o", "o.csv",
                                  "--chunk-seconds", "0"], "--chunk-seconds"),
    ("rec-out-is-dir", lambda p: ["record", "--board", "synthetic", "--duration", "1", "-o", p["data"]],
     "--out"),
    ("rec-out-exists", lambda p: ["record", "--board", "synthetic", "--duration", "1", "-o", p["exists"]],
     "--overwrite"),
    ("rec-out-under-file", lambda p: ["record", "--board", "synthetic", "--duration", "1", "-o",
                                      f"{p['file']}/o.csv"], "--out"),
    ("rec-board-empty", lambda p: ["record", "--board", "", "--duration", "1", "-o", "o.csv"], "--board"),
    ("rec-board-bad-param", lambda p: ["record", "--board", "synthetic,serial_port", "--duration", "1",
                                       "-o", "o.csv"], "--board"),
    ("rec-param-old-bad", lambda p: ["record", "--board", "synthetic", "--param", "nokey", "--duration", "1",
                                     "-o", "o.csv"], "--param"),
    ("rec-playback-file-missing",
     lambda p: ["record", "--board", "PLAYBACK_FILE_BOARD,file=gone.csv", "--duration", "1", "-o", "o.csv"],
     "gone.csv"),
    ("rec-profile-missing", lambda p: ["record", "--board", "synthetic", "--duration", "1", "-o", "o.csv",
                                       "--profile", "p.json"], "--profile"),
    # --- method verbs -----
    ("train-epochs-zero", lambda p: ["train", "--run", p["run"], "--epochs", "0"], "--epochs"),
    ("train-epochs-nan", lambda p: ["train", "--run", p["run"], "--epochs", "nan"], "--epochs"),
    ("train-batch-zero", lambda p: ["train", "--run", p["run"], "--batch-size", "0"], "--batch-size"),
    ("train-lr-zero", lambda p: ["train", "--run", p["run"], "--lr", "0"], "--lr"),
    ("train-lr-nan", lambda p: ["train", "--run", p["run"], "--lr", "nan"], "--lr"),
    ("train-lr-neg", lambda p: ["train", "--run", p["run"], "--lr=-1e-3"], "--lr"),
    ("train-threads-zero", lambda p: ["train", "--run", p["run"], "--threads", "0"], "--threads"),
    ("train-seed-neg", lambda p: ["train", "--run", p["run"], "--seed=-1"], "--seed"),
    ("train-i-neg", lambda p: ["train", "--run", p["run"], "--i=-1"], "--i"),
    ("train-j-float", lambda p: ["train", "--run", p["run"], "--j", "1.5"], "--j"),
    ("train-rank-zero", lambda p: ["train", "--run", p["run"], "--rank", "0"], "--rank"),
    ("train-prototypes-neg", lambda p: ["train", "--run", p["run"], "--prototypes=-4"], "--prototypes"),
    ("train-temperature-nan", lambda p: ["train", "--run", p["run"], "--temperature", "nan"],
     "--temperature"),
    ("train-run-is-file", lambda p: ["train", "--run", p["file"]], "--run"),
    ("train-run-under-file", lambda p: ["train", "--run", f"{p['file']}/r"], "--run"),
    ("pretrain-data-missing", lambda p: ["pretrain", "--run", f"{p['tmp']}/new", "--data", p["missing"]],
     "--data"),
    ("pretrain-data-empty-file", lambda p: ["pretrain", "--run", f"{p['tmp']}/new", "--data", p["empty"]],
     "--data"),
    ("fit-source-epochs-neg", lambda p: ["fit-source", "--run", p["run"], "--epochs=-3"], "--epochs"),
    ("evaluate-lr-inf", lambda p: ["evaluate", "--run", p["run"], "--lr", "inf"], "--lr"),
    ("select-run-missing-data", lambda p: ["select", "--run", f"{p['tmp']}/r2", "--data", "nodata"],
     "--data"),
    # --- simulate / demo / emulate / inspect -----
    ("sim-subjects-zero", lambda p: ["simulate", f"{p['tmp']}/s", "--subjects", "0"], "--subjects"),
    ("sim-minutes-nan", lambda p: ["simulate", f"{p['tmp']}/s", "--minutes", "nan"], "--minutes"),
    ("sim-minutes-neg", lambda p: ["simulate", f"{p['tmp']}/s", "--minutes=-2"], "--minutes"),
    ("sim-seed-neg", lambda p: ["simulate", f"{p['tmp']}/s", "--seed=-1"], "--seed"),
    ("sim-out-is-file", lambda p: ["simulate", p["file"]], "OUT_DIR"),
    ("demo-subjects-zero", lambda p: ["demo", "-o", f"{p['tmp']}/d", "--subjects", "0"], "--subjects"),
    ("demo-out-is-file", lambda p: ["demo", "-o", p["file"]], "--out"),
    ("emu-port-big", lambda p: ["emulate", "--recording", p["rec"], "--port", "70000"], "--port"),
    ("emu-port-neg", lambda p: ["emulate", "--recording", p["rec"], "--port=-1"], "--port"),
    ("emu-bitflip-big", lambda p: ["emulate", "--recording", p["rec"], "--port", "0", "--bit-flip", "1.5"],
     "--bit-flip"),
    ("emu-drop-nan", lambda p: ["emulate", "--recording", p["rec"], "--port", "0", "--drop", "nan"],
     "--drop"),
    ("emu-spf-zero", lambda p: ["emulate", "--recording", p["rec"], "--port", "0", "--samples-per-frame",
                                "0"], "--samples-per-frame"),
    ("emu-duration-zero", lambda p: ["emulate", "--recording", p["rec"], "--port", "0", "--duration", "0"],
     "--duration"),
    ("emu-recording-missing", lambda p: ["emulate", "--recording", "gone.edf", "--port", "0"], "gone.edf"),
    ("emu-recording-empty", lambda p: ["emulate", "--recording", p["empty"], "--port", "0"], "empty.csv"),
    ("emu-profile-out-missing-dir", lambda p: ["emulate", "--recording", p["rec"], "--port", "0",
                                               "--profile-out", f"{p['missing']}/p.json"], "--profile-out"),
    ("inspect-missing", lambda p: ["inspect", "gone.edf"], "gone.edf"),
    ("inspect-empty", lambda p: ["inspect", p["empty"]], "empty.csv"),
    ("inspect-dir", lambda p: ["inspect", p["data"]], "data"),
    # --- export / bundle -----
    ("export-run-missing", lambda p: ["export", "--run", p["missing"], "-o", "b2"], "--run"),
    ("export-run-twice", lambda p: ["export", p["run"], "--run", p["run"], "-o", "b2"], "--run"),
    ("export-no-run", lambda p: ["export", "-o", "b2"], "--run"),
    ("export-out-is-file", lambda p: ["export", "--run", p["run"], "-o", p["file"]], "--out"),
    ("export-out-under-file", lambda p: ["export", "--run", p["run"], "-o", f"{p['file']}/b"], "--out"),
    ("export-threshold-big", lambda p: ["export", "--run", p["run"], "-o", "b2", "--agreement-threshold",
                                        "1.5"], "--agreement-threshold"),
    ("export-golden-zero", lambda p: ["export", "--run", p["run"], "-o", "b2", "--golden-windows", "0"],
     "--golden-windows"),
    ("export-device", lambda p: ["export", "--run", p["run"], "-o", "b2", "--device", "cuda"], "--device"),
    ("export-calibration-missing", lambda p: ["export", "--run", p["run"], "-o", "b2", "--calibration-data",
                                              "nodata"], "--calibration-data"),
    ("bundle-verify-missing", lambda p: ["bundle", "verify", p["missing"]], "BUNDLE"),
    ("bundle-info-file", lambda p: ["bundle", "info", p["file"]], "BUNDLE"),
    ("bundle-pack-no-out", lambda p: ["bundle", "pack", p["b"]], "-o/--out"),
    ("bundle-pack-out-missing-dir", lambda p: ["bundle", "pack", p["b"], "-o", f"{p['missing']}/x.tar"],
     "--out"),
    ("bundle-pack-out-is-dir", lambda p: ["bundle", "pack", p["b"], "-o", p["data"]], "--out"),
    ("bundle-unpack-missing", lambda p: ["bundle", "unpack", "gone.tar", "-o", "x"], "gone.tar"),
    ("bundle-unpack-empty", lambda p: ["bundle", "unpack", p["empty"], "-o", "x"], "empty.csv"),
    ("bundle-unpack-out-is-file", lambda p: ["bundle", "unpack", p["rec"], "-o", p["file"]], "--out"),
    ("bundle-action-unknown", lambda p: ["bundle", "sign", p["b"]], "sign"),
]

ROOT_ONLY_WRITABLE: list[Case] = [  # refused only where permissions bind (root writes anywhere)
    ("deploy-summary-readonly-dir",
     lambda p: ["deploy", "--bundle", p["b"], "--summary-json", f"{p['ro']}/s.json"], "not writable"),
    ("rec-out-readonly-dir", lambda p: ["record", "--board", "synthetic", "--duration", "1", "-o",
                                        f"{p['ro']}/o.csv"], "not writable"),
    ("cal-bundle-readonly", lambda p: ["calibrate", "--bundle", p["ro"], "--paired", p["rec"]],
     "not writable"),
    ("train-run-readonly", lambda p: ["train", "--run", p["ro"]], "not writable"),
    ("sim-out-readonly", lambda p: ["simulate", f"{p['ro']}/s"], "not writable"),
]


PAST_PREFLIGHT: list[Case] = [  # the paths are fine, the contents are not: the readers refuse, one line
    ("bundle-unpack-garbage", lambda p: ["bundle", "unpack", p["garbage"], "-o", "x"], "not a readable tar"),
    ("bundle-verify-empty-dir", lambda p: ["bundle", "verify", p["nob"]], "no manifest.json"),
    ("bundle-info-empty-dir", lambda p: ["bundle", "info", p["nob"]], "no manifest.json"),
    ("bundle-verify-empty-manifest", lambda p: ["bundle", "verify", p["b"]], "schema_version"),
    ("deploy-no-manifest", lambda p: ["deploy", "--bundle", p["nob"], "--source", "synthetic"],
     "manifest.json"),
    ("deploy-empty-manifest", lambda p: ["deploy", "--bundle", p["b"], "--source", "synthetic"],
     "schema_version"),
    ("cal-no-manifest", lambda p: ["calibrate", "--bundle", p["nob"], "--paired", p["rec"]], "manifest.json"),
    ("cal-rollback-no-manifest", lambda p: ["calibrate", "--bundle", p["nob"], "--rollback"],
     "manifest.json"),
    ("cal-empty-manifest", lambda p: ["calibrate", "--bundle", p["b"], "--paired", p["rec"]],
     "schema_version"),
    ("cal-rollback-empty-manifest", lambda p: ["calibrate", "--bundle", p["b"], "--rollback"],
     "schema_version"),
    ("inspect-garbage", lambda p: ["inspect", p["garbage"]], "garbage.bin"),
    ("inspect-csv-without-sidecar", lambda p: ["inspect", p["rec"]], "sidecar"),
    ("emulate-garbage", lambda p: ["emulate", "--recording", p["garbage"], "--port", "0"], "garbage.bin"),
    ("pretrain-no-recordings", lambda p: ["pretrain", "--run", f"{p['tmp']}/new", "--data", p["data"]],
     "holds no"),
    ("train-run-without-run-json", lambda p: ["train", "--run", p["run"], "--no-progress"], "run.json"),
    ("train-run-json-garbage", lambda p: ["train", "--run", p["garbled_run"], "--no-progress"], "run.json"),
    ("export-run-not-trained", lambda p: ["export", "--run", p["run"], "-o", "b2"], "run.json"),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(q.relative_to(root)): (q.stat().st_size, q.stat().st_mtime_ns)
            for q in root.rglob("*") if not q.is_symlink()}


def _check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           argv_of: Callable[[dict[str, str]], list[str]], culprit: str, limit: float = 2.0) -> None:
    paths = _setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = argv_of(paths)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    t0 = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - t0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip() and "is deprecated" not in line]
    assert code == 2, (argv, captured.err)
    assert len(lines) == 1, (argv, captured.err)
    assert culprit in lines[0], (argv, lines[0])
    assert "error:" in lines[0] and "Traceback" not in captured.err
    assert _snapshot(tmp_path) == before, argv  # nothing written, nothing changed
    assert elapsed < limit, (argv, elapsed)
    (tmp_path / "readonly").chmod(0o755)


@pytest.mark.parametrize(("argv_of", "culprit"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line_before_any_work(tmp_path, monkeypatch, capsys, argv_of, culprit):
    _check(tmp_path, monkeypatch, capsys, argv_of, culprit)


@pytest.mark.skipif(ROOT, reason="root may write into read-only folders, so nothing is refused there")
@pytest.mark.parametrize(("argv_of", "culprit"), [c[1:] for c in ROOT_ONLY_WRITABLE],
                         ids=[c[0] for c in ROOT_ONLY_WRITABLE])
def test_unwritable_outputs_are_refused(tmp_path, monkeypatch, capsys, argv_of, culprit):
    _check(tmp_path, monkeypatch, capsys, argv_of, culprit)


@pytest.mark.parametrize(("argv_of", "culprit"), [c[1:] for c in PAST_PREFLIGHT],
                         ids=[c[0] for c in PAST_PREFLIGHT])
def test_bad_contents_are_refused_in_one_line_and_change_nothing(tmp_path, monkeypatch, capsys, argv_of,
                                                                 culprit):
    _check(tmp_path, monkeypatch, capsys, argv_of, culprit, limit=30.0)  # may import torch first


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES + ROOT_ONLY_WRITABLE + PAST_PREFLIGHT]
    assert len(ids) == len(set(ids)) and len(CASES) >= 100
