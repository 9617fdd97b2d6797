"""The acceptance rule: agreement first; alignment loss alone only on validation windows of several states."""

from __future__ import annotations

from calibrate.core import Scores, better


def _s(agreement: float, loss: float, states: int) -> Scores:
    return Scores(agreement, agreement, loss, windows=10, states=states)


def test_agreement_gain_accepts_whatever_the_states():
    ok, why = better(_s(0.9, 0.5, 1), _s(0.5, 0.4, 1), 0.02, 0.01, min_states=2)
    assert ok and "agreement up" in why


def test_loss_alone_needs_several_states_in_validation():
    new, old = _s(1.0, 0.20, 1), _s(1.0, 0.40, 1)
    ok, why = better(new, old, 0.02, 0.01, min_states=2)
    assert not ok and "show 1 state(s)" in why
    ok, why = better(_s(1.0, 0.20, 2), _s(1.0, 0.40, 2), 0.02, 0.01, min_states=2)
    assert ok and "alignment loss down" in why
    assert better(new, old, 0.02, 0.01, min_states=1)[0]  # --min-states 1 keeps the old rule


def test_lower_agreement_is_refused_even_with_a_lower_loss():
    ok, why = better(_s(0.8, 0.1, 2), _s(0.9, 0.5, 2), 0.02, 0.01, min_states=2)
    assert not ok and "not better by the margin" in why
