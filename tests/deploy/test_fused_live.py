"""A fused (PPG + EDA) bundle live through BrainFlow's playback board, and through `edge-bridge deploy`.

The bundle is the real small fused one of ``tests/export/test_fused_export.py`` (tiny PPG and EDA
backbones, a fused prototype bridge whose EDA share moves the logits), exported once per module. The
playback files are BrainFlow CSVs written by :func:`firmware_interface.write_playback_file`, replayed
``SPEED`` times faster than real time (their sidecars keep the true rate, so the windows are the same at
any speed). Each live window is checked against the same samples read back from the file, cut and
preprocessed offline through :mod:`edge_bridge.signals` and run through :func:`deploy.runtime.run_windows`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deploy.live import LiveConfig, LiveError, LivePipeline, StreamInput
from deploy.runtime import CompositeRunner, run_windows
from edge_bridge.bundle import Bundle
from edge_bridge.signals import cut_windows, process_windows

from .conftest import ppg_like
from .list_sink import ListSink

SPEED = 10.0
PPG_RATE = 64.0
# EDA on its own board at 16 Hz (resampled to the model's 4 Hz): at 4 Hz a 4-s window has 16 samples, and
# the gate's clip check (more than 2 % of samples at an extreme) then flags every window, as one sample is
# 6 %; the task's own 60-s windows have 240 samples at 4 Hz
EDA_RATE = 16.0
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def fused_root(tmp_path_factory) -> Path:
    from tests.export.conftest import POS_I, POS_J, export_tiny, tiny_composite, tiny_task, tiny_windows
    from tests.export.test_fused_export import export_fused

    tiny = SimpleNamespace(I=POS_I, J=POS_J, task=tiny_task, composite=tiny_composite, windows=tiny_windows,
                           export=export_tiny)
    return export_fused(tiny, tmp_path_factory.mktemp("fused") / "fused.bundle").root


def eda_like(seconds: float, rate: float, seed: int = 1) -> np.ndarray:
    """Skin conductance in uS: a tonic level with a slow swing and small noise (passes the EDA gate)."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return 5.0 + 0.6 * np.sin(2 * np.pi * t / 13.0) + 0.3 * np.sin(2 * np.pi * t / 3.1) \
        + 0.01 * rng.standard_normal(t.size)


def playback(path: Path, channels: list[tuple[str, str, str, np.ndarray]], rate: float,
             speed: float = SPEED) -> Path:
    """A BrainFlow playback CSV at ``rate`` Hz, replayed ``speed`` times faster (the sidecar keeps ``rate``;
    deploy checks that the time stamps agree with it, so its tests replay in real time)."""
    from firmware_interface import write_playback_file

    csv = write_playback_file(channels, rate * speed, path)
    if speed == 1:
        return csv
    side = Path(f"{csv}.json")
    data = json.loads(side.read_text())
    data["sampling_rate"] = rate
    side.write_text(json.dumps(data))
    return csv


def read_back(csv: Path, name: str) -> np.ndarray:
    """The samples of channel ``name`` exactly as the file holds them (BrainFlow keeps 6 decimals)."""
    from edge_bridge.recordings import read_brainflow_csv

    data, _rate = read_brainflow_csv(csv).data([name])
    return data


