"""Raw images -> model input, with numpy alone (it runs on the device, without torch, Pillow or OpenCV).

The resize is bilinear and *antialiased when it shrinks*: each output pixel averages its input
pixels under a triangle filter that widens with the reduction factor — the algorithm of Pillow's
``Image.resize(..., BILINEAR)`` and torchvision's ``Resize(antialias=True)``, computed in float32
without Pillow's 8-bit rounding between the passes. When it enlarges it is plain bilinear with
half-pixel centres (what OpenCV's ``INTER_LINEAR`` does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .errors import ConfigError, InputValidationError

#: the most pixels edgeship decodes from one image file or request (40 MP: 8K video is 33 MP); a
#: 10000x10000 PNG of a few KB would otherwise decode to 300 MB of RGB
MAX_IMAGE_PIXELS = 40_000_000

if TYPE_CHECKING:
    from .spec import InputSpec, Preprocess


class LetterboxGeometry(NamedTuple):
    """Where a ``src`` image lands inside a ``dst`` canvas when letterboxed (aspect kept, centred, padded)."""

    scale: float  # resized = source * scale
    height: int  # the resized image, before padding
    width: int
    top: int  # padding on each side
    left: int
    bottom: int
    right: int

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) points (x, y) in the model input back to the source image's pixels."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - np.array([self.left, self.top])) / self.scale


def letterbox_geometry(src_h: int, src_w: int, dst_h: int, dst_w: int) -> LetterboxGeometry:
    """Scale that fits ``src`` inside ``dst`` keeping its aspect, and the padding that centres it."""
    if min(src_h, src_w, dst_h, dst_w) < 1:
        raise ConfigError(f"letterbox needs positive sizes, got {src_h}x{src_w} -> {dst_h}x{dst_w}")
    scale = min(dst_h / src_h, dst_w / src_w)
    height = min(dst_h, max(1, int(round(src_h * scale))))
    width = min(dst_w, max(1, int(round(src_w * scale))))
    top, left = (dst_h - height) // 2, (dst_w - width) // 2
    return LetterboxGeometry(scale, height, width, top, left, dst_h - height - top, dst_w - width - left)


def center_crop_geometry(src_h: int, src_w: int, dst_h: int, dst_w: int,
                         crop_fraction: float) -> tuple[int, int, int, int]:
    """The "imagenet" resize: ``(resized_h, resized_w, top, left)`` of the centre crop ``dst_h x dst_w``.

    The limiting side (the shorter one for a square input) is resized to ``round(dst / crop_fraction)``
    and the other keeps the aspect (truncated, as torchvision's ``Resize(int)``); the crop is centred
    as torchvision's ``CenterCrop``. 224 with 0.875 is ``Resize(256)`` + ``CenterCrop(224)``.
    """
    if dst_h / src_h >= dst_w / src_w:  # height limits
        new_h = int(round(dst_h / crop_fraction))
        new_w = max(dst_w, int(src_w * new_h / src_h))
    else:
        new_w = int(round(dst_w / crop_fraction))
        new_h = max(dst_h, int(src_h * new_w / src_w))
    return new_h, new_w, int(round((new_h - dst_h) / 2.0)), int(round((new_w - dst_w) / 2.0))


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize images laid out (N, H, W, C) or (H, W, C) to ``height x width``; float32 out.

    Antialiased when shrinking (see the module docstring); exact identity at the same size.
    """
    x = np.asarray(images)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4:
        raise InputValidationError(f"resize_bilinear needs (N, H, W, C) or (H, W, C) images, got shape {x.shape}")
    out = _resize(x.astype(np.float32, copy=False), (height, width), (height, width), (0, 0))
    return out[0] if single else out


def _resize(x: np.ndarray, size: tuple[int, int], crop: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
    """Resize (N, H, W, C) float32 to ``size`` and return only the window ``crop`` at ``offset`` of it."""
    n, h, w, c = x.shape
    if (h, w) == size and crop == size:
        return x
    x = np.ascontiguousarray(x)  # the gathers below are many times slower on a strided view
    rows = _taps(h, size[0], offset[0], crop[0])
    cols = _taps(w, size[1], offset[1], crop[1])
    # the pass that shrinks the intermediate most goes first (the result is the same: the filter is separable)
    if crop[0] * w <= h * crop[1]:
        return _apply(_apply(x, rows, axis=1), cols, axis=2)
    return _apply(_apply(x, cols, axis=2), rows, axis=1)


def _taps(in_size: int, out_size: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices (count, K) and weights (count, K) of output pixels start..start+count of a resize.

    Pillow's ``precompute_coeffs`` with the triangle (bilinear) filter, vectorised.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale  # the triangle filter's support is 1
    k = int(np.ceil(support)) * 2 + 1
    center = (np.arange(start, start + count, dtype=np.float64) + 0.5) * scale
    lo = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    idx = lo[:, None] + np.arange(k)[None, :]
    weights = np.maximum(0.0, 1.0 - np.abs((idx - center[:, None] + 0.5) / filterscale))
    weights[idx >= hi[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    keep = weights.any(axis=0)  # drop tap columns that are zero for every output pixel
    return np.minimum(idx[:, keep], in_size - 1), weights[:, keep].astype(np.float32)


def _apply(x: np.ndarray, taps: tuple[np.ndarray, np.ndarray], axis: int) -> np.ndarray:
    idx, weights = taps
    shape = [1] * x.ndim
    shape[axis] = len(idx)
    out = None
    for j in range(idx.shape[1]):
        term = np.take(x, idx[:, j], axis=axis) * weights[:, j].reshape(shape)
        out = term if out is None else np.add(out, term, out=out)
    return out


def _resize_for_spec(x: np.ndarray, pre: "Preprocess", dst_h: int, dst_w: int) -> np.ndarray:
    """Apply ``pre.resize`` to (N, H, W, C) float32 raw images."""
    n, h, w, c = x.shape
    if pre.resize == "stretch":
        return _resize(x, (dst_h, dst_w), (dst_h, dst_w), (0, 0))
    if pre.resize == "imagenet":
        new_h, new_w, top, left = center_crop_geometry(h, w, dst_h, dst_w, pre.crop_fraction)
        return _resize(x, (new_h, new_w), (dst_h, dst_w), (top, left))
    if pre.resize == "letterbox":
        g = letterbox_geometry(h, w, dst_h, dst_w)
        canvas = np.full((n, dst_h, dst_w, c), pre.pad_value, dtype=np.float32)
        canvas[:, g.top : g.top + g.height, g.left : g.left + g.width] = _resize(
            x, (g.height, g.width), (g.height, g.width), (0, 0))
        return canvas
    return x


def apply_preprocess(raw: np.ndarray, spec: "InputSpec") -> np.ndarray:
    """Apply ``spec.preprocess`` to a batch (or a single image) of raw images.

    ``raw`` is laid out as ``spec.preprocess.raw_layout`` (NHWC by default, HWC for one image); all
    images of one call have one size. Returns an array in ``spec.layout`` and ``spec.dtype`` with a
    batch dimension.
    """
    pre = spec.preprocess
    if pre is None:
        raise ConfigError("this InputSpec declares no preprocessing; pass model-ready tensors instead")
    x = np.asarray(raw)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise InputValidationError(
            f"raw images for '{spec.name}' must be 4-D ({pre.raw_layout}) or 3-D for one image, got shape {x.shape}"
        )
    if x.dtype.kind not in "uif":
        raise InputValidationError(f"raw images must be numeric (uint8 or float), got dtype {x.dtype}")
    if pre.raw_layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    if 0 in x.shape[1:3]:
        raise InputValidationError(f"raw images for '{spec.name}' are empty, got shape {x.shape}")
    channels = x.shape[-1]
    for name, values in (("mean", pre.mean), ("std", pre.std)):
        if values is not None and len(values) not in (1, channels):
            raise InputValidationError(f"preprocess {name} has {len(values)} values but the images have {channels} channels")
    if pre.resize != "none":
        dst_h, dst_w = spec.image_size
        x = _resize_for_spec(x.astype(np.float32), pre, dst_h, dst_w)
    if pre.reverse_channels:
        x = x[..., ::-1]
    # (x * scale - mean) / std as one multiply-add per channel, on a single float32 buffer already laid out
    # as the spec says: one cast-and-transpose pass and two in-place passes, no temporaries
    mean = np.broadcast_to(np.asarray(pre.mean if pre.mean is not None else 0.0, np.float32), (channels,))
    std = np.broadcast_to(np.asarray(pre.std if pre.std is not None else 1.0, np.float32), (channels,))
    gain, offset = np.float32(pre.scale) / std, -mean / std
    n, h, w = x.shape[:3]
    if spec.layout == "NCHW":
        out = np.empty((n, channels, h, w), dtype=np.float32)
        out[...] = x.transpose(0, 3, 1, 2)
        gain, offset = gain[:, None, None], offset[:, None, None]
    else:
        out = np.empty((n, h, w, channels), dtype=np.float32)
        out[...] = x
    out *= gain
    out += offset
    return out if out.dtype == spec.dtype else out.astype(spec.dtype)


def to_channels(image: np.ndarray, channels: int | None) -> np.ndarray:
    """(H, W) / (H, W, 1|3|4) raw image -> (H, W, channels): gray <-> RGB, alpha dropped.

    RGB -> gray uses ITU-R 601-2 luma (L = 0.299 R + 0.587 G + 0.114 B), as Pillow's ``convert("L")``.
    """
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise InputValidationError(f"an image must be (H, W) or (H, W, C), got shape {x.shape}")
    have = x.shape[-1]
    if have == 4:
        x, have = x[..., :3], 3
    if channels is None or have == channels:
        return x
    if have == 1 and channels == 3:
        return np.repeat(x, 3, axis=-1)
    if have == 3 and channels == 1:
        luma = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if x.dtype == np.uint8:
            luma = np.clip(np.round(luma), 0, 255)
        return luma.astype(x.dtype)[..., None]
    raise InputValidationError(f"cannot convert an image with {have} channels to {channels} channels")
