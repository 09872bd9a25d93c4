"""A detection bundle loaded on a target: raw images in, boxes in the images' own pixels out.

It joins the bundle (its detection entry, hashed anchors, a Runtime) with the decoding of ``tasks.detection``,
so serve, stream and the detection benchmarks all turn a detector's outputs into boxes the same way.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..tasks.detection import DetectionHead, postprocess, to_source_boxes
from .folder import Bundle


class Detector:
    """A detection bundle loaded on a target: raw images in, per image {"boxes" (x1y1x2y2 in the image's own
    pixels), "scores", "labels"} out — the same shapes and meaning on every target."""

    def __init__(self, bundle: Any, target: str | None = None, precision: str | None = None, *,
                 runtime: Any = None, **options: Any) -> None:
        """Load ``bundle`` on ``target`` (``runtime``: run an already loaded Runtime of it instead)."""
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        entry = self.bundle.manifest.detection
        if entry is None:
            raise ConfigError(f"{self.bundle.path} is not a detection bundle (its manifest has no 'detection' entry)")
        self.bundle.verify({"files": self.bundle.manifest.source_files})  # the anchors are hashed there
        anchors = None
        if entry.get("anchors"):
            anchors = np.load(self.bundle.path / entry["anchors"], allow_pickle=False)
        self.head = DetectionHead.from_dict(entry["head"], anchors)
        self.runtime = runtime if runtime is not None else self.bundle.load(target, precision, **options)
        self.spec = self.bundle.spec

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray) -> list[dict[str, np.ndarray]]:
        """Detect in raw images (each H x W x C uint8, any size)."""
        return self.detect(images)[0]

    def detect(self, images: Sequence[np.ndarray] | np.ndarray) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        """(detections per image, as ``__call__``; the model-ready batch the model ran on them, in order)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        results, batches = [], []
        fixed_batch = self.runtime.inputs[0].shape[0]
        step = 1 if self.head.family == "graph" else (fixed_batch or 8)
        for start in range(0, len(images), step):
            chunk = list(images[start : start + step])
            batch = np.concatenate([self.spec.apply_preprocess(img) for img in chunk])
            outputs = self.runtime.run(batch)
            batches.append(batch)
            dets = postprocess([outputs[name] for name in self.head.outputs], self.head)
            for image, det in zip(chunk, dets):
                det["boxes"] = to_source_boxes(det["boxes"], image.shape[:2], self.spec)
                results.append(det)
        return results, np.concatenate(batches) if batches else np.empty((0,))

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
