"""Calibration data: sources, preprocessing, subset selection and checks.

Sources (each returns a :class:`CalibrationSet` of model-ready samples, drawn reproducibly from a seed):
``from_folder`` (image files), ``from_video`` (frames), ``from_arrays`` (arrays, .npy/.npz),
``from_dataset`` (torch Dataset/DataLoader), ``from_captures`` (a device's hard-example captures, a folder or
a pack; ``captures_validation`` for the labelled ones), and ``collect`` (any of these, or an iterable; what
``compress`` calls). Selection: ``"random"``, ``"stratified"`` (by label), ``"diverse"`` (greedy
k-center on cheap embeddings or your own). ``check`` finds too few samples, near-duplicates, a value
range that contradicts the preprocessing, and drift from a validation or production sample, or from a bundle's
recorded profile (``input_profile``: per-channel moments and histograms on fixed bins; ``InputWindow`` keeps them
over a device's last frames, ``compare_profiles`` judges two).
"""

from __future__ import annotations

from ..preprocess import LetterboxGeometry, apply_preprocess, letterbox_geometry, resize_bilinear
from ._captures import captures_validation, from_captures, is_captures, read_captures
from ._checks import CheckResult, Finding, check
from ._profile import InputWindow, compare_profiles, input_profile
from ._set import CalibrationSet
from ._sources import CalibrationWarning, collect, from_arrays, from_dataset, from_folder, from_video

__all__ = [
    "CalibrationSet",
    "CalibrationWarning",
    "CheckResult",
    "Finding",
    "InputWindow",
    "LetterboxGeometry",
    "apply_preprocess",
    "captures_validation",
    "check",
    "collect",
    "compare_profiles",
    "from_arrays",
    "from_captures",
    "from_dataset",
    "from_folder",
    "from_video",
    "input_profile",
    "is_captures",
    "letterbox_geometry",
    "read_captures",
    "resize_bilinear",
]
