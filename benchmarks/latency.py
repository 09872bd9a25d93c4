"""Latency measurement: warm-up, N timed runs, percentiles and throughput."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over ``runs`` timed calls of ``batch`` samples."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    batch: int

    @property
    def throughput(self) -> float:
        """Samples per second at the mean latency (one stream)."""
        return self.batch * 1000.0 / self.mean_ms if self.mean_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "throughput": self.throughput}


def measure_latency(fn: Callable[[], object], runs: int = 100, warmup: int = 10, batch: int = 1) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed with perf_counter."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    times = np.empty(runs, dtype=np.float64)
    clock = time.perf_counter
    for i in range(runs):
        start = clock()
        fn()
        times[i] = clock() - start
    ms = times * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(float(p50), float(p90), float(p99), float(ms.mean()), float(ms.min()), runs, batch)
