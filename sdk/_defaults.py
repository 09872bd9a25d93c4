"""Defaults that more than one stage needs, each written once (the ground floor: imports nothing of edgeship)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where edgeship caches trained weights, datasets and tune trials: ``$EDGESHIP_CACHE`` or ~/.cache/edgeship."""
    return Path(os.environ.get("EDGESHIP_CACHE", Path.home() / ".cache" / "edgeship"))


#: calibration samples drawn when nobody says how many (Recipe, tune, collect, the CLI)
CALIBRATION_SIZE = 300

#: the CPU targets every x86-64 machine runs, compiled when no target is named
CPU_TARGETS = ("openvino-cpu", "onnxruntime-cpu")
