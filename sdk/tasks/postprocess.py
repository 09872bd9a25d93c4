"""What a bundle's raw outputs mean: postprocessing and labels, as the manifest records them.

The manifest may hold::

    "labels": ["cat", "dog", ...],
    "postprocess": {"task": "classification", "softmax": true, "top_k": 5, "output": null}

so every device (``edgeship serve``, ``edgeship stream``, your own code) turns outputs into the same
results. A bundle without a ``postprocess`` entry gives raw outputs. Plain numpy: it runs on the device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputValidationError

__all__ = ["CONFIDENCE_BINS", "Postprocess", "confidence_bins", "confidences", "detection_results", "output_profile", "read_labels"]


@dataclass(frozen=True)
class Postprocess:
    """Classification postprocessing: optional softmax over the class axis, then the ``top_k`` classes.

    ``output`` names the model output to read; None takes the model's only output.
    """

    task: Literal["classification"] = "classification"
    softmax: bool = True
    top_k: int = 5
    output: str | None = None

    def __post_init__(self) -> None:
        if self.task != "classification":
            raise ConfigError(f"postprocess task must be 'classification' (a detection bundle's postprocessing is its "
                              f"manifest's 'detection' entry), got {self.task!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1:
            raise ConfigError(f"postprocess top_k must be a positive integer, got {self.top_k!r}")
        if not isinstance(self.softmax, bool):
            raise ConfigError(f"postprocess softmax must be true or false, got {self.softmax!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Postprocess":
        """From a manifest entry; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"postprocess must be a mapping, got {type(data).__name__}")
        known = {"task", "softmax", "top_k", "output"}
        if set(data) - known:
            raise ConfigError(f"unknown postprocess keys {sorted(set(data) - known)}; expected a subset of {sorted(known)}")
        return cls(**data)

    @classmethod
    def of_manifest(cls, manifest: Mapping[str, Any]) -> "Postprocess | None":
        """The manifest's postprocessing, or None when it records none."""
        entry = manifest.get("postprocess")
        return None if entry is None else cls.from_dict(entry)

    def scores(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The class scores (batch, classes) this postprocessing reads: the named output (or the only one),
        softmaxed when ``softmax``."""
        if self.output is not None:
            if self.output not in outputs:
                raise ConfigError(f"postprocess reads output {self.output!r}, but the model has {sorted(outputs)}")
            scores = outputs[self.output]
        elif len(outputs) == 1:
            scores = next(iter(outputs.values()))
        else:
            raise ConfigError(f"the model has outputs {sorted(outputs)}; name one in postprocess 'output'")
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim > 2:
            scores = scores.reshape(scores.shape[0], -1) if all(d == 1 for d in scores.shape[2:]) else scores
        if scores.ndim != 2:
            raise InputValidationError(f"classification expects outputs of shape (batch, classes), got {scores.shape}")
        if self.softmax:
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = shifted / shifted.sum(axis=1, keepdims=True)
        return scores

    def apply(self, outputs: Mapping[str, np.ndarray], labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Per image: ``{"top_k": [{"index", "label", "score"}, ...]}``, best first.

        ``label`` is None where the manifest has no labels; ``score`` is a probability with softmax,
        else the raw output value.
        """
        scores = self.scores(outputs)
        classes = scores.shape[1]
        if labels is not None and len(labels) != classes:
            raise ConfigError(f"the manifest has {len(labels)} labels but the model outputs {classes} classes")
        k = min(self.top_k, classes)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [
            {"top_k": [{"index": int(i), "label": labels[i] if labels is not None else None,
                        "score": float(row[i])} for i in idx]}
            for row, idx in zip(scores, order)
        ]


CONFIDENCE_BINS = 10  # top-1 confidence histograms: 10 equal bins of [0, 1]


def confidences(outputs: Mapping[str, np.ndarray], postprocess: Postprocess | None) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 confidence, top-1 class) per sample of a classifier's outputs: probabilities as the manifest's
    postprocessing makes them; without one, the first output softmaxed (unless its rows already are probabilities)."""
    if postprocess is None:
        first = np.asarray(next(iter(outputs.values())), dtype=np.float64)
        already = first.ndim == 2 and first.min() >= 0 and np.allclose(first.sum(1), 1.0, atol=1e-3)
        postprocess = Postprocess(softmax=not already, output=next(iter(outputs)))
    scores = postprocess.scores(outputs)
    return scores.max(axis=1), scores.argmax(axis=1)


def confidence_bins(confidence: np.ndarray) -> np.ndarray:
    """The histogram bin (0 .. CONFIDENCE_BINS - 1) of each top-1 confidence."""
    return np.clip((np.asarray(confidence) * CONFIDENCE_BINS).astype(np.int64), 0, CONFIDENCE_BINS - 1)


def output_profile(confidence: np.ndarray, classes: np.ndarray, n_classes: int) -> dict[str, Any]:
    """A classifier's answers as statistics: the top-1 confidence histogram and the class mix (counts)."""
    bins = confidence_bins(confidence)
    return {"samples": int(len(confidence)), "confidence": np.bincount(bins, minlength=CONFIDENCE_BINS).tolist(),
            "classes": np.bincount(np.asarray(classes, dtype=np.int64), minlength=n_classes).tolist()}


def detection_results(detections: Sequence[Mapping[str, np.ndarray]],
                      labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per image: ``{"detections": [{"box": [x1, y1, x2, y2], "score", "index", "label"}, ...]}``, best first —
    a detector's boxes (in the image's own pixels) as JSON; ``label`` names ``index`` where the manifest's
    labels reach it, else None."""
    out = []
    for det in detections:
        items = [{"box": [round(float(v), 2) for v in box], "score": float(score), "index": int(index),
                  "label": labels[int(index)] if labels is not None and 0 <= int(index) < len(labels) else None}
                 for box, score, index in zip(det["boxes"], det["scores"], det["labels"])]
        out.append({"detections": items})
    return out


def read_labels(manifest: Mapping[str, Any]) -> list[str] | None:
    """The manifest's class labels, checked to be a list of strings; None when it has none."""
    labels = manifest.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ConfigError(f"manifest 'labels' must be a list of strings, got {labels!r:.120}")
    return labels
