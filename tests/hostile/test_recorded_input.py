"""Hostile input, class *recorded input*: bad recordings are refused before they stream, in one line.

Each case writes a damaged recording into a sentinel folder and runs the real ``edge-bridge deploy --bundle B
--source playback:FILE --duration 60`` (the CLI's ``main``, in process, so the table stays fast; a sample of
cases also runs as a separate process). A case passes when the run exits 2 within 20 s (never waiting for
--duration), prints exactly one error line that names the file (and the line at fault where there is one),
shows no traceback, leaves the bundle's bytes as they were and writes nothing outside the sentinel folder.
Valid recordings, including odd but honest ones (duplicate timestamps, NaN package numbers), still stream to
the end of the file and exit 0 with the oddities counted in the summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_bridge.cli import main
from tests.deploy.conftest import build_bundle, ppg_like

RATE = 64.0
START = 1_700_000_000.0
LIMIT_S = 20.0


# --- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("hostile-bundle") / "tiny.bundle").root


@pytest.fixture
def sentinel(tmp_path, monkeypatch) -> Path:
    """Everything a case may write goes here: its inputs, the working folder and the temp folder."""
    folder = tmp_path / "sentinel"
    (folder / "tmp").mkdir(parents=True)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("TMPDIR", str(folder / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder / "tmp"))
    return folder


def _tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_symlink() or not p.is_file():
            out[str(p)] = "dir" if p.is_dir() else "other"
        else:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --- recordings -------------------------------------------------------------------------------------------
def good_csv(folder: Path, seconds: float = 6.0, name: str = "rec.csv") -> Path:
    from firmware_interface import write_playback_file

    return write_playback_file([("PPG", "ppg", "au", ppg_like(seconds, RATE))], RATE, folder / name,
                               start_timestamp=START)


def _side(csv: Path) -> dict:
    return json.loads(Path(f"{csv}.json").read_text())


def _edit_lines(csv: Path, edit: Callable[[list[list[str]], dict], None]) -> Path:
    """Apply ``edit(rows, sidecar)`` to the tab-separated fields of each line and write the file back."""
    rows = [line.split("\t") for line in csv.read_text().splitlines()]
    edit(rows, _side(csv))
    csv.write_text("".join("\t".join(r) + "\n" for r in rows))
    return csv


def _set_ts(rows: list[list[str]], side: dict, i: int, value: str) -> None:
    rows[i][side["timestamp_row"]] = value


def edf(folder: Path, seconds: float = 6.0, *, modality: str = "ppg", rate: float = RATE,
        name: str = "rec.edf", labels: bool = True) -> Path:
    from edge_bridge.recordings import Annotation, Channel, Recording, write_edf

    ann = [Annotation(0.0, seconds / 2, "baseline"), Annotation(seconds / 2, seconds / 2, "stress")]
    rec = Recording([Channel(modality.upper(), ppg_like(seconds, rate), rate, modality, "au")],
                    ann if labels else [])
    return write_edf(rec, folder / name)


def _with_sidecar(folder: Path, body: bytes, name: str = "rec.csv") -> Path:
    """``body`` as a CSV beside a valid sidecar (so the damage is in the data, not the sidecar)."""
    ref = good_csv(folder, name="ref.csv")
    path = folder / name
    path.write_bytes(body)
    Path(f"{path}.json").write_text(Path(f"{ref}.json").read_text())
    return path


def _residecar(csv: Path, **changes: object) -> Path:
    side = _side(csv)
    side.update(changes)
    Path(f"{csv}.json").write_text(json.dumps(side))
    return csv


# --- the table --------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    make: Callable[[Path], Path]  # writes the input into the sentinel folder, returns the spec target
    line: int | None = None  # the line (1-based) the error must name
    args: tuple[str, ...] = ()


def _wrong_width_block(d: Path) -> Path:
    return _edit_lines(good_csv(d), lambda rows, s: [r.pop() for r in rows[100:150]])


def _width_one_line(d: Path) -> Path:
    return _edit_lines(good_csv(d), lambda rows, s: rows[250].append("0.0"))


def _non_numeric(d: Path) -> Path:
    return _edit_lines(good_csv(d), lambda rows, s: rows[49].__setitem__(s["channels"][0]["row"], "abc"))


def _numeric_prefix(d: Path) -> Path:  # BrainFlow's parser would read "1.5x" as 1.5
    return _edit_lines(good_csv(d), lambda rows, s: rows[77].__setitem__(s["channels"][0]["row"], "1.5x"))


def _empty_field(d: Path) -> Path:
    return _edit_lines(good_csv(d), lambda rows, s: rows[9].__setitem__(s["channels"][0]["row"], ""))


def _text_header(d: Path) -> Path:
    csv = good_csv(d)
    n = len(csv.read_text().splitlines()[0].split("\t"))
    csv.write_text("\t".join(f"col{i}" for i in range(n)) + "\n" + csv.read_text())
    return csv


def _nan_ts(d: Path) -> Path:
    return _edit_lines(good_csv(d), lambda rows, s: _set_ts(rows, s, 29, "nan"))


def _all_nan_ts(d: Path) -> Path:
    return _edit_lines(good_csv(d), lambda rows, s: [_set_ts(rows, s, i, "nan") for i in range(len(rows))])


def _inf_ts(d: Path) -> Path:
    return _edit_lines(good_csv(d), lambda rows, s: _set_ts(rows, s, 199, "inf"))


def _backwards(d: Path) -> Path:
    return _edit_lines(good_csv(d), lambda rows, s: _set_ts(rows, s, 199, f"{START - 5:.6f}"))


def _concatenated(d: Path) -> Path:  # two recordings glued together: time restarts
    csv = good_csv(d)
    csv.write_text(csv.read_text() * 2)
    return csv


def _zero_ts(d: Path) -> Path:
    return _edit_lines(good_csv(d), lambda rows, s: [_set_ts(rows, s, i, "0.0") for i in range(len(rows))])


def _jump(d: Path) -> Path:  # the playback board would sleep a day between two samples
    def edit(rows: list[list[str]], s: dict) -> None:
        for i in range(150, len(rows)):
            _set_ts(rows, s, i, f"{float(rows[i][s['timestamp_row']]) + 86400:.6f}")
    return _edit_lines(good_csv(d), edit)


def _slow_pace(d: Path) -> Path:  # timestamps 1 s apart: the file would play 64 times too slowly
    def edit(rows: list[list[str]], s: dict) -> None:
        for i in range(len(rows)):
            _set_ts(rows, s, i, f"{START + i:.6f}")
    return _edit_lines(good_csv(d), edit)


def _rate_lie(d: Path) -> Path:
    return _residecar(good_csv(d), sampling_rate=250.0)


def _too_short(d: Path) -> Path:
    return good_csv(d, seconds=2.0)


def _one_line(d: Path) -> Path:
    csv = good_csv(d)
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    return csv


def _truncated(d: Path) -> Path:
    csv = good_csv(d)
    raw = csv.read_bytes()
    csv.write_bytes(raw[: len(raw) - 7])
    return csv


def _empty_lines(d: Path) -> Path:
    return _with_sidecar(d, b"\n" * 500)


def _blank_lines_inside(d: Path) -> Path:
    csv = good_csv(d)
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:120]) + "\n\n\n" + "".join(lines[120:]))
    return csv


def _zero_bytes(d: Path) -> Path:
    return _with_sidecar(d, b"")


def _binary(d: Path) -> Path:
    return _with_sidecar(d, np.random.default_rng(3).integers(0, 256, 20000, dtype=np.uint8).tobytes())


def _binary_with_newline(d: Path) -> Path:
    rng = np.random.default_rng(4)
    return _with_sidecar(d, rng.integers(0, 256, 20000, dtype=np.uint8).tobytes() + b"\n")


def _utf16(d: Path) -> Path:
    csv = good_csv(d)
    csv.write_bytes(csv.read_text().encode("utf-16"))
    return csv


def _commas(d: Path) -> Path:  # an ordinary comma-separated CSV, not BrainFlow's tab-separated one
    csv = good_csv(d)
    csv.write_text(csv.read_text().replace("\t", ","))
    return csv


def _directory(d: Path) -> Path:
    (d / "recordings").mkdir()
    return d / "recordings"


def _missing(d: Path) -> Path:
    return d / "nowhere.csv"


def _fifo(d: Path) -> Path:  # opening it to look would block forever
    path = d / "pipe.csv"
    os.mkfifo(path)
    return path


def _no_sidecar(d: Path) -> Path:
    csv = good_csv(d)
    Path(f"{csv}.json").unlink()
    return csv


def _sidecar_not_json(d: Path) -> Path:
    csv = good_csv(d)
    Path(f"{csv}.json").write_text("{not json")
    return csv


def _sidecar_rows_beyond(d: Path) -> Path:
    csv = good_csv(d)
    side = _side(csv)
    side["channels"][0]["row"] = 99
    Path(f"{csv}.json").write_text(json.dumps(side))
    return csv


def _sidecar_zero_rate(d: Path) -> Path:
    return _residecar(good_csv(d), sampling_rate=0)


def _sidecar_unknown_board(d: Path) -> Path:
    return _residecar(good_csv(d), board_id=987654)


def _other_master_board(d: Path) -> Path:  # the layout of the synthetic board, the sidecar says Cyton
    return _residecar(good_csv(d), board_id=0)


def _edf_truncated(d: Path) -> Path:
    path = edf(d)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _edf_header_only(d: Path) -> Path:
    path = edf(d)
    raw = path.read_bytes()
    header = int(raw[184:192].decode().strip())
    path.write_bytes(raw[:header])
    return path


def _edf_garbage(d: Path) -> Path:
    path = d / "rec.edf"
    path.write_text("this is not an EDF file\n" * 40)
    return path


def _edf_empty(d: Path) -> Path:
    path = d / "rec.edf"
    path.write_bytes(b"")
    return path


def _edf_wrong_modality(d: Path) -> Path:
    return edf(d, modality="ecg")


def _edf_rate_too_low(d: Path) -> Path:  # any rate above twice the band's 8 Hz edge works; not 12 Hz
    return edf(d, rate=12.0)


def _edf_too_short(d: Path) -> Path:
    return edf(d, seconds=2.0)


def _edf_bad_header_field(d: Path) -> Path:
    path = edf(d)
    raw = bytearray(path.read_bytes())
    raw[236:244] = b"abcdefgh"  # the number of data records
    path.write_bytes(bytes(raw))
    return path


def _crlf(d: Path) -> Path:  # edited on Windows: BrainFlow and numpy both read "\r\n" lines; valid
    csv = good_csv(d, seconds=5.0)
    csv.write_bytes(csv.read_bytes().replace(b"\n", b"\r\n"))
    return csv


def _bom(d: Path) -> Path:
    csv = good_csv(d)
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    return csv


def _gzip(d: Path) -> Path:  # a compressed recording under its old name
    import gzip

    csv = good_csv(d)
    csv.write_bytes(gzip.compress(csv.read_bytes()))
    return csv


def _sidecar_is_list(d: Path) -> Path:
    csv = good_csv(d)
    Path(f"{csv}.json").write_text("[]")
    return csv


def _sidecar_unknown_modality(d: Path) -> Path:
    csv = good_csv(d)
    side = _side(csv)
    side["channels"][0]["modality"] = "telepathy"
    Path(f"{csv}.json").write_text(json.dumps(side))
    return csv


def _sidecar_is_directory(d: Path) -> Path:
    csv = good_csv(d)
    Path(f"{csv}.json").unlink()
    Path(f"{csv}.json").mkdir()
    return csv


def _edf_named_csv_truncated(d: Path) -> Path:  # EDF under a .csv name is found by its header
    path = edf(d, name="rec.csv")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    return path


def _compact_layout(d: Path) -> Path:  # the host-side writer's layout: a fine recording, not a playback file
    from edge_bridge.recordings import Channel, Recording, write_brainflow_csv

    rec = Recording([Channel("PPG", ppg_like(6.0, RATE), RATE, "ppg", "au")], [])
    return write_brainflow_csv(rec, d / "compact.csv")


def _labels_missing(d: Path) -> Path:
    return good_csv(d)


def _labels_edf_truncated(d: Path) -> Path:
    path = edf(d, name="labels.edf")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 50])
    return good_csv(d)


def _labels_broken(d: Path) -> Path:
    csv = good_csv(d)
    Path(f"{csv}.labels.json").write_text('{"annotations": [{"onset": "soon"}]}')
    return csv


def _labels_nan(d: Path) -> Path:
    csv = good_csv(d)
    Path(f"{csv}.labels.json").write_text('{"annotations": [{"onset": NaN, "duration": 1, "label": "x"}]}')
    return csv


CASES = [
    Case("wrong-width-block", _wrong_width_block, line=101),
    Case("one-line-too-wide", _width_one_line, line=251),
    Case("non-numeric-field", _non_numeric, line=50),
    Case("numeric-prefix-field", _numeric_prefix, line=78),
    Case("empty-field", _empty_field, line=10),
    Case("text-header-line", _text_header, line=1),
    Case("nan-timestamp", _nan_ts, line=30),
    Case("all-nan-timestamps", _all_nan_ts, line=1),
    Case("inf-timestamp", _inf_ts, line=200),
    Case("timestamps-backwards", _backwards, line=200),
    Case("two-recordings-concatenated", _concatenated, line=385),
    Case("zero-timestamps", _zero_ts, line=1),
    Case("timestamp-jumps-a-day", _jump, line=151),
    Case("timestamps-one-second-apart", _slow_pace),
    Case("sidecar-rate-lies", _rate_lie),
    Case("too-short-for-a-window", _too_short),
    Case("single-line", _one_line),
    Case("truncated-last-line", _truncated),
    Case("file-of-empty-lines", _empty_lines),
    Case("blank-lines-inside", _blank_lines_inside, line=121),
    Case("zero-bytes", _zero_bytes),
    Case("binary", _binary),
    Case("binary-ending-in-newline", _binary_with_newline),
    Case("utf16-text", _utf16),
    Case("comma-separated", _commas),
    Case("directory", _directory),
    Case("missing-file", _missing),
    Case("fifo", _fifo),
    Case("no-sidecar", _no_sidecar),
    Case("sidecar-not-json", _sidecar_not_json),
    Case("sidecar-row-beyond-file", _sidecar_rows_beyond),
    Case("sidecar-zero-rate", _sidecar_zero_rate),
    Case("sidecar-unknown-board", _sidecar_unknown_board),
    Case("sidecar-other-master-board", _other_master_board),
    Case("not-a-master-board-layout", _compact_layout),
    Case("edf-truncated", _edf_truncated),
    Case("edf-header-only", _edf_header_only),
    Case("edf-not-edf", _edf_garbage),
    Case("edf-zero-bytes", _edf_empty),
    Case("edf-no-channel-of-the-model", _edf_wrong_modality),
    Case("edf-rate-too-low", _edf_rate_too_low),
    Case("edf-too-short", _edf_too_short),
    Case("edf-bad-header-field", _edf_bad_header_field),
    Case("byte-order-mark", _bom, line=1),
    Case("gzip-compressed", _gzip),
    Case("sidecar-is-a-list", _sidecar_is_list),
    Case("sidecar-unknown-modality", _sidecar_unknown_modality),
    Case("sidecar-is-a-directory", _sidecar_is_directory),
    Case("edf-named-csv-truncated", _edf_named_csv_truncated),
    Case("labels-file-missing", _labels_missing, args=("--labels", "no-such-labels.json")),
    Case("labels-file-is-a-directory", _labels_missing, args=("--labels", ".")),
    Case("labels-edf-truncated", _labels_edf_truncated, args=("--labels", "labels.edf")),
    Case("labels-sidecar-broken", _labels_broken),
    Case("labels-sidecar-nan-onset", _labels_nan),
]
#: names the error line must contain instead of the recording (the culprit is another file)
CULPRIT = {"labels-sidecar-broken": ".labels.json", "labels-sidecar-nan-onset": ".labels.json",
           "sidecar-not-json": ".csv.json", "sidecar-is-a-list": ".csv.json",
           "sidecar-unknown-modality": ".csv.json", "sidecar-is-a-directory": ".csv.json",
           "labels-file-missing": "no-such-labels.json", "labels-file-is-a-directory": "--labels",
           "labels-edf-truncated": "labels.edf"}
#: refused only after the stream opened (the rate is the source's, checked against the model)
NOT_A_FILE_ERROR = {"edf-rate-too-low"}


def _check_refusal(case: Case, target: Path, rc: int, err: str, elapsed: float) -> None:
    assert rc == 2, f"{case.name}: exit {rc}, expected 2; stderr:\n{err}"
    assert "Traceback" not in err, f"{case.name}: traceback\n{err}"
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, f"{case.name}: expected one error line, got {errors}"
    line = errors[0]
    culprit = CULPRIT.get(case.name, target.name)
    if case.name not in NOT_A_FILE_ERROR:
        assert culprit in line, f"{case.name}: the error does not name {culprit}: {line}"
    if case.line is not None:
        assert re.search(rf"\b(line|row) {case.line}\b", line), f"{case.name}: no line {case.line}: {line}"
    assert elapsed < LIMIT_S, f"{case.name}: took {elapsed:.1f} s (--duration is 60 s)"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_deploy_refuses_recorded_input(case: Case, bundle, sentinel, tmp_path, capsys):
    before_bundle = _tree(bundle)
    before_outside = _tree(tmp_path, skip=sentinel)
    target = case.make(sentinel)
    t0 = time.monotonic()
    rc = main(["deploy", "--bundle", str(bundle), "--source", f"playback:{target}", "--duration", "60",
               *case.args])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    _check_refusal(case, target, rc, err, elapsed)
    assert _tree(bundle) == before_bundle, "the bundle's bytes changed"
    assert _tree(tmp_path, skip=sentinel) == before_outside, "something was written outside the sentinel"
    assert not list((sentinel / "tmp").glob("edge-bridge*")), "a temporary file was left behind"


CONVERT_CASES = [c for c in CASES if c.name.startswith("edf-") and c.name not in
                 ("edf-rate-too-low", "edf-too-short", "edf-no-channel-of-the-model")]
CONVERT_CASES += [c for c in CASES if c.name in ("directory", "missing-file", "fifo", "zero-bytes", "binary",
                                                 "non-numeric-field", "timestamps-backwards")]


@pytest.mark.parametrize("case", CONVERT_CASES, ids=[c.name for c in CONVERT_CASES])
def test_convert_refuses_recorded_input(case: Case, sentinel, tmp_path, capsys):
    before_outside = _tree(tmp_path, skip=sentinel)
    target = case.make(sentinel)
    out = sentinel / "out" / "converted.csv"
    out.parent.mkdir()
    t0 = time.monotonic()
    rc = main(["convert", str(target), "-o", str(out)])
    err = capsys.readouterr().err
    _check_refusal(case, target, rc, err, time.monotonic() - t0)
    assert not list(out.parent.iterdir()), "a refused conversion left files behind"
    assert _tree(tmp_path, skip=sentinel) == before_outside


def test_convert_no_channel_of_the_asked_modality(sentinel, capsys):
    path = edf(sentinel, modality="ecg")
    rc = main(["convert", str(path), "-o", str(sentinel / "x.csv"), "--modality", "ppg"])
    err = capsys.readouterr().err
    assert rc == 2 and "no channel to write" in err and path.name in err
    assert not (sentinel / "x.csv").exists()


def test_refusals_in_a_real_process(bundle, sentinel):
    """A few cases as the shell runs them: a separate process, its own stderr, no traceback."""
    picks = {c.name: c for c in CASES}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    runs = []
    for name in ("wrong-width-block", "file-of-empty-lines", "nan-timestamp", "edf-truncated"):
        case = picks[name]
        folder = sentinel / name
        folder.mkdir()
        target = case.make(folder)
        proc = subprocess.Popen([sys.executable, "-m", "edge_bridge.cli", "deploy", "--bundle", str(bundle),
                                 "--source", f"playback:{target}", "--duration", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=sentinel)
        runs.append((case, target, proc, time.monotonic()))
    for case, target, proc, t0 in runs:  # side by side: the slow part is starting Python
        _out, err = proc.communicate(timeout=60)
        _check_refusal(case, target, proc.returncode, err, time.monotonic() - t0)


# --- valid recordings still stream ------------------------------------------------------------------------
def _dup_ts_and_nan_package(d: Path) -> Path:
    def edit(rows: list[list[str]], s: dict) -> None:
        for i in (40, 41, 90):
            _set_ts(rows, s, i, rows[i - 1][s["timestamp_row"]])
        for i in (10, 11, 12):
            rows[i][s["package_num_row"]] = "nan"
    return _edit_lines(good_csv(d, seconds=5.0), edit)


VALID = {
    "plain": lambda d: good_csv(d, seconds=5.0),
    "duplicates-and-nan-package-numbers": _dup_ts_and_nan_package,
    "edf-with-labels": lambda d: edf(d, seconds=5.0),
    "crlf-line-endings": _crlf,
}


def test_valid_recordings_stream_to_the_end(bundle, sentinel):
    """Real processes side by side: each streams its file through the playback board and stops at its end."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path]),
           "TMPDIR": str(sentinel / "tmp")}
    procs = {}
    for name, make in VALID.items():
        folder = sentinel / name
        folder.mkdir()
        target = make(folder)
        summary = folder / "summary.json"
        procs[name] = (subprocess.Popen(
            [sys.executable, "-m", "edge_bridge.cli", "deploy", "--bundle", str(bundle), "--source",
             f"playback:{target}", "--duration", "60", "--out", str(folder / "p.jsonl"), "--summary-json",
             str(summary)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=sentinel),
            time.monotonic(), summary, folder)
    for name, (proc, t0, summary, folder) in procs.items():
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{err}"
        assert "Traceback" not in err
        s = json.loads(summary.read_text())
        assert s["stop_reason"] == "end of the recording", (name, s["stop_reason"])
        assert s["reconnects"] == 0 and s["lost_samples"] == 0, (name, s)
        assert s["samples"] == 320, (name, s["samples"])  # every sample once: no replay
        assert s["predicted"] == 2, (name, s)
        assert elapsed < 55, (name, elapsed)  # --duration 60: ended by itself (side by side, so not 8 s)
        records = [json.loads(line) for line in (folder / "p.jsonl").read_text().splitlines()]
        assert [r["class"] in ("baseline", "stress", "amusement") for r in records] == [True, True]
        if name == "duplicates-and-nan-package-numbers":
            assert s["duplicate_timestamps"] == 3 and s["package_nonfinite"] == 3, s
            assert "duplicate timestamps 3" in out and "non-finite package numbers 3" in out
        if name == "edf-with-labels":  # windows [0, 4) and [1, 5) both cross the change at 2.5 s
            assert s["straddling"] == 2 and s["labelled"] == 0, s
    # (a native library keeps a session id in $TMPDIR/.ses; ours are edge-bridge-*)
    assert not list((sentinel / "tmp").glob("edge-bridge*")), "deploy left its converted EDF+ behind"


# --- fuzzing the check ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory) -> tuple[Path, bytes, str]:
    folder = tmp_path_factory.mktemp("fuzz")
    csv = good_csv(folder, seconds=5.0)
    return csv, csv.read_bytes(), Path(f"{csv}.json").read_text()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 40), st.binary(max_size=12)),
                      min_size=1, max_size=4))
def test_check_is_a_clear_yes_or_no_on_any_damage(fuzz_base, edits):
    """Any splice of bytes into a good file: the check passes it or refuses it with a RecordingError that
    names the file in one line; nothing else escapes, and a file it passes has a window's worth of samples."""
    from edge_bridge.commands.convert import check_playback_csv
    from edge_bridge.errors import RecordingError

    csv, raw, side = fuzz_base
    data = bytearray(raw)
    for at, cut, insert in edits:
        at %= len(data) + 1
        data[at:at + cut] = insert
    target = csv.with_name("fuzzed.csv")
    target.write_bytes(bytes(data))
    Path(f"{target}.json").write_text(side)
    try:
        checked = check_playback_csv(target, window_s=4.0)
    except RecordingError as exc:
        text = str(exc)
        assert "\n" not in text and target.name in text, text
        return
    assert checked.samples >= 256 and checked.rate == RATE
