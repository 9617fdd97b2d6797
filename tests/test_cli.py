"""The command line: help that teaches, one-line errors with exit code 2."""

from __future__ import annotations

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
