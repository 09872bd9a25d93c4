"""Recipe: how to quantize (and, later, prune). Plain data with checks; loadable from a dict or TOML."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """What ``compress`` does beyond the choice of targets and precisions.

    Args:
        calibration_size: how many calibration samples to draw (seeded random subset).
        seed: seed of the calibration subset draw.
    """

    calibration_size: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.calibration_size, int) or self.calibration_size < 1:
            raise ConfigError(f"Recipe.calibration_size must be an int >= 1, got {self.calibration_size!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"Recipe.seed must be an int, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown Recipe keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**data)
