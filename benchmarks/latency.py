"""Latency measurement: warm-up, N timed runs, percentiles with bootstrap intervals, throughput, streams."""

from __future__ import annotations

import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from .stats import bootstrap_interval


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over ``runs`` timed calls of ``batch`` samples.

    ``p50_ci`` and ``p99_ci`` are seeded percentile-bootstrap 95 % intervals over the timed calls: with
    few runs the p99 is little more than the slowest call, and its interval says so.
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
    """Percentiles, mean and bootstrap intervals of per-call latencies ``ms``."""
    ms = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(float(p50), float(p90), float(p99), float(ms.mean()), float(ms.min()), int(ms.size), batch,
                        p50_ci=bootstrap_interval(ms, 50.0, seed=seed), p99_ci=bootstrap_interval(ms, 99.0, seed=seed))


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


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB, from ``resource.getrusage``."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB elsewhere
