"""Latency statistics of the live loop: percentiles after warm-up, and the real-time factor.

The first windows pay for lazy allocations, page faults and (on GPUs) kernel selection, so they are kept
out of the percentiles: ``warmup`` windows are counted but not measured. Samples are kept in memory (one
float per window: a day of 5 s hops is 17 280 floats), so percentiles are exact rather than estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LatencyStats:
    """Collect per-window latencies (seconds) and summarise them in milliseconds.

    Parameters
    ----------
    warmup : int
        Number of first windows left out of the percentiles (default 3).

    Examples
    --------
    >>> st = LatencyStats(warmup=1)
    >>> for s in (0.1, 0.002, 0.003):
    ...     st.add(s)
    >>> st.summary()["max_ms"]
    3.0
    """

    warmup: int = 3
    _samples: list[float] = field(default_factory=list)
    _seen: int = 0

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 windows, got {self.warmup}")

    def add(self, seconds: float) -> bool:
        """Record one window's latency; the first ``warmup`` calls are counted, not measured.

        Returns whether it was measured (past warm-up), so a total over several streams can take each
        stream's measured windows only.
        """
        self._seen += 1
        if self._seen > self.warmup:
            self._samples.append(float(seconds))
            return True
        return False

    @property
    def count(self) -> int:
        """Windows measured (after warm-up)."""
        return len(self._samples)

    def summary(self) -> dict[str, Any]:
        """``{"n", "warmup", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"}`` (None when empty)."""
        out: dict[str, Any] = {"n": self.count, "warmup": min(self._seen, self.warmup)}
        if not self._samples:
            out.update({k: None for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")})
            return out
        ms = np.asarray(self._samples) * 1e3
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        out.update({"p50_ms": _r(p50), "p95_ms": _r(p95), "p99_ms": _r(p99), "max_ms": _r(ms.max()),
                    "mean_ms": _r(ms.mean())})
        return out


def _r(value: float) -> float:
    return round(float(value), 3) if math.isfinite(value) else float("nan")


def real_time_factor(compute_seconds: float, signal_seconds: float) -> float | None:
    """Compute time over signal time: 0.01 means the loop is busy 1 % of the time; ``None`` without signal."""
    if signal_seconds <= 0:
        return None
    return compute_seconds / signal_seconds
