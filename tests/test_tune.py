"""edgeship.tune with the local executor: real sweeps of the trained digits CNN on OpenVINO and ONNX Runtime.

Every trial is a real compress + benchmark; the cache is checked through what lands on disk (JSON
records, bundle folders and their modification times), never by mocking a backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import edgeship
import numpy as np
import pytest
from conftest import interrupt_cli
from edgeship import Budget, Prune, SearchSpace, TuneBudgetError, demo
from edgeship.benchmarks import Report
from edgeship.tune.sweep import Candidate, Trial, select

RUNS = dict(measure=edgeship.Measurement(runs=30, warmup=3), show_progress=False)
SPEC = demo.DIGITS_SPEC


def sweep(model, data, cache_dir, **kwargs):
    x_train, _, x_test, y_test = data
    options = dict(calibration=x_train, validation=(x_test, y_test), input_spec=SPEC, preprocess_calibration=True,
                   targets=["openvino-cpu", "onnxruntime-cpu"], budget=Budget(max_drop=1.0, latency_ms=50.0),
                   cache_dir=cache_dir, **RUNS)
    options.update(kwargs)
    return edgeship.tune(model, **options)


def snapshot(cache_dir: Path) -> dict[str, int]:
    """Every file under the cache with its modification time: what a re-run must leave untouched."""
    return {str(p.relative_to(cache_dir)): p.stat().st_mtime_ns for p in sorted(cache_dir.rglob("*")) if p.is_file()}


SPACE = SearchSpace(prune_ratios=(0.0, 0.5), precisions=("fp32", "int8"))


@pytest.fixture(scope="module")
def swept(digits_model, digits_data, tmp_path_factory):
    """One sweep: unpruned and half-pruned (no recovery: it loses most accuracy), FP32 and INT8, both CPU targets."""
    cache = tmp_path_factory.mktemp("tune-cache")
    out = tmp_path_factory.mktemp("tune-out") / "out"
    result = sweep(digits_model, digits_data, cache, space=SPACE, output=out)
    return result, cache, out


# -- the sweep and the choice ----------------------------------------------------------------------
def test_every_candidate_is_compiled_and_measured(swept, digits_data):
    result, cache, _ = swept
    labels = sorted(t.label for t in result.trials)
    assert labels == sorted(f"p{r:g} {t} {p}" for r in (0, 0.5) for t in ("openvino-cpu", "onnxruntime-cpu")
                            for p in ("fp32", "int8"))
    assert result.stats["compiled"] == result.stats["measured"] == 8 and result.stats["cached"] == 0
    for t in result.trials:
        assert t.ok, t.summary()
        assert t.row.samples == len(digits_data[3])
        assert t.p50_ms > 0 and 0 <= t.accuracy_pct <= 100
        manifest = t.bundle.manifest
        assert [(a["target"], a["precision"]) for a in manifest["artifacts"]] == [(t.candidate.target, t.candidate.base_precision)]
        assert (manifest["pruning"] is not None) == (t.candidate.prune_ratio > 0)
    records = sorted((cache / "trials").glob("*.json"))
    assert len(records) == 8
    assert {json.loads(r.read_text())["status"] for r in records} == {"ok"}


def test_drops_are_judged_against_the_unpruned_fp32_reference(swept):
    result, _, _ = swept
    ref = result.report.rows[0]
    assert ref.is_reference and ref.precision == "fp32" and ref.accuracy_pct > 90
    for t in result.trials:
        assert t.drop_pts == pytest.approx(ref.accuracy_pct - t.accuracy_pct)
        if t.candidate.prune_ratio == 0.5:  # half the channels gone, nothing recovered: far outside the budget
            assert t.drop_pts > 1.0
            assert any("drop" in n and "> budget" in n for n in t.notes)


def _tied_with_fastest(chosen: Trial, pool: list[Trial]) -> None:
    """``chosen`` is the fastest of ``pool`` or, within the fastest one's p50 interval, the least modified."""
    fastest = min(pool, key=lambda t: t.p50_ms)
    if chosen is fastest:
        return
    assert chosen.row.p50_ci_ms[0] <= fastest.row.p50_ci_ms[1]  # indistinguishable by measurement
    rank = {"fp32": 0, "fp16": 1, "int8+fallback": 2, "int8": 3}
    assert (rank[chosen.candidate.precision], chosen.candidate.prune_ratio) <= \
        (rank[fastest.candidate.precision], fastest.candidate.prune_ratio)


