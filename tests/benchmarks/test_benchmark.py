"""What ``benchmark`` measures beyond accuracy and p50: intervals, per-class metrics, end-to-end and stream
latency, memory, bundle hashes, flags — and what an interrupted run leaves behind."""

from __future__ import annotations

import json

import edgeship
import numpy as np
import pytest
from edgeship import Report
from edgeship.benchmarks import Gates, classification_report, top1
from edgeship.benchmarks.evaluate import cpu_flags
from edgeship.bundle.folder import sha256_file


@pytest.fixture(scope="module")
def small_eval(digits_data):
    _, _, x_test, y_test = digits_data
    return x_test[:96], y_test[:96]


@pytest.fixture(scope="module")
def measured(digits_bundle, digits_model, small_eval, tmp_path_factory):
    """One real run over the digits bundle: torch reference, raw inputs, two streams, saved as it goes."""
    folder = tmp_path_factory.mktemp("measured") / "report"
    report = edgeship.benchmark([digits_bundle.path], small_eval, reference=digits_model, preprocess=True,
                                save_to=folder, show_progress=False,
                                measure=edgeship.Measurement(runs=4, warmup=1, streams=2, threads=1))
    return report, folder


def test_rows_carry_intervals_that_contain_the_estimates(measured):
    report, _ = measured
    for r in report.rows:
        lo, hi = r.accuracy_ci_pct
        assert 0 <= lo <= r.accuracy_pct <= hi <= 100
        assert r.p50_ci_ms[0] <= r.p50_ms <= r.p50_ci_ms[1]
        assert r.p99_ci_ms[0] <= r.p99_ms <= r.p99_ci_ms[1]
        assert r.samples == 96
    for r in report.rows[1:]:
        assert r.agreement_ci_pct[0] <= r.agreement_pct <= r.agreement_ci_pct[1]


def test_per_class_metrics_match_the_outputs(measured, digits_bundle, small_eval):
    report, _ = measured
    x, y = small_eval
    with digits_bundle.load("onnxruntime-cpu", "int8") as rt:
        scores = rt.run(x, preprocess=True)["output"]
    expected = classification_report(scores, y)
    (r,) = [r for r in report.rows if (r.target, r.precision) == ("onnxruntime-cpu", "int8")]
    assert r.per_class == {k: expected[k] for k in ("precision", "recall", "f1", "support")}
    assert r.macro_f1_pct == pytest.approx(100 * expected["macro_f1"])
    assert sum(r.per_class["support"]) == 96 and len(r.per_class["support"]) == 10
    assert r.accuracy_pct == pytest.approx(100 * top1(scores, y))


def test_end_to_end_streams_memory_threads_and_hashes(measured, digits_bundle):
    report, _ = measured
    manifest_sha = sha256_file(digits_bundle.path / "manifest.json")
    for r in report.rows:
        assert r.e2e_p50_ms is not None and r.e2e_p50_ms > 0 and r.e2e_p99_ms >= r.e2e_p50_ms
        assert r.peak_rss_mb > 10 and r.threads == 1
        assert r.bundle == str(digits_bundle.path.resolve()) and r.manifest_sha256 == manifest_sha
    assert report.rows[0].streams_throughput is None  # the reference is not run in streams
    for r in report.rows[1:]:
        assert r.streams == 2 and r.streams_throughput > 0
    assert report.environment["bundles"] == {str(digits_bundle.path.resolve()): manifest_sha}
    assert report.settings["end_to_end"].startswith("preprocessing + inference")


def test_recommendation_flags_and_warnings_are_derived(measured):
    report, _ = measured
    targets = {r.target for r in report.rows if not r.is_reference}
    marked = {r.target: r for r in report.rows if r.recommended}
    within = [r for r in report.rows if not r.is_reference and r.drop_pts <= 1.0]
    assert set(marked) == {r.target for r in within} and set(marked) <= targets
    for target, best in marked.items():
        assert best.p50_ms == min(r.p50_ms for r in within if r.target == target)
    for r in report.rows[1:]:
        assert any(f.startswith("agreement") for f in r.flags) == (r.agreement_pct < 99.0)
    assert report.warnings == report.precision_warnings()


