"""The ``edge-bridge`` command line: one subcommand per verb, each in ``edge_bridge/commands/<verb>.py``.

A command module has a docstring (its help text: first line is the summary), ``add_arguments(parser)`` and
``run(args) -> int``, and may have ``preflight(args)``: checks of paths and options that run before
``run`` (so a bad ``--summary-json`` fails in a second, not after the stream). Heavy imports (torch, onnx)
happen inside ``run``, so ``edge-bridge --help`` and the device-side verbs never load torch.

The error policy, one for every verb: an expected failure (our own errors, the firmware layer's, an OS
error on a path, a bad option) prints one line naming the file or option and what to do, exit 2; anything
else prints one line and the hint to rerun with ``--debug``, exit 1. Tracebacks only with ``--debug``
(``-v/--verbose`` is debug logging). A method verb that fails leaves its run folder as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import re
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from edge_bridge import __version__
from edge_bridge.errors import EdgeBridgeError
from edge_bridge.log import setup_logging

# verb -> module under edge_bridge.commands, in the order --help lists them
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "simulate": "simulate",
    "inspect": "inspect",
    "record": "record",
    "emulate": "emulate",
    "convert": "convert",
    "pretrain": "pretrain",
    "fit-source": "fit_source",
    "select": "select",
    "train": "train",
    "evaluate": "evaluate",
    "export": "export",
    "bundle": "bundle",
    "keys": "keys",
    "deploy": "deploy",
    "calibrate": "calibrate",
}


def _summary(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


class UsageError(Exception):
    """A command line argparse refused; :func:`main` prints it as one line and returns 2."""


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is one line naming the option and where the help is."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument ([^:]+): ", r"\1 ", message)  # "--duration must be > 0, got '0'"
        raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edge-bridge",
        description="Carry a biosignal task model to a new modality by model bridging, "
        "and run it on the edge.",
        epilog="Run `edge-bridge COMMAND --help` for a command's options. Start with `edge-bridge demo`.",
    )
    parser.add_argument("--version", action="version", version=f"edge-bridge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb, module_name in COMMANDS.items():
        module = importlib.import_module(f"edge_bridge.commands.{module_name}")
        p = sub.add_parser(verb, help=_summary(module.__doc__), description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        loud = p.add_mutually_exclusive_group()
        loud.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        loud.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error (for a bug report)")
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _expected(exc: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug."""
    from firmware_interface.errors import FirmwareError

    if isinstance(exc, (EdgeBridgeError, FirmwareError)):
        return str(exc)
    if isinstance(exc, OSError):
        if exc.filename is not None:
            where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
            return f"{where}: {exc.strerror or exc}; check the path, its permissions and the free space"
        return f"{exc.strerror or exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging("DEBUG" if args.verbose else "WARNING" if args.quiet else None)
    module = args._module
    try:
        if hasattr(module, "preflight"):
            module.preflight(args)
        guard: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if getattr(args, "_writes_run", False):
            from edge_bridge.runs import undo_on_failure

            guard = undo_on_failure(args.run)
        with guard:
            return int(module.run(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("edge_bridge").warning("interrupted")
        return 130
    except Exception as exc:  # the one error policy: see the module docstring
        message = _expected(exc)
        if args.debug:
            traceback.print_exc()
        name = " ".join(str(n) for n in (args.command, getattr(args, "action", None)) if n)
        if message is not None:  # one line, whatever the library's text (tarfile's spans five)
            message = "; ".join(line.strip() for line in message.splitlines() if line.strip())
            print(f"edge-bridge {name}: error: {message}", file=sys.stderr)
            return 2
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"edge-bridge {name}: unexpected error: {type(exc).__name__}"
              f"{': ' + text if text else ''}; rerun with --debug for the traceback and report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
