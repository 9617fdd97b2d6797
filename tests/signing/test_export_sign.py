"""`edge-bridge export --sign KEY`: the real export of a tiny run, signed; the device verifies it."""

from __future__ import annotations

import os
from types import SimpleNamespace

from edge_bridge import signing
from tests.hostile.conftest import run_cli


def test_export_sign_then_deploy_verifies(tmp_path, keys, capsys):
    from tests.export.conftest import tiny_composite, tiny_task, tiny_windows
    from tests.export.test_cli_export import _make_run, _windows

    tiny = SimpleNamespace(task=tiny_task, composite=tiny_composite, windows=tiny_windows)
    run = _make_run(tiny, tmp_path)
    cal = tmp_path / "cal.npz"
    _windows(tiny, ["s1", "s2", "s3", "s4"], 6, 6).save(cal)
    out = tmp_path / "stress.bundle"
    rc, text, err = run_cli(["export", "--run", run, "-o", out, "--calibration-data", cal, "--sign",
                             keys.publisher, "--bundle-version", "7", "-q"], capsys)
    assert rc == 0, err
    assert "signed: bundle stress version 7 by acme" in text and "signing took" in text
    v = signing.verify_signatures(out, signing.TrustStore.load([keys.trust]))
    assert v.version == 7 and v.files >= 7  # parts, bridge files, golden files, source_model/
    assert any(rel.startswith("source_model/") for rel in signing.bundle_sig.bundle_files(out))
    rc, text, err = run_cli(["deploy", "--bundle", out, "--trust", keys.trust, "--self-test-only"], capsys)
    assert rc == 0 and "signed: bundle stress version 7" in err, err


def test_export_refuses_a_bad_key_before_exporting(tmp_path, keys, capsys):
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(keys.publisher, 0o640)
    rc, _, err = run_cli(["export", "--run", run, "-o", tmp_path / "b", "--sign", keys.publisher], capsys)
    assert rc == 2 and "chmod 600" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    rc, _text, err = run_cli(["export", "--run", run, "-o", tmp_path / "b", "--bundle-version", "3"], capsys)
    assert rc == 2 and "give --sign KEY too" in err
