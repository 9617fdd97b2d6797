"""Hostile input, class *manifest fields*: the JSON Schema refuses every bad field before it is used.

Each case edits a private copy's manifest.json as a text editor or an attacker would, runs the real CLI
(``bundle verify`` and ``deploy --self-test-only``) and asserts exit 2, one error line naming the field
(or the file), no traceback and no byte changed. A hypothesis test fuzzes the loader itself: whatever
JSON it is given, ``Manifest.from_dict`` and ``Bundle.load`` raise nothing but ``BundleError``.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_bridge.bundle import Bundle, BundleError, Manifest

from .conftest import Case, assert_clean_refusal, read_manifest, run_cli, write_raw_manifest


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Set ``a.b.0.c`` in the manifest to ``value``."""
    def fn(m: dict) -> None:
        keys = path.split(".")
        node: Any = m
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return fn


def _drop(path: str) -> Callable[[dict], None]:
    def fn(m: dict) -> None:
        keys = path.split(".")
        node: Any = m
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return fn


BV = "bridges.versions.0001"
TFI = "parts.target_front.inputs.0"

# (id, edit of the parsed manifest, words the error line must contain)
FIELD_CASES: list[tuple[str, Callable[[dict], None], str | tuple[str, ...]]] = [
    ("schema-version-missing", _drop("schema_version"), "schema_version"),
    ("schema-version-string", _set("schema_version", "1"), "schema_version"),
    ("schema-version-bool", _set("schema_version", True), "schema_version"),
    ("schema-version-zero", _set("schema_version", 0), "schema_version"),
    ("schema-version-future", _set("schema_version", 99), "newer"),
    ("schema-version-float", _set("schema_version", 1.0), "schema_version"),
    ("task-missing", _drop("task"), "task"),
    ("task-empty", _set("task", ""), "field task"),
    ("task-number", _set("task", 7), "field task"),
    ("classes-duplicate", _set("classes", ["baseline", "stress", "stress"]), "field classes"),
    ("classes-empty-name", _set("classes", ["baseline", "", "amusement"]), "field classes.1"),
    ("classes-blank-name", _set("classes", ["baseline", "   ", "amusement"]), "field classes.1"),
    ("classes-one", _set("classes", ["baseline"]), "field classes"),
    ("classes-none", _set("classes", []), "field classes"),
    ("classes-string", _set("classes", "baseline,stress,amusement"), "field classes"),
    ("classes-number-entry", _set("classes", ["baseline", 2, "amusement"]), "field classes.1"),
    ("classes-count-mismatch", _set("classes", ["a", "b"]), "number of classes"),
    ("classes-null", _set("classes", None), "field classes"),
    ("precision-unknown", _set("parts.target_front.precision", "int4"), "parts.target_front.precision"),
    ("precision-case", _set("parts.source_back.precision", "FP32"), "parts.source_back.precision"),
    ("precision-missing", _drop("parts.target_front.precision"), "parts.target_front"),
    ("bridge-precision-bad", _set(f"{BV}.onnx.precision", "bf16"), "precision"),
    ("sha-uppercase", lambda m: m["parts"]["target_front"].update(
        sha256=m["parts"]["target_front"]["sha256"].upper()), "parts.target_front.sha256"),
    ("sha-short", _set("parts.target_front.sha256", "abc123"), "parts.target_front.sha256"),
    ("sha-number", _set("parts.source_back.sha256", 12345), "parts.source_back.sha256"),
    ("weights-sha-bad", _set(f"{BV}.weights_sha256", "z" * 64), "weights_sha256"),
    ("position-negative", _set("positions.i", -1), "positions.i"),
    ("position-float", _set("positions.j", 1.5), "positions.j"),
    ("position-string", _set("positions.i", "1"), "positions.i"),
    ("position-extra", _set("positions.k", 3), "positions"),
    ("rate-zero", _set("modalities.target.input_rate", 0), "modalities.target.input_rate"),
    ("rate-negative", _set("modalities.source.output_rate", -100), "modalities.source.output_rate"),
    ("rate-huge", _set("modalities.target.input_rate", 1e300), "modalities.target.input_rate"),
    ("rate-string", _set("modalities.target.input_rate", "64"), "modalities.target.input_rate"),
    ("window-zero", _set("modalities.target.window_s", 0), "modalities.target.window_s"),
    ("hop-negative", _set("modalities.target.hop_s", -1), "modalities.target.hop_s"),
    ("channels-empty", _set("modalities.target.channels", []), "modalities.target.channels"),
    ("channels-duplicate", _set("modalities.source.channels", ["ECG", "ECG"]), "modalities.source.channels"),
    ("channels-blank", _set("modalities.target.channels", [""]), "modalities.target.channels.0"),
    ("bandpass-three", _set("modalities.target.bandpass", [0.5, 8, 9]), "modalities.target.bandpass"),
    ("bandpass-inverted", _set("modalities.target.bandpass", [8.0, 0.5]), ("bandpass", "malformed")),
    ("filter-order-huge", _set("modalities.target.filter_order", 99), "modalities.target.filter_order"),
    ("modality-missing", _drop("modalities.target"), "modalities"),
    ("shape-zero", _set(f"{TFI}.shape", [None, 1, 0]), f"{TFI}.shape.2"),
    ("shape-negative", _set(f"{TFI}.shape", [None, -1, 128]), f"{TFI}.shape.1"),
    ("shape-dynamic-inner", _set(f"{TFI}.shape", [None, None, 128]), f"{TFI}.shape.1"),
    ("shape-static-batch", _set(f"{TFI}.shape", [1, 1, 128]), f"{TFI}.shape.0"),
    ("shape-huge", _set(f"{TFI}.shape", [None, 1, 10 ** 12]), f"{TFI}.shape.2"),
    ("shape-string", _set(f"{TFI}.shape", "[None, 1, 128]"), f"{TFI}.shape"),
    ("shape-empty", _set(f"{TFI}.shape", []), f"{TFI}.shape"),
    ("shape-too-deep", _set(f"{TFI}.shape", [None] + [1] * 20), f"{TFI}.shape"),
    ("shape-mismatch", _set(f"{TFI}.shape", [None, 1, 129]), "target_front input"),
    ("tensor-name-wrong", _set(f"{TFI}.name", "x"), "x_target"),
    ("tensor-dtype", _set(f"{TFI}.dtype", "float64"), f"{TFI}.dtype"),
    ("inputs-two", lambda m: m["parts"]["target_front"]["inputs"].append(
        m["parts"]["target_front"]["inputs"][0]), "parts.target_front.inputs"),
    ("unknown-part", lambda m: m["parts"].update(extra=m["parts"]["source_back"]), "parts"),
    ("part-missing", _drop("parts.source_back"), "parts"),
    ("part-extra-key", _set("parts.target_front.url", "http://example.com/x.onnx"), "parts.target_front"),
    ("current-missing-version", _set("bridges.current", 7), "bridges.current"),
    ("current-zero", _set("bridges.current", 0), "bridges.current"),
    ("current-string", _set("bridges.current", "0001"), "bridges.current"),
    ("versions-empty", _set("bridges.versions", {}), "bridges.versions"),
    ("versions-key-short", lambda m: m["bridges"]["versions"].update(
        {"1": m["bridges"]["versions"].pop("0001")}), "bridges.versions"),
    ("versions-key-mismatch", _set(f"{BV}.version", 2), "bridges.versions.0001.version"),
    ("version-extra-key", _set(f"{BV}.exec", "rm -rf /"), BV),
    ("version-golden-bad", _set(f"{BV}.golden", {"file": "x.npz"}), f"{BV}.golden"),
    ("golden-not-object", _set("golden", "golden.npz"), "golden"),
    ("label-map-list", _set("label_map", ["a", "b"]), "label_map"),
    ("label-map-int-value", _set("label_map", {"rest": 1}), "label_map.rest"),
    ("tool-version-number", _set("tool_version", 5), "tool_version"),
    ("quantization-list", _set("quantization", [1, 2]), "quantization"),
    ("source-model-no-files", _set("source_model", {}), "source_model"),
    ("top-level-array", lambda m: m.clear() or m.update(_array=True), ("manifest", "object")),
]


