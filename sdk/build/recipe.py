"""Recipe: how to compress beyond the choice of targets and precisions. Plain data with checks;
loads from a dict or a TOML file through an allow-list of keys (never by unpickling)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Mapping

from .._defaults import CALIBRATION_SIZE
from .._fleet import check_cpus
from ..errors import ConfigError
from .prune import Prune
from .qat import QAT

RECIPE_SCHEMA_VERSION = 1
CALIBRATION_METHODS = ("auto", "minmax", "percentile", "entropy")


@dataclass(frozen=True)
class Recipe:
    """What ``compress`` does beyond targets and precisions.

    Args:
        calibration_size: how many calibration samples to draw (seeded random subset).
        seed: seed of the calibration subset draw.
        prune: structured pruning before export (None: no pruning).
        max_drop: accuracy budget for INT8, in percentage points of ``metric`` on the validation
            data given to ``compress``; layers return to floating point until it holds, and when no mix of
            INT8 and FP layers does and ``qat`` is set, quantization-aware training is tried next.
        qat: quantization-aware training before INT8 (``QAT(epochs=..., lr=...)``; classifiers). Without
            ``max_drop`` every INT8 artifact is compiled from the QAT weights; with it, only when post-training
            INT8 (with FP fallback) misses the budget. The manifest's ``qat`` says which one met it.
        metric: the metric of ``max_drop`` ("top1", "top5").
        keep_fp: ONNX node names INT8 leaves in floating point; None = automatic (a detector's
            box and score heads, found from the graph), () = quantize everything.
        cpus: the CPUs the bundle will run on: "x86-64-v3" (any x86-64 with AVX2, the default),
            "avx512-vnni", "amx", "arm64", "native" (exactly this machine), or several. INT8 is made
            numerically safe on every one (see ``edgeship._fleet``).
        calibration_method: how INT8 activation ranges come from the calibration set: "minmax",
            "percentile", "entropy" (ONNX Runtime's methods; NNCF's MINMAX, MEAN_QUANTILE, HISTOGRAM
            estimators), or "auto": with validation data (``max_drop``) the most faithful one measured,
            else MinMax on ONNX Runtime and NNCF's default on OpenVINO.
        selftest_samples: golden inputs stored in the bundle for its self-test (``edgeship.bundle.selftest``).
        selftest_min_agreement: the top-1 (detectors: box) agreement with the FP32 reference an INT8 or
            FP16 artifact must keep on them, at build and on every device.
        target_options: per target, its compile options (``Target.compile_options``), e.g.
            ``{"tensorrt-jetson": {"dla_core": 1, "max_gpu_fallback": 0.2}}``; each target named must be one
            ``compress`` builds. Stored read-only (the recipe stays hashable).
    """

    calibration_size: int = CALIBRATION_SIZE
    seed: int = 0
    prune: Prune | None = None
    max_drop: float | None = None
    qat: QAT | None = None
    metric: str = "top1"
    keep_fp: tuple[str, ...] | None = None
    cpus: str | tuple[str, ...] = "x86-64-v3"
    calibration_method: str = "auto"
    selftest_samples: int = 64  # golden inputs the bundle carries for its self-test on the device
    selftest_min_agreement: float = 0.95  # INT8/FP16 top-1 (box) agreement with FP32 the self-test requires
    target_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # target -> its compile options

    def __post_init__(self) -> None:
        if not isinstance(self.calibration_size, int) or self.calibration_size < 1:
            raise ConfigError(f"Recipe.calibration_size must be an int >= 1, got {self.calibration_size!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"Recipe.seed must be an int, got {self.seed!r}")
        if self.max_drop is not None and not (isinstance(self.max_drop, (int, float)) and self.max_drop >= 0):
            raise ConfigError(f"Recipe.max_drop must be >= 0 percentage points or None, got {self.max_drop!r}")
        if not isinstance(self.metric, str):
            raise ConfigError(f"Recipe.metric must be a metric name (a callable goes to compress(metric=...)), got {self.metric!r}")
        if self.keep_fp is not None:
            if isinstance(self.keep_fp, str) or not all(isinstance(n, str) for n in self.keep_fp):
                raise ConfigError(f"Recipe.keep_fp must be a list of node names or None, got {self.keep_fp!r}")
            object.__setattr__(self, "keep_fp", tuple(self.keep_fp))
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(f"Recipe.calibration_method must be one of {CALIBRATION_METHODS}, "
                              f"got {self.calibration_method!r}")
        cpus = check_cpus(self.cpus)
        object.__setattr__(self, "cpus", cpus[0] if len(cpus) == 1 else cpus)
        if self.prune is not None and not isinstance(self.prune, Prune):
            raise ConfigError(f"Recipe.prune must be an edgeship.Prune, got {type(self.prune).__name__}")
        if self.qat is not None and not isinstance(self.qat, QAT):
            raise ConfigError(f"Recipe.qat must be an edgeship.QAT, got {type(self.qat).__name__}")
        if isinstance(self.selftest_samples, bool) or not isinstance(self.selftest_samples, int) \
                or self.selftest_samples < 1:
            raise ConfigError(f"Recipe.selftest_samples must be an int >= 1, got {self.selftest_samples!r}")
        if isinstance(self.selftest_min_agreement, bool) or not isinstance(self.selftest_min_agreement, (int, float)) \
                or not 0.0 <= self.selftest_min_agreement <= 1.0:
            raise ConfigError(f"Recipe.selftest_min_agreement must be a fraction in [0, 1] (0.95 = 95%), "
                              f"got {self.selftest_min_agreement!r}")
        object.__setattr__(self, "target_options", _target_options(self.target_options))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": RECIPE_SCHEMA_VERSION,
            "calibration_size": self.calibration_size,
            "seed": self.seed,
            "prune": self.prune.to_dict() if self.prune is not None else None,
            "max_drop": self.max_drop,
            "qat": self.qat.to_dict() if self.qat is not None else None,
            "metric": self.metric,
            "keep_fp": list(self.keep_fp) if self.keep_fp is not None else None,
            "cpus": self.cpus if isinstance(self.cpus, str) else list(self.cpus),
            "calibration_method": self.calibration_method,
            "selftest_samples": self.selftest_samples,
            "selftest_min_agreement": self.selftest_min_agreement,
            "target_options": {t: dict(sorted(o.items())) for t, o in sorted(self.target_options.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """Build from plain data; unknown keys are an error that lists the known ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"a recipe must be a mapping, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("schema_version", RECIPE_SCHEMA_VERSION)
        if version != RECIPE_SCHEMA_VERSION:
            raise ConfigError(f"recipe schema_version {version!r} is not {RECIPE_SCHEMA_VERSION}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown recipe keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        prune, qat = _table(data.pop("prune", None), Prune, "prune"), _table(data.pop("qat", None), QAT, "qat")
        return cls(**data, prune=prune, qat=qat)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "Recipe":
        """Read a recipe from TOML, e.g.::

            calibration_size = CALIBRATION_SIZE
            [prune]
            ratio = 0.4
            importance = "l2"
            protect = ["fc"]
        """
        import tomllib

        try:
            with open(path, "rb") as fh:
                return cls.from_dict(tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigError(f"recipe file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"recipe {path} is not valid TOML: {exc}") from None


def _table(value: Any, cls: type, key: str) -> Any:
    """A recipe sub-table (``[prune]``, ``[qat]``) as its dataclass; unknown keys list the known ones."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"recipe '{key}' must be a table, got {value!r}")
    known = {f.name for f in fields(cls)}
    bad = set(value) - known
    if bad:
        raise ConfigError(f"unknown {key} keys {sorted(bad)}; expected a subset of {sorted(known)}")
    return cls(**value)


class _FrozenMapping(Mapping[str, Any]):
    """A read-only, hashable mapping (its values must be hashable): how ``Recipe.target_options`` is stored."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return repr(self._data)


def _target_options(value: Any) -> _FrozenMapping:
    """``Recipe.target_options`` checked (registered targets, each option one of that target's compile options
    with an allowed value) and frozen."""
    from ..errors import UnknownTargetError
    from ..targets import get_target_class

    if not isinstance(value, Mapping):
        raise ConfigError("Recipe.target_options must map a target name to its compile options, e.g. "
                          f"{{'tensorrt-jetson': {{'dla_core': 1}}}}, got {value!r}")
    out = {}
    for target, options in value.items():
        if not isinstance(target, str):
            raise ConfigError(f"Recipe.target_options keys must be target names, got {target!r}")
        try:
            cls = get_target_class(target)
        except UnknownTargetError as exc:
            raise UnknownTargetError(f"Recipe.target_options: {exc}") from None
        try:
            out[target] = _FrozenMapping(cls.check_compile_options(options))
        except ConfigError as exc:
            raise ConfigError(f"Recipe.target_options[{target!r}]: {exc}") from None
    return _FrozenMapping(out)
