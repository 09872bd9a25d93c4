"""Subset selection (seeded random, stratified, diverse) and the cheap embedding the checks share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import ConfigError
from ..preprocess import resize_bilinear

if TYPE_CHECKING:
    from ..spec import InputSpec

SELECTIONS = ("random", "stratified", "diverse")
# The cheap embedding: each channel area-averaged down to this many pixels a side.
EMBED_SIDE = 8

Embed = Callable[[np.ndarray], Any]


def resolve_selection(select: str | None, has_labels: bool) -> str:
    """None -> "stratified" when the source has labels, else "random"; a name is checked."""
    if select is None:
        return "stratified" if has_labels else "random"
    if select not in SELECTIONS:
        raise ConfigError(f"select must be one of {SELECTIONS} (or None: stratified with labels, else random), "
                          f"got {select!r}")
    if select == "stratified" and not has_labels:
        raise ConfigError("select='stratified' needs labels; pass labels=... or a source whose items are (x, label)")
    return select


def stratified_quotas(labels: np.ndarray, size: int) -> dict[Any, int]:
    """Samples per class, proportional to the class frequencies (largest remainder), summing to ``size``."""
    classes, counts = np.unique(labels, return_counts=True)
    size = min(size, int(counts.sum()))
    exact = counts * (size / counts.sum())
    quota = np.floor(exact).astype(np.int64)
    # the remaining samples go to the largest remainders (ties: the larger class, then the first)
    order = np.lexsort((np.arange(len(classes)), -counts, -(exact - quota)))
    for i in order[: size - int(quota.sum())]:
        quota[i] += 1
    return {cls.item() if hasattr(cls, "item") else cls: int(q) for cls, q in zip(classes, quota)}


def cheap_embedding(batch: np.ndarray, spec: "InputSpec") -> np.ndarray:
    """Model-ready batch -> (N, EMBED_SIDE^2 * C): every channel area-averaged to 8 x 8 (float32).

    Images smaller than 8 x 8 keep their pixels; a non-image input is flattened.
    """
    x = np.asarray(batch, dtype=np.float32)
    if x.ndim != 4:
        return x.reshape(len(x), -1)
    n = len(x)
    if spec.layout == "NCHW":  # every channel as its own one-channel image: no transposed copy
        x = x.reshape(n * x.shape[1], x.shape[2], x.shape[3], 1)
    h, w = x.shape[1:3]
    x = resize_bilinear(x, min(h, EMBED_SIDE), min(w, EMBED_SIDE))
    return x.reshape(n, -1)


def user_embedding(embed: Embed, batch: np.ndarray) -> np.ndarray:
    """Call a user's ``embed(batch) -> (N, D)`` and check what came back."""
    out = embed(batch)
    if hasattr(out, "detach") and hasattr(out, "cpu"):  # a torch tensor, without importing torch
        out = out.detach().cpu().numpy()
    out = np.asarray(out, dtype=np.float32)
    if out.ndim == 1 and len(batch) == len(out):
        out = out[:, None]
    if out.ndim != 2 or len(out) != len(batch):
        raise ConfigError(f"embed(batch) must return an array (N, D) with N = {len(batch)} rows, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ConfigError("embed(batch) returned NaN or Inf")
    return out


def k_center(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-center: a seeded first point, then repeatedly the point farthest from all chosen ones.

    Returns the chosen row indices in pick order. Covers the variety of the data with few points
    (within twice the optimal covering radius); near-duplicates are never both chosen while a
    farther point remains.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    n = len(e)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    norms = np.einsum("ij,ij->i", e, e)
    first = int(np.random.default_rng(seed).integers(n))
    chosen = [first]
    nearest = np.maximum(norms - 2 * e @ e[first] + norms[first], 0.0)  # squared distance to the chosen set
    for _ in range(k - 1):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.maximum(norms - 2 * e @ e[nxt] + norms[nxt], 0.0))
    return np.asarray(chosen, dtype=np.int64)


def covering_radius(embeddings: np.ndarray, chosen: np.ndarray) -> float:
    """The largest distance from any point to its nearest chosen point (what k-center minimises)."""
    e = np.asarray(embeddings, dtype=np.float64)
    c = e[np.asarray(chosen)]
    d2 = (e**2).sum(1)[:, None] - 2 * e @ c.T + (c**2).sum(1)[None, :]
    return float(np.sqrt(np.maximum(d2.min(axis=1), 0.0).max()))
