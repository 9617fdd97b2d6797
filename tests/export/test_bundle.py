"""bundle.py as the contract: a written bundle verifies; damage gives a clear BundleError."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edge_bridge.bundle import SCHEMA_VERSION, Bundle, BundleError, pack, read_golden, unpack
from tests.export.conftest import edit_manifest


def test_manifest_content(bundles, tiny):
    task = tiny.task()
    b = Bundle.load(bundles["cpu"].root)
    m = json.loads((b.root / "manifest.json").read_text())
    # a single-target bundle is written as schema 1 (readable by older devices); SCHEMA_VERSION (2) is the
    # newest this edge-bridge reads, needed only by fused bundles
    assert m["schema_version"] == 1 < SCHEMA_VERSION and m["tool_version"]
    assert m["modalities"]["source"] == task.source.to_dict()
    assert m["modalities"]["target"] == task.target.to_dict()
    assert m["positions"] == {"i": tiny.I, "j": tiny.J}
    assert m["classes"] == list(task.classes)
    parts = m["parts"]
    assert set(parts) == {"target_front", "source_back", "source_front"}
    assert parts["target_front"]["inputs"] == [{"name": "x_target", "shape": [None, 1, 500],
                                                "dtype": "float32"}]
    assert parts["target_front"]["outputs"][0]["name"] == "h"
    assert parts["source_back"]["outputs"] == [{"name": "logits", "shape": [None, 3], "dtype": "float32"}]
    assert parts["source_front"]["inputs"][0] == {"name": "x_source", "shape": [None, 1, 400],
                                                  "dtype": "float32"}
    for p in parts.values():
        assert len(p["sha256"]) == 64 and p["precision"] in ("int8", "fp16", "fp32")
    assert parts["target_front"]["precision"] == "int8"
    cur = m["bridges"]["versions"]["0001"]
    assert m["bridges"]["current"] == 1
    assert cur["onnx"]["file"] == "bridges/v0001.onnx" and cur["onnx"]["precision"] == "fp32"
    assert cur["weights_file"] == "bridges/v0001.safetensors" and len(cur["weights_sha256"]) == 64
    assert m["golden"]["file"] == "golden.npz"
    q = m["quantization"]
    assert q["precision"] == "int8" and q["target"] == "cpu" and q["config"]["activation_type"] == "QUInt8"
    assert q["calibration"]["windows_given"] == 64
    acc = q["accuracy"]["shipped"]
    assert {"agreement", "max_logit_drift", "balanced_accuracy", "balanced_accuracy_fp32"} <= set(acc)
    assert m["report"]["bundle_bytes"] > 0 and "target_front.onnx" in m["report"]["file_bytes"]


def test_bridge_weights_reload_in_the_bridge_format(bundles, tiny):
    from safetensors import safe_open

    from edge_bridge.bridge import build_bridge
    from edge_bridge.models.io import load_state_checked, read_tensors

    path = bundles["cpu"].root / "bridges" / "v0001.safetensors"
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    bridge = build_bridge(meta["kind"], **json.loads(meta["config"]))
    load_state_checked(bridge, read_tensors(path), str(path))
    ref = tiny.composite().bridge
    for k, v in ref.state_dict().items():
        assert np.array_equal(bridge.state_dict()[k].numpy(), v.numpy())


def test_golden_is_consistent_and_reproducible(bundles):
    from edge_bridge.export.onnx_export import ort_session, run_session

    b = bundles["jetson"]
    g = read_golden(b)
    assert np.array_equal(g["bridge.h"], g["target_front.h"])
    assert np.array_equal(g["source_back.z"], g["bridge.z"])
    io_names = {"target_front": ("x_target", "h"), "bridge": ("h", "z"), "source_back": ("z", "logits"),
                "source_front": ("x_source", "z")}
    for part, (i, o) in io_names.items():
        got = run_session(ort_session(b.part_path(part)), part, g[f"{part}.{i}"])
        np.testing.assert_allclose(got, g[f"{part}.{o}"], atol=1e-5)


def test_no_temp_files_left(bundles):
    for b in bundles.values():
        leftovers = [p for p in b.root.parent.iterdir() if p.name.startswith(".")]
        assert leftovers == []
        assert [p for p in b.root.rglob("*") if p.name.startswith(".") or p.suffix in (".tmp", ".data")] == []


# --- damage -------------------------------------------------------------------------------------------------
def test_missing_file(bundle_copy):
    (bundle_copy / "source_back.onnx").unlink()
    with pytest.raises(BundleError, match=r"source_back\.onnx but the file is missing"):
        Bundle.load(bundle_copy)


def test_hash_mismatch(bundle_copy):
    with open(bundle_copy / "target_front.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="hashes to"):
        Bundle.load(bundle_copy)


def test_unknown_schema_version(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(BundleError, match=r"newer than this edge-bridge reads"):
        Bundle.load(bundle_copy)


def test_shape_mismatch_between_parts(bundle_copy):
    def edit(m):
        m["parts"]["source_back"]["inputs"][0]["shape"] = [None, 21, 16]

    edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match="do not fit together"):
        Bundle.load(bundle_copy)


def test_bridge_that_does_not_fit_the_fronts(bundle_copy):
    def edit(m):
        m["bridges"]["versions"]["0001"]["onnx"]["inputs"][0]["shape"] = [None, 9]

    edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match="bridge input h has shape"):
        Bundle.load(bundle_copy)


def test_dynamic_non_batch_axis_is_refused(bundle_copy):
    def edit(m):
        m["parts"]["target_front"]["inputs"][0]["shape"] = [None, 1, None]

    edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match=r"field parts\.target_front\.inputs\.0\.shape\.2: null"):
        Bundle.load(bundle_copy)


# --- transport ----------------------------------------------------------------------------------------------
def test_pack_unpack_round_trip(bundles, tmp_path):
    tar = pack(bundles["cpu"].root, tmp_path / "b.tar")
    b = unpack(tar, tmp_path / "out")
    assert b.manifest.to_dict() == bundles["cpu"].manifest.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar", "out"]


def _hostile_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w") as tar:
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, reason", [
    (tarfile.TarInfo("../evil.onnx"), "unsafe path"),
    (tarfile.TarInfo("bridges/../../evil.onnx"), "unsafe path"),
    (tarfile.TarInfo("/etc/evil.onnx"), "unsafe path"),
    (_link("manifest.json", "/etc/passwd", tarfile.SYMTYPE), "refusing link"),
    (_link("target_front.onnx", "../../x", tarfile.LNKTYPE), "refusing link"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"])
def test_unpack_refuses_hostile_tars(tmp_path, member, reason):
    tar = _hostile_tar(tmp_path / "evil.tar", member)
    with pytest.raises(BundleError, match=reason):
        unpack(tar, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar"]


def test_label_map_round_trips_and_is_optional(bundle_copy):
    """A merged-class task records annotation -> class; bundles without it (3-class) read as identity."""
    assert Bundle.load(bundle_copy).manifest.label_map == {}
    assert "label_map" not in json.loads((bundle_copy / "manifest.json").read_text())
    merge = {"baseline": "non-stress", "amusement": "non-stress", "stress": "stress"}
    edit_manifest(bundle_copy, lambda m: m.update(label_map=merge))
    m = Bundle.load(bundle_copy).manifest
    assert m.label_map == merge and m.to_dict()["label_map"] == merge
    edit_manifest(bundle_copy, lambda m: m.update(label_map=["baseline", "stress"]))  # not a mapping
    with pytest.raises(BundleError, match="field label_map: an array is not of type"):
        Bundle.load(bundle_copy)


def test_source_weights_ship_hash_checked_and_rebuild_the_source_model(bundles, tiny):
    """source_model/ (for calibrate's gradient path): safetensors + config listed with their hashes; loaded
    without unpickling, they compute the same logits as the bundle's source_back on its own tokens."""
    import torch

    from calibrate.torch_tail import check_matches, load_source_tail
    from deploy.engines import load_engine

    b = bundles["cpu"]
    files = b.manifest.source_model
    assert set(files) == {"config.json", "model.safetensors"}
    assert b.source_model_path == b.root / "source_model"
    tail = load_source_tail(b.source_model_path, b.manifest.positions["j"])
    xs = tiny.windows(64, 5).source
    with (load_engine(b.part_path("source_front"), "cpu") as sf,
          load_engine(b.part_path("source_back"), "cpu") as sb):
        z = sf.run({"x_source": xs})["z"]
        logits = sb.run({"z": z})["logits"]
    with torch.no_grad():  # the very weights of the exported source model
        want = tiny.composite().source_back(torch.as_tensor(z))
        got = tail.logits(torch.as_tensor(z)).numpy()
    assert check_matches(got, logits) < 0.5
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_source_weights_damaged_or_unlisted(bundle_copy):
    with open(bundle_copy / "source_model" / "model.safetensors", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"source_model/model\.safetensors.*hashes to"):
        Bundle.load(bundle_copy)
    edit_manifest(bundle_copy, lambda m: m.pop("source_model"))  # an ONNX-only bundle still loads
    assert Bundle.load(bundle_copy).source_model_path is None
    edit_manifest(bundle_copy, lambda m: m.update(source_model={"files": {"../x": "0" * 64}}))
    with pytest.raises(BundleError, match=r"field source_model\.files: \"\.\./x\" is not a relative"):
        Bundle.load(bundle_copy)
