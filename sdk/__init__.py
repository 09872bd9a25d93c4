"""edgeship: prune, quantize and compile vision models for edge targets, run them behind one Runtime,
and prove each release with an accuracy-vs-latency report.

``import edgeship`` imports neither torch nor any backend; each is imported when a step needs it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .accuracy import sensitivity
from .bundle import Bundle, load, open_bundle
from .compress import compress
from .errors import (
    AccuracyBudgetError,
    BundleIntegrityError,
    CompileError,
    ConfigError,
    EdgeshipError,
    InputValidationError,
    LatencyBudgetError,
    MissingDependencyError,
    RuntimeStateError,
    SelfTestError,
    TuneBudgetError,
    UnknownTargetError,
)
from .prune import Prune
from .recipe import Recipe
from .spec import InputSpec, Preprocess
from .targets import Runtime, get_target, list_targets
from .benchmarks import Report, benchmark
from .tune import Budget, SearchSpace, tune

__all__ = [
    "__version__",
    "AccuracyBudgetError",
    "Budget",
    "Bundle",
    "BundleIntegrityError",
    "CompileError",
    "ConfigError",
    "EdgeshipError",
    "InputSpec",
    "InputValidationError",
    "LatencyBudgetError",
    "MissingDependencyError",
    "Preprocess",
    "Prune",
    "Recipe",
    "Report",
    "Runtime",
    "RuntimeStateError",
    "SearchSpace",
    "SelfTestError",
    "TuneBudgetError",
    "UnknownTargetError",
    "benchmark",
    "compress",
    "get_target",
    "list_targets",
    "load",
    "open_bundle",
    "sensitivity",
    "tune",
]