def test_choice_is_the_fastest_within_budget(swept):
    result, _, _ = swept
    best, budget = result.best, result.budget
    assert budget.meets(best.drop_pts, best.p50_ms)
    _, _, excluded = select(result.trials, budget)
    assert id(best) not in excluded
    eligible = [t for t in result.trials if budget.meets(t.drop_pts, t.p50_ms) and id(t) not in excluded]
    _tied_with_fastest(best, eligible)
    for target, t in result.best_by_target.items():
        _tied_with_fastest(t, [o for o in eligible if o.candidate.target == target])
    assert result.best.candidate.prune_ratio == 0
    assert any(n.startswith("chosen") for n in best.notes) and best.row.recommended


def test_a_noise_level_edge_does_not_pick_int8_over_fp32():
    """Measured p50s whose 95% intervals overlap are a tie: the least modified variant is chosen."""
    fp32 = _trial("onnxruntime-cpu", "fp32", 96.9, 0.070, ci=(0.066, 0.075))
    fallback = _trial("onnxruntime-cpu", "int8+fallback", 97.0, 0.068, ci=(0.064, 0.073))
    pruned = _trial("onnxruntime-cpu", "fp32", 96.5, 0.067, ratio=0.25, ci=(0.063, 0.072))
    best, _, _ = select([fallback, pruned, fp32], Budget(max_drop=1.0))
    assert best is fp32
    clearly_faster = _trial("onnxruntime-cpu", "int8", 96.8, 0.040, ci=(0.038, 0.042))
    best, _, _ = select([fallback, pruned, fp32, clearly_faster], Budget(max_drop=1.0))
    assert best is clearly_faster


def test_int8_slower_than_fp32_is_excluded_in_the_measured_sweep(swept):
    """Whatever this machine measured, every INT8 trial slower than the FP32 one beside it is marked and unchosen."""
    result, _, _ = swept
    by = {(t.candidate.target, t.candidate.prune_ratio, t.candidate.precision): t for t in result.trials}
    for (target, ratio, precision), t in by.items():
        if precision != "int8":
            continue
        slower = t.p50_ms > by[(target, ratio, "fp32")].p50_ms
        assert any("never chosen" in n for n in t.notes) == slower
        if slower:
            assert t is not result.best and result.best_by_target.get(target) is not t


def _trial(target: str, precision: str, accuracy: float, p50: float, ratio: float = 0.0,
           ci: tuple[float, float] | None = None) -> Trial:
    """A measured trial as plain numbers, for the selection rules alone."""
    from edgeship.benchmarks import Row

    row = Row(variant="", target=target, precision=precision, accuracy_pct=accuracy, drop_pts=97.0 - accuracy,
              agreement_pct=None, p50_ms=p50, p90_ms=p50, p99_ms=p50, throughput=1e3 / p50, size_mb=None,
              p50_ci_ms=ci)
    return Trial(candidate=Candidate(target, precision, ratio), status="ok", row=row)


def test_int8_slower_than_higher_precision_is_never_chosen_even_when_fp32_misses_the_accuracy_budget():
    fp32 = _trial("openvino-cpu", "fp32", 95.5, 1.0)  # 1.5 points down: outside the budget
    int8 = _trial("openvino-cpu", "int8", 96.5, 1.2)  # within the budget, but slower than FP32
    fallback = _trial("openvino-cpu", "int8+fallback", 96.8, 1.1)
    best, per_target, excluded = select([fp32, int8, fallback], Budget(max_drop=1.0))
    assert best is None and per_target == {}
    assert set(excluded) == {id(int8), id(fallback)}
    assert "slower than FP32" in excluded[id(int8)]
    faster_int8 = _trial("onnxruntime-cpu", "int8", 96.5, 0.5)
    best, per_target, _ = select([fp32, int8, fallback, faster_int8], Budget(max_drop=1.0))
    assert best is faster_int8 and per_target == {"onnxruntime-cpu": faster_int8}


