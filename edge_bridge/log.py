"""One logger for the package and a ``verbose`` switch, in the manner of MNE-Python.

Library code never prints; it logs to ``logging.getLogger("edge_bridge.<module>")``. The CLI decides how
loud to be. ``verbose=None`` means the ``EDGE_BRIDGE_LOG_LEVEL`` environment variable, else INFO.
"""

from __future__ import annotations

import logging
import os

LOGGER_NAME = "edge_bridge"
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


def setup_logging(verbose: bool | int | str | None = None) -> logging.Logger:
    """Attach one stderr handler to the package logger (idempotent) and set its level."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(resolve_level(verbose))
    if not any(getattr(h, "_edge_bridge", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._edge_bridge = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    return logger
