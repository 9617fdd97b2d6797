"""The bundle: the versioned, hash-checked directory that carries a composite from host to device.

Layout (DESIGN.md)::

    manifest.json        what everything is; every file with its sha256 and precision
    target_front.onnx    x_target (B, C_t, L_t) -> h (B, d_in)              target[:i] + mean pooling
    source_back.onnx     z (B, T, D_out)        -> logits (B, n_classes)    source[j:] + head
    source_front.onnx    x_source (B, C_s, L_s) -> z (B, T, D_out)          source[:j], for calibration only
    bridges/vNNNN.onnx   h (B, d_in)            -> z (B, T, D_out)          the only part refit on site
    bridges/vNNNN.safetensors                                               its weights
    bridges/vNNNN.golden.npz                                                its expected z and logits
    golden.npz           inputs and expected outputs per part, for the device self-test
    reference.npz        drift reference: statistics of target_front's h on held-out windows (optional)

A fused bundle (schema_version 2: a bridge fed by K target modalities) adds, per extra target ``KEY``::

    target_front_KEY.onnx  x_target_KEY (B, C_k, L_k) -> h_KEY (B, d_k)     that modality's backbone[:i_k]

and its bridge takes the inputs ``h, h_KEY, ...`` (main target first, then the extra targets in the
manifest's order). The main target keeps ``target_front.onnx``, so a single-target bundle is exactly what it
was, and it is still written as schema_version 1 (a device with an older edge-bridge reads it).

The manifest's format is the JSON Schema ``edge_bridge/bundle_schema.json`` (shipped with the package, so
other tools can validate bundles too); :meth:`Manifest.from_dict` checks it with ``jsonschema`` before any
field is used, and the error names the field and the bundle. Every path the manifest names is treated as
hostile (as TUF and OpenSSF model signing do): it must be relative, normalised, inside the bundle root, and
a regular file reached without following a link (``lstat`` on every segment). Writes (bridges, manifest,
locks) never go through a link either.

This module is torch-free (the device imports it). It reads and verifies bundles, writes manifests
atomically, publishes new bridge versions (temp file, fsync, rename; the manifest's current-version
pointer moves last, so a crash leaves the old or the new bridge current, never a broken one) and packs a
bundle to a ``.tar`` for transport, refusing path traversal and links on unpack.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import re
import stat
import tarfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from edge_bridge import __version__
from edge_bridge.errors import EdgeBridgeError
from edge_bridge.fileio import atomic_path, atomic_write_text, fsync_dir
from edge_bridge.signals.spec import Preprocessing

logger = logging.getLogger(__name__)

# The newest manifest format this reads and writes. A manifest is written with the lowest version that
# holds it: 1 unless it has extra targets (a fused bridge), which need 2. Why not always 2: a single-target
# bundle must stay readable by devices that run an older edge-bridge, and nothing in it changed.
SCHEMA_VERSION = 2
FUSED_SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"
REFERENCE = "reference.npz"  # drift reference statistics (edge_bridge.export.reference); optional
PRECISIONS = ("fp32", "fp16", "int8")
SCHEMA_FILE = Path(__file__).with_name("bundle_schema.json")
# What a bridge version's own golden file holds: the golden h, the bridge's z on it, and the chain's logits.
BRIDGE_GOLDEN_KEYS = ("bridge.h", "bridge.z", "source_back.z", "source_back.logits")
# ...and, for a fused bridge, its further golden inputs ``bridge.h_<key>`` (one per extra target)
_FUSED_GOLDEN = re.compile(r"^bridge\.h_[a-z][a-z0-9_]{0,31}$")


def _bridge_golden_keys(arrays: Mapping[str, Any]) -> list[str]:
    return [*BRIDGE_GOLDEN_KEYS, *sorted(k for k in arrays if _FUSED_GOLDEN.match(k))]

# The fixed parts: file name and tensor names. The bridge is versioned and lives under bridges/.
PART_FILES = {"target_front": "target_front.onnx", "source_back": "source_back.onnx",
              "source_front": "source_front.onnx"}
PART_IO = {
    "target_front": (("x_target",), ("h",)),
    "bridge": (("h",), ("z",)),
    "source_back": (("z",), ("logits",)),
    "source_front": (("x_source",), ("z",)),
}
REQUIRED_PARTS = ("target_front", "source_back")
EXTRA_FRONT_PREFIX = "target_front_"  # + an extra target's key: that modality's front (fused bundles)
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# The source model's torch weights (safetensors + config), optional: only calibrate's gradient path reads
# them, to run the paper's objective through source blocks j.. on site; the device never does.
SOURCE_MODEL_DIR = "source_model"


class BundleError(EdgeBridgeError, ValueError):
    """A bundle is missing, corrupted, from an unknown version, or its parts do not fit together."""


def extra_front(key: str) -> str:
    """The part name of an extra target's front: ``target_front_<key>`` (file ``target_front_<key>.onnx``)."""
    return f"{EXTRA_FRONT_PREFIX}{key}"


