"""Position selection: CKA properties, the probe, and picking a planted informative block."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import ortho_group

from edge_bridge.select import Selection, SelectionError, linear_cka, select_from_features, select_positions


def test_cka_identical_is_one_and_bounded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8))
    assert linear_cka(x, x) == pytest.approx(1.0)
    y = rng.normal(size=(100, 5))
    assert 0.0 <= linear_cka(x, y) <= 1.0
    assert linear_cka(x, np.ones((100, 3))) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(80, 6))
    y = x @ rng.normal(size=(6, 4)) + 0.5 * rng.normal(size=(80, 4))
    base = linear_cka(x, y)
    q = ortho_group.rvs(6, random_state=seed)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(base, rel=1e-9)  # centring
    assert linear_cka(y, x) == pytest.approx(base, rel=1e-12)  # symmetric


def test_cka_rejects_mismatched_rows():
    with pytest.raises(SelectionError, match="same number of rows"):
        linear_cka(np.zeros((5, 2)), np.zeros((6, 2)))


def _planted(seed: int = 0, n: int = 150, informative: int = 2, matching: int = 1):
    """Target blocks of noise except one that encodes the labels; source inputs of which one matches it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, 10)) * 3
    target = [rng.normal(size=(n, 10)) for _ in range(4)]
    target[informative] = centres[labels] + rng.normal(size=(n, 10))
    mix = rng.normal(size=(10, 12))
    source = [rng.normal(size=(n, 12)) for _ in range(3)]
    source[matching] = target[informative] @ mix + 0.1 * rng.normal(size=(n, 12))
    return target, source, labels


@pytest.mark.parametrize(("informative", "matching"), [(0, 0), (2, 1), (3, 2)])
def test_selection_finds_planted_blocks(informative, matching):
    target, source, labels = _planted(informative=informative, matching=matching)
    sel = select_from_features(target, source, labels)
    assert (sel.i, sel.j) == (informative, matching)
    assert sel.f1[informative] > 0.9 and max(np.delete(sel.f1, informative)) < 0.6
    assert sel.cka[matching] > 0.9


def test_selection_needs_two_pseudo_classes():
    target, source, _ = _planted()
    with pytest.raises(SelectionError, match="single class"):
        select_from_features(target, source, np.zeros(150, dtype=int))


def test_select_positions_end_to_end_writes_json_and_png(tmp_path, tiny):
    import torch

    target, source = tiny("resnet1d"), tiny("transformer")
    rng = np.random.default_rng(0)
    xt = rng.normal(size=(60, *target.input_shape)).astype(np.float32)
    xs = rng.normal(size=(60, *source.input_shape)).astype(np.float32)
    with torch.no_grad():  # give the untrained source head a spread of argmaxes
        source.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
        source.head.weight.mul_(50)
    sel = select_positions(target, source, xt, xs, folds=3)
    assert len(sel.f1) == target.n_blocks and len(sel.cka) == source.n_blocks
    assert sel.target_paths == target.block_paths and "forward" in sel.seconds
    sel.save(tmp_path / "selection.json")
    sel.plot(tmp_path / "selection.png")
    assert (tmp_path / "selection.png").read_bytes()[:4] == b"\x89PNG"
    again = Selection.load(tmp_path / "selection.json")
    assert (again.i, again.j, again.f1) == (sel.i, sel.j, sel.f1)
    assert json.loads((tmp_path / "selection.json").read_text())["schema_version"] == 1


def _overlapping_windows(seed: int = 0, subjects: int = 8, per_subject: int = 60):
    """Windows cut on a short hop from each subject's recording, as the paired set is.

    Block 0 carries the pseudo-label weakly but the same way in every subject (it transfers). Block 1 is
    a slow random walk per subject (neighbouring windows are near copies) and carries nothing that
    transfers; since each subject's pseudo-label is a run of a few states in time, a probe tested on
    windows whose neighbours it trained on can still read it off block 1.
    """
    rng = np.random.default_rng(seed)
    labels, groups, general, memorise = [], [], [], []
    for s in range(subjects):
        state = np.repeat(rng.permutation([0, 1, 0, 1]), per_subject // 4)
        labels.append(state)
        groups.append(np.full(per_subject, s))
        general.append(state[:, None] * 1.0 + rng.normal(size=(per_subject, 6)) * 1.2)
        memorise.append(np.cumsum(rng.normal(size=(per_subject, 32)), axis=0))
    source = [np.concatenate(general) @ rng.normal(size=(6, 5))]
    return ([np.concatenate(general), np.concatenate(memorise)], source, np.concatenate(labels),
            np.concatenate(groups))


def test_probe_folds_by_subject_choose_the_block_that_transfers():
    target, source, labels, groups = _overlapping_windows()
    sel = select_from_features(target, source, labels, groups=groups)
    assert sel.i == 0, sel.f1
    assert sel.f1[1] < 0.7 and "grouped by subject (8 subjects)" in sel.folds
    # the same windows without their subjects: folds over windows let block 1 memorise its neighbours
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    shuffled = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), target[1],
                               labels, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                               scoring="f1_macro").mean()
    assert shuffled > sel.f1[0] > sel.f1[1], (shuffled, sel.f1)


def test_probe_folds_without_subjects_are_contiguous():
    from edge_bridge.select import probe_folds

    labels = np.repeat([0, 1, 0, 1], 25)
    cv, what = probe_folds(labels, None)
    assert "contiguous" in what
    for _, test in cv.split(np.zeros((100, 1)), labels):
        # each test fold is a few runs of neighbouring windows, never a scatter
        assert np.count_nonzero(np.diff(test) > 1) <= 3
    _, what = probe_folds(labels, np.repeat(np.arange(3), [30, 30, 40]))
    assert what.startswith("3 folds grouped by subject")


def test_groups_must_name_every_window():
    target, source, labels, groups = _overlapping_windows()
    with pytest.raises(SelectionError, match="one per window"):
        select_from_features(target, source, labels, groups=groups[:-1])


def test_a_fold_that_cannot_be_probed_scores_zero_instead_of_failing():
    from edge_bridge.select import probe_f1

    rng = np.random.default_rng(0)
    # subject 0 holds every window of class 1: the fold that tests it trains on class 0 alone
    labels = np.r_[np.zeros(30, int), np.ones(10, int)]
    groups = np.r_[np.repeat([1, 2, 3], 10), np.zeros(10, int)]
    x = rng.normal(size=(40, 3)) + labels[:, None]
    assert 0.0 <= probe_f1(x, labels, folds=4, groups=groups) < 1.0
    # two subjects, one class each: no fold can be probed at all
    assert probe_f1(x[20:], labels[20:], folds=2, groups=groups[20:]) == 0.0
