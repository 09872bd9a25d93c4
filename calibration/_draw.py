"""The draw every calibration source shares: a pool of candidates loaded by index, and the seeded subset of it."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ..errors import ConfigError
from ._select import Embed, cheap_embedding, k_center, resolve_selection, stratified_quotas, user_embedding
from ._set import CalibrationSet

if TYPE_CHECKING:
    from ..spec import InputSpec

# Candidates are loaded, preprocessed and embedded this many at a time.
CHUNK = 256
# "diverse" keeps the samples it embedded while they fit in this many bytes (else it loads the chosen again).
_KEEP_BYTES = 512 * 2**20


class CalibrationWarning(UserWarning):
    """Calibration data had problems that were worked around (e.g. undecodable files were skipped)."""


class _Pool:
    """Candidates loadable by index. ``load`` yields (index, sample (1, ...) or None if undecodable, label)."""

    description = ""
    labels: np.ndarray | None = None

    def __init__(self) -> None:
        self.bad: dict[int, str] = {}  # index -> why it could not be decoded
        self.tried: set[int] = set()

    def __len__(self) -> int:
        raise NotImplementedError

    def origin(self, i: int) -> str:
        return f"item {i}"

    def load(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray | None, Any]]:
        raise NotImplementedError


def _draw(pool: _Pool, spec: "InputSpec", size: int, select: str | None, seed: int, embed: Embed | None,
          max_bad_fraction: float, preprocessed: bool) -> CalibrationSet:
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"calibration size must be an integer >= 1, got {size!r}")
    if embed is not None and not callable(embed):
        raise ConfigError(f"embed must be a callable embed(batch) -> (N, D), got {type(embed).__name__}")
    method = resolve_selection(select, pool.labels is not None)
    if len(pool) == 0:
        raise ConfigError(f"calibration source {pool.description} gave no samples")
    if method == "diverse":
        got = _draw_diverse(pool, spec, int(size), seed, embed)
    else:
        got = _draw_strata(pool, int(size), seed, method)
    _report_bad(pool, max_bad_fraction)
    index = sorted(got)
    if not index:
        raise ConfigError(f"calibration source {pool.description} gave no samples")
    samples = [got[i][0] for i in index]
    for i, sample in zip(index, samples):
        if not np.isfinite(sample).all():
            raise ConfigError(f"calibration sample {pool.origin(i)} of {pool.description} contains NaN or Inf")
    if pool.labels is not None:
        labels = pool.labels[index]
    else:
        item_labels = [got[i][1] for i in index]
        labels = np.asarray(item_labels) if all(y is not None for y in item_labels) else None
    return CalibrationSet(samples=samples, source=pool.description, seed=seed, preprocessed=preprocessed,
                          labels=labels, selection=method, spec=spec, origins=tuple(pool.origin(i) for i in index))


def _draw_strata(pool: _Pool, size: int, seed: int, method: str) -> dict[int, tuple[np.ndarray, Any]]:
    """Random (one stratum) or stratified: a seeded order per stratum, topped up past undecodable items."""
    rng = np.random.default_rng(seed)
    if method == "random":
        strata = [rng.permutation(len(pool))]
        quotas = [min(size, len(pool))]
    else:
        assert pool.labels is not None
        quota_of = stratified_quotas(pool.labels, size)
        strata, quotas = [], []
        for cls, quota in quota_of.items():
            strata.append(rng.permutation(np.flatnonzero(pool.labels == cls)))
            quotas.append(quota)
    got: dict[int, tuple[np.ndarray, Any]] = {}
    taken = [0] * len(strata)
    filled = [0] * len(strata)
    while True:
        want: dict[int, int] = {}
        for s, order in enumerate(strata):
            need = quotas[s] - filled[s]
            for i in order[taken[s] : taken[s] + need]:
                want[int(i)] = s
            taken[s] += min(need, len(order) - taken[s])
        if not want:
            return got
        for i, sample, label in pool.load(sorted(want)):
            if sample is not None:
                got[i] = (sample, label)
                filled[want[i]] += 1


def _draw_diverse(pool: _Pool, spec: "InputSpec", size: int, seed: int,
                  embed: Embed | None) -> dict[int, tuple[np.ndarray, Any]]:
    """Embed every candidate, pick greedy k-center; keep the picked samples if they fit in memory."""
    index: list[int] = []
    parts: list[np.ndarray] = []
    kept: dict[int, tuple[np.ndarray, Any]] | None = {}
    kept_bytes = 0
    for start in range(0, len(pool), CHUNK):
        ids, batch = [], []
        for i, sample, label in pool.load(range(start, min(start + CHUNK, len(pool)))):
            if sample is None:
                continue
            ids.append(i)
            batch.append(sample)
            if kept is not None:
                kept[i] = (sample, label)
                kept_bytes += sample.nbytes
                if kept_bytes > _KEEP_BYTES:
                    kept = None
        if batch:
            stacked = np.concatenate(batch, axis=0)
            parts.append(user_embedding(embed, stacked) if embed is not None else cheap_embedding(stacked, spec))
            index.extend(ids)
    if not index:
        return {}
    dims = {p.shape[1] for p in parts}
    if len(dims) > 1:
        raise ConfigError(f"embed(batch) returned different widths {sorted(dims)} for different batches")
    picks = [index[j] for j in k_center(np.concatenate(parts), size, seed)]
    if kept is not None:
        return {i: kept[i] for i in picks}
    return {i: (sample, label) for i, sample, label in pool.load(sorted(picks)) if sample is not None}


def _report_bad(pool: _Pool, max_bad_fraction: float) -> None:
    if not pool.bad:
        return
    shown = [f"{pool.origin(i)} ({why})" for i, why in sorted(pool.bad.items())[:10]]
    more = f" and {len(pool.bad) - 10} more" if len(pool.bad) > 10 else ""
    listing = "; ".join(shown) + more
    fraction = len(pool.bad) / max(len(pool.tried), 1)
    if fraction > max_bad_fraction:
        raise ConfigError(f"{len(pool.bad)} of {len(pool.tried)} candidates read from {pool.description} could not "
                          f"be decoded ({fraction:.0%}, more than max_bad_fraction={max_bad_fraction:.0%}): {listing}")
    warnings.warn(CalibrationWarning(f"skipped {len(pool.bad)} undecodable of {len(pool.tried)} candidates read "
                                     f"from {pool.description}: {listing}"), stacklevel=3)
