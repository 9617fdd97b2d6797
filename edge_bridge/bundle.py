"""The bundle: the versioned, hash-checked directory that carries a composite from host to device.

Layout (DESIGN.md)::

    manifest.json        what everything is; every file with its sha256 and precision
    target_front.onnx    x_target (B, C_t, L_t) -> h (B, d_in)              target[:i] + mean pooling
    source_back.onnx     z (B, T, D_out)        -> logits (B, n_classes)    source[j:] + head
    source_front.onnx    x_source (B, C_s, L_s) -> z (B, T, D_out)          source[:j], for calibration only
    bridges/vNNNN.onnx   h (B, d_in)            -> z (B, T, D_out)          the only part refit on site
    bridges/vNNNN.safetensors                                               its weights
    golden.npz           inputs and expected outputs per part, for the device self-test

This module is torch-free (the device imports it). It reads and verifies bundles, writes manifests
atomically, publishes new bridge versions (temp file, fsync, rename; the manifest's current-version
pointer moves last, so a crash leaves the old or the new bridge current, never a broken one) and packs a
bundle to a ``.tar`` for transport, refusing path traversal and links on unpack.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_bridge import __version__
from edge_bridge.errors import EdgeBridgeError
from edge_bridge.fileio import atomic_path, atomic_write_text, fsync_dir
from edge_bridge.signals.spec import Preprocessing

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"
PRECISIONS = ("fp32", "fp16", "int8")

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
# The source model's torch weights (safetensors + config), optional: only calibrate's gradient path reads
# them, to run the paper's objective through source blocks j.. on site; the device never does.
SOURCE_MODEL_DIR = "source_model"


class BundleError(EdgeBridgeError, ValueError):
    """A bundle is missing, corrupted, from an unknown version, or its parts do not fit together."""


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
    """One published bridge: its graph, its weights and how it came to be."""

    version: int
    onnx: PartSpec
    weights_file: str
    weights_sha256: str
    created: str
    origin: str = "export"  # "export" or "calibrate"
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "onnx": self.onnx.to_dict(), "weights_file": self.weights_file,
                "weights_sha256": self.weights_sha256, "created": self.created, "origin": self.origin,
                "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BridgeVersion:
        return cls(int(d["version"]), PartSpec.from_dict(d["onnx"]), d["weights_file"], d["weights_sha256"],
                   d["created"], d.get("origin", "export"), dict(d.get("metrics", {})))


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
    quantization: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    label_map: dict[str, str] = field(default_factory=dict)  # annotation -> class (Task.label_map)
    source_model: dict[str, str] = field(default_factory=dict)  # file under SOURCE_MODEL_DIR -> sha256
    tool_version: str = __version__
    created: str = field(default_factory=lambda: _now())
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "tool_version": self.tool_version,
            "created": self.created,
            "task": self.task,
            "classes": list(self.classes),
            **({"label_map": dict(self.label_map)} if self.label_map else {}),
            "modalities": {"source": self.source.to_dict(), "target": self.target.to_dict()},
            "positions": dict(self.positions),
            "parts": {k: v.to_dict() for k, v in sorted(self.parts.items())},
            "bridges": {"current": self.current_bridge,
                        "versions": {f"{v:04d}": b.to_dict() for v, b in sorted(self.bridges.items())}},
            "golden": {"file": GOLDEN, "sha256": self.golden_sha256} if self.golden_sha256 else None,
            "quantization": self.quantization,
            "report": self.report,
            **({"source_model": {"files": dict(sorted(self.source_model.items()))}} if self.source_model
               else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = MANIFEST) -> Manifest:
        if not isinstance(d, dict):
            raise BundleError(f"{where}: expected a JSON object, got {type(d).__name__}")
        version = d.get("schema_version")
        if not isinstance(version, int):
            raise BundleError(f"{where}: no schema_version; this is not an edge-bridge bundle manifest")
        if version > SCHEMA_VERSION:
            raise BundleError(
                f"{where}: bundle schema_version {version} is newer than this edge-bridge reads "
                f"({SCHEMA_VERSION}); upgrade edge-bridge on the device (bundle made by "
                f"edge-bridge {d.get('tool_version', '?')})"
            )
        if version < 1:
            raise BundleError(f"{where}: unknown bundle schema_version {version}")
        known = {"schema_version", "tool_version", "created", "task", "classes", "modalities", "positions",
                 "parts", "bridges", "golden", "quantization", "report", "label_map", "source_model"}
        unknown = sorted(set(d) - known)
        if unknown:
            warnings.warn(f"{where}: ignoring unknown manifest keys {unknown} (newer edge-bridge?)",
                          stacklevel=3)
        try:
            bridges = d["bridges"]
            golden = d.get("golden")
            return cls(
                task=d["task"],
                classes=list(d["classes"]),
                label_map={str(k): str(v) for k, v in (d.get("label_map") or {}).items()},
                source=Preprocessing.from_dict(d["modalities"]["source"]),
                target=Preprocessing.from_dict(d["modalities"]["target"]),
                positions={"i": int(d["positions"]["i"]), "j": int(d["positions"]["j"])},
                parts={k: PartSpec.from_dict(v) for k, v in d["parts"].items()},
                bridges={int(k): BridgeVersion.from_dict(v) for k, v in bridges["versions"].items()},
                current_bridge=int(bridges["current"]),
                golden_sha256=golden["sha256"] if golden else None,
                quantization=dict(d.get("quantization") or {}),
                report=dict(d.get("report") or {}),
                source_model={str(k): str(v) for k, v in d["source_model"]["files"].items()}
                if d.get("source_model") else {},
                tool_version=d.get("tool_version", "?"),
                created=d.get("created", ""),
                schema_version=version,
            )
        except KeyError as exc:
            raise BundleError(f"{where}: missing required key {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"{where}: malformed manifest: {exc}") from None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def bridge_file(version: int, suffix: str) -> str:
    return f"bridges/v{version:04d}{suffix}"


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
        if not mpath.is_file():
            raise BundleError(f"{root}: no {MANIFEST}; this directory is not an edge-bridge bundle")
        try:
            data = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{mpath}: not valid JSON ({exc}); the bundle was truncated or edited"
                              ) from None
        bundle = cls(root, Manifest.from_dict(data, str(mpath)))
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
        return self.root / self.part(name).file

    def bridge_path(self, version: int | None = None) -> Path:
        v = self.manifest.current_bridge if version is None else version
        if v not in self.manifest.bridges:
            raise BundleError(f"{self.root}: no bridge v{v:04d}; published: {sorted(self.manifest.bridges)}")
        return self.root / self.manifest.bridges[v].onnx.file

    @property
    def source_model_path(self) -> Path | None:
        """``source_model/`` (weights for calibrate's gradient path), or None if the export left it out."""
        return self.root / SOURCE_MODEL_DIR if self.manifest.source_model else None

    @property
    def golden_path(self) -> Path | None:
        return self.root / GOLDEN if self.manifest.golden_sha256 else None

    # --- verification ---------------------------------------------------------------------------------
    def _check_file(self, rel: str, sha: str) -> None:
        path = self.root / rel
        if not path.is_file():
            raise BundleError(f"{self.root}: manifest lists {rel} but the file is missing; copy the bundle "
                              "again or re-run edge-bridge export")
        actual = sha256_file(path)
        if actual != sha:
            raise BundleError(
                f"{self.root}: manifest lists {rel} with sha256 {sha[:12]}…, but the file on disk hashes to "
                f"{actual[:12]}…; the bundle was changed or truncated after export. Copy the bundle again, "
                "or re-run edge-bridge export"
            )

    def verify(self, *, all_bridges: bool = False) -> None:
        """Check files, hashes and that the parts' tensors fit together; raise :class:`BundleError`."""
        m = self.manifest
        missing = [p for p in REQUIRED_PARTS if p not in m.parts]
        if missing:
            raise BundleError(f"{self.root}: manifest has no {missing} part(s); re-export the bundle")
        for name, spec in m.parts.items():
            if name not in PART_FILES:
                raise BundleError(f"{self.root}: unknown part {name!r} in manifest")
            self._check_part(name, spec)
            self._check_file(spec.file, spec.sha256)
        versions = m.bridges.values() if all_bridges else [self.current_bridge]
        for b in versions:
            self._check_part("bridge", b.onnx)
            self._check_file(b.onnx.file, b.onnx.sha256)
            self._check_file(b.weights_file, b.weights_sha256)
        if m.golden_sha256:
            self._check_file(GOLDEN, m.golden_sha256)
        for name, sha in m.source_model.items():
            if Path(name).name != name:
                raise BundleError(f"{self.root}: source_model lists {name!r}; only plain file names allowed")
            self._check_file(f"{SOURCE_MODEL_DIR}/{name}", sha)
        self._check_shapes(self.current_bridge.onnx)

    def _check_part(self, name: str, spec: PartSpec) -> None:
        if spec.precision not in PRECISIONS:
            raise BundleError(f"{self.root}: part {name} has unknown precision {spec.precision!r}")
        want_in, want_out = PART_IO[name]
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
    """Write ``manifest.json`` atomically (the last step of export and of every bridge publish)."""
    path = Path(root) / MANIFEST
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path


def part_spec(root: str | os.PathLike[str], rel: str, precision: str, inputs: list[TensorSpec],
              outputs: list[TensorSpec]) -> PartSpec:
    """A :class:`PartSpec` for a file already in the bundle, with its sha256."""
    return PartSpec(rel, sha256_file(Path(root) / rel), precision, inputs, outputs)


def next_bridge_version(manifest: Manifest) -> int:
    return max(manifest.bridges, default=0) + 1


def publish_bridge(bundle: Bundle, onnx_bytes: bytes, weights_bytes: bytes, *, origin: str,
                   metrics: dict[str, Any] | None = None, precision: str = "fp32") -> BridgeVersion:
    """Add a bridge version to the bundle and make it current, crash-safely.

    Order: write ``bridges/vNNNN.onnx`` and ``.safetensors`` atomically, then replace the manifest
    atomically. Until that last rename the old bridge stays current; afterwards the new one is. The
    previous versions remain on disk for :func:`set_current_bridge` (rollback).
    """
    m = bundle.manifest
    v = next_bridge_version(m)
    root = bundle.root
    onnx_rel, weights_rel = bridge_file(v, ".onnx"), bridge_file(v, ".safetensors")
    for rel, data in ((onnx_rel, onnx_bytes), (weights_rel, weights_bytes)):
        with atomic_path(root / rel) as tmp:
            tmp.write_bytes(data)
    old = bundle.current_bridge.onnx
    spec = PartSpec(onnx_rel, hashlib.sha256(onnx_bytes).hexdigest(), precision,
                    [TensorSpec(t.name, list(t.shape), t.dtype) for t in old.inputs],
                    [TensorSpec(t.name, list(t.shape), t.dtype) for t in old.outputs])
    version = BridgeVersion(v, spec, weights_rel, hashlib.sha256(weights_bytes).hexdigest(),
                            _now(), origin,
                            dict(metrics or {}))
    m.bridges[v] = version
    m.current_bridge = v
    write_manifest(root, m)
    logger.info("%s: published bridge v%04d (%s)", root, v, origin)
    return version


def set_current_bridge(bundle: Bundle, version: int) -> None:
    """Point the manifest at an already published bridge version (rollback), atomically."""
    m = bundle.manifest
    if version not in m.bridges:
        raise BundleError(f"{bundle.root}: no bridge v{version:04d} to roll back to; published: "
                          f"{sorted(m.bridges)}")
    b = m.bridges[version]
    bundle._check_file(b.onnx.file, b.onnx.sha256)
    bundle._check_file(b.weights_file, b.weights_sha256)
    m.current_bridge = version
    write_manifest(bundle.root, m)


# --- transport --------------------------------------------------------------------------------------------
def pack(root: str | os.PathLike[str], tar_path: str | os.PathLike[str]) -> Path:
    """Verify the bundle and write it as an uncompressed ``.tar`` (atomically)."""
    bundle = Bundle.load(root)
    tar_path = Path(tar_path)
    files = sorted(p for p in bundle.root.rglob("*") if p.is_file() and not p.name.startswith("."))
    with atomic_path(tar_path) as tmp, tarfile.open(tmp, "w") as tar:
        for p in files:
            rel = p.relative_to(bundle.root).as_posix()
            info = tarfile.TarInfo(rel)
            info.size = p.stat().st_size
            info.mtime = int(p.stat().st_mtime)
            info.mode = 0o644
            with open(p, "rb") as fh:
                tar.addfile(info, fh)
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
        raise BundleError(f"{tar_path}: not a readable tar file: {exc}") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(f"{tar_path}: truncated or corrupted tar: {exc}") from None
        for mem in members:
            name = mem.name
            if mem.issym() or mem.islnk():
                raise BundleError(f"{tar_path}: refusing link {name!r} -> {mem.linkname!r}")
            if not (mem.isfile() or mem.isdir()):
                raise BundleError(f"{tar_path}: refusing special file {name!r}")
            parts = Path(name).parts
            if name.startswith("/") or ".." in parts or not _SAFE_NAME.match(name.rstrip("/")):
                raise BundleError(f"{tar_path}: refusing unsafe path {name!r}")
        staging = dest.with_name(f".{dest.name}.unpacking")
        if staging.exists():
            raise BundleError(f"{staging} exists from an interrupted unpack; remove it and try again")
        staging.mkdir(parents=True)
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
            Bundle.load(staging)  # verify before it becomes visible
            os.replace(staging, dest)
            fsync_dir(dest.parent)
        except BaseException:
            _rmtree(staging)
            raise
    return Bundle.load(dest)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def read_golden(bundle: Bundle) -> dict[str, Any]:
    """The self-test tensors as a dict of arrays (``np.load`` without pickles)."""
    import numpy as np

    path = bundle.golden_path
    if path is None:
        raise BundleError(f"{bundle.root}: the bundle has no {GOLDEN}; re-export it")
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
