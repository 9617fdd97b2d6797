"""The trial rule of ``select``: label-free score, successive halving, resume, labels never read, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge_bridge.select import Selection, SelectionError
from edge_bridge.selection.score import is_one_class, label_free_score, rank_key
from edge_bridge.selection.trial import TrialSettings, select_trial


def _entry(loss, agreement, classes=2, source_classes=2):
    return {"val_loss": loss, "val_balanced_agreement": agreement, "val_classes": classes,
            "val_source_classes": source_classes}


def test_score_is_agreement_minus_loss_and_one_class_ranks_last():
    good, lowest_loss_one_class = _entry(0.46, 0.68), _entry(0.43, 0.50, classes=1)
    assert label_free_score(good) == pytest.approx(0.22)
    assert is_one_class(lowest_loss_one_class) and not is_one_class(good)
    # the one-class bridge has the lower loss, and even a higher score would not let it win
    assert rank_key(good) > rank_key(lowest_loss_one_class)
    assert rank_key(good) > rank_key(_entry(0.0, 1.0, classes=1))
    # the paper's rule: the lowest loss, one-class or not
    assert rank_key(lowest_loss_one_class, "paper") > rank_key(good, "paper")
    # a source model that itself decides one class: the composite doing so is no fault
    assert not is_one_class(_entry(0.4, 1.0, classes=1, source_classes=1))
    assert label_free_score({"train_loss": 0.3}) == pytest.approx(-0.3)  # no val windows: the paper's
    with pytest.raises(ValueError, match="rule must be one of"):
        rank_key(good, "best")


@pytest.mark.parametrize(("rungs", "shortlist", "epochs"), [((2, 4, 8), 8, 32), ((2, 4, 8), 3, 10),
                                                           ((1, 2), 4, 6), ((2, 4, 8), 1, 0)])
def test_planned_epochs(rungs, shortlist, epochs):
    assert TrialSettings(shortlist=shortlist, rungs=rungs).planned_epochs(shortlist) == epochs


@pytest.mark.parametrize(("kw", "match"), [({"rungs": (4, 2)}, "increasing"), ({"rungs": ()}, "increasing"),
                                           ({"shortlist": 0}, "at least 1"), ({"eta": 1}, "eta")])
def test_bad_trial_settings(kw, match):
    with pytest.raises(SelectionError, match=match):
        TrialSettings(**kw)


def _pair(tiny, n=80, seed=0):
    """Tiny target/source with related inputs and a source head that decides several classes."""
    target, source = tiny("resnet1d"), tiny("transformer")
    with torch.no_grad():
        source.head.weight.mul_(50)
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, 1, 1))
    xt = (g.normal(size=(n, *target.input_shape)) + z).astype(np.float32)
    xs = (g.normal(size=(n, *source.input_shape)) + z).astype(np.float32)
    return target, source, xt, xs, np.repeat(np.arange(4), n // 4)


SMALL = TrialSettings(shortlist=4, rungs=(1, 2), batch_size=16)


def test_successive_halving_keeps_every_candidate(tmp_path, tiny):
    target, source, xt, xs, subj = _pair(tiny)
    sel = select_trial(target, source, xt[:60], xs[:60], xt[60:], xs[60:], subjects=subj[:60], settings=SMALL)
    assert sel.rule == "trial" and len(sel.candidates) == target.n_blocks * source.n_blocks
    status = [c["status"] for c in sel.candidates]
    assert status.count("chosen") == 1 and status.count("not shortlisted") == 9 - 4
    assert sum("halved at rung 0" in s for s in status) == 2  # 4 -> 2 after the first rung
    chosen = next(c for c in sel.candidates if c["status"] == "chosen")
    assert (chosen["i"], chosen["j"]) == (sel.i, sel.j) and [r["epochs"] for r in chosen["rungs"]] == [1, 2]
    assert not chosen["one_class"] and sel.trials["trial_epochs"] == 6
    # the cheap ranks follow the probe F1 of i, then CKA
    ranked = sorted(sel.candidates, key=lambda c: c["cheap_rank"])
    assert [c["probe_f1"] for c in ranked] == sorted([c["probe_f1"] for c in ranked], reverse=True)
    shortlisted = [c for c in ranked if c["status"] != "not shortlisted"]
    assert [c["cheap_rank"] for c in shortlisted] == [1, 2, 3, 4]
    # a finalist beats the halved by its score at the rung where they were halved
    halved = [c for c in sel.candidates if "halved" in c["status"]]
    survivors = [c for c in sel.candidates if len(c["rungs"]) == 2]
    assert min(rank_key(s["rungs"][0]) for s in survivors) >= max(rank_key(h["rungs"][0]) for h in halved)
    sel.save(tmp_path / "selection.json")
    sel.plot(tmp_path / "selection.png")
    assert (tmp_path / "selection.png").read_bytes()[:4] == b"\x89PNG"
    again = Selection.load(tmp_path / "selection.json")
    assert (again.i, again.j, again.rule, again.candidates) == (sel.i, sel.j, "trial", sel.candidates)


def test_shortlist_of_one_skips_the_trials(tiny):
    target, source, xt, xs, subj = _pair(tiny)
    sel = select_trial(target, source, xt[:60], xs[:60], xt[60:], xs[60:], subjects=subj[:60],
                       settings=TrialSettings(shortlist=1, rungs=(1, 2)))
    top = min(sel.candidates, key=lambda c: c["cheap_rank"])
    assert (sel.i, sel.j) == (top["i"], top["j"]) and top["status"] == "chosen" and top["rungs"] == []
    assert sel.trials["trial_epochs"] == 0 and "trials skipped" in sel.notes[0]


def test_resume_continues_an_interrupted_selection(tmp_path, tiny, monkeypatch):
    import edge_bridge.train as train_mod

    target, source, xt, xs, subj = _pair(tiny)
    args = (target, source, xt[:60], xs[:60], xt[60:], xs[60:])
    whole = select_trial(*args, subjects=subj[:60], settings=SMALL, work_dir=tmp_path / "whole")
    real, calls = train_mod.train_bridge, []

    def interrupted(*a, **kw):  # the fifth trial training is cut off: after rung 0, inside rung 1
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "train_bridge", interrupted)
    with pytest.raises(KeyboardInterrupt):
        select_trial(*args, subjects=subj[:60], settings=SMALL, work_dir=tmp_path / "cut")
    monkeypatch.setattr(train_mod, "train_bridge", real)
    assert (tmp_path / "cut" / "trials.json").is_file()
    with pytest.raises(SelectionError, match="other settings"):
        select_trial(*args, subjects=subj[:60], work_dir=tmp_path / "cut", resume=True,
                     settings=TrialSettings(shortlist=4, rungs=(1, 3), batch_size=16))
    resumed = select_trial(*args, subjects=subj[:60], settings=SMALL, work_dir=tmp_path / "cut", resume=True)
    assert (resumed.i, resumed.j) == (whole.i, whole.j)
    for a, b in zip(resumed.candidates, whole.candidates, strict=True):
        assert a["status"] == b["status"]
        assert [r["score"] for r in a["rungs"]] == pytest.approx([r["score"] for r in b["rungs"]], abs=1e-5)


def test_every_trial_one_class_falls_back_to_the_cheap_choice_and_says_so(tiny, caplog):
    target, source, xt, xs, subj = _pair(tiny)
    # a target carrying nothing: zero windows give one bridge input, so every composite decides one class
    zt = np.zeros_like(xt)
    sel = select_trial(target, source, zt[:60], xs[:60], zt[60:], xs[60:], subjects=subj[:60], settings=SMALL)
    top = min(sel.candidates, key=lambda c: c["cheap_rank"])
    assert (sel.i, sel.j) == (top["i"], top["j"]) and "decided one class" in sel.notes[0]
    assert "fell back" in caplog.text
    tried = [c for c in sel.candidates if c["rungs"]]
    assert tried and all(c["one_class"] for c in tried)


# --- the run level: labels never read, and the CLI ----------------------------------------------------------
TINY_TARGET = '{"widths": [8, 8, 8], "strides": [1, 2, 2], "kernel": 3}'
TINY_SOURCE = '{"d_model": 16, "n_blocks": 3, "n_heads": 2}'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from edge_bridge.cli import main
    from edge_bridge.simulate import simulate_dataset

    data = tmp_path_factory.mktemp("sim")
    simulate_dataset(data, "stress", subjects=4, minutes=5, seed=0)
    run = tmp_path_factory.mktemp("runs") / "run"
    common = ["--run", str(run), "--no-progress", "-q"]
    assert main(["pretrain", *common, "--data", str(data), "--task", "stress", "--epochs", "1",
                 "--backbone-config", TINY_TARGET]) == 0
    assert main(["fit-source", *common, "--epochs", "6", "--backbone-config", TINY_SOURCE]) == 0
    return run


def test_shuffled_labels_give_the_same_selection(run_dir):
    from edge_bridge.recordings.paired import Windows
    from edge_bridge.runs import Run
    from edge_bridge.selection.run import select_run

    settings = TrialSettings(shortlist=3, rungs=(2, 4), batch_size=16)
    first = select_run(Run.open(run_dir), settings=settings)
    cache = run_dir / "windows.npz"
    w = Windows.load(cache)
    shuffled = np.random.default_rng(1).permutation(w.labels)
    assert (shuffled != w.labels).any()
    w.labels = shuffled
    w.save(cache)
    second = select_run(Run.open(run_dir), settings=settings)
    assert (second.i, second.j) == (first.i, first.j)
    assert second.f1 == first.f1 and second.cka_pairs == first.cka_pairs
    for a, b in zip(second.candidates, first.candidates, strict=True):
        assert a["status"] == b["status"]
        assert [r["score"] for r in a["rungs"]] == [r["score"] for r in b["rungs"]]
    assert not (run_dir / "selection_trials").exists()  # a finished selection leaves no resume points


def test_cli_select_trial_table_and_paper_rule(run_dir, capsys):
    from edge_bridge.cli import main

    common = ["--run", str(run_dir), "--no-progress"]
    assert main(["select", *common, "--shortlist", "2", "--trial-epochs", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "trial score" in out and "chosen i=" in out and "(trial rule)" in out
    sel = json.loads((run_dir / "selection.json").read_text())
    assert sel["rule"] == "trial" and sum(c["status"] == "chosen" for c in sel["candidates"]) == 1
    assert main(["select", *common, "--rule", "paper"]) == 0
    assert "linear CKA" in capsys.readouterr().out
    assert json.loads((run_dir / "selection.json").read_text())["rule"] == "paper"
    assert main(["select", *common, "--rule", "paper", "--latency-budget-ms", "50"]) == 2
    err = capsys.readouterr().err
    assert "--latency-budget-ms needs --rule trial" in err and "Traceback" not in err
    assert main(["select", *common, "--trial-epochs", "4,2"]) == 2
    assert "increasing positive integers" in capsys.readouterr().err


def test_pareto_front_keeps_only_the_unbeaten():
    from edge_bridge.selection.plot import pareto_front

    # (latency, score): (2, 0.5) is beaten by (1, 0.6); (3, 0.9) is the slowest but the best
    pts = [(1.0, 0.6), (2.0, 0.5), (3.0, 0.9), (1.5, 0.7)]
    assert pareto_front(pts) == [0, 3, 2]
