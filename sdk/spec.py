"""InputSpec: what a model takes, and how raw images become that.

The spec travels inside the bundle, so the device preprocesses exactly as calibration did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Sequence

import numpy as np

from .errors import ConfigError

Layout = Literal["NCHW", "NHWC"]
Resize = Literal["none", "imagenet", "letterbox", "stretch"]
RESIZE_MODES = ("none", "imagenet", "letterbox", "stretch")
_DTYPES = ("float32", "float16", "uint8", "int8", "int32", "int64")


@dataclass(frozen=True)
class Preprocess:
    """How a raw image (uint8, channels last, RGB) becomes the model's input tensor.

    Applied in this order: cast to float32, resize to the spec's H x W (``resize``, in raw pixel
    units; letterbox padding is ``pad_value``), multiply by ``scale``, reverse the channel order if
    ``reverse_channels`` (RGB <-> BGR), subtract ``mean`` and divide by ``std`` (per channel), move
    channels to the spec's layout, cast to the spec's dtype.

    ``resize``: "none" (images already have the spec's size), "imagenet" (resize the shorter side to
    ``round(side / crop_fraction)``, then centre-crop), "letterbox" (keep the aspect, fit inside,
    pad centred), "stretch" (resize to H x W, aspect not kept). Bilinear, antialiased when shrinking
    (see :mod:`edgeship.preprocess`). edgeship's image sources (folders, video) deliver
    RGB; set ``reverse_channels`` for a model trained on BGR.
    """

    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    reverse_channels: bool = False
    raw_layout: Layout = "NHWC"
    resize: Resize = "none"
    crop_fraction: float = 0.875
    pad_value: float = 114.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.scale) or self.scale == 0:
            raise ConfigError(f"Preprocess.scale must be a finite non-zero number, got {self.scale!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.std is not None and any(s == 0 for s in self.std):
            raise ConfigError(f"Preprocess.std must not contain 0, got {self.std}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ConfigError(f"Preprocess.mean has {len(self.mean)} values but std has {len(self.std)}")
        if self.raw_layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"Preprocess.raw_layout must be 'NCHW' or 'NHWC', got {self.raw_layout!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"Preprocess.resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if not isinstance(self.crop_fraction, (int, float)) or not 0 < self.crop_fraction <= 1:
            raise ConfigError(f"Preprocess.crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        if not isinstance(self.pad_value, (int, float)) or not np.isfinite(self.pad_value):
            raise ConfigError(f"Preprocess.pad_value must be a finite number, got {self.pad_value!r}")
        object.__setattr__(self, "crop_fraction", float(self.crop_fraction))
        object.__setattr__(self, "pad_value", float(self.pad_value))

    @classmethod
    def imagenet(cls, crop_fraction: float = 0.875) -> "Preprocess":
        """The torchvision ImageNet convention: RGB, resize + centre crop (256 -> 224), [0, 1], mean/std."""
        return cls(scale=1 / 255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize="imagenet",
                   crop_fraction=crop_fraction)

    @classmethod
    def letterbox(cls, pad_value: float = 114.0) -> "Preprocess":
        """The YOLO-style detector convention: RGB, aspect kept with centred grey padding, [0, 1]."""
        return cls(scale=1 / 255.0, resize="letterbox", pad_value=pad_value)

    @classmethod
    def raw(cls) -> "Preprocess":
        """Pixels as they are (float 0..255, no resize, no normalisation): the model does the rest."""
        return cls(scale=1.0)


@dataclass(frozen=True)
class InputSpec:
    """Name, shape (``None`` = dynamic dim), dtype and layout of a model input, plus its preprocessing."""

    shape: tuple[int | None, ...]
    name: str = "input"
    dtype: str = "float32"
    layout: Layout = "NCHW"
    preprocess: Preprocess | None = field(default_factory=Preprocess)

    def __post_init__(self) -> None:
        try:
            shape = tuple(None if d is None or (isinstance(d, int) and d < 0) else int(d) for d in self.shape)
        except (TypeError, ValueError):
            raise ConfigError(f"InputSpec.shape must be a sequence of ints or None, got {self.shape!r}") from None
        if not shape or any(d is not None and d == 0 for d in shape):
            raise ConfigError(f"InputSpec.shape must be non-empty with positive dims, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        if self.dtype not in _DTYPES:
            raise ConfigError(f"InputSpec.dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"InputSpec.layout must be 'NCHW' or 'NHWC', got {self.layout!r}")
        if self.preprocess is not None and len(shape) != 4:
            raise ConfigError(f"preprocessing needs a 4-D image input (N, C, H, W), got shape {shape}")
        if not self.name:
            raise ConfigError("InputSpec.name must be a non-empty string")
        if self.preprocess is not None and self.preprocess.resize != "none" and None in self.image_size:
            raise ConfigError(f"Preprocess.resize={self.preprocess.resize!r} needs a fixed height and width in the "
                              f"shape, got {shape}")

    @property
    def image_size(self) -> tuple[int | None, int | None]:
        """(height, width) of a 4-D image input, from the layout."""
        if len(self.shape) != 4:
            raise ConfigError(f"InputSpec.shape {self.shape} is not a 4-D image input")
        return (self.shape[2], self.shape[3]) if self.layout == "NCHW" else (self.shape[1], self.shape[2])

    @property
    def channels(self) -> int | None:
        """Number of channels, from the layout (None when dynamic or not an image)."""
        if len(self.shape) != 4:
            return None
        return self.shape[1] if self.layout == "NCHW" else self.shape[3]

    def example_shape(self, batch: int = 1) -> tuple[int, ...]:
        """A concrete shape: dynamic batch -> ``batch``; other dynamic dims are an error."""
        dims = list(self.shape)
        if dims[0] is None:
            dims[0] = batch
        if any(d is None for d in dims):
            raise ConfigError(f"InputSpec.shape {self.shape} has dynamic non-batch dims; give a concrete shape")
        return tuple(dims)  # type: ignore[return-value]

    def apply_preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Turn raw images into the model's input tensor (see :class:`Preprocess`)."""
        from .preprocess import apply_preprocess

        return apply_preprocess(raw, self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        if self.preprocess is not None:
            for key in ("mean", "std"):
                if data["preprocess"][key] is not None:
                    data["preprocess"][key] = list(data["preprocess"][key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InputSpec":
        """Build from a plain dict (as stored in a manifest); unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"input spec must be a mapping, got {type(data).__name__}")
        known = {"shape", "name", "dtype", "layout", "preprocess"}
        extra = set(data) - known
        if extra:
            raise ConfigError(f"unknown InputSpec keys {sorted(extra)}; expected a subset of {sorted(known)}")
        pre = data.get("preprocess")
        if pre is not None:
            pre_known = {f.name for f in fields(Preprocess)}  # a manifest without the newer keys gets their defaults
            if not isinstance(pre, dict) or set(pre) - pre_known:
                raise ConfigError(f"invalid preprocess entry {pre!r}; expected keys from {sorted(pre_known)}")
            pre = Preprocess(**pre)
        args = {k: v for k, v in data.items() if k != "preprocess"}
        if "shape" not in args:
            raise ConfigError("input spec has no 'shape'")
        return cls(**args, preprocess=pre)


def shape_matches(shape: Sequence[int], expected: Sequence[int | None]) -> bool:
    """Whether a concrete ``shape`` fits ``expected`` (None matches any size)."""
    return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))
