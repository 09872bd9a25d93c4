"""Latency measurement: warm-up, N timed runs, percentiles with order-statistic intervals, throughput, streams."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from .stats import quantile_interval


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over ``runs`` timed calls of ``batch`` samples.

    ``p50_ci`` and ``p99_ci`` are distribution-free 95 % intervals from the order statistics of the
    timed calls (``stats.quantile_interval``): a side the runs cannot bound is infinite — the p99 of
    fewer than 368 runs has no upper bound, and a gate on it fails for want of runs.
    """

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    batch: int
    p50_ci: tuple[float, float] = (float("nan"), float("nan"))
    p99_ci: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def throughput(self) -> float:
        """Samples per second at the mean latency (one stream)."""
        return self.batch * 1000.0 / self.mean_ms if self.mean_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "throughput": self.throughput}


def latency_stats(ms: Sequence[float] | np.ndarray, batch: int = 1, seed: int = 0) -> LatencyStats:
    """Percentiles, mean and order-statistic intervals of per-call latencies ``ms`` (``seed`` is unused:
    the intervals are exact functions of the data)."""
    ms = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(float(p50), float(p90), float(p99), float(ms.mean()), float(ms.min()), int(ms.size), batch,
                        p50_ci=_latency_interval(ms, 0.50), p99_ci=_latency_interval(ms, 0.99))


def _latency_interval(ms: np.ndarray, q: float) -> tuple[float, float]:
    lo, hi = quantile_interval(ms, q)
    return max(lo, 0.0), hi  # a latency is never negative: that side is bounded by 0


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
    return latency_stats(times * 1000.0, batch)


def measure_streams(fns: Sequence[Callable[[], object]], calls: int, batch: int = 1, warmup: int = 2) -> float:
    """Samples per second with one thread per stream, each calling its own ``fn`` ``calls`` times.

    Every stream should own its runtime (an infer request is not shareable); backends release the GIL
    while they infer, so the streams overlap as they would in a multi-camera service.
    """
    if not fns or calls < 1:
        raise ValueError(f"need at least one stream and calls >= 1, got {len(fns)} streams, calls={calls}")
    for fn in fns:
        for _ in range(warmup):
            fn()
    errors: list[BaseException] = []
    start_line = threading.Barrier(len(fns) + 1)

    def work(fn: Callable[[], object]) -> None:
        start_line.wait()
        try:
            for _ in range(calls):
                fn()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(fn,), daemon=True) for fn in fns]
    for t in threads:
        t.start()
    start_line.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return len(fns) * calls * batch / elapsed if elapsed > 0 else float("inf")


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS high-water mark (Linux); False where the OS cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MB (``resource.getrusage`` on POSIX; None where the OS,
    e.g. Windows, has no such module: imported here so that ``import edgeship`` works everywhere)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB elsewhere
