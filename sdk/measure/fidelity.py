"""How faithful one model's outputs are to another's: the one definition INT8 choices are made with.

Ground floor: numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["agreement", "agrees", "significantly_worse"]


def agrees(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per sample: whether ``outputs`` agree with ``reference`` — the same top-1 for (N, classes) outputs,
    else every value within 1 % of the sample's largest reference magnitude."""
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        return outputs.argmax(1) == reference.argmax(1)
    a, b = outputs.reshape(len(outputs), -1), reference.reshape(len(reference), -1)
    return np.abs(a - b).max(axis=1) <= 0.01 * (np.abs(b).max(axis=1) + 1e-12)


def agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """The fraction of samples on which ``outputs`` agree with ``reference`` (see ``agrees``)."""
    return float(np.mean(agrees(outputs, reference)))


def significantly_worse(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether candidate ``a`` agrees with the reference on significantly fewer of the same samples than
    ``b`` (per-sample booleans from ``agrees``): McNemar's test at 95 % on the samples where exactly one
    of them agrees, so 2 of 256 is noise and 10 of 256 is not."""
    only_b, only_a = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    return only_b > only_a and (only_b - only_a) > 1.96 * np.sqrt(only_b + only_a)
