"""Metrics, the Report's saved forms and analysis, and the rows ``benchmark`` produces."""

from __future__ import annotations

import json
from dataclasses import replace

import edgeship
import numpy as np
import pytest
from edgeship import ConfigError, Report
from edgeship.benchmarks import METRICS, get_metric, top1, top1_agreement, top5
from edgeship.benchmarks.report import REPORT_SCHEMA_VERSION
from report_support import make_report

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


# -- the saved report -----------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    report = make_report()
    report.rows[1] = replace(report.rows[1], per_class={"precision": [1.0, 0.5], "recall": [0.5, 1.0],
                                                        "f1": [2 / 3, 2 / 3], "support": [2, 2]},
                             flags=["agreement 99.25% < 99.5%"])
    folder = report.save(tmp_path / "nested" / "report")
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json", "report.md"]  # no temp files
    data = json.loads((folder / "report.json").read_text())
    assert data["schema_version"] == REPORT_SCHEMA_VERSION == 2 and data["metric"] == "top1"
    assert data["complete"] is True and len(data["rows"]) == 4
    assert data["rows"][1]["accuracy_ci_pct"] == [94.8, 98.3]
    loaded = Report.load(folder)
    assert loaded == report
    assert loaded.rows[1].accuracy_ci_pct == (94.8, 98.3)  # intervals come back as tuples
    assert Report.load(folder / "report.json") == report


def test_save_without_html(tmp_path):
    folder = make_report().save(tmp_path, html=False)
    assert sorted(p.name for p in folder.iterdir()) == ["report.json", "report.md"]