def test_pareto_front_is_undominated(swept):
    result, _, _ = swept
    ok = [t for t in result.trials if t.ok]
    assert result.pareto

    def dominates(a: Trial, b: Trial) -> bool:
        return (a.accuracy_pct >= b.accuracy_pct and a.p50_ms <= b.p50_ms
                and (a.accuracy_pct > b.accuracy_pct or a.p50_ms < b.p50_ms))

    for t in ok:
        beaten = any(dominates(o, t) for o in ok if o is not t)
        assert (t in result.pareto) == (not beaten), t.summary()
    assert [t.p50_ms for t in result.pareto] == sorted(t.p50_ms for t in result.pareto)
    assert result.report.settings["pareto"] == [t.label for t in result.pareto]


def test_report_shows_every_trial_and_output_holds_the_chosen_bundle(swept, digits_data):
    result, _, out = swept
    report = Report.load(out / "report")
    assert report.complete
    assert len(report.rows) == 1 + len(result.trials) and report.rows[0].is_reference
    assert {f"{r.variant} {r.target} {r.precision}" for r in report.rows[1:]} == {t.label for t in result.trials}
    assert report.settings["chosen"] == result.best.label
    markdown = (out / "report" / "report.md").read_text()
    for t in result.trials:
        assert f"| {t.candidate.variant} | {t.candidate.target} | {t.candidate.precision} |" in markdown
    if (out / "report" / "report.html").exists():
        assert "Pareto" in (out / "report" / "report.html").read_text()
    best = edgeship.open_bundle(out / "best.edgeship")
    best.verify()
    assert best.variants == [(result.best.candidate.target, result.best.candidate.base_precision)]
    with best.load(threads=1) as rt:
        predicted = rt.run(digits_data[2][:64], preprocess=True)["output"].argmax(axis=1)
    assert np.mean(predicted == digits_data[3][:64]) > 0.85


# -- the cache -------------------------------------------------------------------------------------
def test_rerun_does_no_compile_and_no_measurement(swept, digits_model, digits_data):
    result, cache, _ = swept
    before = snapshot(cache)
    again = sweep(digits_model, digits_data, cache, space=SPACE)
    assert again.stats["compiled"] == 0 and again.stats["measured"] == 0 and again.stats["cached"] == 8
    assert snapshot(cache) == before  # nothing written: no bundle compiled, no record rewritten
    assert again.best.label == result.best.label
    assert [t.p50_ms for t in again.trials] == [t.p50_ms for t in result.trials]


def test_budget_nothing_meets_names_the_nearest_trials(swept, digits_model, digits_data, tmp_path):
    _, cache, _ = swept
    with pytest.raises(TuneBudgetError) as info:
        sweep(digits_model, digits_data, cache, space=SPACE, budget=Budget(max_drop=1.0, latency_ms=1e-4),
              output=tmp_path / "out")
    err = info.value
    assert isinstance(err, edgeship.CompileError)
    assert "no variant meets the budget (drop <= 1 pts, p50 <= 0.0001 ms" in str(err)
    assert 1 <= len(err.nearest) <= 3
    for t in err.nearest:
        assert t.label in str(err)
    # nearest first: a trial that misses only the latency limit beats one that also misses the accuracy budget
    assert err.nearest[0].candidate.prune_ratio == 0 and err.nearest[0].drop_pts <= 1.0
    saved = Report.load(tmp_path / "out" / "report")  # the report of every trial is kept for the reader
    assert len(saved.rows) == 9 and saved.settings["chosen"] is None
    assert not (tmp_path / "out" / "best.edgeship").exists()


