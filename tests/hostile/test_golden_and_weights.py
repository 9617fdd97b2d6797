"""Hostile input, class *golden and weights*: a damaged golden file or graph never passes the self-test.

Cases rewrite the golden files or graphs and, where an attacker (or a careless tool) would, update the
manifest's hashes to match, so only the self-test's own checks (finite values, tolerances, shapes) stand
between the damage and a live device. Each case runs ``deploy --self-test-only`` through the real CLI
and asserts exit 2, one error line naming the culprit, no traceback and no byte changed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from .conftest import Case, assert_clean_refusal, edit, run_cli, sha

OWN = "bridges/v0001.golden.npz"


def _load(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _save(path, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _rehash(c: Case, rel: str) -> None:
    digest = sha(c.bundle / rel)

    def fn(m):
        if rel == m["golden"]["file"]:
            m["golden"]["sha256"] = digest
        for v in m["bridges"]["versions"].values():
            if v.get("golden", {}).get("file") == rel:
                v["golden"]["sha256"] = digest
            if v["onnx"]["file"] == rel:
                v["onnx"]["sha256"] = digest
            if v["weights_file"] == rel:
                v["weights_sha256"] = digest
        for p in m["parts"].values():
            if p["file"] == rel:
                p["sha256"] = digest
    edit(c.bundle, fn)


def _golden(rel: str, change: Callable[[dict], None], rehash: bool = True) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        arrays = _load(c.bundle / rel)
        change(arrays)
        _save(c.bundle / rel, arrays)
        if rehash:
            _rehash(c, rel)
    return mutate


def _setitem(key: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], None]:
    def change(a: dict) -> None:
        a[key] = fn(a[key])
    return change


def _nan_at(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[0] = np.nan
    return a


def _raw(rel: str, data: bytes, rehash: bool = True) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        (c.bundle / rel).write_bytes(data)
        if rehash:
            _rehash(c, rel)
    return mutate


def _pickled_golden(c: Case) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{**_load(c.bundle / "golden.npz"),
                     "target_front.x_target": np.array([{"evil": 1}], dtype=object)})
    (c.bundle / "golden.npz").write_bytes(buf.getvalue())
    _rehash(c, "golden.npz")


def _graph(rel: str, change: Callable[[onnx.ModelProto], None]) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        model = onnx.load(str(c.bundle / rel))
        change(model)
        (c.bundle / rel).write_bytes(model.SerializeToString())
        _rehash(c, rel)
    return mutate


def _weights(value: Callable[[np.ndarray], np.ndarray]) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        init = model.graph.initializer[0]
        arr = numpy_helper.to_array(init).copy()
        init.CopyFrom(numpy_helper.from_array(value(arr).astype(arr.dtype), init.name))
    return change


def _weights_at(k: int, value: Callable[[np.ndarray], np.ndarray]) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        init = model.graph.initializer[k]
        arr = numpy_helper.to_array(init).copy()
        init.CopyFrom(numpy_helper.from_array(value(arr).astype(arr.dtype), init.name))
    return change


def _nan_weights(a: np.ndarray) -> np.ndarray:
    return np.full_like(a, np.nan)


def _drop_key(rel: str, key: str) -> Callable[[Case], None]:
    return _golden(rel, lambda a: a.pop(key))


def _delete(rel: str) -> Callable[[Case], None]:
    return lambda c: (c.bundle / rel).unlink()


def _wrong_graph(rel: str, other: str) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        (c.bundle / rel).write_bytes((c.bundle / other).read_bytes())
        _rehash(c, rel)
    return mutate


def _truncated(rel: str) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        data = (c.bundle / rel).read_bytes()
        (c.bundle / rel).write_bytes(data[: len(data) // 3])
        _rehash(c, rel)
    return mutate


def _appended(rel: str) -> Callable[[Case], None]:
    def mutate(c: Case) -> None:
        with open(c.bundle / rel, "ab") as fh:
            fh.write(b"\0")
    return mutate


def _golden_file_points_to_graph(c: Case) -> None:
    def fn(m):
        m["golden"]["file"] = "source_back.onnx"
        m["golden"]["sha256"] = sha(c.bundle / "source_back.onnx")
    edit(c.bundle, fn)


def _own_golden_swapped_for_other_version(c: Case) -> None:
    _golden(OWN, _setitem("bridge.z", lambda z: z[::-1].copy()))(c)


GOLDEN_CASES: list[tuple[str, Callable[[Case], None], str | tuple[str, ...]]] = [
    ("nan-expected-logits", _golden(OWN, _setitem("source_back.logits", _nan_at)), "source_back.logits"),
    ("all-nan-expected-logits", _golden(OWN, _setitem("source_back.logits", lambda a: a * np.nan)),
     "source_back.logits"),
    ("inf-expected-z", _golden(OWN, _setitem("bridge.z", lambda a: a + np.inf)), "bridge.z"),
    ("nan-golden-input", _golden("golden.npz", _setitem("target_front.x_target", _nan_at)), "x_target"),
    ("nan-golden-h", _golden(OWN, _setitem("bridge.h", _nan_at)), "bridge"),
    ("nan-in-base-golden-h", _golden("golden.npz", _setitem("target_front.h", _nan_at)), "target_front"),
    ("drifted-logits", _golden(OWN, _setitem("source_back.logits", lambda a: a + 1.0)), "source_back FAILED"),
    ("drifted-z", _golden(OWN, _setitem("bridge.z", lambda a: a * 1.5)), "bridge FAILED"),
    ("z-of-other-windows", _own_golden_swapped_for_other_version, "bridge FAILED"),
    ("wrong-shape-logits", _golden(OWN, _setitem("source_back.logits", lambda a: a[:, :2])), "shape"),
    ("empty-golden-arrays", _golden(OWN, _setitem("bridge.z", lambda a: a[:0])), "empty"),
    ("string-golden", _golden(OWN, _setitem("bridge.h", lambda a: np.array(["x"] * len(a)))), "bridge"),
    ("own-golden-missing-key", _drop_key(OWN, "source_back.logits"), "lacks"),
    ("base-golden-no-parts", _golden("golden.npz", lambda a: [a.pop(k) for k in list(a)] and
                                     a.update(other=np.zeros(3))), ("target_front", "golden")),
    ("pickled-object-array", _pickled_golden, "golden.npz"),
    ("golden-not-a-zip", _raw("golden.npz", b"PK\x03\x04 definitely not a zip" * 10), "golden.npz"),
    ("golden-zero-bytes", _raw("golden.npz", b""), "golden.npz"),
    ("own-golden-garbage", _raw(OWN, b"\x93NUMPY garbage"), "v0001.golden.npz"),
    ("own-golden-tampered-no-rehash", _golden(OWN, _setitem("bridge.z", lambda a: a + 1), rehash=False),
     "hashes to"),
    ("own-golden-deleted", _delete(OWN), "v0001.golden.npz"),
    ("golden-deleted", _delete("golden.npz"), "golden.npz"),
    ("golden-points-at-a-graph", _golden_file_points_to_graph, "source_back.onnx"),
    ("bridge-nan-weights", _graph("bridges/v0001.onnx", _weights(_nan_weights)), "bridge"),
    ("bridge-huge-weights", _graph("bridges/v0001.onnx", _weights(lambda a: a * 1e38)), "bridge"),
    ("bridge-perturbed", _graph("bridges/v0001.onnx", _weights(lambda a: a + 0.1)), "bridge FAILED"),
    ("source-back-nan", _graph("source_back.onnx", _weights(_nan_weights)), "source_back"),
    ("target-front-bad-reshape", _graph("target_front.onnx", _weights(np.zeros_like)), "target_front.onnx"),
    ("target-front-scaled", _graph("target_front.onnx", _weights_at(1, lambda a: a * 3)),
     "target_front FAILED"),
    ("bridge-truncated", _truncated("bridges/v0001.onnx"), "v0001.onnx"),
    ("bridge-random-bytes", _raw("bridges/v0001.onnx", bytes(range(256)) * 4), "v0001.onnx"),
    ("bridge-empty-file", _raw("bridges/v0001.onnx", b""), "v0001.onnx"),
    ("bridge-is-source-back", _wrong_graph("bridges/v0001.onnx", "source_back.onnx"), "v0001.onnx"),
    ("target-front-is-source-front", _wrong_graph("target_front.onnx", "source_front.onnx"),
     "target_front.onnx"),
    ("bridge-appended-byte", _appended("bridges/v0001.onnx"), "hashes to"),
    ("weights-appended-byte", _appended("bridges/v0001.safetensors"), "v0001.safetensors"),
    ("weights-deleted", _delete("bridges/v0001.safetensors"), "v0001.safetensors"),
    ("source-back-deleted", _delete("source_back.onnx"), "source_back.onnx"),
]


@pytest.mark.parametrize(("name", "mutate", "culprit"), GOLDEN_CASES, ids=[c[0] for c in GOLDEN_CASES])
def test_damaged_golden_or_graph_refused(case, capsys, name, mutate, culprit):
    mutate(case)
    case.snapshot()
    rc, out, err = run_cli(["deploy", "--bundle", case.bundle, "--self-test-only"], capsys)
    line = assert_clean_refusal(rc, out, err, culprit)
    assert "0.00e+00 <=" not in line or "FAILED" in line or "finite" in line or "golden" in line
    case.unchanged()


def test_the_undamaged_bundle_self_tests(case, capsys):
    rc, _, err = run_cli(["deploy", "--bundle", case.bundle, "--self-test-only"], capsys)
    assert rc == 0, err
    assert "bridge" in err and "ok" in err


def test_nan_expected_outputs_never_read_as_zero_difference(case, capsys):
    """The issue's example: NaN expected outputs used to pass with 'max diff 0.00e+00'."""
    _golden(OWN, _setitem("source_back.logits", lambda a: a * np.nan))(case)
    rc, _out, err = run_cli(["deploy", "--bundle", case.bundle, "--self-test-only"], capsys)
    assert rc == 2 and "NaN" in err and "passed" not in err
    manifest = json.loads((case.bundle / "manifest.json").read_text())
    assert manifest["bridges"]["current"] == 1
