"""The command line: help that teaches, one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from edge_bridge.cli import COMMANDS, main


def test_top_level_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in COMMANDS:
        assert verb in out


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_verb_has_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert "--verbose" in out and "edge-bridge" in out


def test_console_script_runs():
    cmd = [sys.executable, "-m", "edge_bridge.cli", "--version"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("edge-bridge ")


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.edf"
    bad.write_bytes(b"garbage" * 100)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-bridge inspect: error:") and "bad.edf" in err
    assert "Traceback" not in err


def test_log_handler_follows_stderr_swaps(capsys):
    """A background thread logging after a command returned must not write into a closed stream."""
    import io
    import logging

    from edge_bridge.log import setup_logging

    setup_logging("INFO")
    swapped = io.StringIO()
    old, sys.stderr = sys.stderr, swapped
    try:
        logging.getLogger("firmware_interface.test").info("after the swap")
    finally:
        sys.stderr = old
    assert "after the swap" in swapped.getvalue()


# --- one error policy ---------------------------------------------------------------------------------------
def test_unexpected_error_is_one_line_exit_1_with_debug_hint(monkeypatch, capsys):
    """A bug (here: a verb whose run raises ZeroDivisionError) is exit 1, one line, and says --debug."""
    from edge_bridge.commands import inspect as verb

    def broken(args):
        return 1 / 0

    monkeypatch.setattr(verb, "run", broken)
    monkeypatch.setattr(verb, "preflight", lambda args: None)
    assert main(["inspect", "x.edf"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ZeroDivisionError" in err and "--debug" in err
    assert "Traceback" not in err
    assert main(["inspect", "x.edf", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err


def test_debug_shows_the_traceback_of_an_expected_error(tmp_path, capsys):
    bad = tmp_path / "bad.edf"
    bad.write_bytes(b"garbage" * 100)
    assert main(["inspect", str(bad), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("edge-bridge inspect: error:")
    assert main(["inspect", str(bad), "-v"]) == 2  # -v is debug logging, not tracebacks
    assert "Traceback" not in capsys.readouterr().err


def test_os_and_firmware_errors_are_expected():
    from edge_bridge.cli import _expected
    from firmware_interface.errors import SourceError

    try:
        open("/nonexistent-folder/x.csv")  # noqa: SIM115 - a real OSError with its filename
    except OSError as exc:
        msg = _expected(exc)
    assert msg is not None and "/nonexistent-folder/x.csv" in msg and "No such file" in msg
    assert _expected(SourceError("tcp:127.0.0.1:1 refused")) == "tcp:127.0.0.1:1 refused"
    assert _expected(ZeroDivisionError("x")) is None


def test_usage_errors_are_one_line_naming_the_option(capsys):
    assert main(["deploy", "--duration", "nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "--duration" in err and "finite" in err and "deploy --help" in err
    assert main(["no-such-verb"]) == 2
    assert "no-such-verb" in capsys.readouterr().err


# --- one convention: every sub-command documented, old spellings warn -------------------------------------
def _subparsers():
    from edge_bridge.cli import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for verb, p in verbs.choices.items():
        nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for action, q in nested[0].choices.items():
                yield f"{verb} {action}", q
        else:
            yield verb, p


@pytest.mark.parametrize(("name", "p"), list(_subparsers()), ids=[n for n, _ in _subparsers()])
def test_every_sub_command_has_description_example_and_loudness(name, p):
    text = p.format_help()
    assert p.description and len(p.description.strip()) > 30, name
    assert f"edge-bridge {name}" in p.description, f"{name}: no example in its description"
    for flag in ("-v, --verbose", "-q, --quiet", "--debug"):
        assert flag in text, (name, flag)


@pytest.mark.parametrize(("old", "new", "dest"), [
    (["record", "--board", "synthetic", "--seconds", "5", "-o", "a.csv"],
     ["record", "--board", "synthetic", "--duration", "5", "-o", "a.csv"], "duration"),
    (["record", "--board", "synthetic", "--duration", "5", "--output", "a.csv"],
     ["record", "--board", "synthetic", "--duration", "5", "--out", "a.csv"], "output"),
    (["emulate", "--recording", "r.edf", "--port", "0", "--seconds", "3"],
     ["emulate", "--recording", "r.edf", "--port", "0", "--duration", "3"], "duration"),
    (["export", "--run", "r", "-o", "b", "--target", "jetson"],
     ["export", "--run", "r", "-o", "b", "--device", "jetson"], "device"),
    (["calibrate", "--bundle", "b", "--record", "30", "--board", "synthetic"],
     ["calibrate", "--bundle", "b", "--record", "--duration", "30", "--board", "synthetic"], "duration"),
])
def test_old_spellings_still_parse_with_a_warning(old, new, dest, capsys):
    from edge_bridge.cli import build_parser

    a_old = build_parser().parse_args(old)
    warned = capsys.readouterr().err
    a_new = build_parser().parse_args(new)
    assert "deprecated" in warned and "deprecated" not in capsys.readouterr().err
    assert getattr(a_old, dest) == getattr(a_new, dest)


def test_record_board_spec_takes_the_old_params_too(capsys):
    from edge_bridge.cli import build_parser
    from edge_bridge.commands._options import parse_board
    from edge_bridge.commands.record import parse_params

    a = build_parser().parse_args(["record", "--board", "CYTON_BOARD", "--param", "serial_port=/dev/x",
                                   "--duration", "1", "-o", "a.csv"])
    assert "deprecated" in capsys.readouterr().err
    name, params = parse_board(a.board)
    assert name == "CYTON_BOARD" and params | parse_params(a.param) == {"serial_port": "/dev/x"}
    assert parse_board("CYTON_BOARD,serial_port=/dev/x") == ("CYTON_BOARD", {"serial_port": "/dev/x"})


def test_every_command_a_message_suggests_exists():
    """Backticked `edge-bridge VERB --flag` in runtime messages: the verb and each flag exist."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    parsers = dict(_subparsers())
    pattern = re.compile(r"`edge-bridge ([^`]*)`")
    found = 0
    for package in ("edge_bridge", "deploy", "calibrate", "firmware_interface"):
        for f in (root / package).rglob("*.py"):
            for line in f.read_text().splitlines():
                for m in pattern.finditer(line):
                    if '"' not in line[:m.start()] or m.group(1).startswith(("COMMAND", "{")):
                        continue  # docstrings, and the generic "COMMAND --help"
                    words = re.sub(r"\{[^}]*\}", "X", m.group(1)).split()
                    name = " ".join(words[:2]) if " ".join(words[:2]) in parsers else words[0]
                    assert name in parsers, (f.name, m.group(0))
                    known = {s for a in parsers[name]._actions for s in a.option_strings}
                    for w in words:
                        if w.startswith("-"):
                            assert w in known, (f.name, m.group(0), w)
                    found += 1
    assert found >= 8
    # Run.require's suggestions name the verb that makes each file
    text = (root / "edge_bridge" / "pipeline.py").read_text() + (root / "edge_bridge" / "export" /
                                                                 "exporter.py").read_text()
    for verb in re.findall(r'run\.require\([^,]+, "([a-z-]+)"\)', text):
        assert verb in parsers and "--run" in parsers[verb].format_help()


