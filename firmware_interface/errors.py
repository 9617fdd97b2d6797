"""The exceptions ``firmware_interface`` raises, in one place.

This package is a leaf (numpy, brainflow and the standard library only), so it cannot reuse
``edge_bridge.errors``; the CLI turns these into its own one-line errors. Each class also subclasses a
built-in, so ``except ValueError`` or ``except ConnectionError`` keeps working for callers that do not know
about us.
"""

from __future__ import annotations


class FirmwareError(Exception):
    """Base class of every error this package raises on purpose."""


class ProfileError(FirmwareError, ValueError):
    """A device profile, sidecar or source spec is malformed or does not fit the board."""


class FrameError(FirmwareError, ValueError):
    """A frame cannot be encoded (bad shape, value out of range, unsupported format)."""


class SourceError(FirmwareError, ConnectionError):
    """A stream could not be opened, or was lost and not recovered within the allowed attempts."""


class BoardError(SourceError):
    """A BrainFlow call failed; keeps BrainFlow's ``exit_code`` and adds what BrainFlow leaves out.

    BrainFlow's own messages ("unable to prepare streaming session") name neither the board nor the port, so
    this error carries the board name, where it was looked for (serial port, MAC, IP or file) and what to
    check.

    Parameters
    ----------
    message : str
        What failed.
    exit_code : int or None
        BrainFlow's ``BrainFlowExitCodes`` value, so callers can branch on it.
    board : str or None
        Board name, e.g. ``"SYNTHETIC_BOARD"``.
    where : str or None
        The connection parameters that matter, e.g. ``"serial_port=/dev/ttyUSB0"``.
    hint : str or None
        What the user should check or do.
    """

    def __init__(self, message: str, *, exit_code: int | None = None, board: str | None = None,
                 where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.exit_code = exit_code
        self.board = board
        self.where = where
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        context = [f"board {self.board}"] if self.board else []
        if self.where:
            context.append(self.where)
        if self.exit_code is not None:
            context.append(f"BrainFlow exit code {_exit_code_name(self.exit_code)}:{self.exit_code}")
        text = self.message + (f" ({', '.join(context)})" if context else "")
        return text + (f". {self.hint}" if self.hint else "")


def _exit_code_name(code: int) -> str:
    # straight from brainflow, not from our _brainflow module (which imports this one): no import circle
    try:
        from brainflow.exit_codes import BrainFlowExitCodes

        return BrainFlowExitCodes(code).name
    except Exception:  # an unknown code, or brainflow missing: the number alone still helps
        return "UNKNOWN"