def test_failed_trial_is_reported_not_dropped_and_its_failure_is_cached(digits_model, digits_data, tmp_path):
    """A pruning config naming a missing layer fails that trial's compile: reported, cached, the rest chosen from."""
    space = SearchSpace(prune_ratios=(0.0, 0.3), precisions=("fp32",), prune=Prune(ratio=0.3, protect=("no_such_layer",)))
    result = sweep(digits_model, digits_data, tmp_path, space=space, targets=["onnxruntime-cpu"])
    failed = [t for t in result.trials if not t.ok]
    assert [t.label for t in failed] == ["p0.3 onnxruntime-cpu fp32"]
    assert "ConfigError" in failed[0].error and "no_such_layer" in failed[0].error
    row = next(r for r in result.report.rows if r.variant == "p0.3")
    assert row.flags and "failed after 1 attempt" in row.flags[0] and np.isnan(row.p50_ms)
    assert result.best.label == "p0 onnxruntime-cpu fp32" and result.stats["failed"] == 1
    again = sweep(digits_model, digits_data, tmp_path, space=space, targets=["onnxruntime-cpu"])
    assert again.stats["cached"] == 2 and again.stats["compiled"] == 0
    assert [t.error for t in again.trials if not t.ok] == [failed[0].error]


def test_a_removed_bundle_is_compiled_again(digits_model, digits_data, tmp_path):
    space = SearchSpace(precisions=("fp32",))
    first = sweep(digits_model, digits_data, tmp_path, space=space, targets=["onnxruntime-cpu"])
    import shutil

    shutil.rmtree(first.best.bundle_path)
    again = sweep(digits_model, digits_data, tmp_path, space=space, targets=["onnxruntime-cpu"])
    assert again.stats["compiled"] == 1 and again.stats["cached"] == 0
    again.best.bundle.verify()


def test_ctrl_c_keeps_finished_trials_and_a_rerun_resumes(digits_model, digits_data, tmp_path):
    """`edgeship tune` in its own process, interrupted by a real SIGINT once the first trial is on disk: exit 130,
    finished trials cached, the report saved as incomplete, no best bundle; the re-run does only the rest.
    """
    from edgeship.build.export import export_onnx
    from edgeship.cli import main

    export_onnx(digits_model, SPEC, tmp_path / "digits.onnx")
    np.save(tmp_path / "calib.npy", digits_data[0][:200])
    np.savez(tmp_path / "val.npz", x=digits_data[2], y=digits_data[3])
    args = ["tune", str(tmp_path / "digits.onnx"), "--shape", "?,1,32,32", "--calib", str(tmp_path / "calib.npy"),
            "--val", str(tmp_path / "val.npz"), "--raw-calib", "--mean", "0.5", "--std", "0.5",
            "--precisions", "fp32,int8", "--threads", "1,2", "--runs", "30", "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out")]
    code, output, finished = interrupt_cli(args, tmp_path / "cache" / "trials", after=1)
    assert code == 130, output
    assert 1 <= finished < 8
    partial = Report.load(tmp_path / "out" / "report")
    assert partial.complete is False and len(partial.rows) == 1 + finished
    assert not (tmp_path / "out" / "best.edgeship").exists()
    assert main(args) == 0
    stats = json.loads((tmp_path / "out" / "report" / "report.json").read_text())["settings"]["stats"]
    assert stats["cached"] == finished and stats["measured"] == 8 - finished


