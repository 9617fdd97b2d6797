"""`deploy` with trusted keys: the signer at start-up, unsigned and downgraded bundles, the default trust
directory, hot swaps checked like a start, and calibrate's signed acts (publish, rollback)."""

from __future__ import annotations

import json
import shutil

import pytest

from calibrate.core import rollback
from calibrate.errors import CalibrationError
from deploy.live import BridgeWatcher
from deploy.runtime import CompositeRunner
from edge_bridge import signing
from edge_bridge.bundle import Bundle, publish_bridge
from tests.hostile.conftest import assert_clean_refusal, run_cli, tree_state

from .conftest import publish_signed_v2


def _deploy(bundle, capsys, *extra):
    return run_cli(["deploy", "--bundle", bundle, "--self-test-only", *extra], capsys)


def test_signed_bundle_runs_and_names_its_signer(signed, keys, capsys):
    rc, _out, err = _deploy(signed, capsys, "--trust", keys.trust)
    assert rc == 0, err
    assert "signed: bundle tiny version 5 by acme (ed25519" in err and "self-test" in err
    record = json.loads(signing.paths.freshness_file().read_text())
    assert record["bundles"]["tiny"]["version"] == 5


def test_no_trust_configured_says_so(signed, capsys):
    rc, _out, err = _deploy(signed, capsys)
    assert rc == 0 and "signature: not checked" in err


def test_unsigned_refused_unless_allowed_and_said_in_the_summary(unsigned_master, keys, tmp_path, capsys):
    from tests.deploy.test_cli_deploy import _playback

    b = tmp_path / "unsigned.bundle"
    shutil.copytree(unsigned_master, b)
    assert_clean_refusal(*_deploy(b, capsys, "--trust", keys.trust), "not signed")
    csv = _playback(tmp_path, 5, labels=False)
    summary = tmp_path / "s.json"
    rc, out, err = run_cli(["deploy", "--bundle", b, "--trust", keys.trust, "--allow-unsigned", "--source",
                            f"playback:{csv}", "-o", tmp_path / "p.jsonl", "--summary-json", summary], capsys)
    assert rc == 0, err
    assert "signature: UNSIGNED, run with --allow-unsigned" in out.split("summary", 1)[1]
    assert json.loads(summary.read_text())["signature"] == "signature: UNSIGNED, run with --allow-unsigned"


def test_the_user_trust_directory_is_the_default(unsigned_master, signed, keys, tmp_path, capsys):
    signing.trust_key(keys.dir / "acme.pub", signing.paths.trust_dir(), "publisher")
    b = tmp_path / "unsigned.bundle"
    shutil.copytree(unsigned_master, b)
    assert_clean_refusal(*_deploy(b, capsys), "not signed")
    rc, _out, err = _deploy(signed, capsys)
    assert rc == 0 and "signed: bundle tiny version 5" in err and str(signing.paths.trust_dir()) in err


def test_replayed_older_version_is_refused_unless_downgrade_is_allowed(signed, keys, tmp_path, capsys):
    older = tmp_path / "older.bundle"
    shutil.copytree(signed, older)
    signing.sign_bundle(older, keys.publisher, version=4)
    assert _deploy(signed, capsys, "--trust", keys.trust)[0] == 0  # this device ran version 5
    before = tree_state(older)
    assert_clean_refusal(*_deploy(older, capsys, "--trust", keys.trust), "older than version 5")
    assert tree_state(older) == before
    rc, _out, err = _deploy(older, capsys, "--trust", keys.trust, "--allow-downgrade")
    assert rc == 0 and "DOWNGRADE allowed (--allow-downgrade)" in err
    record = json.loads(signing.paths.freshness_file().read_text())
    assert record["bundles"]["tiny"]["version"] == 5  # a permitted downgrade never lowers the record
    # the same version with other contents (two releases under one number) is refused too
    other = tmp_path / "other.bundle"
    from tests.deploy.conftest import build_bundle

    build_bundle(other, seed=3)
    signing.sign_bundle(other, keys.publisher, name="tiny", version=5)
    assert_clean_refusal(*_deploy(other, capsys, "--trust", keys.trust), "not the version 5")


