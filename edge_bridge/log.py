"""One logger for the package and a ``verbose`` switch, in the manner of MNE-Python.

Library code never prints; it logs to ``logging.getLogger("edge_bridge.<module>")``. The CLI decides how
loud to be. ``verbose=None`` means the ``EDGE_BRIDGE_LOG_LEVEL`` environment variable, else INFO.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "edge_bridge"
# the project's packages, configured together so the CLI shows the device side's log lines too
PACKAGE_LOGGERS = ("edge_bridge", "firmware_interface", "deploy", "calibrate")
ENV_VAR = "EDGE_BRIDGE_LOG_LEVEL"


def resolve_level(verbose: bool | int | str | None) -> int:
    """Turn a ``verbose`` argument into a logging level.

    ``True``/``False`` mean INFO/WARNING, a name or number is used as is, ``None`` reads the environment.
    """
    if verbose is None:
        verbose = os.environ.get(ENV_VAR, "INFO")
    if isinstance(verbose, bool):
        return logging.INFO if verbose else logging.WARNING
    if isinstance(verbose, int):
        return verbose
    level = logging.getLevelName(str(verbose).upper())
    if not isinstance(level, int):
        raise ValueError(
            f"verbose must be a bool, an int or one of DEBUG/INFO/WARNING/ERROR, got {verbose!r} instead"
        )
    return level


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is *now*, not the stream at set-up time.

    A handler that kept the stream it was created with would write into a closed capture buffer once a
    test (or an embedding application) swaps ``sys.stderr``, e.g. from a background thread that logs after
    the command returned.
    """

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(verbose: bool | int | str | None = None) -> logging.Logger:
    """Attach one stderr handler to every project package logger (idempotent) and set their level.

    Returns the ``edge_bridge`` logger.
    """
    level = resolve_level(verbose)
    handler = next((h for h in logging.getLogger(LOGGER_NAME).handlers if getattr(h, "_edge_bridge", False)),
                   None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._edge_bridge = True  # type: ignore[attr-defined]
    for name in PACKAGE_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if handler not in logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False
    return logging.getLogger(LOGGER_NAME)
