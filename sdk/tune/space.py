"""What ``tune`` tries and what it must meet: the ``Budget``, the ``SearchSpace`` and its ``Candidate`` variants."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .._defaults import CALIBRATION_SIZE
from ..build.prune import Prune
from ..build.recipe import Recipe
from ..errors import ConfigError

FALLBACK = "int8+fallback"
PRECISION_CHOICES = ("fp32", "fp16", "int8", FALLBACK)


@dataclass(frozen=True)
class Budget:
    """What the chosen variant must meet.

    Args:
        max_drop: accuracy drop against the unpruned FP32 reference, in percentage points of the metric.
        latency_ms: p50 latency per call (batch 1) on the target, in milliseconds; None: no limit.
    """

    max_drop: float = 1.0
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) \
                or not math.isfinite(self.max_drop) or self.max_drop < 0:
            raise ConfigError(f"Budget.max_drop must be a finite number >= 0 (percentage points), got {self.max_drop!r}")
        if self.latency_ms is not None and (isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, (int, float))
                                            or not math.isfinite(self.latency_ms) or self.latency_ms <= 0):
            raise ConfigError(f"Budget.latency_ms must be a number > 0 or None, got {self.latency_ms!r}")

    def meets(self, drop_pts: float | None, p50_ms: float | None) -> bool:
        """Whether a measured drop and p50 are within this budget (a missing value never is)."""
        if drop_pts is None or p50_ms is None or not (math.isfinite(drop_pts) and math.isfinite(p50_ms)):
            return False
        return drop_pts <= self.max_drop + 1e-9 and (self.latency_ms is None or p50_ms <= self.latency_ms)

    def describe(self) -> str:
        return f"drop <= {self.max_drop:g} pts" + (f", p50 <= {self.latency_ms:g} ms" if self.latency_ms else "")

    def to_dict(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "latency_ms": self.latency_ms}


ThreadChoices = tuple[int | None, ...]
OptionChoices = tuple[tuple[tuple[str, Any], ...], ...]  # each choice: sorted (name, value) pairs


@dataclass(frozen=True)
class SearchSpace:
    """The candidates ``tune`` compiles and measures: every combination of the fields, per target.

    Args:
        prune_ratios: channel pruning ratios (0.0 = unpruned), each through ``Recipe(prune=Prune(ratio=...))``.
        precisions: among "fp32", "fp16", "int8" and "int8+fallback" (INT8 with the accuracy-aware FP
            fallback held to the budget's ``max_drop``); a precision a target lacks (fp16 on
            onnxruntime-cpu) is skipped for that target.
        threads: CPU threads of the runtime (None = the backend's own choice); a mapping
            {target: choices} sets them per target (targets not in it get (None,)).
        options: per target, choices of its other runtime options (``Target.runtime_options``), e.g.
            ``{"openvino-cpu": ({}, {"inference_precision": "bf16"}, {"performance_hint": "THROUGHPUT"})}``;
            ``{}`` is the target's default. Targets not in it get ({},).
        prune: how to prune (importance, recovery, protected layers); its ratio is replaced by each of
            ``prune_ratios``. None: ``Prune``'s defaults.
        calibration_size, seed: the calibration subset drawn once for every candidate.
    """

    prune_ratios: tuple[float, ...] = (0.0,)
    precisions: tuple[str, ...] = PRECISION_CHOICES
    threads: ThreadChoices | Mapping[str, ThreadChoices] = (None,)
    options: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    prune: Prune | None = None
    calibration_size: int = CALIBRATION_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        ratios = tuple(float(r) for r in _as_tuple(self.prune_ratios, "prune_ratios"))
        if not ratios or any(not 0.0 <= r < 1.0 for r in ratios):
            raise ConfigError(f"SearchSpace.prune_ratios must be ratios in [0, 1), got {self.prune_ratios!r}")
        object.__setattr__(self, "prune_ratios", tuple(dict.fromkeys(ratios)))
        precisions = _as_tuple(self.precisions, "precisions")
        bad = [p for p in precisions if p not in PRECISION_CHOICES]
        if not precisions or bad:
            raise ConfigError(f"SearchSpace.precisions must be among {PRECISION_CHOICES}, got {self.precisions!r}")
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(precisions)))
        if isinstance(self.threads, Mapping):
            object.__setattr__(self, "threads", {str(t): _threads(v) for t, v in self.threads.items()})
        else:
            object.__setattr__(self, "threads", _threads(self.threads))
        object.__setattr__(self, "options", _option_choices(self.options))
        if self.prune is not None and not isinstance(self.prune, Prune):
            raise ConfigError(f"SearchSpace.prune must be an edgeship.Prune or None, got {type(self.prune).__name__}")
        if not isinstance(self.calibration_size, int) or self.calibration_size < 1 or not isinstance(self.seed, int):
            raise ConfigError(f"SearchSpace.calibration_size must be an int >= 1 and seed an int, "
                              f"got {self.calibration_size!r} and {self.seed!r}")

    def threads_for(self, target: str) -> ThreadChoices:
        """The thread choices of ``target``."""
        if isinstance(self.threads, Mapping):
            return self.threads.get(target, (None,))
        return self.threads

    def options_for(self, target: str) -> OptionChoices:
        """The runtime option choices of ``target`` (each a sorted tuple of (name, value) pairs)."""
        return self.options.get(target, ((),))

    def candidates(self, targets: Sequence[str]) -> tuple[list["Candidate"], list[str]]:
        """(every candidate, unpruned ones first; the (target, precision) pairs skipped and why)."""
        from ..targets import get_target_class

        out, skipped = [], []
        for ratio in sorted(self.prune_ratios):
            for target in targets:
                supported = get_target_class(target).precisions
                for precision in self.precisions:
                    base = "int8" if precision == FALLBACK else precision
                    if base not in supported:
                        if ratio == min(self.prune_ratios):
                            skipped.append(f"{target} {precision}: the target supports {supported}")
                        continue
                    for threads in self.threads_for(target):
                        for options in self.options_for(target):
                            out.append(Candidate(target, precision, ratio, threads, options))
        return out, skipped

    def recipe(self, candidate: "Candidate", budget: Budget, metric: Any) -> Recipe:
        """The compress recipe of ``candidate``."""
        prune = None
        if candidate.prune_ratio > 0:
            prune = dataclasses.replace(self.prune or Prune(ratio=candidate.prune_ratio),
                                        ratio=candidate.prune_ratio, latency_ms=None)
        return Recipe(calibration_size=self.calibration_size, seed=self.seed, prune=prune,
                      max_drop=budget.max_drop if candidate.fallback else None,
                      metric=metric if isinstance(metric, str) else "top1")

    def to_dict(self) -> dict[str, Any]:
        threads = dict(self.threads) if isinstance(self.threads, Mapping) else list(self.threads)
        return {"prune_ratios": list(self.prune_ratios), "precisions": list(self.precisions), "threads": threads,
                "options": {t: [dict(c) for c in choices] for t, choices in self.options.items()},
                "prune": self.prune.to_dict() if self.prune is not None else None,
                "calibration_size": self.calibration_size, "seed": self.seed}


def _as_tuple(value: Any, name: str) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ConfigError(f"SearchSpace.{name} must be a tuple or list, got {value!r}")
    return tuple(value)


def _threads(value: Any) -> ThreadChoices:
    choices = _as_tuple(value, "threads")
    if not choices or any(t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1) for t in choices):
        raise ConfigError(f"SearchSpace.threads must hold ints >= 1 or None, got {value!r}")
    return tuple(dict.fromkeys(choices))


def _option_choices(value: Any) -> dict[str, OptionChoices]:
    """{target: choices} with each choice checked against the target's runtime options and made hashable."""
    from ..targets import get_target_class

    if not isinstance(value, Mapping):
        raise ConfigError(f"SearchSpace.options must map a target name to a list of option dicts, got {value!r}")
    out = {}
    for target, choices in value.items():
        cls = get_target_class(str(target))
        choices = _as_tuple(choices, f"options[{target!r}]")
        if not choices:
            raise ConfigError(f"SearchSpace.options[{target!r}] holds no choice; use ({{}},) for the default")
        checked = []
        for choice in choices:
            opts = cls.check_options(choice)
            if "threads" in opts:
                raise ConfigError("threads are swept by SearchSpace.threads, not SearchSpace.options")
            checked.append(tuple(sorted(opts.items())))
        out[str(target)] = tuple(dict.fromkeys(checked))
    return out


@dataclass(frozen=True)
class Candidate:
    """One variant to compile and measure."""

    target: str
    precision: str  # one of PRECISION_CHOICES
    prune_ratio: float = 0.0
    threads: int | None = None
    options: tuple[tuple[str, Any], ...] = ()  # runtime options beside threads, sorted (name, value) pairs

    @property
    def fallback(self) -> bool:
        return self.precision == FALLBACK

    @property
    def base_precision(self) -> str:
        """The artifact's precision ("int8" for the fallback variant)."""
        return "int8" if self.fallback else self.precision

    @property
    def variant(self) -> str:
        """The report's variant name: the pruning ratio and runtime options, e.g. 'p0.25-t2-inference_precision=bf16'."""
        return (f"p{self.prune_ratio:g}" + (f"-t{self.threads}" if self.threads is not None else "")
                + "".join(f"-{k}={v}" for k, v in self.options))

    @property
    def label(self) -> str:
        return f"{self.variant} {self.target} {self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "options": dict(self.options)}
