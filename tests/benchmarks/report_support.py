"""A constructed report with known numbers, for tests of rendering and gates that need no measurement."""

from __future__ import annotations

from edgeship.benchmarks import Report, Row

ABSENT_BUNDLE = "/nonexistent/releases/digits.edgeship"  # a bundle measured on another machine
FAKE_SHA = "ab" * 32


def row(target: str, precision: str, acc: float | None, drop: float | None, agree: float | None, p50: float,
        p99: float, throughput: float, size: float | None, **extra) -> Row:
    """A row of the digits model; p90 sits between p50 and p99."""
    values = dict(variant="digits", target=target, precision=precision, accuracy_pct=acc, drop_pts=drop,
                  agreement_pct=agree, p50_ms=p50, p90_ms=(p50 + p99) / 2, p99_ms=p99, throughput=throughput,
                  size_mb=size, runs=5, samples=400, bundle=ABSENT_BUNDLE, manifest_sha256=FAKE_SHA)
    values.update(extra)
    return Row(**values)


def make_report(**changes) -> Report:
    """Reference torch FP32 at 97.5 %, OpenVINO INT8 and FP32, ONNX Runtime FP32 without accuracy."""
    rows = [
        row("torch", "fp32", 97.5, None, None, 0.31, 0.45, 3200.0, 0.1, is_reference=True,
            accuracy_ci_pct=(95.5, 98.6), p50_ci_ms=(0.30, 0.32), p99_ci_ms=(0.40, 0.50)),
        row("openvino-cpu", "int8", 97.0, 0.5, 99.25, 0.12, 0.2, 8000.0, 0.07, accuracy_ci_pct=(94.8, 98.3),
            agreement_ci_pct=(97.8, 99.7), p50_ci_ms=(0.11, 0.13), p99_ci_ms=(0.15, 0.25)),
        row("openvino-cpu", "fp32", 97.5, 0.0, 100.0, 0.2, 0.3, 5000.0, 0.1),
        row("onnxruntime-cpu", "fp32", None, None, None, 0.09, 0.11, 11000.0, None),
    ]
    values = dict(rows=rows, metric="top1", settings={"runs": 5, "threads": None},
                  environment={"cpu": "test cpu", "backends": {"onnxruntime-cpu": "onnxruntime 1"}})
    values.update(changes)
    return Report(**values)
