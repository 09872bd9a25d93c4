"""Calibration sources -> a seeded subset of model-ready samples.

Every source is a *pool* of candidates that can be loaded by index (a folder's files, a video's
sampled frames, an array's rows, a dataset's items); selection picks indices, and only the picked
candidates are decoded and preprocessed (all of them for "diverse", which embeds every candidate).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from .._defaults import CALIBRATION_SIZE
from .._lazy import require
from ..errors import ConfigError
from ..preprocess import to_channels
from ..spec import shape_matches
from ._select import Embed, cheap_embedding, k_center, resolve_selection, stratified_quotas, user_embedding
from ._set import CalibrationSet

if TYPE_CHECKING:
    from ..spec import InputSpec

# An iterable source is read until this many samples before the subset is drawn from it.
MAX_ITERABLE_SAMPLES = 20_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Candidates are loaded, preprocessed and embedded this many at a time.
CHUNK = 256
# "diverse" keeps the samples it embedded while they fit in this many bytes (else it loads the chosen again).
_KEEP_BYTES = 512 * 2**20


class CalibrationWarning(UserWarning):
    """Calibration data had problems that were worked around (e.g. undecodable files were skipped)."""


# -- public sources -----------------------------------------------------------------------------
def from_folder(
    path: str | os.PathLike,
    spec: "InputSpec",
    size: int = CALIBRATION_SIZE,
    select: str | None = "random",
    seed: int = 0,
    max_bad_fraction: float = 0.1,
    embed: Embed | None = None,
) -> CalibrationSet:
    """Images under ``path`` (recursive; .jpg .jpeg .png .bmp .tif .tiff) -> a calibration set.

    Decoded with Pillow as RGB (or gray for a 1-channel spec; gray files become RGB for a 3-channel
    one), then preprocessed with ``spec.preprocess`` one at a time, so files may differ in size when
    the preprocessing resizes.

    Args:
        size: how many images to keep (all of them when there are fewer).
        select: "random", "diverse" (greedy k-center on ``embed`` or on 8x8 thumbnails).
        seed: seed of the draw; the same folder, spec and seed give the same set.
        max_bad_fraction: undecodable files are skipped with a :class:`CalibrationWarning` naming
            them; above this fraction of the files read it is a ConfigError.
        embed: ``embed(batch) -> (N, D)`` on model-ready batches, e.g. a model's penultimate features.
    Raises:
        ConfigError: no images, too many undecodable ones, or an image that does not fit the spec.
        MissingDependencyError: Pillow is not installed.
    """
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"calibration folder not found: {root} (expected a directory of images)")
    _needs_preprocess(spec, "from_folder")
    _check_bad_fraction_arg(max_bad_fraction)
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        others = sum(1 for p in root.rglob("*") if p.is_file())
        raise ConfigError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}; found {others} other files")
    pool = _FolderPool(root, files, spec)
    return _draw(pool, spec, size, select, seed, embed, max_bad_fraction, preprocessed=True)


def from_video(
    path: str | os.PathLike,
    spec: "InputSpec",
    every: int | None = None,
    per_second: float | None = None,
    size: int = CALIBRATION_SIZE,
    select: str | None = "random",
    seed: int = 0,
    max_bad_fraction: float = 0.1,
    embed: Embed | None = None,
) -> CalibrationSet:
    """Frames of a video file -> a calibration set; candidates are every ``every``-th frame or
    ``per_second`` frames per second of video (every frame when neither is given).

    Decoded with OpenCV (``pip install "edgeship[video]"``); frames are converted from OpenCV's BGR
    to RGB like every edgeship image source, then preprocessed with ``spec.preprocess``. The video
    is read sequentially: once to count its frames and once to decode the chosen ones (once more
    for "diverse", which embeds every candidate).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"calibration video not found: {p}")
    _needs_preprocess(spec, "from_video")
    _check_bad_fraction_arg(max_bad_fraction)
    if every is not None and per_second is not None:
        raise ConfigError("give from_video either every=N frames or per_second=N, not both")
    if every is not None and (not isinstance(every, int) or every < 1):
        raise ConfigError(f"every must be a positive integer number of frames, got {every!r}")
    if per_second is not None and not (isinstance(per_second, (int, float)) and per_second > 0):
        raise ConfigError(f"per_second must be a positive number of frames per second, got {per_second!r}")
    pool = _VideoPool(p, spec, every, per_second)
    return _draw(pool, spec, size, select, seed, embed, max_bad_fraction, preprocessed=True)


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


