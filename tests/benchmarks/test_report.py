"""Metrics, the Report's saved forms, and the rows ``benchmark`` produces."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeship
from edgeship import ConfigError, Report
from edgeship.benchmarks import METRICS, Row, get_metric, measure_latency, top1, top1_agreement, top5
from edgeship.benchmarks.report import REPORT_SCHEMA_VERSION

# four samples, six classes; the ranking of each row is written out beside it
SCORES = np.array([
    [0.1, 0.9, 0.05, 0.04, 0.03, 0.0],  # 1 > 0 > 2 > 3 > 4 > 5
    [0.6, 0.1, 0.2, 0.3, 0.4, 0.5],  # 0 > 5 > 4 > 3 > 2 > 1
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # 5 > 4 > 3 > 2 > 1 > 0
    [0.3, 0.2, 0.9, 0.1, 0.0, 0.4],  # 2 > 5 > 0 > 1 > 3 > 4
], dtype=np.float32)


# -- metrics --------------------------------------------------------------------------------------
def test_top1():
    assert top1(SCORES, np.array([1, 0, 5, 2])) == 1.0
    assert top1(SCORES, np.array([1, 5, 0, 2])) == 0.5
    assert top1(SCORES, np.array([0, 1, 0, 0])) == 0.0


def test_top5():
    assert top5(SCORES, np.array([0, 2, 1, 5])) == 1.0  # each label in its row's best five
    assert top5(SCORES, np.array([5, 1, 0, 4])) == 0.0  # each label is its row's sixth
    assert top5(SCORES, np.array([2, 1, 0, 4])) == 0.25
    assert top5(SCORES[:, :3], np.array([2, 1, 0, 1])) == 1.0  # fewer than five classes: all count


def test_top1_agreement():
    other = SCORES.copy()
    other[0] = [0.9, 0.1, 0, 0, 0, 0]  # row 0 now picks class 0
    assert top1_agreement(SCORES, SCORES) == 1.0
    assert top1_agreement(other, SCORES) == 0.75


def test_top1_checks_shapes():
    with pytest.raises(ConfigError, match=r"scores \(N, classes\) and labels \(N,\)"):
        top1(SCORES[0], np.array([1]))
    with pytest.raises(ConfigError, match=r"got \(4, 6\) and \(3,\)"):
        top1(SCORES, np.array([1, 0, 5]))


@pytest.mark.parametrize("metric", [top1, top5])
def test_column_labels_are_refused_or_flattened(metric):
    labels = np.array([[1], [0], [5], [2]])  # (N, 1), as labels often come from a dataset
    try:
        value = metric(SCORES, labels)
    except ConfigError:
        return  # refusing (N, 1) labels is a fine answer too
    assert value == 1.0


def test_get_metric():
    assert get_metric("top1") == ("top1", top1)
    assert get_metric("top5") == ("top5", top5)
    assert sorted(METRICS) == ["top1", "top5"]

    def mean_iou(predictions, labels):
        return 0.5

    assert get_metric(mean_iou) == ("mean_iou", mean_iou)
    with pytest.raises(ConfigError, match=r"unknown metric 'top3'; known: \['top1', 'top5'\]"):
        get_metric("top3")


def test_measure_latency_counts_calls_and_orders_percentiles():
    calls = []
    stats = measure_latency(lambda: calls.append(1), runs=7, warmup=3, batch=4)
    assert len(calls) == 10
    assert stats.runs == 7 and stats.batch == 4
    assert 0 <= stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.to_dict()["throughput"] == pytest.approx(4 * 1000.0 / stats.mean_ms)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        measure_latency(lambda: None, runs=0)


# -- the saved report -----------------------------------------------------------------------------
def make_report() -> Report:
    def row(target, precision, acc, drop, agree, p50, p90, p99, throughput, size, **extra):
        return Row(variant="digits", target=target, precision=precision, accuracy_pct=acc, drop_pts=drop,
                   agreement_pct=agree, p50_ms=p50, p90_ms=p90, p99_ms=p99, throughput=throughput, size_mb=size,
                   runs=5, **extra)

    rows = [
        row("torch", "fp32", 97.5, None, None, 0.31, 0.4, 0.45, 3200.0, 0.1, is_reference=True),
        row("openvino-cpu", "int8", 97.0, 0.5, 99.25, 0.12, 0.15, 0.2, 8000.0, 0.07),
        row("onnxruntime-cpu", "fp32", None, None, None, 0.09, 0.1, 0.11, 11000.0, None),
    ]
    return Report(rows=rows, metric="top1", settings={"runs": 5, "threads": None},
                  environment={"cpu": "test cpu", "backends": {"onnxruntime-cpu": "onnxruntime 1"}})


def test_save_and_load_round_trip(tmp_path):
    report = make_report()
    folder = report.save(tmp_path / "nested" / "report")
    assert sorted(p.name for p in folder.iterdir()) == ["report.json", "report.md"]  # no temp files left
    data = json.loads((folder / "report.json").read_text())
    assert data["schema_version"] == REPORT_SCHEMA_VERSION and data["metric"] == "top1"
    assert len(data["rows"]) == 3
    assert Report.load(folder) == report
    assert Report.load(folder / "report.json") == report


def test_markdown(tmp_path):
    md = make_report().save(tmp_path).joinpath("report.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "# edgeship report (top1)"
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 3  # header, separator, one line per row
    assert table[2].startswith("| digits (ref) | torch | fp32 | 97.50 | — | — |")
    assert "| digits | openvino-cpu | int8 | 97.00 | +0.50 | 99.25 | 0.120 |" in md
    assert "| digits | onnxruntime-cpu | fp32 | — | — | — |" in md
    assert "Settings: runs=5, threads=None" in md and "cpu=test cpu" in md


def test_load_refuses_bad_reports(tmp_path):
    with pytest.raises(ConfigError, match="cannot read report"):
        Report.load(tmp_path / "absent")
    (tmp_path / "report.json").write_text("{oops")
    with pytest.raises(ConfigError, match="cannot read report"):
        Report.load(tmp_path)
    data = make_report().to_dict()
    (tmp_path / "report.json").write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(ConfigError, match="schema_version 99"):
        Report.load(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({**data, "rows": [{"variant": "x"}]}))
    with pytest.raises(ConfigError, match="cannot read report"):
        Report.load(tmp_path)


# -- benchmark's rows -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_eval(digits_data):
    _, _, x_test, y_test = digits_data
    return x_test[:64], y_test[:64]


def test_benchmark_rows_for_reference_and_each_variant(digits_bundle, digits_model, small_eval, tmp_path):
    report = edgeship.benchmark([digits_bundle.path], small_eval, reference=digits_model, preprocess=True, runs=3,
                                warmup=1, show_progress=False)
    assert [(r.target, r.precision, r.is_reference) for r in report.rows] == (
        [("torch", "fp32", True)] + [(t, p, False) for t, p in digits_bundle.variants])
    assert {r.variant for r in report.rows} == {"digits"}
    ref = report.rows[0]
    assert ref.drop_pts is None and ref.agreement_pct is None
    assert ref.size_mb == pytest.approx(digits_bundle.source_onnx.stat().st_size / 1e6)
    for row in report.rows:
        assert row.runs == 3 and row.batch == 1
        assert 0 <= row.accuracy_pct <= 100
        assert row.p50_ms <= row.p90_ms <= row.p99_ms and row.throughput > 0
    for row in report.rows[1:]:
        assert row.drop_pts == pytest.approx(ref.accuracy_pct - row.accuracy_pct)
        assert 0 <= row.agreement_pct <= 100
        assert row.size_mb == pytest.approx(digits_bundle.size_bytes(digits_bundle.artifact(row.target,
                                                                                            row.precision)) / 1e6)
    assert report.settings["reference"] == "torch eager" and report.settings["samples"] == 64
    assert report.environment["backends"] == edgeship.list_targets(available_only=True)
    assert Report.load(report.save(tmp_path)) == report  # a measured report round-trips too


def test_benchmark_default_reference_targets_filter_and_inputs_only(digits_bundle, small_eval):
    x, _ = small_eval
    report = edgeship.benchmark(digits_bundle, x, targets=["onnxruntime-cpu"], preprocess=True, runs=2, warmup=0,
                                show_progress=False)
    assert [(r.target, r.precision) for r in report.rows] == [
        ("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "int8")]
    assert report.rows[0].is_reference and report.settings["reference"] == "onnxruntime fp32"
    assert all(r.accuracy_pct is None and r.drop_pts is None for r in report.rows)  # no labels given
    assert report.rows[1].agreement_pct == 100.0  # the fp32 artifact is the reference graph itself


def test_benchmark_custom_metric_and_batch(digits_bundle, small_eval):
    def always_half(predictions, labels):
        return 0.5

    report = edgeship.benchmark(digits_bundle, small_eval, metric=always_half, targets=["openvino-cpu"],
                                preprocess=True, runs=2, warmup=0, batch_size=8, show_progress=False)
    assert report.metric == "always_half"
    assert all(r.accuracy_pct == 50.0 and r.batch == 8 for r in report.rows)


def test_benchmark_refuses_bad_arguments(digits_bundle, small_eval):
    x, y = small_eval
    with pytest.raises(ConfigError, match="unknown metric 'top3'"):
        edgeship.benchmark(digits_bundle, (x, y), metric="top3", preprocess=True, runs=1, show_progress=False)
    with pytest.raises(ConfigError, match="data has 64 inputs but 10 labels"):
        edgeship.benchmark(digits_bundle, (x, y[:10]), preprocess=True, runs=1, show_progress=False)
    with pytest.raises(ConfigError, match="batch_size 100 is larger than the 64 inputs"):
        edgeship.benchmark(digits_bundle, (x, y), preprocess=True, runs=1, batch_size=100, show_progress=False)
