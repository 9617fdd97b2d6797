"""Each `edge-bridge ...` command in README.md's bash blocks, as written.

Two levels, said per command:
- **parsed**: every command parses with the real CLI parser, with no deprecation warning (the README
  teaches the current spellings). Commands that need what a test cannot have (a Jetson, a board called
  NAME, published checkpoints, a recording made on site) are checked only at this level.
- **run**: the host flow (simulate -> pretrain -> fit-source -> select -> train -> evaluate -> export ->
  bundle pack) runs in a temp folder, in the README's order and with its paths, at tiny sizes: simulate's
  --subjects/--minutes are replaced by 4 and 5, the training verbs get --epochs 1 (and tiny backbones,
  --no-progress) appended. Every other word is the README's.
Lines that are not edge-bridge commands (`make ...`, `.venv/bin/pytest`, bench scripts) are not run here.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from edge_bridge.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
RUN = {"simulate", "pretrain", "fit-source", "select", "train", "evaluate", "export", "bundle"}
TINY_TARGET = '{"widths": [8, 8, 8], "strides": [1, 2, 2], "kernel": 3}'
TINY_SOURCE = '{"d_model": 16, "n_blocks": 3, "n_heads": 2}'


def readme_commands() -> list[list[str]]:
    """``edge-bridge`` command lines of the README's bash blocks (continuations joined, comments cut)."""
    text = README.read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[-1] == "&":  # run in the background (emulate beside deploy)
                words = words[:-1]
            if words and words[0] == "edge-bridge":
                out.append(words[1:])
    return out


COMMANDS = readme_commands()


def test_the_readme_has_the_flow():
    verbs = [c[0] for c in COMMANDS]
    for verb in ("simulate", "pretrain", "fit-source", "select", "train", "evaluate", "export", "bundle",
                 "deploy", "record", "calibrate"):
        assert verb in verbs, verb
    assert ["bundle", "pack", "stress.bundle", "-o", "stress.tar"] in COMMANDS  # the -o it once lacked


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_every_readme_command_parses_without_deprecated_spellings(argv, capsys):
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]
    assert "deprecated" not in capsys.readouterr().err, argv


def _tiny(argv: list[str]) -> list[str]:
    argv = list(argv)
    for flag, value in (("--subjects", "4"), ("--minutes", "5")):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
    verb = argv[0]
    if verb in ("pretrain", "fit-source", "train", "evaluate"):
        argv += ["--epochs", "1", "--no-progress"]
    if verb == "select":
        argv += ["--no-progress"]
    if verb == "pretrain":
        argv += ["--backbone-config", TINY_TARGET]
    if verb == "fit-source":
        argv += ["--backbone-config", TINY_SOURCE]
    return argv


def test_the_readme_host_flow_runs_as_written_at_tiny_sizes(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    # wesad: published checkpoints; runs/mine: the own-data path, run by tests/test_readme_own_data.py;
    # runs/fused: the fused run, made through the same verbs by tests/test_fused_run.py
    flow = [c for c in COMMANDS if c[0] in RUN and "runs/wesad" not in c and "runs/mine" not in c
            and "mine.bundle" not in c and "runs/fused" not in c]
    assert [c[0] for c in flow] == ["simulate", "pretrain", "fit-source", "select", "train", "evaluate",
                                    "export", "bundle"]
    import time

    for argv in flow:
        t0 = time.perf_counter()
        code = main(_tiny(argv))
        captured = capsys.readouterr()
        warnings = [w for w in captured.err.splitlines() if w.startswith("WARNING")]
        print(f"{argv[0]}: {time.perf_counter() - t0:.1f} s", *warnings, sep="\n  ", file=sys.__stderr__)
        assert code == 0, (argv, captured.err[-2000:])
        assert "Traceback" not in captured.err
    from matplotlib.image import imread

    for png in (tmp_path / "runs/stress/confusion.png", tmp_path / "runs/stress/bridge/training_curve.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(png).ndim == 3
    assert (tmp_path / "stress.bundle" / "manifest.json").is_file()
    assert (tmp_path / "stress.tar").stat().st_size > 0
