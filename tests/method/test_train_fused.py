"""Training a fused bridge: K target fronts cached side by side, the same objective and checkpoint rule,
and the label-free fused selection."""

from __future__ import annotations

import numpy as np
import torch

from edge_bridge.bridge import load_bridge
from edge_bridge.features import bridge_cache
from edge_bridge.pipeline import BridgeSettings, make_bridge
from edge_bridge.select import select_fused
from edge_bridge.train import TrainConfig, train_bridge


def _pair(tiny, n=48, seed=0):
    t1, t2, source = tiny("resnet1d"), tiny("transformer-2ch"), tiny("transformer")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, 1, generator=g)  # a shared latent makes the modalities related
    x1 = (torch.randn(n, *t1.input_shape, generator=g) + z).numpy()
    x2 = (torch.randn(n, *t2.input_shape, generator=g) + z).numpy()
    xs = (torch.randn(n, *source.input_shape, generator=g) + z).numpy()
    return t1, t2, source, x1, x2, xs


def test_fused_cache_is_the_per_target_caches_side_by_side(tiny):
    t1, t2, source, x1, x2, xs = _pair(tiny)
    fused = bridge_cache([t1, t2], source, [x1, x2], xs, [1, 0])
    one, two = bridge_cache(t1, source, x1, xs, 1), bridge_cache(t2, source, x2, xs, 0)
    torch.testing.assert_close(fused.h, torch.cat([one.h, two.h], 1))
    torch.testing.assert_close(fused.y, one.y)


def test_fused_bridge_trains_and_reloads(tmp_path, tiny):
    t1, t2, source, x1, x2, xs = _pair(tiny)
    cache = bridge_cache([t1, t2], source, [x1, x2], xs, [1, 0])
    bridge = make_bridge([t1, t2], source, [1, 0], 1, BridgeSettings(rank=4, prototypes=6), xs, seed=0)
    d1, d2 = t1.block_output(1).features, t2.block_output(0).features
    assert bridge.input_dims == (d1, d2) and bridge.meta["i"] == [1, 0]
    s_in = source.block_input(1)
    assert bridge.count_parameters()[0] == 4 * (d1 + d2) + 4 * 6 * s_in.tokens + s_in.features * 6
    train, val = cache.subset(np.arange(36)), cache.subset(np.arange(36, 48))
    res = train_bridge(bridge, source, 1, train, val, TrainConfig(epochs=10, batch_size=8, lr=3e-2),
                       out_dir=tmp_path / "bridge")
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.8 * losses[0]
    assert "val_balanced_agreement" in res.best  # the label-free checkpoint rule ran
    back = load_bridge(tmp_path / "bridge")
    assert back.input_dims == (d1, d2)
    torch.testing.assert_close(back(val.h), bridge(val.h))


def test_fused_selection_records_each_i_and_one_j(tiny):
    t1, t2, source, x1, x2, xs = _pair(tiny, n=60)
    subjects = np.repeat(np.arange(6).astype(str), 10)
    res = select_fused([t1, t2], source, [x1, x2], xs, subjects=subjects, folds=3)
    assert len(res["i"]) == 2 and 0 <= res["j"] < source.n_blocks
    assert [len(f) for f in res["f1"]] == [t1.n_blocks, t2.n_blocks]
    assert res["i"] == [int(np.argmax(f)) for f in res["f1"]]
    assert res["j"] == int(np.argmax(res["cka"]))