def _apply(c: Case, fn: Callable[[dict], None]) -> None:
    m = read_manifest(c.bundle)
    fn(m)
    if m == {"_array": True}:
        (c.bundle / "manifest.json").write_text("[1, 2, 3]")
    else:
        write_raw_manifest(c.bundle, m)


@pytest.mark.parametrize("command", ["verify", "self-test"])
@pytest.mark.parametrize(("name", "fn", "culprit"), FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_bad_field_refused(case, capsys, name, fn, culprit, command):
    _apply(case, fn)
    case.snapshot()
    argv = (["bundle", "verify", case.bundle] if command == "verify"
            else ["deploy", "--bundle", case.bundle, "--self-test-only"])
    line = assert_clean_refusal(*run_cli(argv, capsys), culprit)
    assert "b.bundle" in line  # names the bundle
    assert len(line) < 600
    case.unchanged()


def _text(t: str) -> Callable[[Case], None]:
    return lambda c: (c.bundle / "manifest.json").write_text(t)


def _bytes(b: bytes) -> Callable[[Case], None]:
    return lambda c: (c.bundle / "manifest.json").write_bytes(b)


def _dup_key(c: Case) -> None:
    text = (c.bundle / "manifest.json").read_text()
    (c.bundle / "manifest.json").write_text(text.replace('"current": 1', '"current": 1, "current": 1', 1))


def _truncated(c: Case) -> None:
    data = (c.bundle / "manifest.json").read_bytes()
    (c.bundle / "manifest.json").write_bytes(data[: len(data) // 2])


def _nan_rate(c: Case) -> None:
    m = read_manifest(c.bundle)
    m["modalities"]["target"]["input_rate"] = float("nan")
    (c.bundle / "manifest.json").write_text(json.dumps(m))  # json writes the bare NaN literal


def _inf_hop(c: Case) -> None:
    text = (c.bundle / "manifest.json").read_text()
    m = read_manifest(c.bundle)
    hop = m["modalities"]["target"]["hop_s"]
    (c.bundle / "manifest.json").write_text(text.replace(f'"hop_s": {hop}', '"hop_s": 1e999', 1))


def _huge_class(c: Case) -> None:
    m = read_manifest(c.bundle)
    m["classes"][0] = "x" * 2_000_000
    write_raw_manifest(c.bundle, m)


def _missing(c: Case) -> None:
    (c.bundle / "manifest.json").unlink()


def _manifest_dir(c: Case) -> None:
    (c.bundle / "manifest.json").unlink()
    (c.bundle / "manifest.json").mkdir()


FILE_CASES = [
    ("empty-file", _text(""), "manifest.json"),
    ("whitespace-only", _text("   \n\n"), "manifest.json"),
    ("truncated-json", _truncated, "manifest.json"),
    ("not-utf8", _bytes(b'{"task": "\xff\xfe"}'), "manifest.json"),
    ("utf16-bom", lambda c: (c.bundle / "manifest.json").write_bytes(
        (c.bundle / "manifest.json").read_text().encode("utf-16")), "manifest.json"),
    ("json-string", _text('"a bundle"'), "JSON object"),
    ("json-null", _text("null"), "JSON object"),
    ("duplicate-key", _dup_key, "twice"),
    ("nan-literal-rate", _nan_rate, "modalities.target.input_rate"),
    ("overflow-to-inf", _inf_hop, "hop_s: Infinity"),
    ("deeply-nested", _text('{"schema_version": 1, "report": ' + "[" * 100_000 + "]" * 100_000 + "}"),
     "manifest.json"),
    ("huge-class-name", _huge_class, "field classes.0"),
    ("manifest-missing", _missing, "manifest.json"),
    ("manifest-is-dir", _manifest_dir, "manifest.json"),
    ("binary-garbage", _bytes(bytes(range(256)) * 10), "manifest.json"),
]


@pytest.mark.parametrize(("name", "mutate", "culprit"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_manifest_file_refused(case, capsys, name, mutate, culprit):
    mutate(case)
    case.snapshot()
    line = assert_clean_refusal(*run_cli(["bundle", "verify", case.bundle], capsys), culprit)
    assert len(line) < 600
    case.unchanged()


def test_the_real_manifest_passes_the_schema(case):
    """The refusals above are not a schema that refuses everything."""
    Bundle.load(case.bundle).verify(all_bridges=True)


# --- fuzzing the loader ---------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                               max_size=4), max_leaves=20)


def _mutations(master: dict) -> st.SearchStrategy[dict]:
    """The real manifest with one value anywhere replaced by arbitrary JSON (or a key dropped)."""
    paths: list[tuple] = []

    def walk(node: Any, path: tuple) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))

    walk(master, ())

    @st.composite
    def mutate(draw: Any) -> dict:
        m = json.loads(json.dumps(master))
        path = draw(st.sampled_from(paths[1:]))
        node = m
        for k in path[:-1]:
            node = node[k]
        if draw(st.booleans()) and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = draw(JSON)
        return m

    return mutate()


@pytest.fixture(scope="module")
def master_manifest(hostile_master) -> dict:
    return read_manifest(hostile_master)


def _only_bundle_errors(data: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(BundleError):
            Manifest.from_dict(data, "fuzz/manifest.json")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_manifest_from_dict_raises_only_bundle_error(master_manifest, data):
    _only_bundle_errors(data.draw(_mutations(master_manifest)))


@settings(max_examples=150, deadline=None)
@given(value=JSON)
def test_fuzz_arbitrary_json_raises_only_bundle_error(value):
    _only_bundle_errors(value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_bundle_load_raises_only_bundle_error(hostile_master, tmp_path_factory, data):
    import shutil

    root = tmp_path_factory.mktemp("fuzz") / "b.bundle"
    shutil.copytree(hostile_master, root)
    m = data.draw(_mutations(read_manifest(hostile_master)))
    raw = data.draw(st.booleans())
    text = json.dumps(m) if not raw else json.dumps(m)[: data.draw(st.integers(0, 4000))]
    (root / "manifest.json").write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(BundleError):
            Bundle.load(root).verify(all_bridges=True)
