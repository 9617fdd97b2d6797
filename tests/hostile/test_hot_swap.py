"""Hostile input, class *hot swap*: a bridge swapped in while deploy runs must earn its place.

A live runner (real ONNX Runtime engines) with its real :class:`BridgeWatcher` thread watches a private
bundle; each case then makes a hostile version current the way a buggy tool or an attacker could
(NaN or overflowing weights, wrong shapes, its own golden outputs wrong or NaN, links, escaping paths,
damaged manifests). The watcher must keep the old bridge, say why in one event line naming the version
or the file, write nothing, and the old bridge must still self-test. One control case swaps a good bridge.

Then the per-window rule: a chain whose logits turn non-finite in the field gives rows marked invalid,
counted in the summary, never a class.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import time
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deploy.engines import load_engine
from deploy.live import BridgeWatcher, LiveConfig, LivePipeline
from deploy.runtime import CompositeRunner, bridge_golden
from edge_bridge.bundle import Bundle, publish_bridge
from tests.deploy.conftest import bridge_model, ppg_like
from tests.deploy.test_live import FakeSource, ListSink

from .conftest import Case, edit, read_manifest, sha, tree_state, write_raw_manifest


def _atomically(c: Case, mutate: Callable[[Case], None]) -> None:
    """Run ``mutate`` on a copy, then move its files in and the manifest last (one rename), so the
    watcher never sees a half-made case (as with a real publish, the manifest is the commit point)."""
    work = c.tmp / "work.bundle"
    shutil.copytree(c.bundle, work, symlinks=True)
    mutate(dataclasses.replace(c, bundle=work))
    old = tree_state(c.bundle)
    for rel, state in sorted(tree_state(work).items()):
        src, dst = work / rel, c.bundle / rel
        if rel == "manifest.json" or old.get(rel) == state:
            continue
        if state == "dir":
            dst.mkdir(exist_ok=True)
            continue
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy(src, dst)
    tmp = c.bundle / ".manifest.tmp"
    shutil.copy(work / "manifest.json", tmp)
    os.replace(tmp, c.bundle / "manifest.json")
    shutil.rmtree(work)


def _model_bytes(seed: int = 7, scale: float = 1.0, fill: float | None = None, tokens: int = 4,
                 d_out: int = 6) -> bytes:
    model = bridge_model(np.random.default_rng(seed), tokens=tokens, d_out=d_out)
    init = model.graph.initializer[0]
    w = numpy_helper.to_array(init).copy() * scale
    if fill is not None:
        w[:] = fill
    init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
    return model.SerializeToString()


def _publish(c: Case, data: bytes, golden: bool = False) -> None:
    b = Bundle.load(c.bundle)
    publish_bridge(b, data, b"w", origin="calibrate", golden=bridge_golden(b, data) if golden else None)


def _nan(c: Case) -> None:
    _publish(c, _model_bytes(fill=np.nan))


def _inf(c: Case) -> None:
    _publish(c, _model_bytes(scale=1e38))


def _wrong_shape(c: Case) -> None:
    _publish(c, _model_bytes(d_out=5))


def _renamed_input(c: Case) -> None:
    model = onnx.load_from_string(_model_bytes())
    model.graph.input[0].name = "hx"
    model.graph.node[0].input[0] = "hx"
    _publish(c, model.SerializeToString())


def _own_golden_wrong(c: Case) -> None:
    """v0002 ships expected outputs computed for another bridge."""
    b = Bundle.load(c.bundle)
    gold = bridge_golden(b, _model_bytes(seed=99))
    publish_bridge(b, _model_bytes(seed=7), b"w", origin="calibrate", golden=gold)


def _own_golden_nan(c: Case) -> None:
    _publish(c, _model_bytes(), golden=True)
    path = c.bundle / "bridges" / "v0002.golden.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["source_back.logits"] = arrays["source_back.logits"] * np.nan
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    edit(c.bundle, lambda m: m["bridges"]["versions"]["0002"]["golden"].update(sha256=sha(path)))


def _link(c: Case) -> None:
    _publish(c, _model_bytes(), golden=True)
    p = c.bundle / "bridges" / "v0002.onnx"
    shutil.copy(p, c.outside / "v0002.onnx")
    p.unlink()
    os.symlink(c.outside / "v0002.onnx", p)


def _escape(c: Case) -> None:
    _publish(c, _model_bytes(), golden=True)
    shutil.copy(c.bundle / "bridges" / "v0002.onnx", c.outside / "v0002.onnx")
    edit(c.bundle, lambda m: m["bridges"]["versions"]["0002"]["onnx"].update(
        file="../../outside/v0002.onnx"))


def _truncated(c: Case) -> None:
    data = _model_bytes()
    _publish(c, data[: len(data) // 2])


def _garbage_manifest(c: Case) -> None:
    _publish(c, _model_bytes(), golden=True)
    data = (c.bundle / "manifest.json").read_bytes()
    (c.bundle / "manifest.json").write_bytes(data[: len(data) // 2])


def _hash_mismatch(c: Case) -> None:
    _publish(c, _model_bytes(), golden=True)
    with open(c.bundle / "bridges" / "v0002.onnx", "ab") as fh:
        fh.write(b"\0")


def _current_unknown(c: Case) -> None:
    edit(c.bundle, lambda m: m["bridges"].update(current=5))


def _schema_violation(c: Case) -> None:
    _publish(c, _model_bytes(), golden=True)
    edit(c.bundle, lambda m: m["bridges"]["versions"]["0002"]["onnx"].update(precision="int4"))


def _random_bytes(c: Case) -> None:
    _publish(c, os.urandom(512))


def _zero_bridge_fine(c: Case) -> None:
    """Zero weights: finite (all-equal logits), so this one is *allowed*: no NaN, right shape."""
    _publish(c, _model_bytes(fill=0.0), golden=True)


# (id, mutate, words in the watcher's event)
REFUSED: list[tuple[str, Callable[[Case], None], tuple[str, ...]]] = [
    ("nan-weights", _nan, ("v0002", "non-finite")),
    ("overflowing-weights", _inf, ("v0002", "non-finite")),
    ("wrong-z-shape", _wrong_shape, ("v0002", "z")),
    ("renamed-input", _renamed_input, ("v0002", "hx")),
    ("own-golden-of-another-bridge", _own_golden_wrong, ("v0002", "failed")),
    ("own-golden-nan", _own_golden_nan, ("v0002", "NaN")),
    ("bridge-file-is-a-link", _link, ("v0002.onnx", "symbolic link")),
    ("bridge-path-escapes", _escape, ("bridges.versions.0002.onnx.file",)),
    ("truncated-graph", _truncated, ("v0002.onnx",)),
    ("random-bytes-graph", _random_bytes, ("v0002.onnx",)),
    ("half-written-manifest", _garbage_manifest, ("manifest.json",)),
    ("hash-mismatch", _hash_mismatch, ("v0002.onnx", "hashes to")),
    ("current-not-published", _current_unknown, ("bridges.current",)),
    ("schema-violation", _schema_violation, ("precision",)),
]


def _watch(c: Case) -> tuple[CompositeRunner, BridgeWatcher]:
    runner = CompositeRunner(Bundle.load(c.bundle), "cpu")
    runner.self_test()
    watcher = BridgeWatcher(runner, interval=0.02)
    watcher.start()
    return runner, watcher


def _wait(watcher: BridgeWatcher, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not watcher.events and time.monotonic() - t0 < timeout:
        time.sleep(0.02)


@pytest.mark.parametrize(("name", "mutate", "words"), REFUSED, ids=[c[0] for c in REFUSED])
def test_hostile_bridge_is_not_swapped_in(case, name, mutate, words):
    runner, watcher = _watch(case)
    try:
        time.sleep(0.05)  # distinct mtime from the start
        _atomically(case, mutate)
        case.snapshot()  # from here on nothing may change: the watcher only reads
        os.utime(case.bundle / "manifest.json")  # a stat change even if the mutation kept size and mtime
        _wait(watcher)
    finally:
        watcher.stop()
    try:
        assert watcher.events, "the watcher never looked at the new manifest"
        event = watcher.events[-1]
        assert "\n" not in event and "keeping bridge v0001" in event, event
        assert all(w in event for w in words), f"{words} not in: {event}"
        assert runner.bridge_version == 1 and watcher.versions == [1]
        assert runner.self_test().passed  # the old bridge still answers, unchanged
        case.unchanged()
    finally:
        runner.close()


def test_good_bridge_is_swapped_in(case):
    runner, watcher = _watch(case)
    try:
        time.sleep(0.05)
        _zero_bridge_fine(case)
        _wait(watcher)
    finally:
        watcher.stop()
    try:
        assert runner.bridge_version == 2 and "switched bridge v0001 -> v0002" in watcher.events[-1]
        assert "matches bridges/v0002.golden.npz" in watcher.events[-1]
    finally:
        runner.close()


def test_bad_then_good_ends_on_the_good_one(case):
    runner, watcher = _watch(case)
    try:
        time.sleep(0.05)
        _atomically(case, _nan)
        _wait(watcher)
        time.sleep(0.05)
        _publish(case, _model_bytes(seed=3), golden=True)
        t0 = time.monotonic()
        while runner.bridge_version != 3 and time.monotonic() - t0 < 10:
            time.sleep(0.02)
    finally:
        watcher.stop()
    try:
        assert watcher.versions == [1, 3]
        assert "v0002" in watcher.events[0] and "non-finite" in watcher.events[0]
    finally:
        runner.close()


# --- per window: non-finite logits are never a class ------------------------------------------------------
def test_non_finite_logits_give_invalid_rows(case, tmp_path):
    """An engine that starts returning NaN in the field (a backend bug, a bit flip): rows are marked
    invalid, have no class and no probabilities, are counted, and the smoother never sees them."""
    runner = CompositeRunner(Bundle.load(case.bundle), "cpu")
    path = tmp_path / "nan_bridge.onnx"
    path.write_bytes(_model_bytes(fill=np.nan))
    sink = ListSink()
    x = ppg_like(12)
    pipe = LivePipeline(runner, FakeSource(x, chunk=32), [sink], LiveConfig(watch_bridge=False,
                                                                             smoothing="ema"))
    half = len(x) // 2
    swapped = False
    orig = pipe._window

    def window(start, w):  # after a few good windows the bridge engine turns bad
        nonlocal swapped
        if not swapped and start >= half:
            runner.swap_bridge(load_engine(path, "cpu"), 1)
            swapped = True
        orig(start, w)

    pipe._window = window
    try:
        s = pipe.run()
    finally:
        runner.close()
    good = [r for r in sink.records if r.get("valid")]
    bad = [r for r in sink.records if r.get("valid") is False]
    assert good and bad and len(good) + len(bad) == s.windows
    assert all(r["class"] is None and r["probabilities"] is None and r["invalid"] for r in bad)
    assert all(r["class"] in ("baseline", "stress", "amusement") for r in good)
    assert s.invalid == len(bad) and s.predicted == len(good)
    assert any("invalid: non-finite logits" in line for line in s.lines())
    assert s.to_dict()["invalid"] == len(bad)


def test_manifest_rewritten_identically_is_not_a_swap(case):
    runner, watcher = _watch(case)
    try:
        time.sleep(0.05)
        write_raw_manifest(case.bundle, read_manifest(case.bundle))
        time.sleep(0.3)
    finally:
        watcher.stop()
    try:
        assert runner.bridge_version == 1 and watcher.events == []
    finally:
        runner.close()


def test_rollback_to_a_nan_version_is_refused(case, capsys):
    """A version an older tool published without checks (NaN chain) never becomes current by rollback."""
    from .conftest import assert_clean_refusal, run_cli

    _publish(case, _model_bytes(fill=np.nan))  # v0002, unchecked
    _publish(case, _model_bytes(seed=3), golden=True)  # v0003, good
    case.snapshot()
    rc, out, err = run_cli(["calibrate", "--bundle", case.bundle, "--rollback"], capsys)
    assert_clean_refusal(rc, out, err, "v0002")
    assert "non-finite" in err
    case.unchanged()
    assert Bundle.load(case.bundle).manifest.current_bridge == 3


# --- through the real CLI while it streams ----------------------------------------------------------------
def test_deploy_streaming_keeps_its_bridge_when_a_nan_one_is_published(case, tmp_path):
    """`edge-bridge deploy` over BrainFlow's playback board; a NaN bridge is published mid-stream (as an
    old tool would, unchecked): every row stays a real class from v0001 and the summary says why."""
    import json
    import subprocess
    import sys

    from firmware_interface.playback import write_playback_file

    csv = case.sentinel / "rec.csv"
    write_playback_file([("PPG", "ppg", "au", ppg_like(10))], 64.0, csv, start_timestamp=1.7e9)
    out, summary = case.sentinel / "rows.jsonl", case.sentinel / "summary.json"
    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_bridge.cli", "deploy", "--bundle", str(case.bundle), "--source",
         f"playback:{csv}", "--out", str(out), "--duration", "10", "--summary-json", str(summary)],
        cwd=case.sentinel, env={**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while (not out.exists() or len(out.read_text().splitlines()) < 2) and time.monotonic() - t0 < 60:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        _atomically(case, _nan)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in stderr, stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert proc.returncode == 0, stderr
    assert len(rows) >= 4 and all(r["bridge"] == 1 for r in rows if r.get("valid"))
    assert all(r["class"] is not None for r in rows if r.get("valid"))
    assert not any(r.get("valid") is False and r.get("invalid") for r in rows)
    text = stdout + stderr + summary.read_text()
    assert "v0002" in text and "non-finite" in text and "keeping bridge v0001" in text
