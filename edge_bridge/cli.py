"""The ``edge-bridge`` command line: one subcommand per verb, each in ``edge_bridge/commands/<verb>.py``.

A command module has a docstring (its help text: first line is the summary), ``add_arguments(parser)`` and
``run(args) -> int``. Heavy imports (torch, onnx) happen inside ``run``, so ``edge-bridge --help`` and the
device-side verbs never load torch. Our own errors print as one line and exit 2; ``--verbose`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

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
    "deploy": "deploy",
    "calibrate": "calibrate",
}


def _summary(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-bridge",
        description="Carry a biosignal task model to a new modality by model bridging, "
        "and run it on the edge.",
        epilog="Run `edge-bridge COMMAND --help` for a command's options. Start with `edge-bridge demo`.",
    )
    parser.add_argument("--version", action="version", version=f"edge-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb, module_name in COMMANDS.items():
        module = importlib.import_module(f"edge_bridge.commands.{module_name}")
        p = sub.add_parser(verb, help=_summary(module.__doc__), description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        loud = p.add_mutually_exclusive_group()
        loud.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
        loud.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging("DEBUG" if args.verbose else "WARNING" if args.quiet else None)
    try:
        return int(args._module.run(args) or 0)
    except EdgeBridgeError as exc:
        if args.verbose:
            raise
        print(f"edge-bridge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("edge_bridge").warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
