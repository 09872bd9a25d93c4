"""Accuracy metrics on model outputs. A metric is ``f(predictions, labels) -> float`` in [0, 1]."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ConfigError

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


def get_metric(metric: str | Metric) -> tuple[str, Metric]:
    """(name, function) for a metric name or a user callable."""
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    try:
        return metric, METRICS[metric]
    except KeyError:
        raise ConfigError(f"unknown metric '{metric}'; known: {sorted(METRICS)}, or pass a callable") from None
