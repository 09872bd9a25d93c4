"""Calibration data: turn arrays, torch datasets/loaders or any iterable into model-ready samples.

Every source ends as a list of single-sample arrays shaped like the InputSpec with batch 1,
drawn as a seeded random subset, so that a compress run is repeatable.
"""

from __future__ import annotations

from ._sources import CalibrationSet, collect
from .preprocess import apply_preprocess

__all__ = ["CalibrationSet", "collect", "apply_preprocess"]
