"""Bridge training: the objective, loss going down, best checkpoint, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_bridge.bridge import PrototypeBridge, init_prototypes, load_bridge
from edge_bridge.features import bridge_cache, source_tokens
from edge_bridge.train import TrainConfig, TrainingError, alignment_loss, evaluate_alignment, train_bridge


def test_alignment_loss_values():
    y = torch.randn(4, 5, 3)
    assert float(alignment_loss(y, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(alignment_loss(-y, y)) == pytest.approx(2.0, abs=1e-6)
    assert float(alignment_loss(3 * y, y)) == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert alignment_loss(y, y, "none").shape == (4,)


def _setup(tiny, n=48, i=1, j=1, seed=0):
    target, source = tiny("resnet1d"), tiny("transformer")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, 1, generator=g)  # a shared latent makes the pair related
    xt = (torch.randn(n, *target.input_shape, generator=g) + z).numpy()
    xs = (torch.randn(n, *source.input_shape, generator=g) + z).numpy()
    cache = bridge_cache(target, source, xt, xs, i)
    t_out, s_in = target.block_output(i), source.block_input(j)
    bridge = PrototypeBridge(t_out.features, s_in.tokens, s_in.features, rank=4, prototypes=6)
    init_prototypes(bridge, source_tokens(source, xs, j).flatten(0, 1), "kmeans")
    return target, source, cache, bridge, xs


def test_cache_shapes(tiny):
    target, source, cache, _, _ = _setup(tiny)
    last = source.boundaries[-1]
    assert cache.h.shape == (48, target.block_output(1).features)
    assert cache.y.shape == (48, last.tokens, last.features)


def test_training_decreases_the_loss_and_keeps_the_best(tmp_path, tiny):
    _, source, cache, bridge, _ = _setup(tiny)
    train, val = cache.subset(np.arange(36)), cache.subset(np.arange(36, 48))
    frozen = {k: v.clone() for k, v in source.state_dict().items()}
    res = train_bridge(bridge, source, 1, train, val, TrainConfig(epochs=12, batch_size=8, lr=3e-2,
                                                                  checkpoint_rule="paper"),
                       out_dir=tmp_path / "bridge")
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.7 * losses[0]
    assert res.best_val == min(h["val_loss"] for h in res.history)
    from edge_bridge.composite import SourceBack

    assert evaluate_alignment(bridge, SourceBack(source, 1), val) == pytest.approx(res.best_val, rel=1e-5)
    saved = load_bridge(tmp_path / "bridge")
    for a, b in zip(saved.state_dict().values(), bridge.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in frozen.items())  # source untouched
    assert (tmp_path / "bridge" / "history.json").is_file()


def test_resume_equals_uninterrupted(tmp_path, tiny):
    _, source, cache, bridge, _ = _setup(tiny)
    bridge2 = PrototypeBridge(bridge.d_in, bridge.tokens, bridge.d_out, rank=4, prototypes=6)
    bridge2.load_state_dict(bridge.state_dict())
    cfg = dict(batch_size=8, lr=1e-2, seed=3)
    full = train_bridge(bridge, source, 1, cache, None, TrainConfig(epochs=4, **cfg), out_dir=tmp_path / "a")
    train_bridge(bridge2, source, 1, cache, None, TrainConfig(epochs=2, **cfg), out_dir=tmp_path / "b")
    resumed = train_bridge(bridge2, source, 1, cache, None, TrainConfig(epochs=4, **cfg),
                           out_dir=tmp_path / "b", resume=True)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    for a, b in zip(bridge.state_dict().values(), bridge2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert resumed.best_val == pytest.approx(full.best_val)
    with pytest.raises(TrainingError, match="same settings"):
        train_bridge(bridge2, source, 1, cache, None, TrainConfig(epochs=5, batch_size=4, seed=3),
                     out_dir=tmp_path / "b", resume=True)


def test_recompute_trains_the_same_bridge(tiny):
    """Recomputing source[j:] in backward changes memory, not the arithmetic: same weights either way."""
    _, source, cache, bridge, _ = _setup(tiny, j=0)
    twin = PrototypeBridge(bridge.d_in, bridge.tokens, bridge.d_out, rank=4, prototypes=6)
    twin.load_state_dict(bridge.state_dict())
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-2, recompute=False)
    plain = train_bridge(bridge, source, 0, cache, None, cfg)
    again = train_bridge(twin, source, 0, cache, None, TrainConfig(**{**cfg.__dict__, "recompute": True}))
    assert [h["train_loss"] for h in again.history] == pytest.approx([h["train_loss"] for h in plain.history],
                                                                     rel=1e-5)
    for a, b in zip(bridge.state_dict().values(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_recompute_keeps_fewer_activations_for_backward(tiny):
    """What recompute is for: bytes autograd keeps between forward and backward (block inputs only)."""
    from edge_bridge.composite import SourceBack

    _, source, cache, bridge, _ = _setup(tiny, j=0)
    back = SourceBack(source, 0)

    def saved_bytes(recompute: bool) -> int:
        sizes: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            back.last_block(bridge(cache.h[:16]), recompute=recompute).sum()
        return sum(sizes.values())

    assert saved_bytes(True) < 0.5 * saved_bytes(False)


def test_recompute_per_residual_branch_lowers_the_peak_below_per_block(tiny):
    """The transformer's forward_recomputed (one checkpoint per residual branch) must beat a checkpoint
    per whole block on peak live tensor memory of a training step: the point of the finer split."""
    import numpy as np
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.checkpoint import checkpoint

    from edge_bridge.composite import SourceBack
    from edge_bridge.train import alignment_loss

    _, source, cache, bridge, _ = _setup(tiny, j=0)
    back = SourceBack(source, 0)
    y = source.from_tokens(cache.y[:16])

    def per_block(z: torch.Tensor) -> torch.Tensor:
        h = source.from_tokens(z)
        for block in source.blocks:
            h = checkpoint(block, h, use_reentrant=False)
        return h

    def peak(run) -> int:
        def step() -> None:
            alignment_loss(run(bridge(cache.h[:16])), y, "sum").backward()

        step()  # warm-up
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        events = sorted(prof.events(), key=lambda e: e.time_range.start)
        return int(np.cumsum([e.self_cpu_memory_usage for e in events]).max())

    plain = peak(lambda z: back.last_block(z))
    block = peak(per_block)
    branch = peak(lambda z: back.last_block(z, recompute=True))
    assert branch < block < plain


def _spread_head(source) -> None:
    """Give the untrained tiny source head a spread of decisions (it otherwise decides one class)."""
    with torch.no_grad():
        source.head.bias.zero_()
        source.head.weight.mul_(50)


def test_decisions_are_compared_with_the_source_models_own(tiny):
    """source_decisions reads the source model's decision from the cached Y; it must be the source model's
    argmax on the source windows, and validate's must be the composite's argmax on the target ones."""
    from edge_bridge.composite import Composite, SourceBack
    from edge_bridge.fitting import predict
    from edge_bridge.train import source_decisions, validate

    target, source, _, bridge, xs = _setup(tiny)
    _spread_head(source)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(48, 1, 1, generator=g)
    xt = (torch.randn(48, *target.input_shape, generator=g) + z).numpy()
    xs = (torch.randn(48, *source.input_shape, generator=g) + z).numpy()
    cache = bridge_cache(target, source, xt, xs, 1)
    with torch.no_grad():
        bridge.B.normal_()  # B starts at zero (a constant bridge); give it decisions that vary
    back = SourceBack(source, 1)
    loss, d = validate(bridge, back, cache, source_decisions(back, cache, batch_size=7), batch_size=7)
    assert loss == pytest.approx(evaluate_alignment(bridge, back, cache))
    theirs = predict(source, xs).argmax(1)
    with torch.no_grad():
        ours = Composite(target, source, bridge, 1, 1)(torch.as_tensor(xt)).argmax(1).numpy()
    assert d.agreement == pytest.approx(np.mean(ours == theirs))
    assert d.balanced_agreement == pytest.approx(
        np.mean([np.mean(ours[theirs == c] == c) for c in np.unique(theirs)]))
    assert (d.classes, d.source_classes) == (len(np.unique(ours)), len(np.unique(theirs)))
    assert d.source_classes > 1


def test_a_one_class_best_bridge_is_flagged(tiny, caplog):
    """A bridge that stays where it starts (B = 0: the same tokens for every window) decides one class;
    training records per-epoch agreement and warns that the best checkpoint is a constant classifier."""
    _, source, cache, bridge, _ = _setup(tiny)
    _spread_head(source)
    train, val = cache.subset(np.arange(36)), cache.subset(np.arange(36, 48))
    with caplog.at_level("WARNING", logger="edge_bridge.train"):
        res = train_bridge(bridge, source, 1, train, val, TrainConfig(epochs=2, batch_size=8, lr=1e-12))
    assert res.best["val_classes"] == 1 and res.best["val_source_classes"] > 1
    assert res.one_class and "one class on every validation window" in caplog.text
    assert 0 < res.best["val_balanced_agreement"] < 1

    _, source, cache, bridge, _ = _setup(tiny)  # the same, trained: it decides more than one class
    _spread_head(source)
    train, val = cache.subset(np.arange(36)), cache.subset(np.arange(36, 48))
    res = train_bridge(bridge, source, 1, train, val, TrainConfig(epochs=12, batch_size=8, lr=3e-2))
    assert not res.one_class and res.best["val_classes"] > 1
