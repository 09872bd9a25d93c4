"""Latency and accuracy measurement, metrics and reports."""

from __future__ import annotations

from .evaluate import benchmark, environment
from .latency import LatencyStats, measure_latency
from .metrics import METRICS, get_metric, top1, top1_agreement, top5
from .report import Report, Row

__all__ = [
    "LatencyStats",
    "METRICS",
    "Report",
    "Row",
    "benchmark",
    "environment",
    "get_metric",
    "measure_latency",
    "top1",
    "top1_agreement",
    "top5",
]
