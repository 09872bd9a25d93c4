"""Calibration sources -> a seeded subset of model-ready samples.

Every source is a *pool* of candidates that can be loaded by index (a folder's files, a video's
sampled frames, an array's rows, a dataset's items); selection picks indices, and only the picked
candidates are decoded and preprocessed (all of them for "diverse", which embeds every candidate).
Here: arrays, datasets, streams and ``collect``; image folders and video in ``_images``, the draw in ``_draw``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from .._defaults import CALIBRATION_SIZE
from ..errors import ConfigError
from ..spec import shape_matches
from ._draw import CHUNK, CalibrationWarning, _draw, _Pool
from ._images import IMAGE_EXTENSIONS, from_folder, from_video
from ._samples import _as_batch, _check_batch_shape, _split, _to_numpy
from ._select import Embed
from ._set import CalibrationSet

if TYPE_CHECKING:
    from ..spec import InputSpec

__all__ = ["CHUNK", "IMAGE_EXTENSIONS", "MAX_ITERABLE_SAMPLES", "CalibrationWarning", "collect", "from_arrays",
           "from_dataset", "from_folder", "from_video"]

# An iterable source is read until this many samples before the subset is drawn from it.
MAX_ITERABLE_SAMPLES = 20_000


def from_arrays(
    x: Any,
    spec: "InputSpec",
    labels: Any = None,
    size: int = CALIBRATION_SIZE,
    select: str | None = None,
    seed: int = 0,
    preprocess: bool = False,
    embed: Embed | None = None,
) -> CalibrationSet:
    """An array (N, ...) — or a .npy / .npz file (arrays 'x' and optional 'y'), read without pickle —
    -> a calibration set.

    Args:
        labels: one label per row; enables stratified selection (the default when given).
        select: "random", "stratified", "diverse"; None = stratified with labels, else random.
        preprocess: the rows are raw images (``spec.preprocess.raw_layout``); apply the preprocessing.
    """
    description = None
    if isinstance(x, (str, os.PathLike)):
        x, file_labels, description = _load_array_file(Path(x))
        labels = file_labels if labels is None else labels
    arr = _to_numpy(x)
    description = (f"{description}: " if description else "") + f"array {tuple(arr.shape)} {arr.dtype}"
    if arr.dtype.kind not in "uif":
        raise ConfigError(f"calibration array must be numeric, got dtype {arr.dtype}")
    rank = len(spec.shape)
    if (preprocess and arr.ndim == 3) or (not preprocess and arr.ndim == rank - 1):
        arr = arr[None]  # one sample without its batch dim
    if not preprocess:
        _check_batch_shape(arr.shape, spec, "calibration array")
    if labels is not None:
        labels = _to_numpy(labels).reshape(-1)
        if len(labels) != len(arr):
            raise ConfigError(f"labels has {len(labels)} entries but the array has {len(arr)} samples")
    pool = _ArrayPool(arr, spec, preprocess, labels, description)
    return _draw(pool, spec, size, select, seed, embed, 0.0, preprocessed=preprocess)


def from_dataset(
    dataset: Any,
    spec: "InputSpec",
    labels: Any = None,
    size: int = CALIBRATION_SIZE,
    select: str | None = None,
    seed: int = 0,
    preprocess: bool = False,
    embed: Embed | None = None,
) -> CalibrationSet:
    """A torch Dataset (items are tensors/arrays, or (input, label) pairs) or a DataLoader over one
    (its dataset is read directly, so its shuffling and batching do not matter) -> a calibration set.

    Labels are ``labels``, else the dataset's ``targets`` (torchvision's convention) or a
    TensorDataset's second tensor, else read from (input, label) items. Stratified selection (the
    default when labels are known up front) needs them for every item; select="stratified" on a
    dataset without known labels reads every item once. A dataset without ``__len__`` (an iterable
    stream) is sampled uniformly at random.
    """
    if not _is_map_dataset(dataset):
        if not isinstance(dataset, Iterable) or isinstance(dataset, (str, bytes, dict)):
            raise ConfigError(f"from_dataset needs a torch Dataset or DataLoader, got {type(dataset).__name__}")
        if select not in (None, "random"):
            raise ConfigError(f"select={select!r} needs random access (a map-style dataset with __len__); "
                              f"{type(dataset).__name__} is a stream: use select='random' or from_arrays")
        return _from_stream(dataset, spec, size, seed, preprocess)
    ds = dataset.dataset if _is_loader(dataset) else dataset
    known = _to_numpy(labels).reshape(-1) if labels is not None else _dataset_labels(ds)
    if known is not None and len(known) != len(ds):
        raise ConfigError(f"labels has {len(known)} entries but the dataset has {len(ds)} items")
    pool = _DatasetPool(ds, spec, preprocess, known)
    if select == "stratified" and known is None:
        pool.labels = pool.read_labels()
    return _draw(pool, spec, size, select, seed, embed, 0.0, preprocessed=preprocess)


def collect(
    source: Any,
    spec: "InputSpec",
    size: int = CALIBRATION_SIZE,
    seed: int = 0,
    preprocess: bool = False,
) -> CalibrationSet:
    """Draw a seeded random subset of ``size`` samples from any source (what ``compress`` calls).

    Args:
        source: a :class:`CalibrationSet` (returned as it is, once it is checked to fit ``spec``),
            an np.ndarray (N, ...), a torch Dataset (items are tensors or (tensor, label)), a torch
            DataLoader, or any iterable of arrays (single samples or batches).
        spec: the model input the samples must fit.
        size: how many samples to keep (all of them when the source has fewer).
        seed: seed of the subset draw.
        preprocess: apply ``spec.preprocess`` to raw images first.
    """
    if isinstance(source, CalibrationSet):
        _check_set_fits(source, spec)
        return source
    if size < 1:
        raise ConfigError(f"calibration size must be >= 1, got {size}")
    if isinstance(source, np.ndarray):
        return from_arrays(source, spec, size=size, seed=seed, select="random", preprocess=preprocess)
    if _is_map_dataset(source):
        return from_dataset(source, spec, size=size, seed=seed, select="random", preprocess=preprocess)
    if isinstance(source, Iterable) and not isinstance(source, (str, bytes, dict)):
        return _from_stream(source, spec, size, seed, preprocess)
    raise ConfigError(
        "calibration must be an np.ndarray (N, ...), a torch Dataset or DataLoader, an iterable of arrays, "
        f"or an edgeship.calibration.CalibrationSet (from_folder, from_video, ...); got {type(source).__name__}"
    )


class _ArrayPool(_Pool):
    def __init__(self, x: np.ndarray, spec: "InputSpec", preprocess: bool, labels: np.ndarray | None,
                 description: str) -> None:
        super().__init__()
        self.x, self.spec, self.preprocess, self.labels, self.description = x, spec, preprocess, labels, description

    def __len__(self) -> int:
        return len(self.x)

    def origin(self, i: int) -> str:
        return f"row {i}"

    def load(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray | None, Any]]:
        indices = list(indices)
        for start in range(0, len(indices), CHUNK):
            ids = indices[start : start + CHUNK]
            self.tried.update(ids)
            batch = _as_batch(self.x[ids], self.spec, self.preprocess, "calibration array")
            for i, sample in zip(ids, _split(batch)):
                yield i, sample, None


class _DatasetPool(_Pool):
    def __init__(self, ds: Any, spec: "InputSpec", preprocess: bool, labels: np.ndarray | None) -> None:
        super().__init__()
        self.ds, self.spec, self.preprocess, self.labels = ds, spec, preprocess, labels
        self.description = f"{type(ds).__name__} of {len(ds)} items"

    def __len__(self) -> int:
        return len(self.ds)

    def origin(self, i: int) -> str:
        return f"item {i}"

    def read_labels(self) -> np.ndarray:
        labels = []
        for i in range(len(self.ds)):
            y = _split_item(self.ds[i])[1]
            if y is None:
                raise ConfigError(f"select='stratified' needs labels, but dataset item {i} is not an (input, label) "
                                  "pair with a scalar label; pass labels=...")
            labels.append(y)
        return np.asarray(labels)

    def load(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray | None, Any]]:
        for i in indices:
            self.tried.add(int(i))
            x, y = _split_item(self.ds[int(i)])
            batch = _as_batch(x, self.spec, self.preprocess, f"dataset item {i}")
            if len(batch) != 1:
                raise ConfigError(f"dataset item {i} holds {len(batch)} samples (shape {batch.shape}); "
                                  "expected one sample per item")
            yield int(i), batch, y


def _from_stream(source: Iterable, spec: "InputSpec", size: int, seed: int, preprocess: bool) -> CalibrationSet:
    """Uniform seeded sample of ``size`` from a stream (reads at most MAX_ITERABLE_SAMPLES)."""
    if size < 1:
        raise ConfigError(f"calibration size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
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
                break
        if seen >= MAX_ITERABLE_SAMPLES:
            break
    description = f"{type(source).__name__} ({seen} samples read)"
    if not kept:
        raise ConfigError(f"calibration source {description} gave no samples")
    for i, sample in enumerate(kept):
        if not np.isfinite(sample).all():
            raise ConfigError(f"calibration sample {i} of {description} contains NaN or Inf")
    return CalibrationSet(samples=kept, source=description, seed=seed, preprocessed=preprocess, spec=spec)


def _load_array_file(p: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """.npy -> (x, None); .npz -> (x, y or None) from arrays named 'x' and 'y'. Never unpickles."""
    from .._arrays import load_xy

    x, y = load_xy(p, "calibration")
    return x, y, p.name


def _dataset_labels(ds: Any) -> np.ndarray | None:
    """Labels a dataset knows without reading its items: ``targets``, or a TensorDataset's second tensor."""
    targets = getattr(ds, "targets", None)
    if targets is None:
        tensors = getattr(ds, "tensors", None)
        if isinstance(tensors, (tuple, list)) and len(tensors) >= 2:
            targets = tensors[1]
    if targets is None:
        return None
    try:
        arr = _to_numpy(targets)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 1 or len(arr) != len(ds) or arr.dtype.kind not in "uiUSb":
        return None
    return arr


