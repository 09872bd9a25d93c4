"""CalibrationSet: the chosen samples, and the record of how they were chosen."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:
    from ..spec import InputSpec


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """The chosen calibration samples (each shaped like the spec with batch 1) and where they came from.

    Attributes:
        samples: model-ready arrays (1, ...) in source order.
        source: what they were drawn from, in words.
        seed: seed of the draw.
        preprocessed: edgeship applied ``spec.preprocess`` to raw images (else they came model-ready).
        labels: one label per sample when the source had labels, else None.
        selection: "random", "stratified" or "diverse".
        spec: the input spec the samples were made for (its preprocessing is the one recorded).
        origins: where each sample came from (a file, a video frame, an index), for messages.
    """

    samples: list[np.ndarray]
    source: str
    seed: int
    preprocessed: bool
    labels: np.ndarray | None = None
    selection: str = "random"
    spec: "InputSpec | None" = None
    origins: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.samples)

    def __repr__(self) -> str:
        shape = tuple(self.samples[0].shape) if self.samples else ()
        return (f"<CalibrationSet {len(self)} x {shape} from {self.source}, {self.selection} (seed {self.seed})"
                f"{', labelled' if self.labels is not None else ''}>")

    @property
    def sha256(self) -> str:
        """Content hash of the chosen samples, in order."""
        digest = hashlib.sha256()
        for sample in self.samples:
            digest.update(np.ascontiguousarray(sample).tobytes())
        return digest.hexdigest()

    def as_batch(self) -> np.ndarray:
        """All samples stacked into one array (N, ...)."""
        return np.concatenate(self.samples, axis=0)

    def summary(self) -> dict[str, Any]:
        """What the bundle records about its calibration (JSON-ready).

        ``preprocessing`` is the spec's preprocessing when edgeship applied it, else None (the
        samples came model-ready); ``class_counts`` is {label: count} when the source had labels.
        """
        preprocessing = None
        if self.preprocessed and self.spec is not None and self.spec.preprocess is not None:
            preprocessing = self.spec.to_dict()["preprocess"]
        class_counts = None
        if self.labels is not None:
            class_counts = {str(k): int(v) for k, v in sorted(Counter(self.labels.tolist()).items())}
        return {
            "count": len(self.samples),
            "source": self.source,
            "selection": self.selection,
            "seed": self.seed,
            "sha256": self.sha256,
            "preprocessed_by_edgeship": self.preprocessed,
            "preprocessing": preprocessing,
            "class_counts": class_counts,
        }
