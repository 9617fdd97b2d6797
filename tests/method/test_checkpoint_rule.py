"""train's checkpoint rule: the label-free score by default (the one select's trials rank by), the paper's
lowest val loss on request, and a resume that refuses to switch rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_bridge.bridge import load_bridge
from edge_bridge.selection.score import rank_key
from edge_bridge.train import TrainConfig, TrainingError, train_bridge


def _data(tiny, n=48):
    """Tiny related pair (as tests/method/test_train.py) with a source head that decides several classes."""
    from edge_bridge.bridge import PrototypeBridge, init_prototypes
    from edge_bridge.features import bridge_cache, source_tokens

    target, source = tiny("resnet1d"), tiny("transformer")
    with torch.no_grad():
        source.head.bias.zero_()
        source.head.weight.mul_(50)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 1, 1, generator=g)
    xt = (torch.randn(n, *target.input_shape, generator=g) + z).numpy()
    xs = (torch.randn(n, *source.input_shape, generator=g) + z).numpy()
    cache = bridge_cache(target, source, xt, xs, 1)
    s_in = source.block_input(1)
    bridge = PrototypeBridge(target.block_output(1).features, s_in.tokens, s_in.features, rank=4,
                             prototypes=6)
    init_prototypes(bridge, source_tokens(source, xs, 1).flatten(0, 1), "kmeans")
    return source, bridge, cache.subset(np.arange(36)), cache.subset(np.arange(36, 48))


@pytest.mark.parametrize("rule", ["label-free", "paper"])
def test_the_kept_epoch_is_the_rules_best(tmp_path, tiny, rule):
    source, bridge, train, val = _data(tiny)
    res = train_bridge(bridge, source, 1, train, val,
                       TrainConfig(epochs=10, batch_size=8, lr=3e-2, checkpoint_rule=rule), out_dir=tmp_path)
    keys = [rank_key(h, rule) for h in res.history]
    first_best = max(range(len(keys)), key=keys.__getitem__)  # max() keeps the first of equals, as training
    assert res.best_epoch == res.history[first_best]["epoch"]
    assert res.best_val == res.best["val_loss"] and res.checkpoint_rule == rule
    if rule == "paper":
        assert res.best_val == min(h["val_loss"] for h in res.history)
    # the saved bridge is the kept epoch's, and its val loss is the recorded one
    from edge_bridge.composite import SourceBack
    from edge_bridge.train import validate

    saved = load_bridge(tmp_path)
    assert validate(saved, SourceBack(source, 1), val)[0] == pytest.approx(res.best_val, rel=1e-5)


def test_label_free_rule_never_keeps_a_one_class_epoch_over_one_that_is_not():
    """The benchmark's second draw: the lowest-loss epoch decided one class, a later one did not."""
    one = {"epoch": 0, "val_loss": 0.4354, "val_balanced_agreement": 0.5, "val_classes": 1,
           "val_source_classes": 2}
    two = {"epoch": 1, "val_loss": 0.45, "val_balanced_agreement": 0.55, "val_classes": 2,
           "val_source_classes": 2}
    assert max([one, two], key=rank_key) is two
    assert max([one, two], key=lambda h: rank_key(h, "paper")) is one


def test_resume_refuses_another_rule_and_unknown_rules_are_refused(tmp_path, tiny):
    source, bridge, train, val = _data(tiny)
    train_bridge(bridge, source, 1, train, val, TrainConfig(epochs=2, batch_size=8), out_dir=tmp_path)
    with pytest.raises(TrainingError, match="checkpoint rule 'label-free'"):
        train_bridge(bridge, source, 1, train, val,
                     TrainConfig(epochs=3, batch_size=8, checkpoint_rule="paper"), out_dir=tmp_path,
                     resume=True)
    with pytest.raises(TrainingError, match="checkpoint_rule must be one of label-free, paper"):
        TrainConfig(checkpoint_rule="lowest")


def test_cli_train_checkpoint_rule_flag(capsys):
    from edge_bridge.cli import main

    assert main(["train", "--run", "nowhere", "--checkpoint-rule", "best"]) == 2
    assert "--checkpoint-rule invalid choice: 'best'" in capsys.readouterr().err
