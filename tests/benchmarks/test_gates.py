"""Release gates on constructed reports (every gate passes and fails), on baselines, and on real bundles
whose files changed after they were measured."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import edgeship
import pytest
from edgeship import ConfigError, Report
from edgeship.benchmarks import GateResult, Gates, Tolerance
from report_support import ABSENT_BUNDLE, make_report

INT8, FP32, ORT = "digits openvino-cpu int8", "digits openvino-cpu fp32", "digits onnxruntime-cpu fp32"


def failures(result: GateResult) -> list[tuple[str, str]]:
    return [(c.row, c.gate) for c in result.failures]


def test_a_good_report_passes_every_gate():
    report = make_report()
    report.rows.pop()  # the ONNX Runtime row has no accuracy or agreement: see below
    result = report.check(Gates(require_bundles=False, max_drop=1.0, max_relative_drop=1.0, max_p50_ms=0.25, max_p99_ms=0.35,
                                min_throughput=4000, min_agreement=0.99))
    assert result.passed and bool(result) and result.failures == []
    # the reference is measured for comparison, not gated
    assert {c.row for c in result.checks if c.gate == "max_p99_ms"} == {INT8, FP32}
    assert {c.gate for c in result.checks if c.row == INT8} == {
        "drop consistent", "max_drop", "max_relative_drop", "max_p50_ms", "max_p99_ms", "min_throughput", "min_agreement"}
    assert result.summary().startswith(f"all {len(result.checks)} gate checks passed")
    # the bundles were measured elsewhere: said, not failed
    assert result.notes == [f"not re-hashed (bundle not on this machine): {ABSENT_BUNDLE}"]


@pytest.mark.parametrize("gates,expected", [
    (Gates(require_bundles=False, max_drop=0.4), [(INT8, "max_drop"), (ORT, "max_drop")]),  # ORT has no accuracy: it cannot pass
    (Gates(require_bundles=False, max_relative_drop=0.5), [(INT8, "max_relative_drop"), (ORT, "max_relative_drop")]),
    (Gates(require_bundles=False, max_p50_ms=0.15), [(FP32, "max_p50_ms")]),
    (Gates(require_bundles=False, max_p99_ms=0.25), [(FP32, "max_p99_ms")]),
    (Gates(require_bundles=False, min_throughput=6000), [(FP32, "min_throughput")]),
    (Gates(require_bundles=False, min_agreement=0.995), [(INT8, "min_agreement"), (ORT, "min_agreement")]),
], ids=["max_drop", "max_relative_drop", "max_p50_ms", "max_p99_ms", "min_throughput", "min_agreement"])
def test_each_gate_fails_the_rows_past_its_limit(gates, expected):
    result = make_report().check(gates)
    assert not result.passed
    assert failures(result) == expected


def test_a_failure_names_row_gate_measured_and_limit():
    result = make_report().check(Gates(require_bundles=False, max_p99_ms=0.25, max_drop=0.4))
    (p99,) = [c for c in result.failures if c.gate == "max_p99_ms"]
    assert (p99.row, p99.measured, p99.limit) == (FP32, 0.3, 0.25)
    assert str(p99) == f"FAIL: {FP32}: max_p99_ms: measured 0.3, limit 0.25"
    (missing,) = [c for c in result.failures if c.row == ORT]
    assert str(missing) == f"FAIL: {ORT}: max_drop: measured not measured, limit 0.4 (no labels: no accuracy)"
    summary = result.summary().splitlines()
    assert summary[0] == f"3 of {len(result.checks)} gate checks failed:"
    assert summary[1:4] == [f"  {c}" for c in result.failures]
    assert result.to_dict()["passed"] is False and len(result.to_dict()["checks"]) == len(result.checks)


def test_relative_drop_is_percent_of_the_reference():
    result = make_report().check(Gates(require_bundles=False, max_relative_drop=0.6))  # 0.5 pts of 97.5 % = 0.513 %
    (int8,) = [c for c in result.checks if c.row == INT8 and c.gate == "max_relative_drop"]
    assert int8.passed and int8.measured == pytest.approx(100 * 0.5 / 97.5)


def test_min_agreement_is_a_fraction():
    assert make_report().check(Gates(require_bundles=False, min_agreement=0.99)).failures[0].row == ORT  # INT8 agrees on 99.25 %
    with pytest.raises(ConfigError, match=r"min_agreement is a fraction in \(0, 1\] \(0.98 = 98% agreement\), got 98"):
        Gates(require_bundles=False, min_agreement=98)


def test_nan_and_missing_values_fail():
    report = make_report()
    report.rows[1] = dataclasses.replace(report.rows[1], accuracy_pct=math.nan, drop_pts=math.nan)
    report.rows[2] = dataclasses.replace(report.rows[2], p99_ms=math.nan)
    result = report.check(Gates(require_bundles=False, max_drop=100.0, max_p99_ms=100.0))
    assert (INT8, "max_drop") in failures(result) and (FP32, "max_p99_ms") in failures(result)


def test_an_incomplete_or_empty_report_fails():
    assert failures(make_report(complete=False).check(Gates(require_bundles=False))) == [("(report)", "complete")]
    only_reference = make_report()
    only_reference.rows = only_reference.rows[:1]
    assert failures(only_reference.check(Gates(require_bundles=False, max_p99_ms=1.0))) == [("(report)", "rows")]


def test_rows_without_bundle_hashes_are_not_trusted():
    report = make_report()
    report.rows[2] = dataclasses.replace(report.rows[2], manifest_sha256="")
    result = report.check(Gates(require_bundles=False))
    assert failures(result) == [(FP32, "bundle")]
    assert "re-run `edgeship bench`" in result.failures[0].detail


def test_require_bundles_fails_rows_measured_elsewhere():
    result = make_report().check(Gates(require_bundles=True))
    assert {c.gate for c in result.failures} == {"bundle"} and len(result.failures) == 4
    assert result.failures[0].measured == "not found" and result.failures[0].limit == ABSENT_BUNDLE


@pytest.mark.parametrize("bad", [dict(max_p99_ms=0), dict(max_p50_ms=-1.0), dict(min_throughput=0),
                                 dict(max_drop=math.nan), dict(max_drop="1"), dict(max_relative_drop=-1.0),
                                 dict(regression_tolerance=0.5), dict(max_drop=True)])
def test_bad_limits_are_refused(bad):
    with pytest.raises(ConfigError, match="gate |regression_tolerance|min_agreement"):
        Gates(require_bundles=False, **bad)
    with pytest.raises(ConfigError, match="Tolerance.latency_pct must be a finite number >= 0"):
        Tolerance(latency_pct=-5)


def test_check_needs_gates():
    with pytest.raises(ConfigError, match="check needs a Gates, got dict"):
        make_report().check({"max_drop": 1.0})


# -- baseline ------------------------------------------------------------------------------------
def test_the_same_report_is_its_own_baseline(tmp_path):
    base = make_report().save(tmp_path / "v1.3", html=False)
    result = make_report().check(Gates(require_bundles=False, baseline=base / "report.json"))
    assert result.passed, result.summary()
    gates = {c.gate for c in result.checks}
    assert {"regression accuracy %", "regression agreement %", "regression p50 ms", "regression p99 ms",
            "regression samples/s"} <= gates
    # the reference's accuracy is compared (a worse model is a regression), its speed is not
    assert {c.gate for c in result.checks if c.row.endswith("(ref)")} >= {"regression accuracy %"}
    assert not any(c.row.endswith("(ref)") and "ms" in c.gate for c in result.checks)


def test_regressions_beyond_tolerance_fail():
    base = make_report()
    now = make_report()
    ref, first, second = now.rows[:3]
    ref = dataclasses.replace(ref, accuracy_pct=ref.accuracy_pct - 1.0)  # the new FP32 model is worse than the last
    first = dataclasses.replace(first, p99_ms=first.p99_ms * 1.08,  # within 10 %
                                accuracy_pct=first.accuracy_pct - 0.4)  # within 0.5 pts
    second = dataclasses.replace(second, p50_ms=second.p50_ms * 1.25, throughput=second.throughput * 0.5)  # beyond
    # and the drops are measured against the new reference
    now.rows[:3] = [ref] + [dataclasses.replace(r, drop_pts=ref.accuracy_pct - r.accuracy_pct) for r in (first, second)]
    result = now.check(Gates(require_bundles=False, baseline=base))
    assert failures(result) == [("digits torch fp32 (ref)", "regression accuracy %"), (FP32, "regression p50 ms"),
                                (FP32, "regression samples/s")]
    assert result.failures[1].limit == pytest.approx(0.2 * 1.1)
    tight = now.check(Gates(require_bundles=False, baseline=base, regression_tolerance=Tolerance(accuracy_pts=0.1, latency_pct=5)))
    assert (INT8, "regression accuracy %") in failures(tight) and (INT8, "regression p99 ms") in failures(tight)
    loose = now.check(Gates(require_bundles=False, baseline=base, regression_tolerance={"accuracy_pts": 2.0, "latency_pct": 100}))
    assert loose.passed, loose.summary()


def test_a_row_missing_from_the_new_report_fails_and_a_new_row_is_noted():
    base = make_report()
    now = make_report()
    dropped = now.rows.pop(1)
    now.rows.append(dataclasses.replace(dropped, target="openvino-gpu"))
    result = now.check(Gates(require_bundles=False, baseline=base))
    assert failures(result) == [(INT8, "baseline")]
    assert "not in the baseline (no regression check): digits openvino-gpu int8" in result.notes


def test_a_renamed_single_model_is_compared_and_other_machines_are_noted():
    base = make_report(environment={"cpu": "other cpu"})
    base.rows = [dataclasses.replace(r, variant="digits-v1.3") for r in base.rows]
    result = make_report().check(Gates(require_bundles=False, baseline=base))
    assert result.passed, result.summary()
    assert "baseline variant 'digits-v1.3' compared with 'digits'" in result.notes
    assert any("latency comparisons cross machines" in n for n in result.notes)


def test_a_schema_1_baseline_works_and_an_unreadable_one_is_bad_input(tmp_path):
    from test_report import V1_REPORT

    (tmp_path / "old.json").write_text(json.dumps(V1_REPORT))
    result = make_report().check(Gates(require_bundles=False, baseline=tmp_path / "old.json"))
    # INT8 ran at 0.1 ms and 9000 samples/s in the old release: 0.12 ms and 8000 now are > 10 % worse
    assert failures(result) == [(INT8, "regression p50 ms"), (INT8, "regression samples/s")]
    assert result.failures[0].measured == 0.12 and result.failures[0].limit == pytest.approx(0.11)
    assert Report.load(tmp_path / "old.json").check(Gates(require_bundles=False)).failures[0].gate == "bundle"  # but not gateable itself
    with pytest.raises(ConfigError, match="cannot read report"):
        make_report().check(Gates(require_bundles=False, baseline=tmp_path / "absent.json"))


# -- real bundles: the gate re-hashes what was measured ---------------------------------------------------
@pytest.fixture
def measured_copy(bundle_copy, digits_data):
    x = digits_data[2][:32]
    report = edgeship.benchmark(bundle_copy, x, preprocess=True, show_progress=False,
                                measure=edgeship.Measurement(runs=2, warmup=0))
    return bundle_copy, report


def test_untouched_bundle_passes_and_every_row_is_rehashed(measured_copy):
    _, report = measured_copy
    result = report.check(Gates())
    assert result.passed and result.notes == []
    assert [c.row for c in result.checks if c.gate == "bundle"] == [r.label for r in report.rows]


def test_a_tampered_artifact_fails_its_row(measured_copy):
    bundle, report = measured_copy
    with open(bundle / "onnxruntime-cpu" / "int8" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    result = report.check(Gates())
    assert failures(result) == [("copy onnxruntime-cpu int8", "bundle")]
    assert "was modified" in result.failures[0].detail


def test_a_changed_manifest_fails_every_row(measured_copy):
    bundle, report = measured_copy
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model"] = "something else"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = report.check(Gates())
    assert {g for _, g in failures(result)} == {"bundle"} and len(result.failures) == len(report.rows)
    assert "changed since it was measured" in result.failures[0].detail


def test_a_replaced_bundle_fails_even_when_it_is_valid(measured_copy, digits_bundle):
    """Another valid bundle at the same path is not what was measured."""
    bundle, report = measured_copy
    manifest = json.loads((bundle / "manifest.json").read_text())
    shutil.rmtree(bundle)
    shutil.copytree(digits_bundle.path, bundle)
    manifest["created"] = "1970-01-01T00:00:00+00:00"
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    assert not report.check(Gates()).passed


def test_a_removed_bundle_is_noted_or_failed(measured_copy):
    bundle, report = measured_copy
    shutil.rmtree(bundle)
    result = report.check(Gates(require_bundles=False))
    assert result.passed and result.notes == [f"not re-hashed (bundle not on this machine): {bundle.resolve()}"]
    assert not report.check(Gates()).passed  # require_bundles is the default
