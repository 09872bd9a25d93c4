"""Lazy imports of heavy or optional libraries, with an error naming the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependencyError

# module -> the pip extra that provides it
_EXTRA_FOR = {
    "openvino": "openvino",
    "onnxruntime": "onnxruntime",
    "torch": "compress",
    "torchvision": "compress",
    "onnx": "compress",
    "onnxscript": "compress",
    "nncf": "compress",
    "torch_pruning": "compress",
    "tensorrt": "tensorrt",
    "sklearn": "demo",
    "cv2": "video",
    "zstandard": "zstd",
    "PIL": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "anyio": "serve",
    "jinja2": "report",
    "matplotlib": "report",
    "pycocotools": "detection",
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRA_FOR.get(top, "all")
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(
            f"'{top}' is not installed{why}: install it with `pip install \"edgeship[{extra}]\"` "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None