def _check_set_fits(calib: CalibrationSet, spec: "InputSpec") -> None:
    """A CalibrationSet handed to compress must fit its spec and have been preprocessed the same way."""
    for sample, origin in zip(calib.samples, calib.origins or [None] * len(calib)):
        if not shape_matches(sample.shape, spec.shape) or sample.dtype != np.dtype(spec.dtype):
            where = f" ({origin})" if origin else ""
            raise ConfigError(f"calibration sample{where} has shape {tuple(sample.shape)} {sample.dtype}; the input "
                              f"spec expects {spec.shape} {spec.dtype}")
    made_with = calib.spec.preprocess if calib.spec is not None else None
    if calib.preprocessed and made_with != spec.preprocess:
        raise ConfigError(f"the calibration set was preprocessed with {made_with} but the input spec declares "
                          f"{spec.preprocess}; build the set with the same InputSpec")


def _is_loader(obj: Any) -> bool:
    return hasattr(obj, "dataset") and hasattr(obj, "batch_size") and hasattr(obj, "__iter__")


def _is_map_dataset(obj: Any) -> bool:
    target = obj.dataset if _is_loader(obj) else obj
    if isinstance(target, (list, tuple, str, bytes)):
        return False  # plain sequences are read as iterables (items may be batches)
    return hasattr(target, "__getitem__") and hasattr(target, "__len__") and not isinstance(target, np.ndarray)


def _first(item: Any) -> Any:
    """(input, label) pairs -> input."""
    return _split_item(item)[0]


def _split_item(item: Any) -> tuple[Any, Any]:
    """An item -> (input, scalar label or None)."""
    if isinstance(item, dict):
        raise ConfigError("calibration items that are dicts are not supported; yield arrays or (array, label) pairs")
    if isinstance(item, (tuple, list)) and item and not np.isscalar(item[0]):
        label = item[1] if len(item) > 1 else None
        if label is not None:
            arr = _to_numpy(label) if not isinstance(label, (dict, list, tuple)) else None
            label = arr.item() if arr is not None and arr.ndim == 0 and arr.dtype.kind in "uiUSb" else None
        return item[0], label
    return item, None
