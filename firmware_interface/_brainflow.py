"""BrainFlow behind one door: a quiet import, board names, input parameters and error translation.

BrainFlow 5.x imports ``pkg_resources`` at import time (a deprecation warning on every run) and its native
logger writes to stderr by default. Everything in this package reaches BrainFlow through here, so the
warning is swallowed once, the native logger stays off unless asked for, and ``BrainFlowError`` becomes our
:class:`~firmware_interface.errors.BoardError` with the board, the port or file, and what to check.
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Mapping
from typing import Any

from firmware_interface.errors import BoardError, ProfileError

logger = logging.getLogger(__name__)

with warnings.catch_warnings():
    # BrainFlow imports pkg_resources when it first loads its native libraries, which warns under
    # setuptools >= 67; load them here, once, with that warning silenced.
    warnings.simplefilter("ignore")
    from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams, BrainFlowPresets
    from brainflow.data_filter import DataFilter
    from brainflow.exit_codes import BrainFlowError, BrainFlowExitCodes

    BoardShim.get_version()
    DataFilter.get_version()

__all__ = [
    "BoardIds",
    "BoardShim",
    "BrainFlowError",
    "BrainFlowExitCodes",
    "BrainFlowInputParams",
    "BrainFlowPresets",
    "DataFilter",
    "board_name",
    "exit_code_name",
    "make_params",
    "resolve_board",
    "set_brainflow_logging",
    "translate_error",
]

_logging_configured = False


def set_brainflow_logging(verbose: bool = False) -> None:
    """Switch BrainFlow's native loggers (board controller, data filter) on or off.

    Off by default: BrainFlow's logger prints its own lines to stderr, which would interleave with the
    CLI's progress output. ``--verbose`` turns it on at BrainFlow's info level.
    """
    global _logging_configured
    try:
        if verbose:
            BoardShim.enable_board_logger()
            DataFilter.enable_data_logger()
        else:
            BoardShim.disable_board_logger()
            DataFilter.disable_data_logger()
    except BrainFlowError as exc:  # the native library refuses only if it failed to load
        logger.debug("could not change BrainFlow's logger: %s", exc)
    _logging_configured = True


def ensure_quiet() -> None:
    """Turn BrainFlow's logger off unless someone already chose (the CLI with ``--verbose``)."""
    if not _logging_configured:
        set_brainflow_logging(False)


def exit_code_name(code: int) -> str:
    """``BrainFlowExitCodes`` name of ``code``, or ``"UNKNOWN"``."""
    try:
        return BrainFlowExitCodes(code).name
    except ValueError:
        return "UNKNOWN"


def _board_names() -> list[str]:
    return [b.name for b in BoardIds]


def resolve_board(board: str | int) -> int:
    """Board id from a name (``"synthetic"``, ``"SYNTHETIC_BOARD"``, ``"cyton"``) or an id (``-1``, ``"0"``).

    Raises
    ------
    BoardError
        If no BrainFlow board has that name or id; the message lists the closest names.
    """
    if isinstance(board, int) or (isinstance(board, str) and board.strip().lstrip("-").isdigit()):
        board_id = int(board)
        if board_id in {b.value for b in BoardIds}:
            return board_id
        raise BoardError(f"BrainFlow {BoardShim.get_version()} knows no board with id {board_id}",
                         hint="Pass a board name such as SYNTHETIC_BOARD, or an id from BoardIds")
    key = str(board).strip().upper().replace("-", "_")
    names = _board_names()
    for candidate in (key, f"{key}_BOARD"):
        if candidate in names:
            return int(BoardIds[candidate].value)
    close = difflib.get_close_matches(f"{key}_BOARD" if not key.endswith("_BOARD") else key, names, n=3)
    raise BoardError(
        f"BrainFlow knows no board named {board!r}",
        hint=(f"Did you mean {', '.join(close)}? " if close else "")
        + "Names are BoardIds members, e.g. SYNTHETIC_BOARD, PLAYBACK_FILE_BOARD, CYTON_BOARD",
    )


def board_name(board_id: int) -> str:
    """``BoardIds`` name of an id (``-1`` -> ``"SYNTHETIC_BOARD"``)."""
    try:
        return BoardIds(board_id).name
    except ValueError:
        return f"BOARD_{board_id}"


