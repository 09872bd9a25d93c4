"""One calibration item (an array or a tensor) -> a model-ready batch that fits the InputSpec, or a clear error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..preprocess import to_channels

if TYPE_CHECKING:
    from ..spec import InputSpec


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
