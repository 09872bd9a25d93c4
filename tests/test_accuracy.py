"""Accuracy-aware INT8: a budget on the drop, met by returning the most harmful layers to FP.

The model under test is the trained digits CNN with two activation channels made 500x larger and the
next convolution's weights divided by 500: exactly the same function in FP32 (ReLU and max-pool
commute with a positive scale), but per-tensor activation quantization of that tensor now wipes out
every other channel — the outlier-channel failure of real INT8 deployments.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import edgeship
import numpy as np
import pytest
from edgeship import AccuracyBudgetError, ConfigError, Recipe
from edgeship.build.accuracy import AccuracyControl, fp_fallback
from edgeship.demo.digits import DIGITS_SPEC

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def outlier_model(digits_model):
    model = copy.deepcopy(digits_model)
    with torch.no_grad():
        bn, conv = model[1], model[4]
        for channel in (0, 3):
            bn.weight[channel] *= 500
            bn.bias[channel] *= 500
            conv.weight[:, channel] /= 500
    return model.eval()


@pytest.fixture(scope="module")
def split(digits_data):
    """Validation half (drives the budget) and held-out half (judges it)."""
    x_train, _, x_test, y_test = digits_data
    half = len(x_test) // 2
    return x_train, (x_test[:half], y_test[:half]), (x_test[half:], y_test[half:])


def _top1(rt, x, y) -> float:
    return 100.0 * float((rt.run(x, preprocess=True)["output"].argmax(1) == y).mean())


def test_outlier_model_is_the_same_function_in_fp32(outlier_model, digits_model, split):
    x = torch.from_numpy(DIGITS_SPEC.apply_preprocess(split[2][0]))
    with torch.no_grad():
        np.testing.assert_allclose(outlier_model(x).numpy(), digits_model(x).numpy(), rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def budget_bundles(outlier_model, split, tmp_path_factory):
    x_train, validation, _ = split
    out = tmp_path_factory.mktemp("accuracy")
    common = dict(input_spec=DIGITS_SPEC, calibration=x_train, preprocess_calibration=True, precision="int8",
                  targets=["openvino-cpu", "onnxruntime-cpu"], show_progress=False)
    plain = edgeship.compress(outlier_model, output=out / "plain.edgeship", **common)
    budget = edgeship.compress(outlier_model, output=out / "budget.edgeship", validation=validation,
                               recipe=Recipe(max_drop=0.5), **common)
    return plain, budget


@pytest.mark.slow
@pytest.mark.parametrize("target", ["openvino-cpu", "onnxruntime-cpu"])
def test_budget_that_plain_int8_misses_is_met_with_layers_in_fp(budget_bundles, outlier_model, split, target):
    plain, budget = budget_bundles
    x_test, y_test = split[2]
    with torch.no_grad():
        fp32 = 100.0 * float((outlier_model(torch.from_numpy(DIGITS_SPEC.apply_preprocess(x_test))).argmax(1).numpy()
                              == y_test).mean())
    with plain.load(target) as rt:
        plain_acc = _top1(rt, x_test, y_test)
    with budget.load(target) as rt:
        budget_acc = _top1(rt, x_test, y_test)
    assert fp32 - plain_acc > 20, (fp32, plain_acc)      # plain INT8 is broken by the outlier channels
    assert fp32 - budget_acc <= 1.0, (fp32, budget_acc)   # on held-out data the budgeted artifact holds
    record = budget.artifact(target, "int8")["options"]["accuracy"]
    assert record["met"] and record["drop_pts"] <= 0.5
    assert 1 <= len(record["fp_layers"]) < 4  # a few layers in FP, not the whole network
    assert plain.artifact(target, "int8")["options"].get("accuracy") is None


@pytest.mark.slow
def test_onnxruntime_records_its_ranking_and_trials(budget_bundles):
    record = budget_bundles[1].artifact("onnxruntime-cpu", "int8")["options"]["accuracy"]
    ranked = [r["layer"] for r in record["sensitivity"]]
    assert set(ranked[:2]) == {"/0/Conv", "/4/Conv"}  # the outlier tensor sits between these two convs
    assert record["fp_layers"] == ranked[: len(record["fp_layers"])]
    assert record["full_int8_drop_pts"] > 20
    assert record["trials"][-1]["drop_pts"] <= 0.5


@pytest.mark.slow
def test_sensitivity_ranks_the_outlier_layers_first(budget_bundles, split):
    x_train, validation, _ = split
    rows = edgeship.sensitivity(budget_bundles[0].path, x_train, validation, raw_images=True, show_progress=False)
    assert [r["layer"] for r in rows[:2]] in (["/0/Conv", "/4/Conv"], ["/4/Conv", "/0/Conv"])
    assert rows[0]["drop_pts"] > 20 and rows[-1]["drop_pts"] < 2
    assert rows[2]["output_error"] < rows[1]["output_error"]


def test_budget_needs_validation_and_int8(digits_model, digits_data, tmp_path):
    x_train, y_train, x_test, y_test = digits_data
    common = dict(input_spec=DIGITS_SPEC, calibration=x_train, preprocess_calibration=True,
                  targets=["onnxruntime-cpu"], show_progress=False, output=tmp_path / "x.edgeship")
    with pytest.raises(ConfigError, match="needs validation"):
        edgeship.compress(digits_model, precision="int8", recipe=Recipe(max_drop=1.0), **common)
    with pytest.raises(ConfigError, match="add 'int8'"):
        edgeship.compress(digits_model, precision="fp32", recipe=Recipe(max_drop=1.0),
                          validation=(x_test, y_test), **common)
    with pytest.raises(ConfigError, match="set recipe=Recipe"):
        edgeship.compress(digits_model, precision="int8", validation=(x_test, y_test), **common)
    with pytest.raises(ConfigError, match="max_drop"):
        Recipe(max_drop=-1)
    assert not (tmp_path / "x.edgeship").exists()


def _control(reference: float, max_drop: float) -> AccuracyControl:
    labels = np.arange(100) % 10
    control = AccuracyControl(inputs=np.zeros((100, 1), np.float32), labels=labels, max_drop=max_drop, batch_size=100)
    control.reference = reference
    return control


def _predictor_with_accuracy(accuracy: float):
    """A predictor whose top-1 on _control's labels is exactly ``accuracy``."""
    def predict(x: np.ndarray) -> np.ndarray:
        labels = np.arange(100) % 10
        right = int(round(accuracy * 100))
        scores = np.zeros((100, 10), np.float32)
        scores[np.arange(100), labels] = 1.0
        scores[right:, :] = 0.0
        scores[np.arange(right, 100), (labels[right:] + 1) % 10] = 1.0
        return scores[: len(x)]
    return predict


