"""The target registry: ``@register_target(name)``, ``get_target``, ``list_targets``."""

from __future__ import annotations

from typing import Callable, TypeVar

from ..errors import MissingDependencyError, UnknownTargetError
from .base import Target

_TARGETS: dict[str, type[Target]] = {}

# Preference order when a bundle is loaded with target=None: the fastest backend available wins.
PREFERENCE = ("tensorrt-gpu", "tensorrt-jetson", "onnxruntime-tensorrt", "onnxruntime-cuda", "openvino-cpu",
              "onnxruntime-openvino", "onnxruntime-cpu")

T = TypeVar("T", bound=type[Target])


def register_target(name: str) -> Callable[[T], T]:
    """Class decorator that registers a Target under ``name``."""

    def wrap(cls: T) -> T:
        if name in _TARGETS and _TARGETS[name] is not cls:
            raise ValueError(f"target '{name}' is already registered by {_TARGETS[name].__qualname__}")
        cls.name = name
        _TARGETS[name] = cls
        return cls

    return wrap


def list_targets(available_only: bool = False) -> dict[str, str]:
    """{target name: backend version when available, else the reason it is not}."""
    result = {}
    for name, cls in sorted(_TARGETS.items()):
        ok, info = cls.availability()
        if ok or not available_only:
            result[name] = info if ok else f"unavailable: {info}"
    return result


def get_target_class(name: str) -> type[Target]:
    """The Target class registered under ``name``; unknown names list the known ones."""
    try:
        return _TARGETS[name]
    except KeyError:
        raise UnknownTargetError(f"unknown target '{name}'; registered targets: {sorted(_TARGETS)}") from None


def get_target(name: str, require_available: bool = True, for_compile: bool = False) -> Target:
    """An instance of the Target registered under ``name``, checked to be usable here
    (to run its artifacts, or with ``for_compile`` only to build them)."""
    cls = get_target_class(name)
    if require_available:
        ok, reason = cls.can_compile() if for_compile else cls.availability()
        if not ok:
            raise MissingDependencyError(f"target '{name}' is not available here: {reason}")
    return cls()
