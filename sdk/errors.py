"""The one exception tree of edgeship.

Every error edgeship raises on purpose derives from :class:`EdgeshipError`::

    EdgeshipError
    ├── ConfigError              a recipe, spec or argument is invalid
    ├── MissingDependencyError   a backend or library is not installed (names the extra)
    ├── UnknownTargetError       a target name is not registered (lists the known ones)
    ├── CompileError             export, pruning, quantization or a backend's compile step failed
    │   ├── LatencyBudgetError   no pruning ratio met the latency budget (holds every measurement)
    │   ├── AccuracyBudgetError  no INT8/FP mix met the accuracy budget (holds every trial)
    │   └── TuneBudgetError      no tuned variant met the accuracy and latency budget (holds the nearest)
    ├── InputValidationError     inputs given to a Runtime do not match its InputSpec
    ├── BundleIntegrityError     a bundle is missing, corrupt, tampered or of an unknown schema
    │   └── SelfTestError        an artifact does not reproduce its golden outputs on this device
    └── RuntimeStateError        a Runtime was used after close()

Messages say what failed, what was expected and what came.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EdgeshipError",
    "ConfigError",
    "MissingDependencyError",
    "UnknownTargetError",
    "CompileError",
    "LatencyBudgetError",
    "AccuracyBudgetError",
    "TuneBudgetError",
    "InputValidationError",
    "BundleIntegrityError",
    "SelfTestError",
    "RuntimeStateError",
]


class EdgeshipError(Exception):
    """Base class of every error edgeship raises on purpose."""


class ConfigError(EdgeshipError, ValueError):
    """A recipe, input spec or argument is invalid."""


class MissingDependencyError(EdgeshipError, ImportError):
    """A backend or library is not installed; the message names the extra to install."""


class UnknownTargetError(ConfigError, KeyError):
    """A target name is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CompileError(EdgeshipError, RuntimeError):
    """Export, quantization or a backend's compile step failed."""


class LatencyBudgetError(CompileError):
    """No pruning ratio up to ``Prune.max_ratio`` met the latency budget; ``steps`` holds every measurement."""

    def __init__(self, message: str, steps: list) -> None:
        super().__init__(message)
        self.steps = steps


class AccuracyBudgetError(CompileError):
    """No mix of INT8 and floating-point layers met the accuracy budget; ``trials`` holds every attempt."""

    def __init__(self, message: str, trials: list) -> None:
        super().__init__(message)
        self.trials = trials


class TuneBudgetError(CompileError):
    """No measured variant of a ``tune`` sweep met the budget; ``nearest`` holds the closest trials
    (nearest first) and ``report`` every trial."""

    def __init__(self, message: str, nearest: list, report: Any = None) -> None:
        super().__init__(message)
        self.nearest = nearest
        self.report = report


class InputValidationError(EdgeshipError, ValueError):
    """Inputs given to a Runtime do not match its InputSpec."""


class BundleIntegrityError(EdgeshipError):
    """A bundle is missing, corrupt, tampered with, or of an unknown schema version."""


class SelfTestError(BundleIntegrityError):
    """An artifact falls below its self-test tolerance on this device (its golden inputs no longer give the
    reference outputs): it is not activated, served or chosen."""


class RuntimeStateError(EdgeshipError, RuntimeError):
    """A Runtime was used in a state that does not allow it (e.g. after close())."""


class TransferError(EdgeshipError):
    """Bundle bytes that arrived over the cluster do not hash to what was sent (another attempt may pass)."""
