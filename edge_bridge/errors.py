"""The exceptions edge-bridge raises, in one place.

Each subclasses a built-in as well as :class:`EdgeBridgeError`, so callers can catch either
("except ValueError" keeps working for code that does not know about us).
"""

from __future__ import annotations


class EdgeBridgeError(Exception):
    """Base class of every error edge-bridge raises on purpose (the CLI prints these as one line)."""


class SpecError(EdgeBridgeError, ValueError):
    """A preprocessing spec is inconsistent or cannot be read."""


class SignalError(EdgeBridgeError, ValueError):
    """Signal data do not fit what the pipeline expects (shape, sampling rate, channels)."""


class QualityError(SignalError):
    """A window failed the signal-quality gate and must not reach a model."""

    def __init__(self, message: str, flags: object = None) -> None:
        super().__init__(message)
        self.flags = flags


class RecordingError(EdgeBridgeError, ValueError):
    """A recording file is missing, truncated or malformed, or its contents are inconsistent."""