class SpyRunner(CompositeRunner):
    """The real runner; keeps every batch of logits it returned, in order (the records carry
    probabilities only)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.logits: list[np.ndarray] = []

    def run_targets(self, windows):
        out = super().run_targets(windows)
        self.logits.append(out)
        return out


def live(root: Path, source, **cfg):
    from firmware_interface import open_source

    runner = SpyRunner(Bundle.load(root), "cpu")
    sink = ListSink()
    cfg.setdefault("watch_bridge", False)
    src = open_source(source) if isinstance(source, str) else source
    try:
        pipe = LivePipeline(runner, src, [sink], LiveConfig(**cfg))
        summary = pipe.run()
    finally:
        runner.close()
    return pipe, summary, sink.records, runner


def offline(root: Path, ppg: np.ndarray, ppg_rate: float, eda: np.ndarray, eda_rate: float,
            starts_s: list[float]) -> np.ndarray:
    """Logits of the windows starting at ``starts_s``, cut and preprocessed offline with the bundle's specs
    (each at its source's rate), through run_windows."""
    b = Bundle.load(root)
    specs = {"target": b.manifest.target.at_rate(ppg_rate), "eda": b.manifest.extra_targets[0].spec.at_rate(
        eda_rate)}
    feeds = {}
    for key, (data, spec) in {"target": (ppg, specs["target"]), "eda": (eda, specs["eda"])}.items():
        windows, starts = cut_windows(data, spec)
        idx = [int(np.flatnonzero(starts == round(s * spec.input_rate))[0]) for s in starts_s]
        feeds[key] = process_windows(np.ascontiguousarray(windows[idx]), spec, check_quality=False)
    return run_windows(b, feeds)


# --- one board carrying PPG and EDA at one rate -------------------------------------------------------------
def test_live_fused_logits_equal_the_offline_windows(fused_root, tmp_path):
    secs = 20
    csv = playback(tmp_path / "wrist.csv", [("PPG", "ppg", "au", ppg_like(secs)),
                                            ("EDA", "eda", "uS", eda_like(secs, PPG_RATE))], PPG_RATE)
    pipe, s, records, runner = live(fused_root, f"playback:{csv}")
    hop = Bundle.load(fused_root).manifest.target.hop_s
    expected = int((secs - 4) / hop) + 1
    assert s.windows == s.predicted == expected == len(records), s.lines()
    assert all(r["modalities"] == ["ppg", "eda"] for r in records)
    assert [r["start_s"] for r in records] == [k * hop for k in range(expected)]
    got = np.concatenate(runner.logits)
    want = offline(fused_root, read_back(csv, "PPG"), PPG_RATE, read_back(csv, "EDA"), PPG_RATE,
                   [r["start_s"] for r in records])
    np.testing.assert_allclose(got, want, atol=LOGIT_ATOL, rtol=0)
    # the EDA rows matter: the same PPG with the EDA played backwards gives logits 10x the tolerance away
    other = offline(fused_root, read_back(csv, "PPG"), PPG_RATE, read_back(csv, "EDA")[:, ::-1].copy(),
                    PPG_RATE, [r["start_s"] for r in records])
    assert np.abs(other - got).max() > 10 * LOGIT_ATOL
    assert any("ppg + eda windowed in lockstep" in line for line in pipe.notes)


def test_a_flat_eda_window_is_skipped_with_the_modality_named(fused_root, tmp_path):
    secs = 20
    eda = eda_like(secs, PPG_RATE)
    eda[int(8 * PPG_RATE):int(14 * PPG_RATE)] = 4.2  # 6 s flat: the windows at 8 and 10 s lie inside it
    csv = playback(tmp_path / "flat.csv", [("PPG", "ppg", "au", ppg_like(secs)), ("EDA", "eda", "uS", eda)],
                   PPG_RATE)
    _pipe, s, records, runner = live(fused_root, f"playback:{csv}")
    skipped = {r["start_s"]: r for r in records if r.get("skipped")}
    # inside the stretch: flat; the windows at 6 and 12 s overlap it (held at one value: "clipped")
    assert set(skipped) == {6.0, 8.0, 10.0, 12.0}
    assert skipped[8.0]["quality"] == skipped[10.0]["quality"] == "eda (EDA: flat)"
    assert all(r["failed_modalities"] == ["eda"] and r["quality"].startswith("eda (EDA: ")
               and r["class"] is None for r in skipped.values())
    assert s.skipped_reasons["eda (EDA: flat)"] == 2 and sum(s.skipped_reasons.values()) == 4
    assert s.predicted == s.windows - 4
    assert any("eda (EDA: flat) x2" in line for line in s.lines())
    # the predicted ones still equal the offline chain, window for window
    kept = [r for r in records if not r.get("skipped")]
    want = offline(fused_root, read_back(csv, "PPG"), PPG_RATE, read_back(csv, "EDA"), PPG_RATE,
                   [r["start_s"] for r in kept])
    np.testing.assert_allclose(np.concatenate(runner.logits), want, atol=LOGIT_ATOL, rtol=0)


def test_a_bad_ppg_window_names_ppg_not_eda(fused_root, tmp_path):
    secs = 12
    ppg = ppg_like(secs)
    ppg[int(6 * PPG_RATE):int(12 * PPG_RATE)] = 0.5  # PPG flat over the last 6 s; EDA fine
    csv = playback(tmp_path / "ppgflat.csv", [("PPG", "ppg", "au", ppg),
                                              ("EDA", "eda", "uS", eda_like(secs, PPG_RATE))], PPG_RATE)
    _pipe, s, records, _runner = live(fused_root, f"playback:{csv}")
    skipped = [r for r in records if r.get("skipped")]
    assert skipped and all(r["failed_modalities"] == ["ppg"] and r["quality"].startswith("ppg (PPG:")
                           for r in skipped)
    assert all(k.startswith("ppg (") for k in s.skipped_reasons)


def test_a_source_without_eda_is_refused_naming_it(fused_root, tmp_path):
    csv = playback(tmp_path / "ppg.csv", [("PPG", "ppg", "au", ppg_like(6))], PPG_RATE)
    from firmware_interface import open_source

    runner = CompositeRunner(Bundle.load(fused_root), "cpu")
    try:
        with pytest.raises(LiveError, match=r"needs channel 'EDA' \(eda\) but the source delivers PPG "
                                            r"\(ppg\)"):
            LivePipeline(runner, open_source(f"playback:{csv}"), [ListSink()], LiveConfig(watch_bridge=False))
    finally:
        runner.close()


# --- each modality at its own rate, from its own source -----------------------------------------------------
def test_eda_at_its_own_rate_from_its_own_playback_board(fused_root, tmp_path):
    secs = 20
    ppg_csv = playback(tmp_path / "ppg64.csv", [("PPG", "ppg", "au", ppg_like(secs))], PPG_RATE)
    eda_csv = playback(tmp_path / "eda16.csv", [("EDA", "eda", "uS", eda_like(secs, EDA_RATE))], EDA_RATE)
    from firmware_interface import open_source

    inp = StreamInput("wrist", open_source(f"playback:{ppg_csv}"),
                      extra_sources={"eda": open_source(f"playback:{eda_csv}")})
    _pipe, s, records, runner = live(fused_root, [inp])
    expected = int((secs - 4) / 2.0) + 1
    assert s.windows == s.predicted == expected, s.lines()
    assert all(r["modalities"] == ["ppg", "eda"] and r["stream"] == "wrist" for r in records)
    got = np.concatenate(runner.logits)
    want = offline(fused_root, read_back(ppg_csv, "PPG"), PPG_RATE, read_back(eda_csv, "EDA"), EDA_RATE,
                   [r["start_s"] for r in records])
    np.testing.assert_allclose(got, want, atol=LOGIT_ATOL, rtol=0)
    assert inp.extra_sources["eda"].stats.samples == secs * EDA_RATE  # read to its end, then released


def test_fallback_says_no_bridge_exists_and_skips(fused_root, tmp_path):
    secs = 12
    eda = eda_like(secs, PPG_RATE)
    eda[: int(6 * PPG_RATE)] = 3.0
    csv = playback(tmp_path / "fb.csv", [("PPG", "ppg", "au", ppg_like(secs)), ("EDA", "eda", "uS", eda)],
                   PPG_RATE)
    pipe, s, records, _runner = live(fused_root, f"playback:{csv}", missing_modality="fallback")
    assert any("fallback asked" in n and "no bridge for fewer modalities" in n for n in pipe.notes)
    skipped = [r for r in records if r.get("skipped")]
    assert [r["start_s"] for r in skipped] == [0.0, 2.0, 4.0]  # inside the flat EDA, or overlapping it
    assert all(r["failed_modalities"] == ["eda"] for r in skipped)
    assert s.predicted == s.windows - 3


def test_fused_live_refuses_auto_calibrate_and_unknown_options(fused_root, tmp_path):
    from deploy.autocal import AutoCalibrateConfig
    from firmware_interface import open_source

    csv = playback(tmp_path / "w.csv", [("PPG", "ppg", "au", ppg_like(6)),
                                        ("EDA", "eda", "uS", eda_like(6, PPG_RATE))], PPG_RATE)
    runner = CompositeRunner(Bundle.load(fused_root), "cpu")
    try:
        with pytest.raises(LiveError, match="cannot refit a fused bridge"):
            LivePipeline(runner, open_source(f"playback:{csv}"), [ListSink()],
                         LiveConfig(auto_calibrate=AutoCalibrateConfig(record_dir=tmp_path / "ac")))
        with pytest.raises(LiveError, match="missing_modality must be one of skip, fallback"):
            LivePipeline(runner, open_source(f"playback:{csv}"), [ListSink()],
                         LiveConfig(missing_modality="guess"))
        with pytest.raises(LiveError, match=r"modality\(ies\) \['acc'\]"):
            LivePipeline(runner, [StreamInput("0", open_source(f"playback:{csv}"),
                                              extra_sources={"acc": open_source(f"playback:{csv}")})],
                         [ListSink()], LiveConfig(watch_bridge=False))
    finally:
        runner.close()


# --- gaps: no window straddles one, in any modality --------------------------------------------------------
def _two_rows(ppg: np.ndarray, eda: np.ndarray, **kw):
    """test_live's in-memory source (its gaps injected per read) carrying PPG and EDA rows at one rate."""
    from .test_live import FakeSource

    src = FakeSource(np.stack([ppg, eda]), **kw)
    src.channels = [SimpleNamespace(name="PPG", modality="ppg"), SimpleNamespace(name="EDA", modality="eda")]
    return src


def _offline_at(root: Path, ppg: np.ndarray, ppg_rate: float, eda: np.ndarray, eda_rate: float,
                starts_s: list[float]) -> np.ndarray:
    """run_windows on the windows starting at ``starts_s`` of each array (indexed by the signal clock)."""
    b = Bundle.load(root)
    feeds = {}
    for key, data, spec in (("target", ppg, b.manifest.target.at_rate(ppg_rate)),
                            ("eda", eda, b.manifest.extra_targets[0].spec.at_rate(eda_rate))):
        n = spec.window_samples
        at = [round(t * spec.input_rate) for t in starts_s]
        raw = np.stack([data[None, i:i + n] for i in at])
        feeds[key] = process_windows(raw, spec, check_quality=False)
    return run_windows(b, feeds)


def test_a_gap_on_the_board_resets_both_modalities_together(fused_root):
    secs = 30
    ppg, eda = ppg_like(secs), eda_like(secs, PPG_RATE)
    _pipe, s, records, runner = live(fused_root, _two_rows(ppg, eda, chunk=32, gaps={10: 100}))
    gap_start, gap_end = 10 * 32 / PPG_RATE, (10 * 32 + 100) / PPG_RATE
    assert s.gaps == 1 and s.windower_resets == 1 and s.skipped == 0 and s.predicted == len(records) > 5
    for r in records:
        assert r["end_s"] <= gap_start + 1e-3 or r["start_s"] >= gap_end - 1e-3, r
    assert records[1]["start_s"] == pytest.approx(gap_end, abs=1e-3)  # both start again after it
    want = _offline_at(fused_root, ppg, PPG_RATE, eda, PPG_RATE, [r["start_s"] for r in records])
    np.testing.assert_allclose(np.concatenate(runner.logits), want, atol=LOGIT_ATOL, rtol=0)


def test_a_gap_on_the_eda_board_skips_only_the_spans_it_covers(fused_root):
    from .test_live import FakeSource

    secs = 30
    ppg, eda = ppg_like(secs), eda_like(secs, EDA_RATE)
    eda_src = FakeSource(eda, rate=EDA_RATE, chunk=8, gaps={20: 16}, name="EDA", modality="eda")
    inp = StreamInput("0", FakeSource(ppg, chunk=32), extra_sources={"eda": eda_src})
    _pipe, s, records, runner = live(fused_root, [inp])
    assert s.gaps == 0 and eda_src.stats.gaps == 1  # the main target's board had none
    skipped = {r["start_s"]: r for r in records if r.get("skipped")}
    assert set(skipped) == {8.0, 10.0}  # the EDA lost 10-11 s: only the windows over it have no EDA
    assert all(r["quality"] == "eda (no window over this span: a gap)" for r in skipped.values())
    kept = [r["start_s"] for r in records if not r.get("skipped")]
    assert kept == [t for t in np.arange(0, secs - 4 + 1e-9, 2.0) if t not in skipped]
    want = _offline_at(fused_root, ppg, PPG_RATE, eda, EDA_RATE, kept)
    np.testing.assert_allclose(np.concatenate(runner.logits), want, atol=LOGIT_ATOL, rtol=0)


# --- edge-bridge deploy -------------------------------------------------------------------------------------
def test_cli_deploys_a_fused_bundle(fused_root, tmp_path, capsys):
    from edge_bridge.cli import main

    secs = 8
    csv = playback(tmp_path / "wrist.csv", [("PPG", "ppg", "au", ppg_like(secs)),
                                            ("EDA", "eda", "uS", eda_like(secs, PPG_RATE))], PPG_RATE, 1)
    out, summary = tmp_path / "p.jsonl", tmp_path / "s.json"
    code = main(["deploy", "--bundle", str(fused_root), "--source", f"playback:{csv}", "--out", str(out),
                 "--allow-unsigned", "--no-watch", "--summary-json", str(summary), "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "ppg + eda -> ecg (fused bridge)" in err and "windowed in lockstep" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    preds = [r for r in rows if "window" in r and "event" not in r]
    assert len(preds) == 3 and all(r["modalities"] == ["ppg", "eda"] and r["valid"] for r in preds)
    assert json.loads(summary.read_text())["predicted"] == 3


def test_cli_modality_source_at_its_own_rate(fused_root, tmp_path, capsys):
    from edge_bridge.cli import main

    secs = 8
    ppg_csv = playback(tmp_path / "ppg64.csv", [("PPG", "ppg", "au", ppg_like(secs))], PPG_RATE, 1)
    eda_csv = playback(tmp_path / "eda16.csv", [("EDA", "eda", "uS", eda_like(secs, EDA_RATE))], EDA_RATE, 1)
    out = tmp_path / "p.jsonl"
    code = main(["deploy", "--bundle", str(fused_root), "--source", f"playback:{ppg_csv}",
                 "--modality-source", f"eda=playback:{eda_csv}", "--out", str(out), "--allow-unsigned",
                 "--no-watch", "-q"])
    assert code == 0, capsys.readouterr().err
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    preds = [r for r in preds if "event" not in r]
    assert len(preds) == 3 and all(r["modalities"] == ["ppg", "eda"] and r["valid"] for r in preds)


@pytest.mark.parametrize(("extra", "match"), [
    ([], r"--source playback:\S+ppg\.csv: the model needs channel 'EDA' \(eda\) but the source delivers "
         r"PPG \(ppg\)"),
    (["--auto-calibrate"], "cannot refit a fused bridge"),
    (["--modality-source", "acc=synthetic"], r"further modalities are \['eda'\]"),
])
def test_cli_refusals_are_one_line(fused_root, tmp_path, capsys, extra, match):
    from edge_bridge.cli import main

    csv = playback(tmp_path / "ppg.csv", [("PPG", "ppg", "au", ppg_like(6))], PPG_RATE, 1)
    code = main(["deploy", "--bundle", str(fused_root), "--source", f"playback:{csv}", "--allow-unsigned",
                 "-q", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert re.search(match, last), err


def test_cli_help_shows_a_fused_example(capsys):
    from edge_bridge.cli import main

    with pytest.raises(SystemExit):
        main(["deploy", "--help"])
    out = capsys.readouterr().out
    assert "fused.bundle" in out and "--missing-modality" in out and "--modality-source" in out


def test_sources_file_names_each_streams_modality_sources(tmp_path):
    import argparse

    from edge_bridge.commands._options import OptionError
    from edge_bridge.commands.deploy import stream_specs

    path = tmp_path / "ward.json"
    path.write_text(json.dumps({"streams": [
        {"id": "bed1", "source": "playback:ppg1.csv", "modality_sources": {"eda": "playback:eda1.csv"}},
        {"id": "bed2", "source": "playback:both2.csv"}]}))
    specs = stream_specs(argparse.Namespace(source=None, sources=path, labels=None, modality_source=None))
    assert [(s.id, s.modality_sources) for s in specs] == [
        ("bed1", {"eda": f"playback:{tmp_path / 'eda1.csv'}"}), ("bed2", {})]  # relative to the file
    path.write_text(json.dumps({"streams": [{"source": "synthetic", "modality_sources": ["eda"]}]}))
    with pytest.raises(OptionError, match='"modality_sources" must map a fused modality to a source spec'):
        stream_specs(argparse.Namespace(source=None, sources=path, labels=None, modality_source=None))
    with pytest.raises(OptionError, match="names a further modality of the one --source"):
        stream_specs(argparse.Namespace(source=["synthetic", "synthetic"], sources=None, labels=None,
                                        modality_source=["eda=synthetic"]))
    with pytest.raises(OptionError, match="expected KEY=SPEC"):
        stream_specs(argparse.Namespace(source=["synthetic"], sources=None, labels=None,
                                        modality_source=["eda"]))
