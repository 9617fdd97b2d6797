"""Option types, deprecated aliases and preflight checks shared by every verb.

Why here and not in each verb: a refusal must look the same everywhere (one line naming the option or the
file, and what to do) and must come *before* the long work: an engine build, a stream or an hour of
training should never end in "cannot write --summary-json". Range checks are argparse ``type=`` functions,
so they fail while the command line is parsed; path checks run in the verb's ``preflight(args)``, which
:mod:`edge_bridge.cli` calls before ``run(args)``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_bridge.errors import EdgeBridgeError


class OptionError(EdgeBridgeError, ValueError):
    """An option's value or a path the user named cannot work (found before any long work starts)."""


# --- numbers -----------------------------------------------------------------------------------------------
def _number(kind: type, text: str) -> float | int:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expects {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expects a finite number, got {text!r}")
    return value


def number(kind: type = float, *, min: float | None = None, max: float | None = None,
           min_open: bool = False, max_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type=`` for a finite ``kind`` (int or float) in a range; NaN and inf are refused."""
    lo = "" if min is None else f"{'>' if min_open else '>='} {min:g}"
    hi = "" if max is None else f"{'<' if max_open else '<='} {max:g}"
    want = " and ".join(s for s in (lo, hi) if s)

    def convert(text: str) -> Any:
        value = _number(kind, text)
        if (min is not None and (value < min or (min_open and value == min))) or \
                (max is not None and (value > max or (max_open and value == max))):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    convert.__name__ = f"{kind.__name__} {want}"
    return convert


positive = number(float, min=0, min_open=True)
positive_int = number(int, min=1)
non_negative_int = number(int, min=0)
fraction = number(float, min=0, max=1)
open_fraction = number(float, min=0, max=1, min_open=True, max_open=True)
port = number(int, min=0, max=65535)


# --- deprecated spellings ----------------------------------------------------------------------------------
def _warn_deprecated(old: str, new: str) -> None:
    print(f"edge-bridge: warning: {old} is deprecated and goes in the next release; use {new}",
          file=sys.stderr, flush=True)


def deprecated(base: type[argparse.Action], new: str) -> type[argparse.Action]:
    """An action like ``base`` that also says the option string used is an old spelling of ``new``."""

    class Deprecated(base):  # type: ignore[misc,valid-type]
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            _warn_deprecated(option_string or self.dest, new)
            super().__call__(parser, namespace, values, option_string)

    return Deprecated


class OldSpellings(argparse._StoreAction):
    """``-o/--out/--output``: store as usual, warn when one of ``old`` was the spelling used."""

    old: Sequence[str] = ()
    new = ""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string in self.old:
            _warn_deprecated(option_string, self.new)
        super().__call__(parser, namespace, values, option_string)


def old_spellings(new: str, *old: str) -> type[argparse.Action]:
    """An action for an option with deprecated aliases: ``add_argument(new, *old, action=...)``."""
    return type("OldSpellings", (OldSpellings,), {"old": tuple(old), "new": new})


# --- verbosity on nested parsers -------------------------------------------------------------------------
def add_loudness(p: argparse.ArgumentParser) -> None:
    """``-v/-q/--debug`` on a sub-action's parser too (SUPPRESS: the verb-level value is not overwritten)."""
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                      help="debug logging")
    loud.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                      help="warnings and errors only")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")