# --param aliases users type from the BrainFlow docs or from habit
_PARAM_ALIASES = {"port": "serial_port", "serial": "serial_port", "mac": "mac_address", "ip": "ip_address",
                  "master": "master_board"}


def make_params(params: Mapping[str, Any] | None = None) -> BrainFlowInputParams:
    """``BrainFlowInputParams`` from ``{"serial_port": "/dev/ttyUSB0", "timeout": "15", ...}``.

    Values may be strings (from ``--param k=v``); each is converted to the field's type, and
    ``master_board`` also accepts a board name.

    Raises
    ------
    ProfileError
        For an unknown key (the message lists the valid ones) or a value of the wrong type.
    """
    out = BrainFlowInputParams()
    fields = vars(out)
    for raw_key, value in (params or {}).items():
        key = _PARAM_ALIASES.get(raw_key.strip().lower(), raw_key.strip().lower())
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            raise ProfileError(
                f"unknown BrainFlow parameter {raw_key!r}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f" Valid keys: {', '.join(fields)} (aliases: {', '.join(_PARAM_ALIASES)})"
            )
        if key == "master_board":
            setattr(out, key, resolve_board(value))
        elif isinstance(fields[key], int):
            try:
                setattr(out, key, int(value))
            except (TypeError, ValueError):
                raise ProfileError(f"BrainFlow parameter {key} must be an integer, got {value!r}") from None
        else:
            setattr(out, key, str(value))
    return out


def describe_params(params: BrainFlowInputParams) -> str:
    """The non-default connection fields, for error messages (``"serial_port=/dev/ttyUSB0"``)."""
    default = vars(BrainFlowInputParams())
    parts = [f"{k}={v}" for k, v in vars(params).items() if v != default[k]]
    return ", ".join(parts) if parts else "no connection parameters"


_HINTS = {
    "UNABLE_TO_OPEN_PORT_ERROR": "Check the port name (ls /dev/ttyUSB* /dev/ttyACM*), that no other program "
    "holds it, and that your user may open it (the dialout group on Linux)",
    "PORT_ALREADY_OPEN_ERROR": "Another session holds this port; stop the other program or release it first",
    "SER_PORT_ERROR": "The serial port failed; unplug and replug the dongle and check the cable",
    "BOARD_NOT_READY_ERROR": "The board did not answer; check that it is powered on, charged and in range",
    "SYNC_TIMEOUT_ERROR": "The board did not answer in time; check power, range and the timeout parameter",
    "INVALID_ARGUMENTS_ERROR": "Check the --param values this board needs (for the playback board: file= an "
    "existing BrainFlow CSV and master_board= the board that recorded it)",
    "UNSUPPORTED_BOARD_ERROR": "This BrainFlow build does not support the board; upgrade BrainFlow",
    "BOARD_NOT_CREATED_ERROR": "The session was released or never prepared; open the source again",
    "ANOTHER_BOARD_IS_CREATED_ERROR": "A session with this board and these parameters already exists in this "
    "process (BrainFlow allows one); stop the other source first, or give this one a distinct parameter "
    "such as other_info=",
    "EMPTY_BUFFER_ERROR": "The board delivered no data; check that it is streaming",
    "STREAM_THREAD_ERROR": "BrainFlow's reader thread failed; reconnect the board",
    "GENERAL_ERROR": "Run with --verbose to see BrainFlow's own log",
}


def translate_error(exc: BrainFlowError, action: str, board_id: int,
                    params: BrainFlowInputParams | None = None) -> BoardError:
    """Our :class:`BoardError` for a ``BrainFlowError`` raised while doing ``action``."""
    name = exit_code_name(exc.exit_code)
    return BoardError(
        f"could not {action}: {exc}",
        exit_code=int(exc.exit_code),
        board=board_name(board_id),
        where=describe_params(params) if params is not None else None,
        hint=_HINTS.get(name, "Run with --verbose to see BrainFlow's own log"),
    )


def board_descr(board_id: int, preset: int = 0) -> dict[str, Any]:
    """``BoardShim.get_board_descr`` with our error on failure."""
    try:
        return dict(BoardShim.get_board_descr(board_id, preset))
    except BrainFlowError as exc:
        raise translate_error(exc, f"read the description of preset {preset}", board_id) from exc