def test_undoing_an_on_site_act_by_copying_back_an_old_bundle_is_refused(signed, keys, tmp_path, capsys):
    before_calibration = tmp_path / "old.bundle"
    shutil.copytree(signed, before_calibration)
    publish_signed_v2(signed, keys.device)
    assert _deploy(signed, capsys, "--trust", keys.trust)[0] == 0
    assert_clean_refusal(*_deploy(before_calibration, capsys, "--trust", keys.trust), "on-site act")


def test_rollback_is_a_signed_recorded_act(signed, keys, trust, monkeypatch, capsys):
    publish_signed_v2(signed, keys.device)
    before = tree_state(signed)
    with pytest.raises(CalibrationError, match="there is none"):  # no device key on this machine
        rollback(signed)
    assert tree_state(signed) == before
    monkeypatch.setenv("EDGE_BRIDGE_DEVICE_KEY", str(keys.device))
    rc, _out, err = run_cli(["calibrate", "--bundle", signed, "--rollback"], capsys)
    assert rc == 0, err
    v = signing.verify_signatures(signed, trust)
    assert (v.current, v.seq) == (1, 2)
    act = signing.bundle_sig.payload_digest((signed / "signatures/device-0002.json").read_bytes(), "x")[1]
    assert act["act"] == "rollback" and act["current"] == 1
    assert _deploy(signed, capsys, "--trust", keys.trust)[0] == 0


def test_calibrate_refuses_a_signed_bundle_without_the_device_key(signed, keys, capsys):
    publish_signed_v2(signed, keys.device)
    before = tree_state(signed)
    rc, _out, err = run_cli(["calibrate", "--bundle", signed, "--rollback"], capsys)
    assert rc == 2 and "edge-bridge keys new device" in err and "Traceback" not in err
    assert tree_state(signed) == before


def test_hot_swap_checks_signatures_like_a_start(signed, keys, trust, capsys):
    dt = signing.deploy_trust(signed, [keys.trust])
    runner = CompositeRunner(Bundle.load(signed), "cpu")
    try:
        watcher = BridgeWatcher(runner, check=dt.recheck)
        # a bridge published without the device's signature (by hand, or by a stranger) is never tried
        import numpy as np

        from tests.deploy.conftest import bridge_model

        onnx_bytes = bridge_model(np.random.default_rng(3)).SerializeToString()
        publish_bridge(Bundle.load(signed), onnx_bytes, b"w", origin="calibrate")
        with pytest.raises(signing.SigningError, match="bridge v0002 is in the manifest"):
            watcher.check_now()
        assert runner.bridge_version == 1
    finally:
        runner.close()


def test_hot_swap_takes_a_signed_bridge(signed, keys, capsys):
    dt = signing.deploy_trust(signed, [keys.trust])
    runner = CompositeRunner(Bundle.load(signed), "cpu")
    try:
        watcher = BridgeWatcher(runner, check=dt.recheck)
        publish_signed_v2(signed, keys.device)
        watcher.check_now()
        assert runner.bridge_version == 2 and "switched bridge v0001 -> v0002" in watcher.events[-1]
    finally:
        runner.close()
    assert json.loads(signing.paths.freshness_file().read_text())["bundles"]["tiny"]["seq"] == 1


def test_demo_bundle_signing_needs_no_set_up(unsigned_master, tmp_path):
    b = tmp_path / "demo.bundle"
    shutil.copytree(unsigned_master, b)
    signer = signing.sign_demo_bundle(b)
    assert signer.startswith("demo-publisher (ed25519 ")
    keys = signing.paths.demo_keys_dir()
    assert oct(keys.joinpath("demo-publisher.key").stat().st_mode & 0o777) == "0o600"
    store, where = signing.resolve_trust(None, demo=True)
    assert store is not None and "demo" in where
    assert signing.verify_signatures(b, store).name == "demo"
    sig = (b / signing.PUBLISHER_SIG).read_bytes()
    assert signing.sign_demo_bundle(b) == signer and (b / signing.PUBLISHER_SIG).read_bytes() == sig
    assert signing.paths.device_key() == keys / "device.key"  # calibrate on the demo signs with it
