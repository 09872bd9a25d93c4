"""edgeship.tune and edgeship.benchmark on a real local Ray cluster: the same choice (and the same rows) as
the local executor, bundles through the object store, and workers that die are retried, then reported.

Named to run after test_tune.py: its real in-process SIGINT test segfaults a process that has run a Ray
driver before (reproduced with this module first).

The cluster advertises a custom resource per target, as device boxes joining a farm would. Worker deaths
are real: a model whose pruned copy ends its process with ``os._exit`` while the worker compiles it.
"""

from __future__ import annotations

import os
import sys
import time

import edgeship
import pytest
from conftest import interrupt_cli
from edgeship import Budget, SearchSpace, demo

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

RUNS = dict(measure=edgeship.Measurement(runs=30, warmup=3), show_progress=False)


@pytest.fixture(scope="module")
def ray_cluster():
    """A two-CPU local cluster with two slots of each CPU target; shut down after the module."""
    if ray.is_initialized():
        ray.shutdown()
    # this module's helpers travel by value: the workers cannot import the test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, resources={"openvino-cpu": 2, "onnxruntime-cpu": 2}, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def sweep(model, data, cache_dir, **kwargs):
    x_train, _, x_test, y_test = data
    options = dict(calibration=x_train, validation=(x_test, y_test), input_spec=demo.DIGITS_SPEC,
                   preprocess_calibration=True, budget=Budget(max_drop=1.0), cache_dir=cache_dir, **RUNS)
    options.update(kwargs)
    return edgeship.tune(model, **options)


# FP32 unpruned and half-pruned on both targets, OpenVINO with one and two threads: 6 trials, 4 compiles,
# so two OpenVINO trials measure a bundle another task compiled and sent through the object store.
SPACE = SearchSpace(prune_ratios=(0.0, 0.5), precisions=("fp32",), threads={"openvino-cpu": (1, 2)})


@pytest.mark.slow
def test_ray_sweep_measures_the_same_trials_as_local(ray_cluster, digits_model, digits_data, tmp_path):
    """The same candidates, the same accuracies and the same selection rule; which one is fastest is a
    latency measured twice on shared cores, so the choice is checked against the rule, not the local run."""
    from edgeship.tune.sweep import select

    targets = ["openvino-cpu", "onnxruntime-cpu"]
    local = sweep(digits_model, digits_data, tmp_path / "local", space=SPACE, targets=targets)
    remote = sweep(digits_model, digits_data, tmp_path / "ray", space=SPACE, targets=targets, executor="ray")
    assert sorted(t.label for t in remote.trials) == sorted(t.label for t in local.trials)
    assert remote.best is not None and remote.best.label == select(remote.trials, Budget(max_drop=1.0))[0].label
    assert remote.stats["compiled"] == 4 and remote.stats["measured"] == 6
    assert {t.label: t.accuracy_pct for t in remote.trials} == {t.label: t.accuracy_pct for t in local.trials}
    info = {t["label"]: t for t in remote.report.settings["trials"]}
    assert all(t["pid"] != os.getpid() for t in info.values())  # measured in Ray workers, not here
    for t in remote.trials:  # every bundle arrived, was checked and unpacked into this machine's cache
        assert t.bundle_path.parent == tmp_path / "ray" / "bundles"
        t.bundle.verify()
    rerun = sweep(digits_model, digits_data, tmp_path / "ray", space=SPACE, targets=targets, executor="ray")
    assert rerun.stats["cached"] == 6 and rerun.stats["compiled"] == 0