def test_cli_tune_onnx_model_with_accuracy_aware_fallback(digits_model, digits_data, tmp_path, capsys):
    """`edgeship tune` on an .onnx file: FP32 and INT8 with FP fallback, the chosen bundle and report written."""
    from edgeship.build.export import export_onnx
    from edgeship.cli import main

    export_onnx(digits_model, SPEC, tmp_path / "digits.onnx")
    x_train, _, x_test, y_test = digits_data
    np.save(tmp_path / "calib.npy", x_train[:200])
    np.savez(tmp_path / "val.npz", x=x_test, y=y_test)
    code = main(["tune", str(tmp_path / "digits.onnx"), "--shape", "?,1,32,32", "--calib", str(tmp_path / "calib.npy"),
                 "--val", str(tmp_path / "val.npz"), "--raw-calib", "--scale", str(1 / 255), "--mean", "0.5",
                 "--std", "0.5", "--targets", "onnxruntime-cpu", "--precisions", "fp32,int8+fallback",
                 "--max-drop", "1", "--latency-ms", "50", "--runs", "30", "--cache", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "chosen: p0 onnxruntime-cpu" in printed
    report = Report.load(tmp_path / "out" / "report")
    fallback = next(r for r in report.rows if r.precision == "int8+fallback")
    assert fallback.drop_pts <= 1.0 + 1e-9  # held to the budget by the accuracy-aware quantizer
    manifest = edgeship.open_bundle(fallback.bundle).manifest
    record = manifest["artifacts"][0]["options"]["accuracy"]
    assert record["met"] and record["max_drop_pts"] == 1.0
    assert edgeship.open_bundle(tmp_path / "out" / "best.edgeship").variants[0][0] == "onnxruntime-cpu"
    code = main(["tune", str(tmp_path / "digits.onnx"), "--shape", "?,1,32,32", "--calib", str(tmp_path / "calib.npy"),
                 "--val", str(tmp_path / "val.npz"), "--raw-calib", "--scale", str(1 / 255), "--mean", "0.5",
                 "--std", "0.5", "--targets", "onnxruntime-cpu", "--precisions", "fp32,int8+fallback",
                 "--latency-ms", "0.0001", "--runs", "30", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "o2")])
    assert code == 1
    assert "no variant meets the budget" in capsys.readouterr().err


def test_cli_tune_sweeps_runtime_options(digits_model, digits_data, tmp_path, capsys):
    from edgeship.build.export import export_onnx
    from edgeship.cli import main

    export_onnx(digits_model, SPEC, tmp_path / "digits.onnx")
    np.save(tmp_path / "calib.npy", digits_data[0][:100])
    np.savez(tmp_path / "val.npz", x=digits_data[2][:200], y=digits_data[3][:200])
    base = ["tune", str(tmp_path / "digits.onnx"), "--shape", "?,1,32,32", "--calib", str(tmp_path / "calib.npy"),
            "--val", str(tmp_path / "val.npz"), "--raw-calib", "--mean", "0.5", "--std", "0.5",
            "--targets", "openvino-cpu", "--precisions", "fp32", "--runs", "20", "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out")]
    code = main(base + ["--option", "openvino-cpu:inference_precision=f32,bf16", "--option", "openvino-cpu:num_streams=1"])
    assert code == 0, capsys.readouterr()
    variants = [r.variant for r in Report.load(tmp_path / "out" / "report").rows if not r.is_reference]
    assert variants == ["p0-inference_precision=f32-num_streams=1", "p0-inference_precision=bf16-num_streams=1"]
    capsys.readouterr()
    assert main(base + ["--option", "onnxruntime-cpu:num_streams=2"]) == 2
    assert "onnxruntime-cpu has no runtime option 'num_streams'" in capsys.readouterr().err


# -- the transfer check and bad input -------------------------------------------------------------------
def test_bundle_bytes_are_checked_by_sha256_before_they_are_cached(digits_bundle, tmp_path):
    from edgeship.bundle.archive import pack_bytes
    from edgeship.tune.cache import TrialCache

    cache = TrialCache(tmp_path)
    data, sha = pack_bytes(digits_bundle.path)
    with pytest.raises(edgeship.BundleIntegrityError, match="SHA-256"):
        cache.store_bundle_archive("k1", data[:-1] + bytes([data[-1] ^ 1]), sha)
    assert not cache.has_bundle("k1")
    stored = cache.store_bundle_archive("k1", data, sha)
    assert cache.has_bundle("k1")
    edgeship.open_bundle(stored).verify()


