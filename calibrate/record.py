"""Record paired calibration data on site with :mod:`firmware_interface`, checked before a second is spent.

``--record SECONDS --board NAME[,k=v...]``: the board (and its device profile) must deliver both the source
and the target channels of the bundle, each at a rate the spec's band can use (above twice its upper edge;
calibration resamples any such rate to the model's). That is checked from the board description before the
session opens, so a board without ECG, or a 16 Hz PPG for a band up to 8 Hz, fails at once instead of after
minutes of recording. The recording (BrainFlow CSV + sidecar, written durably by
:func:`firmware_interface.record`) is kept beside the bundle, never inside it: a bundle holds only what its
manifest lists.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from calibrate.errors import CalibrationError
from edge_bridge.errors import EdgeBridgeError

logger = logging.getLogger(__name__)


def parse_board(spec: str) -> tuple[str, dict[str, str]]:
    """``"CYTON_BOARD,serial_port=/dev/ttyUSB0"`` -> ``("CYTON_BOARD", {"serial_port": "/dev/ttyUSB0"})``."""
    name, *items = [s.strip() for s in spec.split(",")]
    if not name:
        raise CalibrationError(f"--board must look like NAME[,key=value...], got {spec!r}")
    params: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CalibrationError("--board parameters must look like key=value (e.g. "
                                   f"serial_port=/dev/ttyUSB0), got {item!r} in {spec!r}")
        params[key] = value
    return name, params


def check_channels(channels: list[Any], rate: float, specs: dict[str, Any], board: str) -> None:
    """Each role's channels must be on the board (by name, else by modality) at a rate the band can use."""
    names = [c.name for c in channels]
    for role, spec in specs.items():
        found = [n for n in spec.channels if n in names]
        if len(found) != spec.n_channels:
            found = [c.name for c in channels if c.modality == spec.modality]
        if len(found) != spec.n_channels:
            raise CalibrationError(
                f"board {board} gives no {role} signal: the bundle needs {spec.modality} channel(s) "
                f"{list(spec.channels)}, the board offers {[f'{c.name} ({c.modality})' for c in channels]}. "
                "Name the rows with --profile (see firmware_interface/README.md), or record the two "
                "modalities separately and pass both files with --paired. Nothing was recorded")
        try:  # any rate above what the band needs: calibrate resamples it (Preprocessing.at_rate)
            spec.at_rate(float(rate))
        except EdgeBridgeError as exc:
            raise CalibrationError(
                f"board {board} samples at {rate:g} Hz, too slow for the bundle's {role} signal: {exc}. "
                "Record with a faster device, or the two modalities with separate devices and pass both "
                "files with --paired. Nothing was recorded") from None
        if abs(rate - spec.input_rate) > 1e-6:
            logger.info("board %s samples %s at %g Hz; the bundle's %s spec says %g Hz: calibration "
                        "resamples it to the model's %g Hz", board, spec.modality, rate, role,
                        spec.input_rate, spec.output_rate)


def record_paired(bundle_path: str | os.PathLike[str], board: str, seconds: float, *,
                  profile: str | os.PathLike[str] | None = None,
                  out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Record ``seconds`` of paired data from ``board`` for the bundle; returns the CSV path.

    Raises
    ------
    CalibrationError
        The board lacks a modality or runs at another rate (before recording), or recording fails.
    """
    from calibrate.core import load_calibratable
    from firmware_interface import BrainFlowSource, FirmwareError, record

    bundle = load_calibratable(bundle_path)
    if not seconds > 0:
        raise CalibrationError(f"--record needs a positive number of seconds, got {seconds!r}")
    name, params = parse_board(board)
    m = bundle.manifest
    try:
        source = BrainFlowSource(name, params, profile=profile)
    except FirmwareError as exc:
        raise CalibrationError(f"cannot open board {board}: {exc}") from None
    roles = {"source": m.source, "target": m.target, **{e.key: e.spec for e in m.extra_targets}}  # fused: all
    check_channels(source.channels, source.sampling_rate, roles, board)
    out = Path(out_dir) if out_dir else bundle.root.with_name(bundle.root.name + ".calibration")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"calibration-{stamp}.csv"
    logger.info("recording %g s from %s into %s", seconds, board, path)
    try:
        result = record(source, path, seconds)
    except (FirmwareError, FileExistsError) as exc:
        raise CalibrationError(f"recording from {board} failed: {exc}") from None
    if result.interrupted:
        raise CalibrationError(f"recording interrupted after {result.seconds:.0f} s; {path} is kept, pass it "
                               "with --paired to calibrate on what was recorded")
    return Path(result.path)
