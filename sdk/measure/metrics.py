"""Accuracy metrics on model outputs. A metric is ``f(predictions, labels) -> float`` in [0, 1].

``top1``, ``top5`` and ``top1_agreement`` are proportions, so their 95 % intervals are Wilson intervals
(see :func:`proportion_interval`); a user callable gets a bootstrap interval in ``benchmark``.
``classification_report`` gives per-class and macro precision / recall / F1, numpy only.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from .stats import wilson_interval

Metric = Callable[[np.ndarray, np.ndarray], float]


def _check(name: str, predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if predictions.ndim != 2 or labels.ndim != 1 or len(predictions) != len(labels):
        raise ConfigError(f"{name} needs scores (N, classes) and labels (N,), got {predictions.shape} and {labels.shape}")
    return predictions, labels


def top1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max class equals the label."""
    predictions, labels = _check("top1", predictions, labels)
    return float(np.mean(predictions.argmax(axis=1) == labels))


def top5(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose label is among the five highest scores."""
    predictions, labels = _check("top5", predictions, labels)
    k = min(5, predictions.shape[1])
    best = np.argpartition(-predictions, k - 1, axis=1)[:, :k]
    return float(np.mean((best == labels[:, None]).any(axis=1)))


def top1_agreement(predictions: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of samples where two models pick the same top-1 class."""
    return float(np.mean(np.asarray(predictions).argmax(axis=1) == np.asarray(reference).argmax(axis=1)))


METRICS: dict[str, Metric] = {"top1": top1, "top5": top5}
PROPORTIONS = frozenset({"top1", "top5"})  # metrics whose value is successes / samples


def get_metric(metric: str | Metric) -> tuple[str, Metric]:
    """(name, function) for a metric name or a user callable."""
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    try:
        return metric, METRICS[metric]
    except KeyError:
        raise ConfigError(f"unknown metric '{metric}'; known: {sorted(METRICS)}, or pass a callable") from None


def proportion_interval(value: float, n: int) -> tuple[float, float]:
    """Wilson 95 % interval of a proportion measured as ``value`` over ``n`` samples (fractions)."""
    return wilson_interval(int(round(value * n)), n)


def classification_report(predictions: np.ndarray, labels: np.ndarray,
                          num_classes: int | None = None) -> dict[str, Any]:
    """Per-class and macro precision, recall and F1 of arg-max predictions (fractions in [0, 1]).

    A class never predicted has precision 0, a class never present has recall 0 (as scikit-learn's
    ``zero_division=0``). Macro averages run over the classes that occur in the labels or the
    predictions, so an unused output unit of the model does not dilute them.

    Returns:
        ``{"precision": [...], "recall": [...], "f1": [...], "support": [...], "macro_precision": p,
        "macro_recall": r, "macro_f1": f}``; lists are indexed by class id.
    """
    predictions, labels = _check("classification_report", predictions, labels)
    if labels.dtype.kind not in "iu":
        raise ConfigError(f"classification_report needs integer class labels, got dtype {labels.dtype}")
    classes = num_classes if num_classes is not None else predictions.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ConfigError(f"labels must be class ids in [0, {classes}), got values in [{labels.min()}, {labels.max()}]")
    predicted = predictions.argmax(axis=1)
    confusion = np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    n_predicted = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_predicted > 0, tp / n_predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    used = (support > 0) | (n_predicted > 0)
    return {
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.astype(int).tolist(),
        "macro_precision": float(precision[used].mean()) if used.any() else 0.0,
        "macro_recall": float(recall[used].mean()) if used.any() else 0.0,
        "macro_f1": float(f1[used].mean()) if used.any() else 0.0,
    }
