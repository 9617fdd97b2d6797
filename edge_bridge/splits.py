"""Splits by subject, as in the paper: source-head train / val / paired (bridge) / test; never by window.

Windows of one subject overlap in time (5 s hop on 60 s windows) and share the subject's physiology, so a
split by window would leak. Every subject lands in exactly one role.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_bridge.errors import EdgeBridgeError

ROLES = ("train", "val", "paired", "test")
DEFAULT_FRACTIONS = {"train": 0.3, "val": 0.15, "paired": 0.3, "test": 0.25}


class SplitError(EdgeBridgeError, ValueError):
    """Too few subjects for the requested split, or a malformed split."""


def split_subjects(subjects: Sequence[str], fractions: dict[str, float] | None = None,
                   seed: int = 0) -> dict[str, list[str]]:
    """Assign every subject to one role (shuffled with ``seed``), each role at least one subject.

    Parameters
    ----------
    subjects : sequence of str
        Distinct subject codes (duplicates are collapsed).
    fractions : dict role -> float, optional
        Share of subjects per role (``train``, ``val``, ``paired``, ``test``); normalised to sum to 1.

    Returns
    -------
    dict role -> sorted list of subject codes
    """
    frac = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    if set(frac) != set(ROLES) or any(v <= 0 for v in frac.values()):
        raise SplitError(f"fractions need a positive share for each of {ROLES}, got {frac}")
    uniq = sorted(set(map(str, subjects)))
    if len(uniq) < len(ROLES):
        raise SplitError(f"a subject split needs at least {len(ROLES)} subjects (one per role {ROLES}), "
                         f"got {len(uniq)}: {uniq}; simulate or record more subjects")
    total = sum(frac.values())
    n = len(uniq)
    counts = {r: max(1, int(np.floor(frac[r] / total * n))) for r in ROLES}
    while sum(counts.values()) < n:  # hand out the remainder to the roles furthest below their share
        r = max(ROLES, key=lambda k: frac[k] / total * n - counts[k])
        counts[r] += 1
    while sum(counts.values()) > n:
        r = max((k for k in ROLES if counts[k] > 1), key=lambda k: counts[k] - frac[k] / total * n)
        counts[r] -= 1
    order = list(np.random.default_rng(seed).permutation(uniq))
    out, k = {}, 0
    for r in ROLES:
        out[r] = sorted(order[k:k + counts[r]])
        k += counts[r]
    return out


def check_disjoint(split: dict[str, list[str]]) -> None:
    """Raise :class:`SplitError` unless every role exists and no subject is in two roles."""
    missing = [r for r in ROLES if r not in split]
    if missing:
        raise SplitError(f"split lacks role(s) {missing}")
    seen: dict[str, str] = {}
    for role in ROLES:
        for s in split[role]:
            if s in seen:
                raise SplitError(f"subject {s!r} is in both {seen[s]!r} and {role!r}; splits are by subject")
            seen[s] = role