def part_io(name: str, extra_keys: tuple[str, ...] | list[str] = ()
            ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Input and output tensor names of part ``name`` in a bundle with extra targets ``extra_keys``.

    The bridge of a fused bundle takes ``h`` then ``h_<key>`` per extra target; an extra front maps
    ``x_target_<key>`` to ``h_<key>``; every other part is as in :data:`PART_IO`.

    Raises
    ------
    BundleError
        For a name that is no part of such a bundle.
    """
    if name == "bridge":
        return ("h", *(f"h_{k}" for k in extra_keys)), ("z",)
    if name.startswith(EXTRA_FRONT_PREFIX):
        key = name[len(EXTRA_FRONT_PREFIX):]
        if key in extra_keys:
            return (f"x_target_{key}",), (f"h_{key}",)
    if name in PART_IO:
        return PART_IO[name]
    known = [*PART_IO, *(extra_front(k) for k in extra_keys)]
    raise BundleError(f"unknown part {name!r}; this bundle's parts are {', '.join(known)}")


@dataclass
class ExtraTarget:
    """A further target modality of a fused bridge: its key, preprocessing and cut position ``i``.

    ``key`` is the task's target key (``Task.target_keys``, the modality's name, e.g. ``"eda"``); it names
    the part (``target_front_<key>``) and the tensors (``x_target_<key>``, ``h_<key>``).
    """

    key: str
    spec: Preprocessing
    i: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "preprocessing": self.spec.to_dict()}


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class TensorSpec:
    """Name, shape (``None`` for the dynamic batch axis only) and dtype of one graph input or output."""

    name: str
    shape: list[int | None]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], list(d["shape"]), d.get("dtype", "float32"))


@dataclass
class PartSpec:
    """One ONNX graph of the bundle."""

    file: str
    sha256: str
    precision: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "precision": self.precision,
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartSpec:
        return cls(d["file"], d["sha256"], d["precision"], [TensorSpec.from_dict(t) for t in d["inputs"]],
                   [TensorSpec.from_dict(t) for t in d["outputs"]])


@dataclass
class BridgeVersion:
    """One published bridge: its graph, its weights, its own expected outputs and how it came to be."""

    version: int
    onnx: PartSpec
    weights_file: str
    weights_sha256: str
    created: str
    origin: str = "export"  # "export" or "calibrate"
    metrics: dict[str, Any] = field(default_factory=dict)
    golden_file: str | None = None  # bridges/vNNNN.golden.npz (BRIDGE_GOLDEN_KEYS); None in older bundles
    golden_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"version": self.version, "onnx": self.onnx.to_dict(), "weights_file": self.weights_file,
             "weights_sha256": self.weights_sha256, "created": self.created, "origin": self.origin,
             "metrics": self.metrics}
        if self.golden_file and self.golden_sha256:
            d["golden"] = {"file": self.golden_file, "sha256": self.golden_sha256}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BridgeVersion:
        golden = d.get("golden") or {}
        return cls(int(d["version"]), PartSpec.from_dict(d["onnx"]), d["weights_file"], d["weights_sha256"],
                   d["created"], d.get("origin", "export"), dict(d.get("metrics", {})),
                   golden.get("file"), golden.get("sha256"))

    def files(self) -> list[tuple[str, str]]:
        """``(path, sha256)`` of every file of this version."""
        out = [(self.onnx.file, self.onnx.sha256), (self.weights_file, self.weights_sha256)]
        if self.golden_file and self.golden_sha256:
            out.append((self.golden_file, self.golden_sha256))
        return out


@dataclass
class Manifest:
    """Everything the device needs to know about a bundle, as ``manifest.json``."""

    task: str
    classes: list[str]
    source: Preprocessing
    target: Preprocessing
    positions: dict[str, int]
    parts: dict[str, PartSpec]
    bridges: dict[int, BridgeVersion]
    current_bridge: int
    golden_sha256: str | None = None
    golden_file: str = GOLDEN
    quantization: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    label_map: dict[str, str] = field(default_factory=dict)  # annotation -> class (Task.label_map)
    source_model: dict[str, str] = field(default_factory=dict)  # file under SOURCE_MODEL_DIR -> sha256
    reference: dict[str, str] | None = None  # {"file", "sha256"} of the drift reference; None: drift off
    extra_targets: list[ExtraTarget] = field(default_factory=list)  # a fused bridge's further targets
    tool_version: str = __version__
    created: str = field(default_factory=lambda: _now())
    schema_version: int = 1  # as read; what is written is :attr:`required_version`

    @property
    def extra_keys(self) -> tuple[str, ...]:
        """The extra targets' keys in bridge-input order (empty for a single-target bundle)."""
        return tuple(e.key for e in self.extra_targets)

    @property
    def required_version(self) -> int:
        """The lowest schema version that holds this manifest: 2 with extra targets, else 1."""
        return FUSED_SCHEMA_VERSION if self.extra_targets else 1

    def to_dict(self) -> dict[str, Any]:
        extra = self.extra_targets
        return {
            "schema_version": self.required_version,
            "tool_version": self.tool_version,
            "created": self.created,
            "task": self.task,
            "classes": list(self.classes),
            **({"label_map": dict(self.label_map)} if self.label_map else {}),
            "modalities": {"source": self.source.to_dict(), "target": self.target.to_dict(),
                           **({"extra_targets": [e.to_dict() for e in extra]} if extra else {})},
            "positions": {**self.positions,
                          **({"i_extra": {e.key: int(e.i) for e in extra}} if extra else {})},
            "parts": {k: v.to_dict() for k, v in sorted(self.parts.items())},
            "bridges": {"current": self.current_bridge,
                        "versions": {f"{v:04d}": b.to_dict() for v, b in sorted(self.bridges.items())}},
            "golden": ({"file": self.golden_file, "sha256": self.golden_sha256} if self.golden_sha256
                       else None),
            "quantization": self.quantization,
            "report": self.report,
            **({"source_model": {"files": dict(sorted(self.source_model.items()))}} if self.source_model
               else {}),
            **({"reference": dict(self.reference)} if self.reference else {}),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = MANIFEST, *, _valid: bool = False) -> Manifest:
        """Check ``d`` against the JSON Schema (``bundle_schema.json``), then build the manifest.

        Raises
        ------
        BundleError
            One line naming ``where`` (the bundle's manifest) and the offending field; never anything else.
        """
        if not isinstance(d, dict):
            raise BundleError(f"{where}: expected a JSON object, got {type(d).__name__}")
        version = d.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"{where}: no schema_version; this is not an edge-bridge bundle manifest")
        if version > SCHEMA_VERSION:
            raise BundleError(
                f"{where}: bundle schema_version {version} is newer than this edge-bridge reads "
                f"({SCHEMA_VERSION}); upgrade edge-bridge on the device (bundle made by "
                f"edge-bridge {_short(d.get('tool_version', '?'))})"
            )
        if version < 1:
            raise BundleError(f"{where}: unknown bundle schema_version {version}")
        if not _valid:
            validate_manifest(d, where)
        known = set(_schema()["properties"])
        unknown = sorted(set(d) - known)
        if unknown:
            warnings.warn(f"{where}: ignoring unknown manifest keys {_short(unknown)} (newer edge-bridge?)",
                          stacklevel=3)
        try:
            bridges = d["bridges"]
            golden = d.get("golden")
            versions = {}
            for key, value in bridges["versions"].items():
                if int(key) != value["version"]:
                    raise BundleError(f"{where}: field bridges.versions.{key}.version is {value['version']}, "
                                      f"but it is listed under {key}; the manifest was edited, re-export it")
                versions[int(key)] = BridgeVersion.from_dict(value)
            manifest = cls(
                task=d["task"],
                classes=list(d["classes"]),
                label_map={str(k): str(v) for k, v in (d.get("label_map") or {}).items()},
                source=Preprocessing.from_dict(d["modalities"]["source"]),
                target=Preprocessing.from_dict(d["modalities"]["target"]),
                positions={"i": int(d["positions"]["i"]), "j": int(d["positions"]["j"])},
                parts={k: PartSpec.from_dict(v) for k, v in d["parts"].items()},
                bridges=versions,
                current_bridge=int(bridges["current"]),
                golden_sha256=golden["sha256"] if golden else None,
                golden_file=golden["file"] if golden else GOLDEN,
                quantization=dict(d.get("quantization") or {}),
                report=dict(d.get("report") or {}),
                source_model={str(k): str(v) for k, v in d["source_model"]["files"].items()}
                if d.get("source_model") else {},
                reference={"file": d["reference"]["file"], "sha256": d["reference"]["sha256"]}
                if d.get("reference") else None,
                tool_version=d.get("tool_version", "?"),
                extra_targets=_extra_targets(d, where, version),
                created=d.get("created", ""),
                schema_version=version,
            )
        except BundleError:
            raise
        except KeyError as exc:
            raise BundleError(f"{where}: missing required key {_short(exc)}") from None
        except (EdgeBridgeError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise BundleError(f"{where}: malformed manifest: {_short(exc)}") from None
        if manifest.current_bridge not in manifest.bridges:
            raise BundleError(f"{where}: field bridges.current is {manifest.current_bridge}, which is not "
                              f"among the published versions {sorted(manifest.bridges)}")
        return manifest


def _extra_targets(d: dict[str, Any], where: str, version: int) -> list[ExtraTarget]:
    """The manifest's extra targets (``modalities.extra_targets`` with ``positions.i_extra``), checked."""
    listed = d["modalities"].get("extra_targets") or []
    i_extra = d["positions"].get("i_extra") or {}
    if not listed and not i_extra:
        return []
    if version < FUSED_SCHEMA_VERSION:
        raise BundleError(f"{where}: extra target modalities (a fused bridge) need schema_version "
                          f"{FUSED_SCHEMA_VERSION}, but the manifest says {version}; re-export the bundle")
    keys = [e["key"] for e in listed]
    main = d["modalities"]["target"].get("modality")
    bad = [k for k in keys if not _KEY.match(k) or k in ("target", "source")]
    if bad or len(set(keys)) != len(keys) or main in keys:
        raise BundleError(f"{where}: modalities.extra_targets keys {keys} must be unique lowercase names "
                          f"(letters, digits, '_'), none 'target', 'source' or the main target's {main!r}; "
                          "the manifest was edited, re-export the bundle")
    if sorted(i_extra) != sorted(keys):
        raise BundleError(f"{where}: positions.i_extra names {sorted(i_extra)} but modalities.extra_targets "
                          f"lists {keys}; every extra target needs its position, re-export the bundle")
    return [ExtraTarget(e["key"], Preprocessing.from_dict(e["preprocessing"]), int(i_extra[e["key"]]))
            for e in listed]


# sha256 of manifest texts that passed the schema: the same bytes need no second check (a publish reads,
# writes and re-reads the manifest; jsonschema takes tens of ms per check on a small CPU)
_VALID: dict[bytes, None] = {}


def _remember_valid(key: bytes) -> None:
    _VALID[key] = None
    while len(_VALID) > 64:
        del _VALID[next(iter(_VALID))]


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(_inline_refs(schema, schema.get("$defs", {})))


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with its local ``$ref``s replaced by their definitions (it has no recursive ones).

    Why: reference lookups dominate jsonschema's time; inlined, a manifest validates several times faster,
    which matters on a device that reloads the bundle on every publish.
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline_refs(defs[ref[len("#/$defs/"):]], defs), **extra}
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _short(value: Any, limit: int = 120) -> str:
    """``value`` as one line of at most ``limit`` characters (hostile manifests hold huge strings)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validate_manifest(data: Any, where: str = MANIFEST) -> None:
    """Check ``data`` against ``bundle_schema.json``; raise :class:`BundleError` naming the first bad field.

    Why a schema: every field is checked (types, ranges, unique class names, known precisions, safe paths)
    before any code uses it, in one place that other tools can read too.
    """
    import jsonschema

    try:
        errors = sorted(_validator().iter_errors(data), key=lambda e: (list(e.absolute_path), e.message))
    except (RecursionError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: the manifest cannot be checked against the schema: {_short(exc)}"
                          ) from None
    if not errors:
        bad = _non_finite(data, ())
        if bad is not None:
            raise BundleError(f"{where}: field {_short(bad, 80)}: NaN or infinity is not a number a bundle "
                              "may hold (see edge_bridge/bundle_schema.json); re-export the bundle")
        return
    err = jsonschema.exceptions.best_match(errors)
    field_name = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    what = _describe(err)
    raise BundleError(f"{where}: field {_short(field_name, 80)}: {what} (see edge_bridge/"
                      f"{SCHEMA_FILE.name}); the manifest was edited or damaged, re-export the bundle")


# free-form records (a figure may be NaN, e.g. a one-class balanced accuracy); nothing decides on them
_FREE_FORM = ("report", "quantization", "metrics")


def _non_finite(node: Any, path: tuple[Any, ...]) -> str | None:
    """The dotted path of the first NaN/inf outside the free-form records (JSON Schema lets NaN pass)."""
    stack = [(node, path)]
    while stack:
        node, path = stack.pop()
        if path and path[-1] in _FREE_FORM:
            continue
        if isinstance(node, float) and not math.isfinite(node):
            return ".".join(str(p) for p in path)
        if isinstance(node, dict):
            stack.extend((v, (*path, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(node))
    return None


def _describe(err: Any) -> str:
    """A short reason for one schema error (jsonschema's own message repeats whole sub-objects)."""
    v, value = err.validator, err.instance
    shown = ("an object" if isinstance(value, dict) else "an array" if isinstance(value, list) else
             _short(json.dumps(value, default=str), 60))
    if v == "required":
        missing = [k for k in err.validator_value if isinstance(value, dict) and k not in value]
        return f"missing required key(s) {missing}"
    if v == "additionalProperties":
        allowed = set(err.schema.get("properties") or {})
        extra = sorted(k for k in value if k not in allowed) if isinstance(value, dict) else []
        return f"unknown key(s) {_short(extra, 60)}"
    if v == "uniqueItems":
        return "has duplicate entries"
    if v == "pattern" and "A-Za-z0-9_][A-Za-z0-9_" in str(err.validator_value):
        return (f"{shown} is not a relative, normalised path inside the bundle (no absolute path, '..', "
                "hidden or empty segment)")
    if v == "pattern":
        return f"{shown} has the wrong form"
    if v == "enum":
        return f"{shown} is not one of {err.validator_value}"
    if v == "type":
        return f"{shown} is not of type {err.validator_value}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{shown} is out of range ({v} {err.validator_value})"
    if v in ("minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength"):
        return f"{shown} has too {'few' if v.startswith('min') else 'many'} entries/characters ({v} " \
               f"{err.validator_value})"
    return _short(err.message, 100)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def bridge_file(version: int, suffix: str) -> str:
    return f"bridges/v{version:04d}{suffix}"


# --- containment ----------------------------------------------------------------------------------------
# The schema's path pattern: relative, normalised, segments that do not start with '.' or '-'.
_SAFE_REL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")


def _check_rel(root: Path, rel: Any, what: str) -> list[str]:
    if not isinstance(rel, str) or len(rel) > 255 or not _SAFE_REL.match(rel):
        raise BundleError(f"{root}: {what} names the path {_short(repr(rel), 80)}, which is not relative, "
                          "normalised and inside the bundle; refusing it (re-export the bundle)")
    return rel.split("/")


def contained(root: str | os.PathLike[str], rel: Any, what: str = "a file") -> Path:
    """``root/rel`` after checking that it is a regular file inside the bundle, reached through no link.

    Why ``lstat`` on every segment: a manifest (or a directory in the bundle) is hostile input. A path
    with ``..``, an absolute path or a symlink anywhere on the way would let a device run, or a hash check
    bless, bytes from outside the bundle.
    """
    root = Path(root)
    segs = _check_rel(root, rel, what)
    cur = root
    for k, seg in enumerate(segs):
        cur = cur / seg
        last = k == len(segs) - 1
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise BundleError(f"{root}: manifest lists {rel} but the file is missing ({what}); copy the "
                              "bundle again or re-run edge-bridge export") from None
        except OSError as exc:
            raise BundleError(f"{root}: cannot look at {rel} ({exc.strerror or exc}); check the bundle's "
                              "permissions") from None
        if stat.S_ISLNK(st.st_mode):
            link = "/".join(segs[:k + 1])
            where = "is a symbolic link" if last else f"goes through the symbolic link {link}"
            raise BundleError(f"{root}: {rel} ({what}) {where}; a bundle holds regular files only, "
                              "refusing it (copy the real file into the bundle)")
        if not last and not stat.S_ISDIR(st.st_mode):
            raise BundleError(f"{root}: {rel} ({what}): {'/'.join(segs[:k + 1])} is not a directory")
        if last and not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{root}: {rel} ({what}) is not a regular file; refusing it")
    return cur


def write_target(root: str | os.PathLike[str], rel: str, what: str = "a file") -> Path:
    """``root/rel`` for writing: missing directories are made, none on the way (nor ``rel``) is a link.

    Used for every write into a bundle (bridges, manifest, lock), so a ``bridges/`` that is a link to
    another folder, or a manifest replaced by a link, makes the write fail instead of landing outside.
    """
    root = Path(root)
    segs = _check_rel(root, rel, what)
    try:
        rst = os.stat(root)
    except OSError as exc:
        raise BundleError(f"{root}: cannot write into the bundle ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(rst.st_mode):
        raise BundleError(f"{root}: not a directory; cannot write {rel}")
    cur = root
    for k, seg in enumerate(segs):
        cur = cur / seg
        last = k == len(segs) - 1
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            if last:
                break
            try:
                os.mkdir(cur)
            except OSError as exc:
                raise BundleError(f"{root}: cannot create {'/'.join(segs[:k + 1])}/ ({exc.strerror or exc})"
                                  ) from None
            continue
        except OSError as exc:
            raise BundleError(f"{root}: cannot look at {rel} ({exc.strerror or exc})") from None
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(f"{root}: refusing to write {rel} ({what}): {'/'.join(segs[:k + 1])} is a "
                              "symbolic link; a bundle holds regular files and directories only. Nothing "
                              "was written")
        if not last and not stat.S_ISDIR(st.st_mode):
            raise BundleError(f"{root}: cannot write {rel}: {'/'.join(segs[:k + 1])} is not a directory")
        if last and not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{root}: refusing to write {rel} ({what}): it exists and is not a regular "
                              "file. Nothing was written")
    return cur


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a key given twice is ambiguous (which one would the device read?)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise BundleError(f"the key {_short(repr(k), 60)} appears twice in one object of the manifest; "
                              "refusing the ambiguous manifest")
        out[k] = v
    return out


class Bundle:
    """A verified bundle on disk.

    Examples
    --------
    >>> b = Bundle.load("demo.bundle")        # verifies schema, hashes and shapes
    >>> b.part_path("target_front"), b.bridge_path()
    """

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    # --- reading --------------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | os.PathLike[str], *, verify: bool = True) -> Bundle:
        """Read ``root/manifest.json``; with ``verify`` (default) check every hash and every shape.

        Raises
        ------
        BundleError
            Missing directory or file, hash mismatch, unknown schema, parts that do not fit together.
        """
        root = Path(root)
        mpath = root / MANIFEST
        if not root.is_dir():
            raise BundleError(f"{root}: no such bundle directory (unpack a .tar with `edge-bridge bundle "
                              "unpack` or build one with `edge-bridge export`)")
        if not mpath.exists() and not mpath.is_symlink():
            raise BundleError(f"{root}: no {MANIFEST}; this directory is not an edge-bridge bundle")
        contained(root, MANIFEST, "the manifest")
        try:
            raw = mpath.read_bytes()
            text = raw.decode("utf-8")
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        except BundleError as exc:
            raise BundleError(f"{mpath}: {exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{mpath}: not valid JSON ({_short(exc)}); the bundle was truncated or edited"
                              ) from None
        except RecursionError:
            raise BundleError(f"{mpath}: nested too deeply to be a bundle manifest") from None
        except OSError as exc:
            raise BundleError(f"{mpath}: cannot read it ({exc.strerror or exc}); check the file's "
                              "permissions") from None
        key = hashlib.sha256(raw).digest()
        bundle = cls(root, Manifest.from_dict(data, str(mpath), _valid=key in _VALID))
        _remember_valid(key)
        if verify:
            bundle.verify()
        return bundle

    def reload(self) -> Bundle:
        """Read the manifest again (after calibration published a new bridge) and verify it."""
        return Bundle.load(self.root)

    @property
    def current_bridge(self) -> BridgeVersion:
        m = self.manifest
        if m.current_bridge not in m.bridges:
            raise BundleError(f"{self.root / MANIFEST}: current bridge v{m.current_bridge:04d} is not among "
                              f"the published versions {sorted(m.bridges)}")
        return m.bridges[m.current_bridge]

    def part(self, name: str) -> PartSpec:
        if name == "bridge":
            return self.current_bridge.onnx
        try:
            return self.manifest.parts[name]
        except KeyError:
            raise BundleError(f"{self.root}: the bundle has no {name!r} part (it has "
                              f"{sorted(self.manifest.parts)}); re-export it") from None

    def part_path(self, name: str) -> Path:
        return contained(self.root, self.part(name).file, f"part {name}")

    def bridge_path(self, version: int | None = None) -> Path:
        v = self.manifest.current_bridge if version is None else version
        if v not in self.manifest.bridges:
            raise BundleError(f"{self.root}: no bridge v{v:04d}; published: {sorted(self.manifest.bridges)}")
        return contained(self.root, self.manifest.bridges[v].onnx.file, f"bridge v{v:04d}")

    @property
    def extra_keys(self) -> tuple[str, ...]:
        """The extra targets of a fused bundle, in bridge-input order (empty: a single-target bundle)."""
        return self.manifest.extra_keys

    @property
    def source_model_path(self) -> Path | None:
        """``source_model/`` (weights for calibrate's gradient path), or None if the export left it out."""
        return self.root / SOURCE_MODEL_DIR if self.manifest.source_model else None

    @property
    def reference_path(self) -> Path | None:
        """The drift reference (``reference.npz``), or None for a bundle exported without one."""
        ref = self.manifest.reference
        return contained(self.root, ref["file"], "the drift reference") if ref else None

    @property
    def golden_path(self) -> Path | None:
        m = self.manifest
        return contained(self.root, m.golden_file, "the golden file") if m.golden_sha256 else None

    # --- verification ---------------------------------------------------------------------------------
    def _check_file(self, rel: str, sha: str, what: str = "a file") -> None:
        path = contained(self.root, rel, what)
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise BundleError(f"{self.root}: cannot read {rel} ({exc.strerror or exc}); check the bundle's "
                              "permissions or copy it again") from None
        if actual != sha:
            raise BundleError(
                f"{self.root}: manifest lists {rel} with sha256 {sha[:12]}…, but the file on disk hashes to "
                f"{actual[:12]}…; the bundle was changed or truncated after export. Copy the bundle again, "
                "or re-run edge-bridge export"
            )

    def verify(self, *, all_bridges: bool = False) -> None:
        """Check containment, files, hashes and that the parts' tensors fit; raise :class:`BundleError`."""
        m = self.manifest
        missing = [p for p in REQUIRED_PARTS if p not in m.parts]
        if missing:
            raise BundleError(f"{self.root}: manifest has no {missing} part(s); re-export the bundle")
        fronts = [extra_front(k) for k in m.extra_keys]
        absent = [f for f in fronts if f not in m.parts]
        if absent:
            raise BundleError(f"{self.root}: the manifest lists the extra target(s) {list(m.extra_keys)} "
                              f"of a fused bridge but has no {absent} part(s), so the bridge cannot be fed; "
                              "re-export the bundle")
        for name, spec in m.parts.items():
            if name not in PART_FILES and name not in fronts:
                raise BundleError(f"{self.root}: unknown part {name!r} in manifest")
            self._check_part(name, spec)
            self._check_file(spec.file, spec.sha256, f"part {name}")
        versions = m.bridges.values() if all_bridges else [self.current_bridge]
        for b in versions:
            self._check_part("bridge", b.onnx)
            for rel, sha in b.files():
                self._check_file(rel, sha, f"bridge v{b.version:04d}")
        if m.golden_sha256:
            self._check_file(m.golden_file, m.golden_sha256, "the golden file")
        if m.reference:
            self._check_file(m.reference["file"], m.reference["sha256"], "the drift reference")
        for name, sha in m.source_model.items():
            if Path(name).name != name:
                raise BundleError(f"{self.root}: source_model lists {name!r}; only plain file names allowed")
            self._check_file(f"{SOURCE_MODEL_DIR}/{name}", sha, "the source model")
        self._check_shapes(self.current_bridge.onnx)

    def _check_part(self, name: str, spec: PartSpec) -> None:
        if spec.precision not in PRECISIONS:
            raise BundleError(f"{self.root}: part {name} has unknown precision {spec.precision!r}")
        want_in, want_out = part_io(name, self.manifest.extra_keys)
        got_in = tuple(t.name for t in spec.inputs)
        got_out = tuple(t.name for t in spec.outputs)
        if (got_in, got_out) != (want_in, want_out):
            raise BundleError(f"{self.root}: part {name} has tensors {got_in} -> {got_out}, expected "
                              f"{want_in} -> {want_out}")
        for t in (*spec.inputs, *spec.outputs):
            if not t.shape or t.shape[0] is not None or any(s is None for s in t.shape[1:]):
                raise BundleError(f"{self.root}: part {name} tensor {t.name} has shape {t.shape}; only the "
                                  "batch axis (first) may be dynamic")

    def _check_shapes(self, bridge: PartSpec) -> None:
        """The chain must fit: x_target -> h -> z -> logits, and source_front's z must equal the bridge's."""
        m = self.manifest
        tf, sb = m.parts["target_front"], m.parts["source_back"]
        checks = [
            ("target_front input", tf.inputs[0].shape[1:], list(m.target.input_shape),
             "the target preprocessing spec"),
            ("bridge input h", bridge.inputs[0].shape, tf.outputs[0].shape, "target_front's output"),
            ("bridge output z", bridge.outputs[0].shape, sb.inputs[0].shape, "source_back's input"),
            ("source_back output", sb.outputs[0].shape[1:], [len(m.classes)], "the number of classes"),
        ]
        if "source_front" in m.parts:
            sf = m.parts["source_front"]
            checks += [("source_front input", sf.inputs[0].shape[1:], list(m.source.input_shape),
                        "the source preprocessing spec"),
                       ("source_front output z", sf.outputs[0].shape, sb.inputs[0].shape,
                        "source_back's input")]
        for k, (e, h) in enumerate(zip(m.extra_targets, bridge.inputs[1:], strict=True), start=1):
            front = m.parts[extra_front(e.key)]
            checks += [(f"{extra_front(e.key)} input", front.inputs[0].shape[1:], list(e.spec.input_shape),
                        f"the {e.key} preprocessing spec"),
                       (f"bridge input {k} {h.name}", h.shape, front.outputs[0].shape,
                        f"{extra_front(e.key)}'s output")]
        for what, got, want, against in checks:
            if list(got) != list(want):
                raise BundleError(f"{self.root}: {what} has shape {list(got)} but {against} needs "
                                  f"{list(want)}; the parts do not fit together (mixed bundles?)")

    def __repr__(self) -> str:
        m = self.manifest
        return (f"<Bundle {self.root} task={m.task} {m.target.modality}->{m.source.modality} "
                f"i={m.positions['i']} j={m.positions['j']} bridge=v{m.current_bridge:04d}>")


# --- writing ----------------------------------------------------------------------------------------------
def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (the last step of export and of every bridge publish).

    The manifest is checked against the schema first, so no writer can produce a bundle the device refuses.
    """
    data = manifest.to_dict()
    validate_manifest(data, f"{Path(root) / MANIFEST} (about to be written)")
    path = write_target(root, MANIFEST, "the manifest")
    text = json.dumps(data, indent=2) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise BundleError(f"{path}: cannot write the manifest ({exc.strerror or exc}); the bundle is as it "
                          "was") from None
    _remember_valid(hashlib.sha256(text.encode("utf-8")).digest())
    return path


def part_spec(root: str | os.PathLike[str], rel: str, precision: str, inputs: list[TensorSpec],
              outputs: list[TensorSpec]) -> PartSpec:
    """A :class:`PartSpec` for a file already in the bundle, with its sha256."""
    return PartSpec(rel, sha256_file(contained(root, rel)), precision, inputs, outputs)


def next_bridge_version(manifest: Manifest) -> int:
    return max(manifest.bridges, default=0) + 1


def golden_bytes(arrays: Mapping[str, Any]) -> bytes:
    """A bridge version's own golden file as ``.npz`` bytes, after checking it is whole and finite.

    Raises
    ------
    BundleError
        A key of :data:`BRIDGE_GOLDEN_KEYS` is missing, or a value is NaN/inf: a chain whose logits are
        not finite on the golden inputs must never become current (its every window would be a non-class).
    """
    import numpy as np

    missing = [k for k in BRIDGE_GOLDEN_KEYS if k not in arrays]
    if missing:
        raise BundleError(f"a bridge's golden outputs need {list(BRIDGE_GOLDEN_KEYS)}; missing {missing}")
    out = {k: np.ascontiguousarray(np.asarray(arrays[k], dtype=np.float32))
           for k in _bridge_golden_keys(arrays)}
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            what = "logits" if k == "source_back.logits" else k
            raise BundleError(f"the chain gives non-finite {what} (NaN or inf) on the bundle's golden "
                              "inputs; such a bridge would decide nothing, refusing it")
    buf = io.BytesIO()
    np.savez(buf, **out)
    return buf.getvalue()


def write_bridge_golden(root: str | os.PathLike[str], version: int, arrays: Mapping[str, Any]
                        ) -> tuple[str, str]:
    """Write ``bridges/vNNNN.golden.npz`` atomically; returns ``(path, sha256)`` for the manifest."""
    data = golden_bytes(arrays)
    rel = bridge_file(version, ".golden.npz")
    _write_file(Path(root), rel, data, f"bridge v{version:04d}")
    return rel, hashlib.sha256(data).hexdigest()


def _write_file(root: Path, rel: str, data: bytes, what: str) -> None:
    path = write_target(root, rel, what)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise BundleError(f"{root}: cannot write {rel} ({exc.strerror or exc}); nothing was published"
                          ) from None


def publish_bridge(bundle: Bundle, onnx_bytes: bytes, weights_bytes: bytes, *, origin: str,
                   metrics: dict[str, Any] | None = None, precision: str = "fp32",
                   golden: Mapping[str, Any] | None = None) -> BridgeVersion:
    """Add a bridge version to the bundle and make it current, crash-safely.

    Order: write ``bridges/vNNNN.onnx``, ``.safetensors`` and (with ``golden``) ``.golden.npz``
    atomically, then replace the manifest atomically. Until that last rename the old bridge stays
    current; afterwards the new one is. A publish that fails before it removes the files it wrote. The
    previous versions remain on disk for :func:`set_current_bridge` (rollback).

    ``golden`` is this version's own expected outputs on the bundle's golden inputs
    (:data:`BRIDGE_GOLDEN_KEYS`, computed by the caller with ONNX Runtime: calibrate uses
    :func:`deploy.runtime.bridge_golden`); with it a fresh start self-tests this version like an exported
    one. Non-finite values refuse the publish. Without it the version loads, but a fresh start cannot
    self-test it.
    """
    m = bundle.manifest
    v = next_bridge_version(m)
    root = bundle.root
    onnx_rel, weights_rel = bridge_file(v, ".onnx"), bridge_file(v, ".safetensors")
    gold = golden_bytes(golden) if golden is not None else None
    files = [(onnx_rel, onnx_bytes), (weights_rel, weights_bytes)]
    if gold is not None:
        files.append((bridge_file(v, ".golden.npz"), gold))
    for rel, _ in files:  # refuse links before writing anything
        write_target(root, rel, f"bridge v{v:04d}")
    old = bundle.current_bridge.onnx
    spec = PartSpec(onnx_rel, hashlib.sha256(onnx_bytes).hexdigest(), precision,
                    [TensorSpec(t.name, list(t.shape), t.dtype) for t in old.inputs],
                    [TensorSpec(t.name, list(t.shape), t.dtype) for t in old.outputs])
    version = BridgeVersion(v, spec, weights_rel, hashlib.sha256(weights_bytes).hexdigest(),
                            _now(), origin, dict(metrics or {}),
                            bridge_file(v, ".golden.npz") if gold is not None else None,
                            hashlib.sha256(gold).hexdigest() if gold is not None else None)
    written: list[Path] = []
    previous = m.current_bridge
    try:
        for rel, data in files:
            _write_file(root, rel, data, f"bridge v{v:04d}")
            written.append(root / rel)
        m.bridges[v] = version
        m.current_bridge = v
        write_manifest(root, m)
    except BaseException:
        m.bridges.pop(v, None)
        m.current_bridge = previous
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    logger.info("%s: published bridge v%04d (%s)", root, v, origin)
    return version


def set_current_bridge(bundle: Bundle, version: int) -> None:
    """Point the manifest at an already published bridge version (rollback), atomically."""
    m = bundle.manifest
    if version not in m.bridges:
        raise BundleError(f"{bundle.root}: no bridge v{version:04d} to roll back to; published: "
                          f"{sorted(m.bridges)}")
    b = m.bridges[version]
    bundle._check_part("bridge", b.onnx)
    for rel, sha in b.files():
        bundle._check_file(rel, sha, f"bridge v{version:04d}")
    m.current_bridge = version
    write_manifest(bundle.root, m)


# --- transport --------------------------------------------------------------------------------------------
def pack(root: str | os.PathLike[str], tar_path: str | os.PathLike[str]) -> Path:
    """Verify the bundle (every version) and write it as an uncompressed ``.tar`` (atomically).

    Only regular files go in; a link anywhere in the bundle refuses the pack (``pack`` never copies a
    link's target), and so does a ``tar_path`` inside the bundle (the tar would change what it packs).
    """
    bundle = Bundle.load(root)
    bundle.verify(all_bridges=True)
    tar_path = Path(tar_path)
    broot = bundle.root.resolve()
    tar_abs = tar_path.resolve() if tar_path.parent.exists() else tar_path.absolute()
    if tar_abs == broot or broot in tar_abs.parents:
        raise BundleError(f"{tar_path}: the tar would be written inside the bundle {bundle.root}; choose -o "
                          "outside it")
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(bundle.root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            if name.startswith("."):  # locks, temp files of an interrupted write
                continue
            path = base / name
            rel = path.relative_to(bundle.root).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise BundleError(f"{bundle.root}: refusing to pack {rel}: it is a symbolic link (a bundle "
                                  "holds regular files only); nothing was written")
            if stat.S_ISREG(st.st_mode):
                files.append((rel, path))
            elif not stat.S_ISDIR(st.st_mode):
                raise BundleError(f"{bundle.root}: refusing to pack {rel}: not a regular file")
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    try:
        with atomic_path(tar_path) as tmp, tarfile.open(tmp, "w") as tar:
            for rel, p in sorted(files):
                info = tarfile.TarInfo(rel)
                info.size = p.stat().st_size
                info.mtime = int(p.stat().st_mtime)
                info.mode = 0o644
                with open(p, "rb") as fh:
                    tar.addfile(info, fh)
    except OSError as exc:
        raise BundleError(f"{tar_path}: cannot write the tar ({exc.strerror or exc}); nothing was written"
                          ) from None
    return tar_path


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


def unpack(tar_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Bundle:
    """Extract a bundle ``.tar`` into ``dest`` (must not exist) and verify it.

    Refuses absolute paths, ``..``, links, devices and anything but regular files and directories, before
    writing a byte. Extraction goes to a temporary sibling directory that is renamed into place only after
    the bundle verifies, so a bad tar leaves nothing behind.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    if dest.exists():
        raise BundleError(f"{dest} already exists; choose a new directory (nothing was overwritten)")
    try:
        tar = tarfile.open(tar_path, "r")  # noqa: SIM115 - closed by the with-block below
    except (tarfile.TarError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise BundleError(f"{tar_path}: not a readable tar file ({_short(reason, 80)}); pack the bundle "
                          "with `edge-bridge bundle pack`") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(f"{tar_path}: truncated or corrupted tar: {_short(exc, 80)}") from None
        seen: set[str] = set()
        for mem in members:
            name = mem.name
            if name.rstrip("/") in seen:
                raise BundleError(f"{tar_path}: member {_short(repr(name), 80)} appears twice; refusing the "
                                  "ambiguous tar")
            seen.add(name.rstrip("/"))
            if mem.issym() or mem.islnk():
                raise BundleError(f"{tar_path}: refusing link {_short(repr(name), 80)} -> "
                                  f"{_short(repr(mem.linkname), 80)}")
            if not (mem.isfile() or mem.isdir()):
                raise BundleError(f"{tar_path}: refusing special file {_short(repr(name), 80)}")
            parts = Path(name).parts
            if name.startswith("/") or ".." in parts or not _SAFE_NAME.match(name.rstrip("/")):
                raise BundleError(f"{tar_path}: refusing unsafe path {_short(repr(name), 80)}")
        staging = dest.with_name(f".{dest.name}.unpacking")
        if staging.exists():
            raise BundleError(f"{staging} exists from an interrupted unpack; remove it and try again")
        try:
            staging.mkdir(parents=True)
        except OSError as exc:
            raise BundleError(f"{dest}: cannot create it ({exc.strerror or exc})") from None
        try:
            for mem in members:
                target = staging / mem.name
                if mem.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(mem)
                if src is None:
                    raise BundleError(f"{tar_path}: cannot read member {mem.name!r}")
                data = src.read()
                if len(data) != mem.size:
                    raise BundleError(f"{tar_path}: member {mem.name!r} is truncated")
                with open(target, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            Bundle.load(staging).verify(all_bridges=True)  # verify before it becomes visible
            os.replace(staging, dest)
            fsync_dir(dest.parent)
        except OSError as exc:
            _rmtree(staging)
            raise BundleError(f"{dest}: cannot unpack into it ({exc.strerror or exc}); nothing was left "
                              "behind") from None
        except BaseException:
            _rmtree(staging)
            raise
    return Bundle.load(dest)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _load_npz(path: Path, what: str) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: {what} is not a readable .npz of plain arrays ({_short(exc, 80)}); "
                          "re-export the bundle") from None


def read_golden(bundle: Bundle, version: int | None = None, *, strict: bool = True) -> dict[str, Any]:
    """The self-test tensors for bridge ``version`` (default: current) as arrays (never unpickled).

    ``golden.npz`` holds every part's inputs and outputs as exported. A version with its own golden file
    (``bridges/vNNNN.golden.npz``) replaces the bridge's and source back's entries with its own, so a
    bridge refit on site self-tests at start like the exported one. Bundles from before per-version files
    still work for v0001 (``golden.npz`` is its file); a later version without one cannot be self-tested
    (``BundleError``), unless ``strict`` is false: then ``golden.npz`` comes back as it is (its inputs are
    still the bundle's golden inputs; its bridge outputs are v0001's).
    """
    path = bundle.golden_path
    if path is None:
        raise BundleError(f"{bundle.root}: the bundle has no {GOLDEN}; re-export it")
    arrays = _load_npz(path, "the golden file")
    v = bundle.manifest.current_bridge if version is None else version
    b = bundle.manifest.bridges.get(v)
    if b is None:
        raise BundleError(f"{bundle.root}: no bridge v{v:04d}; published: {sorted(bundle.manifest.bridges)}")
    if b.golden_file and b.golden_sha256:
        gpath = contained(bundle.root, b.golden_file, f"bridge v{v:04d}")
        bundle._check_file(b.golden_file, b.golden_sha256, f"bridge v{v:04d}")
        own = _load_npz(gpath, f"bridge v{v:04d}'s golden file")
        missing = [k for k in BRIDGE_GOLDEN_KEYS if k not in own]
        if missing:
            raise BundleError(f"{gpath}: bridge v{v:04d}'s golden file lacks {missing}; re-publish it")
        for k in list(arrays):  # drop the exported bridge's plain-name entries too
            if k in ("z", "logits") or k.split(".")[0].split("/")[0] in ("bridge", "source_back"):
                del arrays[k]
        arrays.update({k: own[k] for k in _bridge_golden_keys(own)})
    elif v != 1 and strict:
        raise BundleError(
            f"{bundle.root}: bridge v{v:04d} has no expected outputs of its own (published by an older "
            "edge-bridge), so the self-test cannot check it; roll back to a version that has them "
            "(edge-bridge calibrate --rollback) or calibrate again with this edge-bridge")
    return arrays


def read_reference(bundle: Bundle) -> dict[str, Any] | None:
    """The drift reference statistics as plain arrays (never unpickled), or None if the bundle has none.

    The hash is checked again here: the file is read long after ``Bundle.load`` verified it.
    """
    ref = bundle.manifest.reference
    if not ref:
        return None
    path = contained(bundle.root, ref["file"], "the drift reference")
    bundle._check_file(ref["file"], ref["sha256"], "the drift reference")
    return _load_npz(path, "the drift reference")
