"""Raw images -> model input, with numpy alone (it runs on the device, without torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, InputValidationError

if TYPE_CHECKING:
    from ..spec import InputSpec


def apply_preprocess(raw: np.ndarray, spec: "InputSpec") -> np.ndarray:
    """Apply ``spec.preprocess`` to a batch (or a single image) of raw images.

    ``raw`` is laid out as ``spec.preprocess.raw_layout`` (NHWC by default, HWC for one image).
    Returns an array in ``spec.layout`` and ``spec.dtype`` with a batch dimension.
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
    x = x.astype(np.float32) * np.float32(pre.scale)
    if pre.reverse_channels:
        x = x[..., ::-1]
    channels = x.shape[-1]
    for name, values in (("mean", pre.mean), ("std", pre.std)):
        if values is not None and len(values) not in (1, channels):
            raise InputValidationError(f"preprocess {name} has {len(values)} values but the images have {channels} channels")
    if pre.mean is not None:
        x = x - np.asarray(pre.mean, dtype=np.float32)
    if pre.std is not None:
        x = x / np.asarray(pre.std, dtype=np.float32)
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=spec.dtype)
