"""README.md's "Your own recordings" block, run as written on EDF+ and CSV files this test writes.

The files (``mine/S01..S05``: odd subjects foreign EDF+ with channels ``ECG II``/``Wrist``, even ones 128 Hz
BrainFlow CSV; ``site/chest.edf`` + ``site/wrist.csv`` recorded by two devices at once; labels spelled
``Rest``/``TSST``/``Fun``) come from ``tests/test_own_data.py``. Every command of the block runs with the
README's words, in its order, in a temp folder, with three kinds of additions said here:
- the training verbs get ``--epochs`` 1-2, tiny backbones and ``--no-progress`` (sizes, not meaning);
- the playback ``deploy`` is only parsed: the playback board streams in real time, so its first window
  needs 60 s of signal (tests/deploy/test_sources_cli.py streams playback files end to end on a bundle
  with 4 s windows);
- ``emulate ... &`` runs as a background process, as the shell would, while the next ``deploy`` reads it.
So the path export -> calibrate -> fresh start -> rollback -> fresh start -> deploy over tcp from emulate
runs for real (when calibrate keeps v0001, as tiny models may make it, the test publishes a changed bridge
through calibrate's own publish step: see ``_publish_perturbed_bridge``); the wall time and every warning line
print at the end (``-s``).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_bridge.cli import build_parser, main
from tests.test_own_data import calibration_pair, own_dataset

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = {"pretrain": ["--epochs", "1", "--backbone-config",
                     '{"widths": [8, 8, 8], "strides": [1, 2, 2], "kernel": 3}'],
        "fit-source": ["--epochs", "2", "--backbone-config", '{"d_model": 16, "n_blocks": 3, "n_heads": 2}'],
        "train": ["--epochs", "2"], "evaluate": []}


def own_data_block() -> list[tuple[list[str], bool]]:
    """``(argv, background)`` of each command in the README's "Your own recordings" bash block."""
    text = README.read_text()
    section = text.split("### Your own recordings", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "README.md has no bash block under 'Your own recordings'"
    out = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        background = bool(words) and words[-1] == "&"
        words = words[:-1] if background else words
        if words:
            assert words[0] == "edge-bridge", line
            out.append((words[1:], background))
    return out


def _wait_until_listening(proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Block until ``emulate`` says it listens on its port, as a person would wait before starting deploy."""
    import selectors

    sel = selectors.DefaultSelector()
    assert proc.stderr is not None
    sel.register(proc.stderr, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        if sel.select(timeout=max(0.0, end - time.monotonic())):
            line = proc.stderr.readline()
            seen.append(line)
            if "on 127.0.0.1:" in line:  # listening (the "connect with" line comes once a client is in)
                return
            if not line and proc.poll() is not None:
                break
    raise AssertionError(f"emulate did not start listening: {''.join(seen)[-1500:]}")


def _current(bundle: Path) -> int:
    return int(json.loads((bundle / "manifest.json").read_text())["bridges"]["current"])


def _publish_perturbed_bridge(bundle: Path) -> None:
    """What an accepted refit does, for when this test's tiny models fail calibrate's validation.

    At these sizes the source model and the bridge are weak, so calibrate may keep v0001 (it says why, which
    the caller checks). The rest of the block is about what follows a publish, so the test publishes one
    through calibrate's own publish step: v0001's graph with its first 2-D weight scaled by 1.1 (outputs that
    differ from v0001's golden file, the case that once failed the fresh start), its own golden file computed
    by ONNX Runtime on publish.
    """
    import onnx
    from onnx import numpy_helper

    from calibrate.core import publish_candidate

    model = onnx.load(bundle / "bridges/v0001.onnx")
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.1, init.name))
    weights = (bundle / "bridges/v0001.safetensors").read_bytes()
    assert publish_candidate(bundle, 1, model.SerializeToString(), weights, {"origin": "test"}) == 2


def test_the_own_data_block_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    own_dataset(tmp_path / "mine")
    calibration_pair(tmp_path / "site", minutes=8.0)
    t0 = time.perf_counter()
    errs: list[str] = []
    emulator: subprocess.Popen[str] | None = None
    verbs = []
    try:
        for argv, background in own_data_block():
            verbs.append(argv[0])
            build_parser().parse_args(argv)  # every command parses as written
            if argv[0] == "deploy" and any(a.startswith("playback:") for a in argv):
                continue  # real time: parsed only (module docstring)
            if background:
                emulator = subprocess.Popen([sys.executable, "-m", "edge_bridge.cli", *argv], text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                _wait_until_listening(emulator)
                continue
            extra = [*TINY[argv[0]], "--no-progress"] if argv[0] in TINY else []
            extra += ["--no-progress"] if argv[0] == "select" else []
            code = main([*argv, *extra])
            out = capsys.readouterr()
            errs.append(out.err)
            assert code == 0, (argv, out.err[-2000:])
            assert "Traceback" not in out.err + out.out
            if argv[0] == "calibrate" and "--paired" in argv:
                published = _current(tmp_path / "mine.bundle") == 2
                assert published or "kept v0001" in out.err, out.err[-600:]  # a refusal says why
                if not published:
                    _publish_perturbed_bridge(tmp_path / "mine.bundle")
            if argv[0] == "calibrate" and "--rollback" in argv:
                assert _current(tmp_path / "mine.bundle") == 1
    finally:
        if emulator is not None:
            emulator.kill()
            emulator.wait()
    assert verbs.count("deploy") >= 4 and "convert" in verbs and "emulate" in verbs
    # the fresh starts self-tested the version that was current (v0002 after calibrate, v0001 after rollback)
    starts = [e for e in errs if "self-test of bridge" in e]
    assert re.search(r"self-test of bridge v0002", starts[0]) and re.search(r"self-test of bridge v0001",
                                                                            starts[-1])
    rows = [json.loads(line) for line in (tmp_path / "tcp.jsonl").read_text().splitlines() if line.strip()]
    predicted = [r for r in rows if r.get("class") is not None]
    assert predicted, "no window predicted over tcp"
    classes = set(json.loads((tmp_path / "mine.bundle/manifest.json").read_text())["classes"])
    assert {r["class"] for r in predicted} <= classes
    assert (tmp_path / "S03.csv").is_file() and (tmp_path / "S03.csv.labels.json").is_file()
    wall = time.perf_counter() - t0
    warnings = [line for e in errs for line in e.splitlines() if re.search(r"warn", line, re.IGNORECASE)]
    with capsys.disabled():
        print(f"\nREADME own-data block: {wall:.1f} s wall, {len(warnings)} warning line(s)")
        for line in warnings:
            print(f"  {line}")
