"""Lazy imports of heavy or optional libraries, with an error naming the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from types import ModuleType

from .errors import MissingDependencyError

# module -> the pip extra that provides it (None: a dependency of edgeship itself)
_EXTRA_FOR: dict[str, str | None] = {
    "cryptography": None,
    "ray": "ray",
    "openvino": "openvino",
    "onnxruntime": "onnxruntime",
    "torch": "compress",
    "torchvision": "compress",
    "onnx": "compress",
    "onnxscript": "compress",
    "nncf": "compress",
    "torch_pruning": "compress",
    "tensorrt": "tensorrt",
    "polygraphy": "tensorrt",
    "cuda": "tensorrt",
    "modelopt": "tensorrt-build",
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


# loggers of other libraries that a module's import wakes with a warning about nothing edgeship does: NNCF
# imports torch's C++ extension builder, which warns "No CUDA runtime is found" on every CPU-only machine
# (edgeship builds no extension); a newcomer's first screen should hold only edgeship's own output
_QUIET_LOGGERS = {"nncf": ("torch.utils.cpp_extension",)}


def require(module: str, purpose: str = "", hint: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the extra that installs it (``hint``: what
    else the user can do, e.g. "or use .tar / .tar.gz")."""
    for name in _QUIET_LOGGERS.get(module.split(".")[0], ()):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRA_FOR.get(top, "all")
        why = f" (needed for {purpose})" if purpose else ""
        how = (f"it is a dependency of edgeship: reinstall edgeship or `pip install {top}`" if extra is None
               else f"install it with `pip install \"edgeship[{extra}]\"`")
        raise MissingDependencyError(
            f"'{top}' is not installed{why}: {how}{', ' + hint if hint else ''} ({type(exc).__name__}: {exc})"
        ) from exc


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None