# -- the draw ------------------------------------------------------------------------------------
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


# -- pools ---------------------------------------------------------------------------------------
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


def _relative_name(path: Path) -> str:
    """``path`` as the manifest records it: relative to where compress ran, else its last two parts — a
    build machine's absolute paths would travel in the bundle and be served by ``GET /v1/model``."""
    import os

    try:
        rel = os.path.relpath(path.resolve(), Path.cwd().resolve())
    except ValueError:  # another drive on Windows
        rel = ".."
    if rel.startswith(".."):
        rel = "/".join(path.resolve().parts[-2:])
    return Path(rel).as_posix()


class _FolderPool(_Pool):
    def __init__(self, root: Path, files: list[Path], spec: "InputSpec") -> None:
        super().__init__()
        self.root, self.files, self.spec = root, files, spec
        self.description = f"folder {_relative_name(root)} ({len(files)} images)"
        self.image = _pillow()

    def __len__(self) -> int:
        return len(self.files)

    def origin(self, i: int) -> str:
        return self.files[i].relative_to(self.root).as_posix()

    def load(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray | None, Any]]:
        for i in indices:
            self.tried.add(int(i))
            try:
                image = _decode_image(self.image, self.files[i], self.spec.channels or 3)
            except (OSError, SyntaxError, ValueError, EOFError, self.image.DecompressionBombError) as exc:
                self.bad[int(i)] = f"{type(exc).__name__}: {exc}"
                yield int(i), None, None
                continue
            yield int(i), _image_sample(image, self.spec, self.origin(i)), None


class _VideoPool(_Pool):
    def __init__(self, path: Path, spec: "InputSpec", every: int | None, per_second: float | None) -> None:
        super().__init__()
        self.cv2 = require("cv2", "reading calibration video")
        self.path, self.spec = path, spec
        cap = self._open()
        try:
            self.fps = float(cap.get(self.cv2.CAP_PROP_FPS) or 0.0)
            total = 0
            while cap.grab():
                total += 1
        finally:
            cap.release()
        if total == 0:
            raise ConfigError(f"no frames could be read from video {path}")
        frames = np.arange(total)
        if per_second is not None:
            if not self.fps > 0:
                raise ConfigError(f"video {path} reports no frame rate; use every=N frames instead of per_second")
            slot = np.floor(frames * per_second / self.fps).astype(np.int64)
            frames = frames[np.r_[True, slot[1:] != slot[:-1]]]  # the first frame of each 1/per_second slot
        elif every is not None:
            frames = frames[::every]
        self.frames = frames
        how = f"every {every} frames" if every else (f"{per_second}/s" if per_second else "every frame")
        self.description = f"video {path.name} ({total} frames, {self.fps:g} fps, {len(frames)} candidates {how})"

    def _open(self) -> Any:
        cap = self.cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise ConfigError(f"cannot open video {self.path} (expected a video file OpenCV can decode)")
        return cap

    def __len__(self) -> int:
        return len(self.frames)

    def origin(self, i: int) -> str:
        frame = int(self.frames[i])
        at = f" ({frame / self.fps:.2f} s)" if self.fps > 0 else ""
        return f"{self.path.name} frame {frame}{at}"

    def load(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray | None, Any]]:
        wanted = {int(self.frames[i]): int(i) for i in indices}
        if not wanted:
            return
        last = max(wanted)
        cap = self._open()
        try:
            frame_no = 0
            while frame_no <= last and cap.grab():
                i = wanted.get(frame_no)
                if i is not None:
                    self.tried.add(i)
                    ok, frame = cap.retrieve()
                    if not ok or frame is None:
                        self.bad[i] = "frame could not be decoded"
                        yield i, None, None
                    else:
                        rgb = frame[..., ::-1] if frame.ndim == 3 else frame  # OpenCV decodes BGR
                        image = to_channels(rgb, self.spec.channels or 3)
                        yield i, _image_sample(image, self.spec, self.origin(i)), None
                frame_no += 1
        finally:
            cap.release()
        for frame, i in wanted.items():
            if frame >= frame_no:  # the video ended early (its frame count changed between reads)
                self.tried.add(i)
                self.bad[i] = "frame could not be read"
                yield i, None, None


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