def test_demo_help_says_what_make_demo_runs():
    from pathlib import Path

    from edge_bridge.commands import demo

    make = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    demo_rule = make[make.index("\ndemo:"):].split("\n\n")[0]
    assert "deploy" in demo_rule and "edge-bridge deploy" in demo.__doc__
    assert "not what `make demo` runs" in demo.__doc__


# --- no silent failure ------------------------------------------------------------------------------------
def test_failed_pretrain_leaves_no_run_folder_and_the_retry_is_not_refused(tmp_path, capsys):
    empty, other = tmp_path / "empty", tmp_path / "other"
    empty.mkdir()
    other.mkdir()
    run = tmp_path / "run"
    assert main(["pretrain", "--run", str(run), "--data", str(empty), "--no-progress"]) == 2
    assert "holds no" in capsys.readouterr().err
    assert not run.exists()
    assert main(["pretrain", "--run", str(run), "--data", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds no" in err and "made from data" not in err


def test_undo_on_failure_removes_only_what_the_step_added(tmp_path):
    from edge_bridge.runs import undo_on_failure

    run = tmp_path / "run"
    (run / "bridge").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "bridge" / "old.txt").write_text("keep")
    with pytest.raises(RuntimeError), undo_on_failure(run):
        (run / "windows.npz").write_bytes(b"new")
        (run / "bridge" / "last").mkdir()
        (run / "bridge" / "last" / "state.json").write_text("{}")
        raise RuntimeError("step failed")
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["bridge", "bridge/old.txt", "run.json"]
    with undo_on_failure(run):  # success keeps what was added
        (run / "metrics.json").write_text("{}")
    assert (run / "metrics.json").is_file()


def test_useless_models_get_one_warning_with_advice_that_helps(caplog):
    from edge_bridge.evaluate import check_decisions, check_metrics

    msg = check_decisions("the source model", 3, 1, 0.333)
    assert msg and "one class" in msg and "more subjects" in msg and "--epochs" in msg
    msg = check_decisions("the source model", 3, 3, 0.29)
    assert msg and "below chance" in msg and "1/3" in msg
    assert check_decisions("the source model", 3, 3, 0.6) is None
    assert check_decisions("a binary model", 2, 2, 0.505) is not None  # a hair above chance is no model
    with caplog.at_level("WARNING"):
        out = check_metrics({"bridge (composite)": {"balanced_accuracy": 0.5,
                                                    "confusion": [[5, 0, 0], [4, 0, 0], [3, 0, 0]]},
                             "source model": {"balanced_accuracy": 0.8,
                                              "confusion": [[5, 1, 0], [0, 4, 1], [0, 1, 3]]}})
    assert len(out) == 1 and out[0].startswith("bridge (composite) on the test subjects decides one class")
    assert "decides one class" in caplog.text


def test_calibrate_never_accepts_a_one_class_candidate():
    from calibrate.core import Scores, better

    old = Scores(0.50, 0.55, 0.40, windows=40, states=3)
    one_class = Scores(0.70, 1 / 3, 0.20, windows=40, states=3)  # agreement up 0.2, but one class
    ok, why = better(one_class, old, 0.02, 0.01, min_states=2)
    assert not ok and "at or below chance" in why and "keeping the current bridge" in why
    fine = Scores(0.70, 0.68, 0.20, windows=40, states=3)
    assert better(fine, old, 0.02, 0.01, min_states=2)[0]


# --- pictures -----------------------------------------------------------------------------------------------
def _assert_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0.01  # something is drawn


def test_confusion_png_is_a_valid_picture(tmp_path):
    from edge_bridge.evaluate import plot_confusion

    models = {"bridge (composite)": {"balanced_accuracy": 0.7, "confusion": [[8, 2], [3, 7]]},
              "source model": {"balanced_accuracy": 0.9, "confusion": [[9, 1], [1, 9]]}}
    _assert_png(plot_confusion(models, ["rest", "stress"], tmp_path / "confusion.png"))


def test_training_curve_png_is_a_valid_picture(tmp_path):
    pytest.importorskip("torch")
    from edge_bridge.train import plot_history

    history = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.1 / (e + 1),
                "val_balanced_agreement": 0.3 + 0.1 * e} for e in range(5)]
    _assert_png(plot_history(history, tmp_path / "training_curve.png"))


def test_deploy_reports_the_buffer_filling(capsys):
    """The reporter reads the live loop's counters; a plain object with those counters drives it here."""
    import time
    from types import SimpleNamespace

    from edge_bridge.commands.deploy import _BufferReport

    pipe = SimpleNamespace(summary=SimpleNamespace(samples=0, windows=0),
                           spec=SimpleNamespace(input_rate=64.0))
    with _BufferReport(pipe, 30.0, every=0.05):
        time.sleep(0.08)
        pipe.summary.samples = 64 * 12
        time.sleep(0.1)
        pipe.summary.windows = 1
        time.sleep(0.1)
    err = capsys.readouterr().err
    assert "0.0 / 30 s" in err and "12.0 / 30 s" in err
    assert err.count("buffering") <= 5  # it stops once the first window came
