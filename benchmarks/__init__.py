"""Latency and accuracy measurement, metrics, reports and release gates."""

from __future__ import annotations

from ..measure.latency import LatencyStats, measure_latency, measure_streams
from ..measure.metrics import METRICS, classification_report, get_metric, top1, top1_agreement, top5
from ..measure.stats import bootstrap_interval, min_runs_for_quantile, quantile_interval, wilson_interval
from ..tasks.metrics import box_agreement, detection_map, detection_map_interval
from .evaluate import benchmark, cpu_flags, environment
from .evaluate_detection import benchmark_detection
from .gates import GateCheck, GateResult, Gates, Tolerance
from .report import REPORT_SCHEMA_VERSION, Report, Row

__all__ = [
    "GateCheck",
    "GateResult",
    "Gates",
    "LatencyStats",
    "METRICS",
    "REPORT_SCHEMA_VERSION",
    "Report",
    "Row",
    "Tolerance",
    "benchmark",
    "benchmark_detection",
    "bootstrap_interval",
    "min_runs_for_quantile",
    "quantile_interval",
    "box_agreement",
    "classification_report",
    "cpu_flags",
    "detection_map",
    "detection_map_interval",
    "environment",
    "get_metric",
    "measure_latency",
    "measure_streams",
    "top1",
    "top1_agreement",
    "top5",
    "wilson_interval",
]
