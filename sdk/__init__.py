"""edgeship: prune, quantize and compile vision models for edge targets, run them behind one Runtime,
and prove each release with an accuracy-vs-latency report.

``import edgeship`` imports neither torch nor any backend; each is imported when a step needs it.
"""

from __future__ import annotations

from ._version import __version__
from .benchmarks import Report, benchmark
from .build.accuracy import sensitivity
from .build.compress import compress
from .build.prune import Prune
from .build.qat import QAT
from .build.recipe import Recipe
from .bundle.folder import Bundle, open_bundle
from .device.choice import load
from .executor import Executor
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
from .measure.plan import Measurement
from .spec import InputSpec, Preprocess
from .targets import Runtime, get_target, list_targets
from .tune.sweep import Budget, SearchSpace, tune

__all__ = [
    "__version__",
    "AccuracyBudgetError",
    "Budget",
    "Bundle",
    "BundleIntegrityError",
    "CompileError",
    "ConfigError",
    "EdgeshipError",
    "Executor",
    "InputSpec",
    "InputValidationError",
    "LatencyBudgetError",
    "Measurement",
    "MissingDependencyError",
    "Preprocess",
    "Prune",
    "QAT",
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
