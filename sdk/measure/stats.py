"""Confidence intervals for what a benchmark measures: Wilson for proportions, order statistics for
latency quantiles, bootstrap for the rest.

Both are numpy only and deterministic (the bootstrap is seeded), so a report measured twice on the same
numbers carries the same intervals.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError

Z95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal
_CHUNK_ELEMENTS = 2_000_000


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (fractions in [0, 1]).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 % and 100 %, which is
    where agreement and accuracy of good models sit.
    """
    if n <= 0:
        raise ConfigError(f"a proportion needs n >= 1 samples, got n={n}")
    if not 0 <= successes <= n:
        raise ConfigError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, where rounding would leak
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def _binomial_cdf(k: int, n: int, p: float) -> np.ndarray:
    """P(B <= j) for j = 0..k of B ~ Binomial(n, p), via log-gamma (exact enough for n in the millions)."""
    j = np.arange(k + 1, dtype=np.float64)
    logpmf = (math.lgamma(n + 1) - np.array([math.lgamma(v + 1) + math.lgamma(n - v + 1) for v in j])
              + j * math.log(p) + (n - j) * math.log1p(-p))
    return np.cumsum(np.exp(logpmf))


def min_runs_for_quantile(q: float, level: float = 0.95) -> int:
    """The fewest runs whose largest value bounds the ``q`` quantile above at ``level`` (two-sided):
    367 for p99 at 95 %, 6 for the median."""
    if not 0 < q < 1:
        raise ConfigError(f"q must be in (0, 1), got {q}")
    return math.ceil(math.log((1 - level) / 2) / math.log(q))


def quantile_interval(samples: Sequence[float] | np.ndarray, q: float, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the ``q`` quantile from the order statistics of ``samples``.

    The bounds are the l-th and u-th smallest values, chosen from the binomial distribution of how many
    samples fall below the true quantile, with at most (1 - level) / 2 on each side. Where ``samples``
    are too few to bound a side (fewer than ``min_runs_for_quantile(q)`` runs for the upper side of a
    high quantile) that side is infinite: a p99 from 100 runs cannot be bounded above, and says so.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise ConfigError("quantile_interval needs at least one sample")
    if not 0 < q < 1 or not 0 < level < 1:
        raise ConfigError(f"q and level must be in (0, 1), got q={q}, level={level}")
    alpha = (1 - level) / 2
    cdf = _binomial_cdf(n, n, q)  # cdf[j] = P(B <= j), B = samples below the quantile
    # lower bound x_(l) (1-based): P(B <= l - 1) <= alpha, the largest such l
    below = np.flatnonzero(cdf <= alpha)
    lo = float(x[below[-1]]) if below.size else -math.inf  # l - 1 = below[-1] -> x_(l) = x[below[-1]]
    # upper bound x_(u): P(B >= u) <= alpha, i.e. P(B <= u - 1) >= 1 - alpha, the smallest such u <= n
    above = np.flatnonzero(cdf[:n] >= 1 - alpha)
    hi = float(x[above[0]]) if above.size else math.inf  # u - 1 = above[0] -> x_(u) = x[above[0]]
    return lo, hi


def bootstrap_interval(
    samples: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] | float = 50.0,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of a statistic of ``samples``.

    Args:
        samples: the measured values (e.g. per-call latencies in ms).
        statistic: a percentile in [0, 100] (computed vectorised over all resamples at once), or a
            function ``f(resamples (B, n)) -> (B,)``.
        resamples: bootstrap resamples B.
        level: coverage of the interval.
        seed: seed of the resampling, so that the interval is reproducible.
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise ConfigError("bootstrap_interval needs at least one sample")
    if not 0 < level < 1 or resamples < 1:
        raise ConfigError(f"level must be in (0, 1) and resamples >= 1, got level={level}, resamples={resamples}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // x.size)  # bounded memory for long runs
    values = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, chunk):
        drawn = x[rng.integers(0, x.size, size=(min(chunk, resamples - start), x.size))]
        if callable(statistic):
            values[start : start + len(drawn)] = np.asarray(statistic(drawn), dtype=np.float64)
        else:
            values[start : start + len(drawn)] = np.percentile(drawn, float(statistic), axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_indices(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, n) sample indices drawn with replacement: for metrics that must be recomputed per resample."""
    if n <= 0 or resamples < 1:
        raise ConfigError(f"bootstrap needs n >= 1 and resamples >= 1, got n={n}, resamples={resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap replicates (NaN replicates are ignored)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(v, [alpha, 1 - alpha])
    return float(lo), float(hi)