# -- helpers -------------------------------------------------------------------------------------
def _needs_preprocess(spec: "InputSpec", what: str) -> None:
    if spec.preprocess is None or len(spec.shape) != 4:
        raise ConfigError(f"{what} decodes raw images, so the InputSpec needs a 4-D image shape and preprocessing "
                          "(e.g. preprocess=Preprocess.imagenet()); this one has none")


def _check_bad_fraction_arg(value: float) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"max_bad_fraction must be in [0, 1], got {value!r}")


def _pillow() -> Any:
    """PIL.Image, or an error naming the extra (build machines have `compress`; Pillow is in it)."""
    return require("PIL.Image", "reading calibration images")


def _decode_image(image_module: Any, path: Path, channels: int) -> np.ndarray:
    """A file -> (H, W, channels) uint8 (first frame of multi-frame files; 16-bit gray -> its high byte)."""
    from ..preprocess import MAX_IMAGE_PIXELS

    with image_module.open(path) as img:  # the header only: the size is known before anything is decoded
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ConfigError(f"{path.name} is {img.width}x{img.height} pixels; calibration images are at most "
                              f"{MAX_IMAGE_PIXELS} pixels")
        img.load()
        if img.mode.startswith("I;16"):
            arr = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
        elif img.mode in ("I", "F"):
            arr = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        else:
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    return to_channels(arr, channels)


def _image_sample(image: np.ndarray, spec: "InputSpec", what: str) -> np.ndarray:
    """One decoded (H, W, C) uint8 image -> a model-ready sample (1, ...)."""
    pre = spec.preprocess
    assert pre is not None
    if pre.resize == "none":
        want = spec.image_size
        if any(w is not None and w != g for w, g in zip(want, image.shape[:2])):
            raise ConfigError(
                f"{what} is {image.shape[0]}x{image.shape[1]} but the spec takes "
                f"{'x'.join('?' if w is None else str(w) for w in want)} and Preprocess.resize is 'none'; "
                "set resize='imagenet', 'letterbox' or 'stretch' (e.g. Preprocess.imagenet())")
    if pre.raw_layout == "NCHW":
        image = image.transpose(2, 0, 1)
    return _as_batch(image, spec, True, what)


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


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_batch_shape(shape: tuple[int, ...], spec: "InputSpec", what: str) -> None:
    rank = len(spec.shape)
    if len(shape) != rank:
        raise ConfigError(f"{what} has shape {shape}; expected {spec.shape} (or one sample without batch dim)")
    for axis, (got, want) in enumerate(zip(shape[1:], spec.shape[1:]), start=1):
        if want is not None and got != want:
            raise ConfigError(f"{what} has shape {shape}; expected {spec.shape} (dim {axis} differs)")


def _as_batch(x: Any, spec: "InputSpec", preprocess: bool, what: str) -> np.ndarray:
    """One item -> a batch (n, ...) fitting the spec."""
    arr = _to_numpy(x)
    if arr.dtype.kind not in "uif":
        raise ConfigError(f"{what} must be numeric, got dtype {arr.dtype}")
    if preprocess:
        if arr.ndim == 2 and spec.preprocess is not None and spec.preprocess.raw_layout == "NHWC":
            arr = to_channels(arr, spec.channels)  # one gray (H, W) image, e.g. from a PIL dataset
        arr = spec.apply_preprocess(arr)
    if arr.ndim == len(spec.shape) - 1:
        arr = arr[None]
    _check_batch_shape(arr.shape, spec, what)
    return np.ascontiguousarray(arr, dtype=spec.dtype)


def _split(batch: np.ndarray) -> list[np.ndarray]:
    return [batch[i : i + 1] for i in range(len(batch))]
