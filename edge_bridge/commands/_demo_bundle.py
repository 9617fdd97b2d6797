"""``ensure_demo_bundle``: the cached demo bundle (device side finds it) or a fresh build (host side).

The two halves live apart on purpose: :mod:`deploy.demo_bundle` must stay torch-free and may not import the
method packages, and :mod:`edge_bridge.demo` may not import the device package. This module sits on top of
both, like the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.demo_bundle import DemoSettings, demo_bundle_dir, find_demo_bundle
from edge_bridge.bundle import Bundle


def ensure_demo_bundle(settings: DemoSettings | None = None, *, report: Callable[[str], None] | None = None,
                       progress: bool = True) -> Path:
    """The demo bundle's directory, building it first if there is no valid cached one."""
    from edge_bridge.signing import sign_demo_bundle

    settings = settings or DemoSettings()
    found = find_demo_bundle(settings)
    if found is not None:
        if report:
            from edge_bridge.demo import heldout_line, precision_line

            report(f"demo bundle: {found} (cached)")
            report(precision_line(Bundle.load(found)))
            held = demo_heldout(settings)
            if held:
                report(heldout_line(held))
    else:
        from edge_bridge.demo import build_demo_bundle

        found = build_demo_bundle(settings, demo_bundle_dir(settings), report=report, progress=progress)
    # signed with a key made in the user cache and trusted there, so deploy checks it with no set-up (an
    # older cached demo bundle is unsigned: signing is a no-op once it verifies)
    signer = sign_demo_bundle(found)
    if report:
        report(f"demo bundle signed by {signer}")
    return found


def demo_heldout(settings: DemoSettings | None = None) -> dict[str, Any] | None:
    """The build's check of the demo bundle on unseen simulated subjects (``settings.json``), if recorded."""
    held = _built(settings or DemoSettings()).get("heldout")
    return held if isinstance(held, dict) else None


def _built(settings: DemoSettings) -> dict[str, Any]:
    """What the build recorded beside the bundle (``settings.json``), or ``{}``."""
    try:
        return dict(json.loads((demo_bundle_dir(settings) / "settings.json").read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def demo_recording(bundle: Bundle, **kwargs: object) -> tuple[Path, Path]:
    """:func:`deploy.demo_bundle.demo_recording` with the host's simulator handed in."""
    from deploy.demo_bundle import demo_recording as find_or_write
    from edge_bridge.simulate import simulate_subject

    return find_or_write(bundle, simulate=simulate_subject, **kwargs)  # type: ignore[arg-type]