def test_fp_fallback_finds_the_least_layers_in_fp():
    # each layer left in FP (in ranking order) wins back 10 points from 50%
    control = _control(reference=1.0, max_drop=25.0)
    fp, value, trials = fp_fallback([f"L{i}" for i in range(8)],
                                    lambda excluded: _predictor_with_accuracy(0.5 + 0.1 * len(excluded)), control)
    assert fp == ["L0", "L1", "L2"] and value == pytest.approx(0.8)
    assert [t["fp_layers"] for t in trials] == [1, 2, 4, 3]  # doubling, then bisection


def test_fp_fallback_says_when_no_mix_meets_the_budget():
    control = _control(reference=1.0, max_drop=1.0)
    with pytest.raises(AccuracyBudgetError, match="best found loses 20.00 points") as info:
        fp_fallback(["a", "b", "c"], lambda excluded: _predictor_with_accuracy(0.5 + 0.1 * len(excluded)), control)
    assert [t["fp_layers"] for t in info.value.trials] == [1, 2, 3]


@pytest.mark.slow
def test_cli_sensitivity_and_max_drop(outlier_model, split, tmp_path):
    x_train, validation, _ = split
    onnx_path = tmp_path / "outlier.onnx"
    from edgeship.build.export import export_onnx

    export_onnx(outlier_model, DIGITS_SPEC, onnx_path)
    np.save(tmp_path / "calib.npy", DIGITS_SPEC.apply_preprocess(x_train[:200]))
    np.savez(tmp_path / "val.npz", x=DIGITS_SPEC.apply_preprocess(validation[0]), y=validation[1])
    cli = [sys.executable, "-m", "edgeship"]
    run = subprocess.run(cli + ["compress", str(onnx_path), "--shape", "?,1,32,32", "--calib", str(tmp_path / "calib.npy"),
                                "--targets", "onnxruntime-cpu", "--max-drop", "0.5", "--val", str(tmp_path / "val.npz"),
                                "-o", str(tmp_path / "cli.edgeship")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    record = edgeship.open_bundle(tmp_path / "cli.edgeship").artifact("onnxruntime-cpu")["options"]["accuracy"]
    assert record["met"] and record["fp_layers"]
    run = subprocess.run(cli + ["sensitivity", str(tmp_path / "cli.edgeship"), "--calib", str(tmp_path / "calib.npy"),
                                "--data", str(tmp_path / "val.npz"), "--out", str(tmp_path / "sens.json")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "/4/Conv" in run.stdout and (tmp_path / "sens.json").is_file()
    bad = subprocess.run(cli + ["compress", str(onnx_path), "--shape", "?,1,32,32", "--calib", str(tmp_path / "calib.npy"),
                                "--max-drop", "0.5", "--val", str(tmp_path / "calib.npy"), "-o", str(tmp_path / "b.edgeship")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "'y'" in bad.stderr
