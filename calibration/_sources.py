"""Calibration sources -> a seeded subset of model-ready samples."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..spec import InputSpec

# An iterable source is read until this many samples before the subset is drawn from it.
MAX_ITERABLE_SAMPLES = 20_000


@dataclass(frozen=True)
class CalibrationSet:
    """The chosen calibration samples (each shaped like the spec with batch 1) and where they came from."""

    samples: list[np.ndarray]
    source: str
    seed: int
    preprocessed: bool

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.samples)

    @property
    def sha256(self) -> str:
        """Content hash of the chosen samples, in order."""
        digest = hashlib.sha256()
        for sample in self.samples:
            digest.update(np.ascontiguousarray(sample).tobytes())
        return digest.hexdigest()

    def as_batch(self) -> np.ndarray:
        """All samples stacked into one array (N, ...)."""
        return np.concatenate(self.samples, axis=0)

    def summary(self) -> dict[str, Any]:
        """What the bundle records about its calibration."""
        return {
            "count": len(self.samples),
            "source": self.source,
            "seed": self.seed,
            "sha256": self.sha256,
            "preprocessed_by_edgeship": self.preprocessed,
        }


def collect(
    source: Any,
    spec: "InputSpec",
    size: int = 300,
    seed: int = 0,
    preprocess: bool = False,
) -> CalibrationSet:
    """Draw a seeded random subset of ``size`` samples from ``source``.

    Args:
        source: an np.ndarray (N, ...), a torch Dataset (items are tensors or (tensor, label)),
            a torch DataLoader, or any iterable of arrays (single samples or batches).
        spec: the model input the samples must fit.
        size: how many samples to keep (all of them when the source has fewer).
        seed: seed of the subset draw.
        preprocess: apply ``spec.preprocess`` to raw images first.
    """
    if isinstance(source, CalibrationSet):
        return source
    if size < 1:
        raise ConfigError(f"calibration size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    if isinstance(source, np.ndarray):
        batch = _as_batch(source, spec, preprocess, "calibration array")
        index = np.sort(rng.permutation(len(batch))[:size])
        samples = [batch[i : i + 1] for i in index]
        description = f"array {tuple(source.shape)} {source.dtype}"
    elif _is_map_dataset(source):
        dataset = source.dataset if _is_loader(source) else source
        total = len(dataset)
        index = np.sort(rng.permutation(total)[:size])
        samples = [_as_batch(_first(dataset[int(i)]), spec, preprocess, f"dataset item {i}") for i in index]
        samples = [s for batch in samples for s in _split(batch)]
        description = f"{type(dataset).__name__} of {total} items"
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, dict)):
        samples, seen = _reservoir(source, spec, preprocess, size, rng)
        description = f"{type(source).__name__} ({seen} samples read)"
    else:
        raise ConfigError(
            "calibration must be an np.ndarray (N, ...), a torch Dataset or DataLoader, or an iterable "
            f"of arrays; got {type(source).__name__}"
        )
    if not samples:
        raise ConfigError(f"calibration source {description} gave no samples")
    for i, sample in enumerate(samples):
        if not np.isfinite(sample).all():
            raise ConfigError(f"calibration sample {i} of {description} contains NaN or Inf")
    return CalibrationSet(samples=samples, source=description, seed=seed, preprocessed=preprocess)


def _reservoir(source: Iterable, spec: "InputSpec", preprocess: bool, size: int, rng: np.random.Generator):
    """Uniform seeded sample of ``size`` from a stream (reads at most MAX_ITERABLE_SAMPLES)."""
    kept: list[np.ndarray] = []
    seen = 0
    for item in source:
        for sample in _split(_as_batch(_first(item), spec, preprocess, f"calibration item {seen}")):
            if seen < size:
                kept.append(sample)
            else:
                j = int(rng.integers(0, seen + 1))
                if j < size:
                    kept[j] = sample
            seen += 1
            if seen >= MAX_ITERABLE_SAMPLES:
                return kept, seen
    return kept, seen


def _is_loader(obj: Any) -> bool:
    return hasattr(obj, "dataset") and hasattr(obj, "batch_size") and hasattr(obj, "__iter__")


def _is_map_dataset(obj: Any) -> bool:
    target = obj.dataset if _is_loader(obj) else obj
    if isinstance(target, (list, tuple, str, bytes)):
        return False  # plain sequences are read as iterables (items may be batches)
    return hasattr(target, "__getitem__") and hasattr(target, "__len__") and not isinstance(target, np.ndarray)


def _first(item: Any) -> Any:
    """(input, label) pairs -> input."""
    if isinstance(item, (tuple, list)) and item and not np.isscalar(item[0]):
        return item[0]
    if isinstance(item, dict):
        raise ConfigError("calibration items that are dicts are not supported; yield arrays or (array, label) pairs")
    return item


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_batch(x: Any, spec: "InputSpec", preprocess: bool, what: str) -> np.ndarray:
    """One item -> a batch (n, ...) fitting the spec."""
    arr = _to_numpy(x)
    if arr.dtype.kind not in "uif":
        raise ConfigError(f"{what} must be numeric, got dtype {arr.dtype}")
    if preprocess:
        arr = spec.apply_preprocess(arr)
    rank = len(spec.shape)
    if arr.ndim == rank - 1:
        arr = arr[None]
    if arr.ndim != rank:
        raise ConfigError(f"{what} has shape {arr.shape}; expected {spec.shape} (or one sample without batch dim)")
    for axis, (got, want) in enumerate(zip(arr.shape[1:], spec.shape[1:]), start=1):
        if want is not None and got != want:
            raise ConfigError(f"{what} has shape {arr.shape}; expected {spec.shape} (dim {axis} differs)")
    return np.ascontiguousarray(arr, dtype=spec.dtype)


def _split(batch: np.ndarray) -> list[np.ndarray]:
    return [batch[i : i + 1] for i in range(len(batch))]