def test_saved_report_is_complete_and_gateable(measured):
    report, folder = measured
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads((folder / "report.json").read_text())["complete"] is True
    assert Report.load(folder) == report
    result = Report.load(folder).check(Gates())
    assert result.passed, result.summary()
    assert {c.gate for c in result.checks} == {"complete", "rows", "bundle", "reference", "drop consistent"}
    assert sum(c.gate == "bundle" and c.passed for c in result.checks) == len(report.rows)  # every row re-hashed


def test_environment_records_cpu_flags(measured):
    report, _ = measured
    env = report.environment
    assert env["cpu_flags"] == cpu_flags()
    assert env["numpy"] == np.__version__ and "torch" in env and env["edgeship"] == edgeship.__version__


def test_cpu_flags_parses_x86_and_arm():
    x86 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 avx512f avx512_vnni amx_tile amx_int8 ht\n"
    assert cpu_flags(x86) == ["sse4_2", "avx", "avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"]
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp i8mm\n"
    assert cpu_flags(arm) == ["asimd", "asimddp", "i8mm"]
    assert cpu_flags("") == []


def test_a_user_metric_gets_a_bootstrap_interval(digits_bundle, small_eval):
    def my_top1(predictions, labels):
        return float(np.mean(predictions.argmax(1) == labels))

    report = edgeship.benchmark(digits_bundle, small_eval, metric=my_top1, targets=["onnxruntime-cpu"],
                                preprocess=True, show_progress=False,
                                measure=edgeship.Measurement(runs=2, warmup=0, ci_resamples=100))
    for r in report.rows:
        lo, hi = r.accuracy_ci_pct
        assert lo <= r.accuracy_pct <= hi and lo < hi  # 96 samples with a few errors: a real spread


# -- Ctrl-C --------------------------------------------------------------------------------------------
def test_an_interrupted_run_leaves_an_incomplete_valid_report(digits_bundle, small_eval, tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.html").write_text("<p>a page from an earlier run</p>")
    calls = []

    def interrupted_on_third_row(predictions, labels):
        calls.append(len(predictions))
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises, from inside the measurement
        return top1(predictions, labels)

    with pytest.raises(KeyboardInterrupt):
        edgeship.benchmark(digits_bundle, small_eval, metric=interrupted_on_third_row, preprocess=True,
                           save_to=folder, show_progress=False,
                           measure=edgeship.Measurement(runs=2, warmup=0, ci_resamples=0))
    assert len(calls) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json", "report.md"]  # no temp files
    data = json.loads((folder / "report.json").read_text())  # valid JSON
    assert data["complete"] is False and len(data["rows"]) == 2
    report = Report.load(folder)
    assert [r.label for r in report.rows] == ["digits onnxruntime-cpu fp32 (ref)", "digits openvino-cpu fp32"]
    assert report.warnings[0] == "interrupted after 2 rows: the report is incomplete"
    assert "**Incomplete report**" in (folder / "report.md").read_text()
    html = (folder / "report.html").read_text()
    assert "Incomplete report" in html and "earlier run" not in html
    result = report.check(Gates())
    assert not result.passed
    failed = [(c.row, c.gate) for c in result.failures]
    assert failed[0] == ("(report)", "complete")
    assert {gate for _, gate in failed[1:]} == {"row present"}  # the rows the interruption left out


def test_runtime_options_apply_per_target_and_are_recorded(digits_bundle, small_eval):
    report = edgeship.benchmark(digits_bundle, small_eval, show_progress=False, preprocess=True,
                                measure=edgeship.Measurement(runs=5, warmup=1, options={"openvino-cpu": {"inference_precision": "bf16"}}))
    ov = [r for r in report.rows if r.target == "openvino-cpu"]
    others = [r for r in report.rows if r.target != "openvino-cpu"]
    assert ov and all(r.options == {"inference_precision": "bf16"} for r in ov)
    assert others and all(r.options is None for r in others)
    assert report.settings["options"] == {"openvino-cpu": {"inference_precision": "bf16"}}
    with pytest.raises(edgeship.ConfigError, match="onnxruntime-cpu has no runtime option 'num_streams'"):
        edgeship.benchmark(digits_bundle, small_eval, show_progress=False,
                           measure=edgeship.Measurement(options={"onnxruntime-cpu": {"num_streams": 2}}))
    with pytest.raises(edgeship.ConfigError, match="threads is given twice"):
        edgeship.benchmark(digits_bundle, small_eval, show_progress=False,
                           measure=edgeship.Measurement(threads=1, options={"openvino-cpu": {"threads": 2}}))
