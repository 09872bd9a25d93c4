"""Image sources: files under a folder (Pillow) and a video's frames (OpenCV), decoded as RGB and preprocessed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .._defaults import CALIBRATION_SIZE
from .._lazy import require
from ..errors import ConfigError
from ..preprocess import to_channels
from ._draw import _draw, _Pool
from ._samples import _as_batch
from ._select import Embed
from ._set import CalibrationSet

if TYPE_CHECKING:
    from ..spec import InputSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


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


def _decode_image(image_module: Any, path: Any, channels: int, what: str | None = None) -> np.ndarray:
    """A file (path or binary file object, named ``what`` in messages) -> (H, W, channels) uint8 (first frame of
    multi-frame files; 16-bit gray -> its high byte)."""
    from ..preprocess import MAX_IMAGE_PIXELS

    with image_module.open(path) as img:  # the header only: the size is known before anything is decoded
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ConfigError(f"{what or path.name} is {img.width}x{img.height} pixels; calibration images are at most "
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
