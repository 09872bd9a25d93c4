"""Backends: one module per target, registered by name. Importing this package imports no backend."""

from __future__ import annotations

from .base import Artifact, CompileRequest, Runtime, RuntimeState, Target, TensorInfo
from .registry import PREFERENCE, get_target, get_target_class, list_targets, register_target

# One line per backend module; each registers itself and imports its backend lazily.
from . import openvino, onnxruntime, tensorrt  # noqa: E402,F401  isort: skip

__all__ = [
    "Artifact",
    "CompileRequest",
    "Runtime",
    "RuntimeState",
    "Target",
    "TensorInfo",
    "PREFERENCE",
    "get_target",
    "get_target_class",
    "list_targets",
    "register_target",
]
