"""``open_source``: one spec string -> any kind of :class:`~firmware_interface.source.Source`.

The factory knows every kind (BrainFlow boards, playback files, frame-protocol devices over TCP or serial),
so it lives beside them and not in their base module: ``source.py`` stays importable by every source class
without an import circle.
"""

from __future__ import annotations

from typing import Any

from firmware_interface.errors import ProfileError
from firmware_interface.source import Source


# --- specs ------------------------------------------------------------------------------------------------
def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``"board:CYTON_BOARD,serial_port=/dev/ttyUSB0"`` into (kind, target, options).

    Raises
    ------
    ProfileError
        For an unknown kind or a malformed option; the message lists the accepted forms.
    """
    forms = "synthetic, playback:FILE, board:NAME[,k=v...], tcp:HOST:PORT, serial:PORT[,baud=N]"
    if not isinstance(spec, str) or not spec.strip():
        raise ProfileError(f"source spec must be a non-empty string, one of: {forms}; got {spec!r}")
    head, *opts = spec.strip().split(",")
    kind, _, target = head.partition(":")
    kind = kind.strip().lower()
    if kind not in ("synthetic", "playback", "board", "tcp", "serial"):
        raise ProfileError(f"unknown source kind {kind!r} in {spec!r}; use one of: {forms}")
    if kind != "synthetic" and not target:
        raise ProfileError(f"source spec {spec!r} needs a target after '{kind}:'; forms: {forms}")
    options: dict[str, str] = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if not eq or not key.strip():
            raise ProfileError(f"option {opt!r} in source spec {spec!r} must look like key=value")
        options[key.strip()] = value.strip()
    return kind, target.strip(), options


def open_source(spec: str, *, profile: Any = None, verbose: bool | None = None, **kwargs: Any) -> Source:
    """A source from a spec string (see the module docstring); not started yet.

    Every kind takes the same options (``profile``, ``verbose`` and the reader-thread settings), so a caller
    such as ``deploy`` never needs to know which kind the user's spec names.

    Parameters
    ----------
    spec : str
        ``"synthetic"``, ``"playback:rec.csv"``, ``"board:CYTON_BOARD,serial_port=/dev/ttyUSB0"``,
        ``"tcp:127.0.0.1:5555"``, ``"serial:/dev/ttyACM0,baud=921600"``; ``profile=FILE`` works with all.
    profile : DeviceProfile or path, optional
        Overrides a ``profile=`` option.
    verbose : bool, optional
        BrainFlow boards: turn BrainFlow's native logger on (True) or off (False). Frame devices have no
        native logger (their diagnostics are Python log records), so they accept it and ignore it.
    **kwargs
        Passed to the source class (``hop``, ``stall_timeout``, ``max_reconnects`` ...).

    Examples
    --------
    >>> with open_source("synthetic") as src:   # doctest: +SKIP
    ...     chunk = src.read()
    """
    kind, target, options = parse_spec(spec)
    profile = profile if profile is not None else options.pop("profile", None)
    if kind in ("synthetic", "playback", "board"):
        from firmware_interface.brainflow_source import BrainFlowSource

        if kind == "synthetic":
            if options:
                raise ProfileError(f"the synthetic board takes no options except profile=, "
                                   f"got {sorted(options)}")
            return BrainFlowSource("SYNTHETIC_BOARD", profile=profile, verbose=verbose, **kwargs)
        if kind == "playback":
            loop = options.pop("loop", "false").lower() in ("1", "true", "yes")
            return BrainFlowSource.playback(target, loop=loop, master_board=options.pop("master_board", None),
                                            profile=profile, verbose=verbose, **kwargs)
        return BrainFlowSource(target, options, profile=profile, verbose=verbose, **kwargs)

    from firmware_interface.frame_source import FrameSource
    from firmware_interface.transports import SerialTransport, TcpTransport

    if kind == "tcp":
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ProfileError(f"tcp source must look like tcp:HOST:PORT with a port 1..65535, got {spec!r}")
        if options:
            raise ProfileError(f"tcp sources take only profile=, got {sorted(options)}")
        return FrameSource(TcpTransport(host.strip("[]"), int(port)), profile=profile, verbose=verbose,
                           **kwargs)
    baud = options.pop("baud", "115200")
    if options:
        raise ProfileError(f"serial sources take baud= and profile= only, got {sorted(options)}")
    if not baud.isdigit():
        raise ProfileError(f"baud must be an integer (e.g. 115200), got {baud!r}")
    return FrameSource(SerialTransport(target, int(baud)), profile=profile, verbose=verbose, **kwargs)
