"""A loaded bundle as results: raw images (or model-ready tensors) in, what its outputs mean out.

One owner of that step for ``edgeship serve``, ``edgeship stream`` and your own code, so every device answers
alike: a detection bundle goes through :class:`edgeship.bundle.detector.Detector` (decode, NMS, boxes in the
image's own pixels), a bundle whose manifest records postprocessing through
:class:`edgeship.tasks.postprocess.Postprocess` with its labels, any other gives its raw outputs.

Raw images whose size differs from the spec's are resized to it first when the spec's own preprocessing does
not resize, with the resizer of the preprocessing itself (:func:`edgeship.preprocess.resize_bilinear`), so
the device sees the pixels calibration saw.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputValidationError
from ..preprocess import resize_bilinear
from ..tasks.postprocess import Postprocess, detection_results, read_labels
from .folder import Bundle

if TYPE_CHECKING:
    from ..spec import InputSpec
    from ..targets.base import Runtime

__all__ = ["Inference", "Predictor", "fit_image"]


def fit_image(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One raw (H, W, C) image at the spec's height and width when its preprocessing does not resize.

    Resized with :func:`edgeship.preprocess.resize_bilinear` (float32 out, values 0..255); returned as it
    is when it already has that size, when the preprocessing resizes itself (or is absent), when the spec's
    size is dynamic, or when raw images are not laid out channels last.
    """
    pre = spec.preprocess
    if pre is None or pre.resize != "none" or pre.raw_layout != "NHWC" or np.ndim(image) != 3:
        return image
    height, width = spec.image_size
    if height is None or width is None or tuple(image.shape[:2]) == (height, width):
        return image
    return resize_bilinear(image, height, width)


@dataclass(frozen=True)
class Inference:
    """One call's reply and what the model saw and said: ``batch`` (model-ready, as run), ``outputs`` (raw, a
    classifier's) or ``detections`` (a detector's, in the images' pixels), and the seconds it took."""

    reply: dict[str, Any]
    batch: np.ndarray
    outputs: dict[str, np.ndarray] | None
    detections: list[dict[str, np.ndarray]] | None
    seconds: float


class Predictor:
    """One loaded Runtime of a bundle, turning inputs into the results ``serve`` and ``stream`` answer.

    Not thread-safe beyond its Runtime: use one Predictor per Runtime.
    """

    def __init__(self, bundle: Bundle, runtime: Runtime) -> None:
        self.bundle, self.runtime, self.spec = bundle, runtime, bundle.spec
        self.labels: list[str] | None = read_labels(bundle.manifest)
        self.postprocess: Postprocess | None = Postprocess.of_manifest(bundle.manifest)
        self.detector: Any = None
        if bundle.manifest.detection:  # boxes decoded, NMS'd and mapped back to the image's pixels
            from .detector import Detector

            self.detector = Detector(bundle, runtime=runtime)

    def fit(self, image: np.ndarray) -> np.ndarray:
        """``image`` at the spec's size where the preprocessing does not resize (see :func:`fit_image`)."""
        return fit_image(image, self.spec)

    def predict(self, images: Sequence[np.ndarray] | np.ndarray, *, fit: bool = True) -> dict[str, Any]:
        """Raw images (H, W, C each, RGB or grey as the spec's channels; a batch array or a list) -> a reply:
        ``{"results": [one per image]}``, or ``{"outputs": {name: nested list}}`` when the manifest records
        no postprocessing. ``fit``: resize each image to the spec first (:meth:`fit`); False takes them as
        they are."""
        return self.infer(images, fit=fit).reply

    def predict_tensors(self, x: np.ndarray) -> dict[str, Any]:
        """Model-ready tensors (already preprocessed, with the batch axis) -> the reply of :meth:`predict`."""
        return self.infer_tensors(x).reply

    def infer(self, images: Sequence[np.ndarray] | np.ndarray, *, fit: bool = True) -> Inference:
        """:meth:`predict`, keeping what a monitor looks at: the model-ready batch and the raw outputs."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        if fit:
            fitted = [self.fit(image) for image in images]
            if not all(a is b for a, b in zip(fitted, images)):
                images = np.stack(fitted)
        start = time.perf_counter()
        if self.detector is not None:
            detections, batch = self.detector.detect(list(images))
            return Inference({"results": detection_results(detections, self.labels)}, batch, None, detections,
                             time.perf_counter() - start)
        batch = self.runtime.preprocess(images if isinstance(images, np.ndarray) else np.stack(images))
        outputs = self.runtime.run(batch)
        return Inference(self._reply(outputs), batch, outputs, None, time.perf_counter() - start)

    def infer_tensors(self, x: np.ndarray) -> Inference:
        """:meth:`predict_tensors`, keeping the batch and the raw outputs (see :meth:`infer`)."""
        if self.detector is not None:
            raise InputValidationError("a detection bundle takes raw images (use predict), so that its boxes come "
                                       "back in the image's own pixels")
        start = time.perf_counter()
        outputs = self.runtime.run(x)
        return Inference(self._reply(outputs), x, outputs, None, time.perf_counter() - start)

    def _reply(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        if self.postprocess is not None:
            return {"results": self.postprocess.apply(outputs, self.labels)}
        return {"outputs": {name: value.tolist() for name, value in outputs.items()}}
