"""torch: an eager-mode reference Runtime over an in-memory ``nn.Module``.

Bundles never hold torch models (they would need pickle to load), so this runtime is not a
registered compile target; it is the FP32 reference that benchmarks compare artifacts against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._lazy import require
from ..errors import ConfigError
from .base import Runtime, TensorInfo

if TYPE_CHECKING:
    from ..spec import InputSpec


class TorchRuntime(Runtime):
    """Runs an ``nn.Module`` in eval mode under ``torch.inference_mode``; outputs as numpy."""

    target = "torch"

    def __init__(self, module: Any, spec: "InputSpec", threads: int | None = None) -> None:
        self._module = module
        self._threads = threads
        super().__init__(spec, "fp32")

    def _load(self) -> None:
        self._torch = require("torch", "the torch reference runtime")
        if not isinstance(self._module, self._torch.nn.Module):
            raise ConfigError(f"reference must be a torch.nn.Module, got {type(self._module).__name__}")
        if self._module.training:
            raise ConfigError("the reference model is in training mode; call model.eval() first")
        if self._threads is not None:
            self._torch.set_num_threads(self._threads)
        example = np.zeros(self.spec.example_shape(1), dtype=self.spec.dtype)
        with self._torch.inference_mode():
            out = self._module(self._torch.from_numpy(example))
        self._n_outputs = 1 if isinstance(out, self._torch.Tensor) else len(out)

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        names = ["output"] if self._n_outputs == 1 else [f"output_{i}" for i in range(self._n_outputs)]
        return [TensorInfo(self.spec.name, self.spec.shape, self.spec.dtype)], [TensorInfo(n, (), "float32") for n in names]

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self._module(torch.from_numpy(feed[self.spec.name]))
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        return {info.name: t.numpy() for info, t in zip(self._outputs, outs)}

    def _close(self) -> None:
        self._module = None
