"""The engine interface every backend implements: named numpy feeds in, named numpy outputs out."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.errors import EdgeBridgeError


class EngineError(EdgeBridgeError, RuntimeError):
    """An engine cannot be built or run (missing runtime, bad graph, wrong input)."""


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as the runtime sees it; ``None`` marks a dynamic axis."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


class Engine(abc.ABC):
    """One part of the composite, loaded into a runtime. Use as a context manager or call ``close()``."""

    backend: str = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"{self.path}: no such model file")

    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; ``feeds`` maps every input name to a float32 array with the batch axis first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the runtime's resources."""

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Names and non-batch shapes must match the graph: a clear error instead of a runtime crash."""
        want = {t.name: t for t in self.inputs}
        if set(feeds) != set(want):
            raise EngineError(f"{self.path.name}: expected inputs {sorted(want)}, got {sorted(feeds)}")
        out = {}
        for name, arr in feeds.items():
            a = np.ascontiguousarray(arr, dtype=np.float32)
            shape = want[name].shape
            if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape[1:], a.shape[1:],
                                                                                   strict=True)):
                raise EngineError(f"{self.path.name}: input {name} must have shape {list(shape)}, "
                                  f"got {list(a.shape)}")
            out[name] = a
        return out

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend} {self.path.name}>"