def add_actions(p: argparse.ArgumentParser,
                actions: dict[str, tuple[str, str]]) -> dict[str, argparse.ArgumentParser]:
    """Sub-actions of a verb (``bundle verify``, ``keys new`` ...) from ``{name: (summary, description)}``.

    Each gets its description (with its example) as help text and ``-v/-q/--debug``; returns the parsers
    by name so the verb adds each one's own arguments.
    """
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    made = {}
    for name, (summary, description) in actions.items():
        made[name] = sub.add_parser(name, help=summary, description=description,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        add_loudness(made[name])
    return made


# --- board spec ---------------------------------------------------------------------------------------------
def parse_board(spec: str, option: str = "--board") -> tuple[str, dict[str, str]]:
    """``NAME[,key=value...]`` (the one board spelling: record, calibrate, deploy's ``board:``)."""
    name, *items = [s.strip() for s in spec.split(",")]
    if not name:
        raise OptionError(f"{option} must look like NAME[,key=value...], e.g. CYTON_BOARD,"
                          f"serial_port=/dev/ttyUSB0; got {spec!r}")
    params: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise OptionError(f"{option} parameters must look like key=value (e.g. "
                              f"serial_port=/dev/ttyUSB0), got {item!r} in {spec!r}")
        params[key.strip()] = value.strip()
    return name, params


# --- paths ------------------------------------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def output_file(path: str | os.PathLike[str] | None, option: str, *, create_parents: bool = False) -> None:
    """``path`` can be written as a file: not a directory, its folder exists (or can be made) and is writable.

    ``create_parents``: the verb makes missing folders itself, so only the nearest existing one must be a
    writable directory.
    """
    if path is None:
        return
    p = Path(path)
    if str(path) == "" or p.is_dir():
        raise OptionError(f"{option} {str(path)!r} is a directory; give a file name")
    parent = p.absolute().parent
    if not parent.exists():
        if not create_parents:
            raise OptionError(f"{option} {str(path)!r}: folder {str(parent)!r} does not exist; create it "
                              "first or choose another path")
        parent = _nearest_existing(parent)
    if not parent.is_dir():
        raise OptionError(f"{option} {str(path)!r}: {str(parent)!r} is not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError(f"{option} {str(path)!r}: folder {str(parent)!r} is not writable; choose another "
                          "path or fix its permissions")
    if p.exists() and not os.access(p, os.W_OK):
        raise OptionError(f"{option} {str(path)!r} exists and is not writable; choose another path")


def output_dir(path: str | os.PathLike[str] | None, option: str, *, must_be_new: bool = False) -> None:
    """``path`` is (or can become) a writable directory; missing parents are made by the verb."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OptionError(f"{option} {str(path)!r} is a file, not a directory; choose another path")
    if p.exists():
        if must_be_new:
            return  # the verb itself says "exists; use --force" with its own wording
        if not os.access(p, os.W_OK | os.X_OK):
            raise OptionError(f"{option} {str(path)!r} is not writable; choose another folder or fix its "
                              "permissions")
        return
    base = _nearest_existing(p.parent)
    if not base.is_dir():
        raise OptionError(f"{option} {str(path)!r}: {str(base)!r} is a file, not a directory; choose another "
                          "path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OptionError(f"{option} {str(path)!r}: folder {str(base)!r} is not writable; choose another "
                          "path")


def input_file(path: str | os.PathLike[str] | None, option: str, *, allow_empty: bool = False) -> None:
    """``path`` is an existing, readable, non-empty regular file."""
    if path is None:
        return
    p = Path(path)
    what = f"{option} {str(path)!r}" if option else repr(str(path))
    if not p.exists():
        raise OptionError(f"{what} does not exist; check the path")
    if p.is_dir():
        raise OptionError(f"{what} is a directory; give a file")
    if not os.access(p, os.R_OK):
        raise OptionError(f"{what} is not readable; fix its permissions")
    if not allow_empty and p.stat().st_size == 0:
        raise OptionError(f"{what} is empty (0 bytes); give a complete file")


def input_dir(path: str | os.PathLike[str] | None, option: str) -> None:
    """``path`` is an existing, readable directory."""
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise OptionError(f"{option} {str(path)!r} does not exist; check the path")
    if not p.is_dir():
        raise OptionError(f"{option} {str(path)!r} is a file, not a directory; give a folder")
    if not os.access(p, os.R_OK | os.X_OK):
        raise OptionError(f"{option} {str(path)!r} is not readable; fix its permissions")


def input_path(path: str | os.PathLike[str] | None, option: str) -> None:
    """An existing file or folder (e.g. recordings: a folder of files, or an .npz)."""
    if path is None:
        return
    if Path(path).is_dir():
        input_dir(path, option)
    else:
        input_file(path, option)


def run_folder(path: str | os.PathLike[str] | None, option: str = "--run") -> None:
    """A run folder: an existing writable directory, or a new one that can be made."""
    output_dir(path, option)


def bundle_dir(path: str | os.PathLike[str] | None, option: str = "--bundle") -> None:
    """An existing folder with a manifest.json (checked before a lock file or an engine is made in it)."""
    if path is None:
        return
    input_dir(path, option)
    if not (Path(path) / "manifest.json").is_file():
        raise OptionError(f"{option} {str(path)!r} has no manifest.json, so it is not an edge-bridge bundle; "
                          "give the folder `edge-bridge export` made (or unpack one with `edge-bridge bundle "
                          "unpack`)")
