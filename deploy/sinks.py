"""Where predictions go: JSON lines (stdout or a file) and a Lab Streaming Layer outlet.

A sink takes one prediction record (a JSON-able dict) at a time. Files are line-buffered, so a crash or a
``kill`` keeps every finished line and another program can ``tail -f`` them; stdout is flushed per line for
the same reason. pylsl is optional and imported only by :class:`LslSink`.
"""

from __future__ import annotations

import abc
import importlib.util
import json
import logging
import math
import os
import sys
from functools import cache
from pathlib import Path
from typing import IO, Any

from edge_bridge.errors import EdgeBridgeError

logger = logging.getLogger(__name__)


class SinkError(EdgeBridgeError, RuntimeError):
    """A sink cannot be opened or written (missing pylsl, unwritable file)."""


class Sink(abc.ABC):
    """One destination of predictions."""

    @abc.abstractmethod
    def write(self, record: dict[str, Any]) -> None:
        """Emit one prediction."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release."""


class JsonlSink(Sink):
    """JSON lines to a stream (default stdout) or to a file opened line-buffered.

    Parameters
    ----------
    target : path-like, text stream or None
        ``None`` writes to ``sys.stdout``.
    append : bool
        Append to an existing file instead of replacing it.
    """

    def __init__(self, target: str | os.PathLike[str] | IO[str] | None = None, *,
                 append: bool = False) -> None:
        self._own = False
        if target is None:
            self._fh: IO[str] = sys.stdout
            self.name = "<stdout>"
        elif isinstance(target, str | os.PathLike):
            path = Path(target)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(path, "a" if append else "w", buffering=1, encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise SinkError(f"cannot open {path} for predictions: {exc}; choose another --out") from None
            self._own = True
            self.name = str(path)
        else:
            self._fh = target
            self.name = getattr(target, "name", "<stream>")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(_jsonable(record), separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._own and not self._fh.closed:
            self._fh.close()


@cache
def have_pylsl() -> bool:
    """Whether pylsl can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("pylsl") is not None


class LslSink(Sink):
    """Lab Streaming Layer outlets: one float32 channel per class probability, one outlet per stream.

    LSL samples are numbers only, so the stream id travels in the outlet itself: each wearable's records go
    to an outlet named ``NAME-ID`` (source id ``NAME-PID-ID``, and the id under ``desc/stream``), opened on
    that stream's first record; a single stream keeps the plain ``NAME``.

    Parameters
    ----------
    classes : list of str
        Channel labels, in the order of the probabilities.
    rate : float
        Nominal rate in Hz (one sample per hop).
    name : str
        Stream name that LSL clients resolve.
    per_stream : bool
        Name outlets after their stream (several streams); False keeps one outlet called ``name``.

    Raises
    ------
    SinkError
        pylsl is not installed (names ``pip install pylsl``).
    """

    def __init__(self, classes: list[str], rate: float, name: str = "edge-bridge", *,
                 per_stream: bool = False) -> None:
        if not have_pylsl():
            raise SinkError("--lsl needs the pylsl package, which is not installed; run `pip install pylsl` "
                            "(or `pip install edge-bridge[lsl]`), or leave out --lsl")
        import pylsl  # type: ignore[import-not-found]

        self._pylsl = pylsl
        self.classes = list(classes)
        self.rate, self.name, self.per_stream = float(rate), name, per_stream
        self._outlets: dict[str, Any] = {}

    def _outlet(self, stream: str) -> Any:
        outlet = self._outlets.get(stream)
        if outlet is None:
            pylsl = self._pylsl
            name = f"{self.name}-{stream}" if self.per_stream else self.name
            info = pylsl.StreamInfo(name, "Classification", len(self.classes), self.rate, "float32",
                                    f"{self.name}-{os.getpid()}-{stream}")
            info.desc().append_child_value("stream", stream)
            chans = info.desc().append_child("channels")
            for c in self.classes:
                chans.append_child("channel").append_child_value("label", c)
            outlet = self._outlets[stream] = pylsl.StreamOutlet(info)
            logger.info("LSL outlet %r: %d channels at %g Hz", name, len(self.classes), self.rate)
        return outlet

    def write(self, record: dict[str, Any]) -> None:
        probs = record.get("probabilities")
        if probs:
            self._outlet(str(record.get("stream", "0"))).push_sample([float(probs[c]) for c in self.classes])

    def close(self) -> None:
        self._outlets = {}


def _jsonable(value: Any) -> Any:
    """NaN and inf become null (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def make_sinks(out: str | os.PathLike[str] | None, *, lsl: bool, classes: list[str],
               rate: float, streams: int = 1) -> list[Sink]:
    """The sinks the CLI asks for: JSON lines to ``out`` (stdout when None; every line names its stream),
    and LSL with ``lsl`` (one outlet per stream when there are several)."""
    sinks: list[Sink] = []
    if lsl:
        sinks.append(LslSink(classes, rate, per_stream=streams > 1))  # first: fail before a file is created
    sinks.insert(0, JsonlSink(out))
    return sinks
