"""Hypothesis fuzz of signature files: truncated, bit-flipped, spliced and re-shaped envelopes.

The property: verification either refuses with a :class:`SigningError`/``BundleError`` (one line, no other
exception type), or accepts only when the envelope still carries the very payload and signature bytes that
were signed (e.g. JSON whitespace changed). The bundle's files are never touched by a verification.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_bridge import signing
from edge_bridge.bundle import BundleError
from edge_bridge.signing.envelope import _parse
from tests.hostile.conftest import tree_state

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _mutations(original: bytes) -> st.SearchStrategy[bytes]:
    n = len(original)
    env = json.loads(original)
    truncated = st.integers(0, n - 1).map(lambda k: original[:k])
    flipped = st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 255)), min_size=1, max_size=4).map(
        lambda flips: _flip(original, flips))
    spliced = st.tuples(st.integers(0, n), st.binary(max_size=64)).map(
        lambda t: original[: t[0]] + t[1] + original[t[0]:])
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                               | st.text(max_size=40), lambda c: st.lists(c, max_size=3)
                               | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
    reshaped = st.tuples(st.sampled_from(["payloadType", "payload", "signatures", "extra"]), json_values).map(
        lambda kv: json.dumps({**env, kv[0]: kv[1]}).encode())
    sig_fields = st.tuples(st.sampled_from(["keyid", "sig"]), json_values | st.text(
        alphabet="ABCDEFabcdef0123456789+/=", max_size=100)).map(
        lambda kv: json.dumps({**env, "signatures": [{**env["signatures"][0], kv[0]: kv[1]}]}).encode())
    payload = st.binary(max_size=300).map(
        lambda b: json.dumps({**env, "payload": base64.b64encode(b).decode()}).encode())
    return st.one_of(truncated, flipped, spliced, reshaped, sig_fields, payload, st.binary(max_size=200))


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for i, x in flips:
        out[i] ^= x
    return bytes(out)


def _same_signed_content(a: bytes, b: bytes) -> bool:
    try:
        return _parse(a, "a") == _parse(b, "b")
    except signing.SigningError:
        return False


@pytest.mark.parametrize("which", ["publisher", "device act"])
def test_fuzzed_signature_files_are_refused_cleanly(which, signed, keys, trust):
    if which == "device act":
        from .conftest import publish_signed_v2

        publish_signed_v2(signed, keys.device)
    target: Path = signed / (signing.PUBLISHER_SIG if which == "publisher" else "signatures/device-0001.json")
    original = target.read_bytes()
    signing.verify_signatures(signed, trust)
    others = {k: v for k, v in tree_state(signed).items() if k != target.relative_to(signed).as_posix()}
    tried = {"refused": 0, "accepted": 0}

    @FUZZ
    @given(_mutations(original))
    def check(mutated: bytes) -> None:
        target.write_bytes(mutated)
        try:
            signing.verify_signatures(signed, trust)
        except BundleError as exc:  # SigningError is one
            assert "\n" not in str(exc) and str(exc)
            tried["refused"] += 1
        else:
            assert _same_signed_content(mutated, original), "a changed signature file was accepted"
            tried["accepted"] += 1
        finally:
            target.write_bytes(original)

    check()
    assert {k: v for k, v in tree_state(signed).items() if k in others} == others
    assert tried["refused"] >= 100, tried