@pytest.mark.parametrize("make,match", [
    (lambda: Budget(max_drop=-1), "max_drop"),
    (lambda: Budget(latency_ms=0), "latency_ms"),
    (lambda: SearchSpace(precisions=("int4",)), "precisions"),
    (lambda: SearchSpace(prune_ratios=(1.0,)), "prune_ratios"),
    (lambda: SearchSpace(threads=(0,)), "threads"),
    (lambda: SearchSpace(threads={"openvino-cpu": ("two",)}), "threads"),
    (lambda: SearchSpace(options={"onnxruntime-cpu": ({"inference_precision": "bf16"},)}),
     "onnxruntime-cpu has no runtime option 'inference_precision'; it accepts: threads"),
    (lambda: SearchSpace(options={"openvino-cpu": ({"inference_precision": "int4"},)}), "f32/bf16/f16"),
    (lambda: SearchSpace(options={"openvino-cpu": ({"threads": 2},)}), "SearchSpace.threads"),
    (lambda: SearchSpace(options={"openvino-cpu": ()}), "no choice"),
    (lambda: SearchSpace(options={"tpu": ({},)}), "tpu"),
])
def test_bad_config_is_refused(make, match):
    with pytest.raises(edgeship.ConfigError, match=match):
        make()


def test_runtime_options_are_swept_measured_and_named(digits_model, digits_data, tmp_path):
    """OpenVINO's inference precision hint is a runtime option: one compiled bundle, measured once per choice."""
    space = SearchSpace(precisions=("fp32",), options={"openvino-cpu": ({}, {"inference_precision": "bf16"},
                                                                        {"performance_hint": "THROUGHPUT", "num_streams": 1})})
    result = sweep(digits_model, digits_data, tmp_path, space=space, targets=["openvino-cpu"])
    labels = [t.label for t in result.trials]
    assert labels == ["p0 openvino-cpu fp32", "p0-inference_precision=bf16 openvino-cpu fp32",
                      "p0-num_streams=1-performance_hint=THROUGHPUT openvino-cpu fp32"]
    assert all(t.ok for t in result.trials)
    assert result.stats["compiled"] == 1 and result.stats["measured"] == 3  # options do not recompile
    assert {t.bundle_path for t in result.trials} == {result.trials[0].bundle_path}
    rows = {r.variant: r for r in result.report.rows if not r.is_reference}
    assert rows["p0-inference_precision=bf16"].options == {"inference_precision": "bf16"}
    assert rows["p0"].options is None
    saved = Report.load(result.report.save(tmp_path / "report") / "report.json")
    assert [r.options for r in saved.rows] == [r.options for r in result.report.rows]


def test_bad_calls_are_refused_before_any_work(digits_model, digits_data, small_onnx, tmp_path):
    x, y = digits_data[2], digits_data[3]
    base = dict(calibration=digits_data[0], validation=(x, y), input_spec=SPEC, cache_dir=tmp_path, show_progress=False)
    with pytest.raises(edgeship.ConfigError, match="executor"):
        edgeship.tune(digits_model, **{**base, "executor": "spark"})
    with pytest.raises(edgeship.UnknownTargetError, match="registered targets"):
        edgeship.tune(digits_model, **{**base, "targets": ["tpu"]})
    with pytest.raises(edgeship.ConfigError, match=r"\(inputs, labels\)"):
        edgeship.tune(digits_model, **{**base, "validation": (x, None)})
    with pytest.raises(edgeship.ConfigError, match="as many labels"):
        edgeship.tune(digits_model, **{**base, "validation": (x, y[:-1])})
    with pytest.raises(edgeship.ConfigError, match="ONNX file cannot be pruned"):
        edgeship.tune(str(small_onnx), **{**base, "space": SearchSpace(prune_ratios=(0.0, 0.3))})
    with pytest.raises(edgeship.ConfigError, match="address and timeout_s are the Ray cluster's"):
        edgeship.tune(digits_model, **{**base, "executor": edgeship.Executor("local", address="auto")})
    with pytest.raises(edgeship.ConfigError, match="executor must be 'local', 'ray' or an edgeship.Executor"):
        edgeship.tune(digits_model, **{**base, "executor": 3})
    with pytest.raises(edgeship.ConfigError, match="tune searches threads and runtime options"):
        edgeship.tune(digits_model, **{**base, "measure": edgeship.Measurement(threads=2)})
    assert not (tmp_path / "trials").exists()  # refused before the cache was even created


def test_tune_budget_error_is_a_compile_error():
    assert issubclass(edgeship.TuneBudgetError, edgeship.CompileError)
    assert issubclass(edgeship.TuneBudgetError, edgeship.EdgeshipError)