def test_markdown(tmp_path):
    md = make_report().save(tmp_path).joinpath("report.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "# edgeship report (top1)"
    table = [line for line in lines[: lines.index("## Latency")] if line.startswith("|")]
    assert len(table) == 2 + 4  # header, separator, one line per row
    assert table[0].startswith("| variant | target | precision | acc % | acc 95% CI | drop pts | agree % |")
    assert table[2].startswith("| digits (ref) | torch | fp32 | 97.50 | [95.5, 98.6] | — | — | 0.310 |")
    assert "| digits | openvino-cpu | int8 | 97.00 | [94.8, 98.3] | +0.50 | 99.25 | 0.120 |" in md
    assert "| digits | onnxruntime-cpu | fp32 | — | — | — | — | 0.090 |" in md
    assert "| digits openvino-cpu int8 | 1 | — | 0.120 | [0.110, 0.130] | 0.200 | [0.150, 0.250] |" in md
    assert "Settings: runs=5, threads=None" in md and "cpu=test cpu" in md
    assert "Incomplete" not in md


def test_markdown_of_an_incomplete_report_and_gate_results():
    report = make_report(complete=False)
    result = report.check(edgeship.benchmarks.Gates(max_p99_ms=0.25))
    md = report.to_markdown(result)
    assert "**Incomplete report**: the run stopped after 4 rows" in md
    assert "## Gates: FAILED" in md
    assert "| (report) | complete | incomplete (4 rows) | complete | FAIL |" in md
    assert "| digits openvino-cpu fp32 | max_p99_ms | 0.3 | 0.25 | FAIL |" in md
    assert "| digits openvino-cpu int8 | max_p99_ms | 0.2 | 0.25 | pass |" in md


def test_per_class_tables_in_markdown():
    report = make_report()
    report.rows[1] = replace(report.rows[1], per_class={"precision": [1.0, 0.5, 0.0], "recall": [0.5, 1.0, 0.0],
                                                        "f1": [2 / 3, 2 / 3, 0.0], "support": [2, 2, 1]},
                             macro_precision_pct=50.0, macro_recall_pct=50.0, macro_f1_pct=44.44)
    md = report.to_markdown()
    assert "| digits openvino-cpu int8 | 50.00 | 50.00 | 44.44 | 0.00 (class 2) |" in md
    assert "### digits openvino-cpu int8" in md
    assert "| 1 | 2 | 50.00 | 100.00 | 66.67 |" in md


def test_load_refuses_bad_reports(tmp_path):
    with pytest.raises(ConfigError, match="cannot read report"):
        Report.load(tmp_path / "absent")
    (tmp_path / "report.json").write_text("{oops")
    with pytest.raises(ConfigError, match="cannot read report"):
        Report.load(tmp_path)
    data = make_report().to_dict()
    (tmp_path / "report.json").write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(ConfigError, match=r"schema_version 99 is not one this edgeship reads \(1, 2\); "
                                          "it was written by a newer edgeship"):
        Report.load(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({**data, "rows": [{"variant": "x"}]}))
    with pytest.raises(ConfigError, match="report row 0 .*'target' must be a string"):
        Report.load(tmp_path)
    (tmp_path / "report.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        Report.load(tmp_path)


V1_REPORT = {  # as edgeship 0.1.0 wrote it
    "schema_version": 1, "metric": "top1", "settings": {"runs": 5}, "environment": {"cpu": "old cpu"},
    "rows": [
        {"variant": "digits", "target": "torch", "precision": "fp32", "accuracy_pct": 97.5, "drop_pts": None,
         "agreement_pct": None, "p50_ms": 0.3, "p90_ms": 0.4, "p99_ms": 0.5, "throughput": 3000.0, "size_mb": 0.1,
         "is_reference": True, "batch": 1, "runs": 5, "source": "abc", "prune_ratio": None, "params": None,
         "macs": None, "macs_ratio": None, "latency_ratio": None},
        {"variant": "digits", "target": "openvino-cpu", "precision": "int8", "accuracy_pct": 97.0, "drop_pts": 0.5,
         "agreement_pct": 99.0, "p50_ms": 0.1, "p90_ms": 0.15, "p99_ms": 0.2, "throughput": 9000.0, "size_mb": 0.07,
         "is_reference": False, "batch": 1, "runs": 5, "source": "abc", "prune_ratio": None, "params": None,
         "macs": None, "macs_ratio": None, "latency_ratio": None},
    ],
    "pruning_search": {},
}


def test_schema_1_reports_still_load(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(V1_REPORT))
    report = Report.load(tmp_path)
    assert report.schema_version == 1 and report.complete
    assert [r.label for r in report.rows] == ["digits torch fp32 (ref)", "digits openvino-cpu int8"]
    assert report.rows[1].manifest_sha256 == "" and report.rows[1].accuracy_ci_pct is None
    assert "| digits | openvino-cpu | int8 | 97.00 | — | +0.50 | 99.00 |" in report.to_markdown()
    report.save(tmp_path / "again")  # re-saved as the current schema
    assert json.loads((tmp_path / "again" / "report.json").read_text())["schema_version"] == 2


# -- analysis on the rows -------------------------------------------------------------------------------
def test_pareto_front_and_recommendation():
    report = make_report()
    # quality: accuracy, else agreement; the ORT row has neither, so it is not on the plot's front
    assert [r.label for r in report.pareto_front()] == ["digits openvino-cpu int8", "digits openvino-cpu fp32"]
    best = report.mark_recommended(budget_pts=1.0)
    assert {t: r.precision for t, r in best.items()} == {"openvino-cpu": "int8"}
    assert [r.recommended for r in report.rows] == [False, True, False, False]
    assert {t: r.precision for t, r in report.mark_recommended(budget_pts=0.1).items()} == {"openvino-cpu": "fp32"}
    assert report.mark_recommended(budget_pts=-1.0) == {} and not any(r.recommended for r in report.rows)


def test_recommendation_without_labels_bounds_the_drop_by_disagreement():
    report = make_report()
    report.rows = [replace(r, accuracy_pct=None, drop_pts=None) for r in report.rows]
    best = report.mark_recommended(budget_pts=0.5)  # INT8 disagrees on 0.75 % of samples: over budget
    assert {t: r.precision for t, r in best.items()} == {"openvino-cpu": "fp32"}
    assert report.mark_recommended(budget_pts=1.0)["openvino-cpu"].precision == "int8"


def test_int8_slower_than_fp32_is_warned():
    report = make_report()
    assert report.precision_warnings() == []  # INT8 0.12 ms < FP32 0.2 ms
    report.rows[1] = replace(report.rows[1], p50_ms=0.25, p50_ci_ms=(0.24, 0.26))
    report.rows[2] = replace(report.rows[2], p50_ci_ms=(0.19, 0.21))
    (warning,) = report.precision_warnings()
    assert warning.startswith("digits on openvino-cpu: INT8 is slower than FP32 (p50 0.250 ms vs 0.200 ms)")
    assert "intervals overlap" not in warning
    report.rows[1] = replace(report.rows[1], p50_ci_ms=(0.18, 0.3))
    assert "the 95% intervals overlap" in report.precision_warnings()[0]


# -- benchmark's rows -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_eval(digits_data):
    _, _, x_test, y_test = digits_data
    return x_test[:64], y_test[:64]


def test_benchmark_rows_for_reference_and_each_variant(digits_bundle, digits_model, small_eval, tmp_path):
    report = edgeship.benchmark([digits_bundle.path], small_eval, reference=digits_model, preprocess=True,
                                show_progress=False, measure=edgeship.Measurement(runs=3, warmup=1))
    assert [(r.target, r.precision, r.is_reference) for r in report.rows] == (
        [("torch", "fp32", True)] + [(t, p, False) for t, p in digits_bundle.variants])
    assert {r.variant for r in report.rows} == {"digits"}
    ref = report.rows[0]
    assert ref.drop_pts is None and ref.agreement_pct is None
    assert ref.size_mb == pytest.approx(digits_bundle.source_onnx.stat().st_size / 1e6)
    for row_ in report.rows:
        assert row_.runs == 3 and row_.batch == 1
        assert 0 <= row_.accuracy_pct <= 100
        assert row_.p50_ms <= row_.p90_ms <= row_.p99_ms and row_.throughput > 0
    for row_ in report.rows[1:]:
        assert row_.drop_pts == pytest.approx(ref.accuracy_pct - row_.accuracy_pct)
        assert 0 <= row_.agreement_pct <= 100
        assert row_.size_mb == pytest.approx(digits_bundle.size_bytes(digits_bundle.artifact(row_.target,
                                                                                             row_.precision)) / 1e6)
    assert report.settings["reference"] == "torch eager" and report.settings["samples"] == 64
    assert report.environment["backends"] == edgeship.list_targets(available_only=True)
    assert report.complete
    assert Report.load(report.save(tmp_path)) == report  # a measured report round-trips too


def test_benchmark_default_reference_targets_filter_and_inputs_only(digits_bundle, small_eval):
    x, _ = small_eval
    report = edgeship.benchmark(digits_bundle, x, targets=["onnxruntime-cpu"], preprocess=True, show_progress=False,
                                measure=edgeship.Measurement(runs=2, warmup=0))
    assert [(r.target, r.precision) for r in report.rows] == [
        ("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "int8")]
    assert report.rows[0].is_reference and report.settings["reference"] == "onnxruntime fp32"
    assert all(r.accuracy_pct is None and r.drop_pts is None and r.per_class is None for r in report.rows)  # no labels
    assert report.rows[1].agreement_pct == 100.0  # the fp32 artifact is the reference graph itself
    assert report.rows[1].agreement_ci_pct[1] == 100.0 and report.rows[1].agreement_ci_pct[0] < 100.0


def test_benchmark_custom_metric_and_batch(digits_bundle, small_eval):
    def always_half(predictions, labels):
        return 0.5

    report = edgeship.benchmark(digits_bundle, small_eval, metric=always_half, targets=["openvino-cpu"],
                                preprocess=True, show_progress=False,
                                measure=edgeship.Measurement(runs=2, warmup=0, batch_size=8))
    assert report.metric == "always_half"
    assert all(r.accuracy_pct == 50.0 and r.batch == 8 for r in report.rows)
    assert all(r.accuracy_ci_pct == (50.0, 50.0) for r in report.rows)  # a constant has no spread to bootstrap


def test_benchmark_refuses_bad_arguments(digits_bundle, small_eval):
    x, y = small_eval
    with pytest.raises(ConfigError, match="unknown metric 'top3'"):
        edgeship.benchmark(digits_bundle, (x, y), metric="top3", preprocess=True, show_progress=False,
                           measure=edgeship.Measurement(runs=1))
    with pytest.raises(ConfigError, match="data has 64 inputs but 10 labels"):
        edgeship.benchmark(digits_bundle, (x, y[:10]), preprocess=True, show_progress=False,
                           measure=edgeship.Measurement(runs=1))
    with pytest.raises(ConfigError, match="batch_size 100 is larger than the 64 inputs"):
        edgeship.benchmark(digits_bundle, (x, y), preprocess=True, show_progress=False,
                           measure=edgeship.Measurement(runs=1, batch_size=100))
    with pytest.raises(ConfigError, match="Measurement.streams must be an int >= 1, got 0"):
        edgeship.benchmark(digits_bundle, (x, y), preprocess=True, show_progress=False,
                           measure=edgeship.Measurement(runs=1, streams=0))
    with pytest.raises(ConfigError, match=r"agreement_threshold is a fraction in \(0, 1\], got 99"):
        edgeship.benchmark(digits_bundle, (x, y), preprocess=True, agreement_threshold=99, show_progress=False,
                           measure=edgeship.Measurement(runs=1))