class DiesWhenPruned(torch.nn.Module):
    """The digits CNN, whose forward ends the process once it is pruned (fewer channels in its first conv):
    every time, or — given a marker file — only the first time (the marker is created atomically); with
    ``hang`` it sleeps instead, as a stuck native call would."""

    def __init__(self, inner: torch.nn.Module, marker: str | None = None, hang: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self.width = inner[0].out_channels
        self.marker = marker
        self.hang = hang

    def forward(self, x):
        if self.inner[0].out_channels != self.width:
            if self.hang:
                time.sleep(3600)
            if self.marker is None:
                os._exit(1)
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                os._exit(1)  # the first attempt dies; the marker lets the retry through
            except FileExistsError:
                pass
        return self.inner(x)


KILL_SPACE = SearchSpace(prune_ratios=(0.0, 0.25), precisions=("fp32",))


@pytest.mark.slow
def test_killed_worker_is_retried_and_the_trial_succeeds(ray_cluster, digits_model, digits_data, tmp_path):
    import copy

    marker = tmp_path / "died-once"
    model = DiesWhenPruned(copy.deepcopy(digits_model), str(marker)).eval()
    result = sweep(model, digits_data, tmp_path / "cache", space=KILL_SPACE, targets=["onnxruntime-cpu"],
                   executor=edgeship.Executor("ray", retries=2))
    assert marker.exists()  # a worker really died
    pruned = next(t for t in result.trials if t.candidate.prune_ratio > 0)
    assert pruned.ok and pruned.attempts == 2
    assert result.stats["failed"] == 0 and result.stats["retried"] == 1


@pytest.mark.slow
def test_trial_whose_worker_dies_every_time_is_reported_failed(ray_cluster, digits_model, digits_data, tmp_path):
    import copy

    model = DiesWhenPruned(copy.deepcopy(digits_model)).eval()
    result = sweep(model, digits_data, tmp_path / "cache", space=KILL_SPACE, targets=["onnxruntime-cpu"],
                   executor=edgeship.Executor("ray", retries=1))
    pruned = next(t for t in result.trials if t.candidate.prune_ratio > 0)
    assert not pruned.ok and pruned.attempts == 2
    assert "failed on all 2 attempts" in pruned.error and "worker died" in pruned.error
    row = next(r for r in result.report.rows if r.variant == "p0.25")
    assert "failed after 2 attempts" in row.flags[0]
    assert any("p0.25 onnxruntime-cpu fp32 failed" in w for w in result.report.warnings)
    assert result.best.label == "p0 onnxruntime-cpu fp32"
    # a worker death is not cached as the trial's outcome: the next sweep tries it again
    assert len(list((tmp_path / "cache" / "trials").glob("*.json"))) == 1


@pytest.mark.slow
def test_trial_past_its_timeout_is_ended_and_reported(ray_cluster, digits_model, digits_data, tmp_path):
    import copy

    model = DiesWhenPruned(copy.deepcopy(digits_model), hang=True).eval()
    result = sweep(model, digits_data, tmp_path / "cache", space=KILL_SPACE, targets=["onnxruntime-cpu"],
                   executor=edgeship.Executor("ray", retries=0, timeout_s=15))
    pruned = next(t for t in result.trials if t.candidate.prune_ratio > 0)
    assert not pruned.ok and pruned.attempts == 1
    assert "watchdog ended it after the 15 s trial timeout" in pruned.error
    assert result.best.label == "p0 onnxruntime-cpu fp32"


def test_missing_target_resource_is_a_clear_error(ray_cluster, digits_model, digits_data, tmp_path):
    with pytest.raises(edgeship.ConfigError, match=r"advertises the resources \['tensorrt-jetson'\]"):
        sweep(digits_model, digits_data, tmp_path, space=SearchSpace(precisions=("fp32",)),
              targets=["onnxruntime-cpu", "tensorrt-jetson"], executor="ray")


# -- benchmark on Ray ----------------------------------------------------------------------------------
def dies_once(marker: str):
    """A top-1 metric whose first call in any process ends that process (``marker`` lets later calls through);
    without a marker every call does."""
    from edgeship.benchmarks import top1

    def metric(predictions, labels):
        if marker is None:
            os._exit(1)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os._exit(1)
        except FileExistsError:
            return top1(predictions, labels)
    return metric


def _bench_data(digits_data):
    return demo.DIGITS_SPEC.apply_preprocess(digits_data[2][:200]), digits_data[3][:200]


@pytest.mark.slow
def test_ray_benchmark_gives_the_rows_of_a_local_one(ray_cluster, digits_bundle, digits_data, tmp_path):
    import socket

    data = _bench_data(digits_data)
    local = edgeship.benchmark(digits_bundle, data, show_progress=False,
                               measure=edgeship.Measurement(runs=20, warmup=2))
    remote = edgeship.benchmark(digits_bundle, data, show_progress=False, save_to=tmp_path / "report",
                                measure=edgeship.Measurement(runs=20, warmup=2, options={"openvino-cpu": {"inference_precision": "f32"}}),
                                executor=edgeship.Executor("ray", address="auto"))
    assert remote.complete and not [w for w in remote.warnings if "failed" in w]
    assert [r.key for r in remote.rows] == [r.key for r in local.rows]  # one reference, then every artifact
    assert {r.key: r.accuracy_pct for r in remote.rows} == {r.key: r.accuracy_pct for r in local.rows}
    assert all(r.host == socket.gethostname() and r.bundle == str(digits_bundle.path.resolve()) for r in remote.rows)
    assert all(r.options == {"inference_precision": "f32"} for r in remote.rows if r.target == "openvino-cpu")
    assert remote.environment["executor"] == "ray" and list(remote.environment["hosts"]) == [socket.gethostname()]
    from edgeship.benchmarks import Report

    saved = Report.load(tmp_path / "report")
    assert saved.complete and [r.key for r in saved.rows] == [r.key for r in remote.rows]


@pytest.mark.slow
def test_ray_benchmark_retries_a_dead_worker_then_reports_the_failure(ray_cluster, digits_bundle, digits_data, tmp_path):
    data = _bench_data(digits_data)
    marker = tmp_path / "died-once"
    retried = edgeship.benchmark(digits_bundle, data, metric=dies_once(str(marker)), targets=["onnxruntime-cpu"],
                                 show_progress=False, measure=edgeship.Measurement(runs=5, warmup=1, ci_resamples=0),
                                 executor=edgeship.Executor("ray", address="auto"))
    assert marker.exists() and retried.complete  # a worker really died; the retry measured the rows
    assert {r.target for r in retried.rows} == {"onnxruntime-cpu"} and len(retried.rows) == 3
    failed = edgeship.benchmark(digits_bundle, data, metric=dies_once(None), targets=["onnxruntime-cpu"],
                                show_progress=False, measure=edgeship.Measurement(runs=5, warmup=1, ci_resamples=0),
                                executor=edgeship.Executor("ray", address="auto", retries=1))
    assert not failed.complete and failed.rows == []
    assert "digits.edgeship on onnxruntime-cpu: failed after 2 attempts: the worker died" in failed.warnings[0]
    from edgeship.benchmarks import Gates

    assert not failed.check(Gates()).passed  # an incomplete report never passes a release gate


@pytest.mark.slow
def test_cli_bench_on_ray_with_a_runtime_option(ray_cluster, digits_bundle, digits_data, tmp_path, capsys):
    import json

    import numpy as np
    from edgeship.cli import main

    np.savez(tmp_path / "val.npz", x=digits_data[2][:100], y=digits_data[3][:100])
    args = ["bench", str(digits_bundle.path), "--data", str(tmp_path / "val.npz"), "--preprocess", "--runs", "10",
            "--targets", "openvino-cpu", "--option", "openvino-cpu:num_streams=1", "--ray", "auto",
            "--report", str(tmp_path / "report")]
    assert main(args) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["complete"] and report["environment"]["executor"] == "ray"
    measured = [r for r in report["rows"] if not r["is_reference"]]
    assert {r["precision"] for r in measured} == {"fp32", "int8"} and all(r["target"] == "openvino-cpu" for r in measured)
    assert all(r["options"] == {"num_streams": 1} for r in measured)
    capsys.readouterr()
    assert main(args[:-4] + ["--option", "openvino-cpu:num_streams=1,2"]) == 2
    assert "one value per runtime option" in capsys.readouterr().err
    assert main(args[:-4] + ["--option", "openvino-cpu:num_streams"]) == 2
    assert "TARGET:NAME=VALUE" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_on_a_ray_sweep_keeps_finished_trials(digits_model, digits_data, tmp_path):
    """`edgeship tune --ray local` in its own process, interrupted by a real SIGINT once two trials are on disk:
    exit 130, the finished trials cached, the report saved as incomplete, the re-run resumes."""
    import json

    import numpy as np
    from edgeship.build.export import export_onnx

    export_onnx(digits_model, demo.DIGITS_SPEC, tmp_path / "digits.onnx")
    np.save(tmp_path / "calib.npy", digits_data[0][:200])
    np.savez(tmp_path / "val.npz", x=digits_data[2], y=digits_data[3])
    args = ["tune", str(tmp_path / "digits.onnx"), "--shape", "?,1,32,32",
            "--calib", str(tmp_path / "calib.npy"), "--val", str(tmp_path / "val.npz"), "--raw-calib",
            "--mean", "0.5", "--std", "0.5", "--precisions", "fp32,fp16,int8", "--threads", "1,2", "--runs", "30",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    code, output, finished = interrupt_cli([*args, "--ray", "local"], tmp_path / "cache" / "trials", after=2)
    assert code == 130, output
    assert "interrupted" in output
    assert 2 <= finished < 10
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert report["complete"] is False and len(report["rows"]) == 1 + report["settings"]["stats"]["finished"]
    from edgeship.cli import main

    assert main(args) == 0  # resumed locally from the same cache: only the rest is measured
    stats = json.loads((tmp_path / "out" / "report" / "report.json").read_text())["settings"]["stats"]
    assert stats["cached"] == finished and stats["measured"] == 10 - finished
