"""Quantization-aware training: Recipe(qat=QAT(...)), label-free by default, compiled by each target's own INT8.

The model PTQ cannot quantize well is the pinned digits CNN with one outlier channel per block: channel 0 of each
batch norm scaled by OUTLIER and the next layer's weights for it divided by it — the same function in FP32 (checked),
but every per-tensor activation range is now OUTLIER times wider than the other channels need, the classic reason
post-training INT8 loses points on trained networks.
"""

from __future__ import annotations

import edgeship
import numpy as np
import pytest
from edgeship import QAT, ConfigError, Recipe, demo

from edgeship.benchmarks.suites.qat import outlier_channels

from conftest import SMALL_SPEC

torch = pytest.importorskip("torch")
pytest.importorskip("nncf")

OUTLIER = 30.0


def _top1(bundle, target, precision, x, y) -> float:
    with edgeship.load(bundle.path, target=target, precision=precision) as rt:
        out = np.concatenate([next(iter(rt.run(x[i : i + 128]).values())) for i in range(0, len(x), 128)])
    return 100.0 * float((out.argmax(1) == y).mean())


def test_qat_config_is_checked_and_round_trips_through_the_recipe():
    with pytest.raises(ConfigError, match="QAT.epochs"):
        QAT(epochs=0)
    with pytest.raises(ConfigError, match="QAT.lr"):
        QAT(lr=2.0)
    with pytest.raises(ConfigError, match="QAT.loss"):
        QAT(loss="l1")
    with pytest.raises(ConfigError, match="Recipe.qat must be an edgeship.QAT"):
        Recipe(qat={"epochs": 3})
    recipe = Recipe.from_dict({"max_drop": 1.0, "qat": {"epochs": 3, "lr": 5e-4}})
    assert recipe.qat == QAT(epochs=3, lr=5e-4)
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    with pytest.raises(ConfigError, match="unknown qat keys"):
        Recipe.from_dict({"qat": {"epoch": 3}})


def test_qat_needs_int8_and_the_torch_model(digits_model, small_onnx, tmp_path):
    with pytest.raises(ConfigError, match="add 'int8'"):
        edgeship.compress(digits_model, input_spec=demo.DIGITS_SPEC, precision="fp32", recipe=Recipe(qat=QAT()),
                          output=tmp_path / "a.edgeship", show_progress=False)
    with pytest.raises(ConfigError, match="needs the torch model"):
        edgeship.compress(small_onnx, input_spec=SMALL_SPEC, precision="int8",
                          recipe=Recipe(qat=QAT()), calibration=np.zeros((4, *SMALL_SPEC.shape[1:]), np.float32),
                          output=tmp_path / "b.edgeship", show_progress=False)
    with pytest.raises(ConfigError, match="qat_train is the training loop"):
        edgeship.compress(digits_model, input_spec=demo.DIGITS_SPEC, precision="int8", qat_train=lambda m: m,
                          output=tmp_path / "c.edgeship", show_progress=False)
    assert not any(tmp_path.glob("*.edgeship"))


@pytest.fixture(scope="module")
def outlier_model(digits_model, digits_data):
    model = outlier_channels(digits_model, OUTLIER)
    x = demo.DIGITS_SPEC.apply_preprocess(digits_data[2])
    with torch.no_grad():
        a, b = digits_model(torch.from_numpy(x)), model(torch.from_numpy(x))
    assert float((a - b).abs().max()) < 1e-4  # the same function in FP32
    return model


def _run(bundle, target, x):
    with edgeship.load(bundle.path, target=target, precision="int8") as rt:
        return np.concatenate([next(iter(rt.run(x[i : i + 128]).values())) for i in range(0, len(x), 128)])


@pytest.mark.slow
def test_qat_recovers_what_post_training_int8_loses_on_both_cpu_targets(outlier_model, digits_data, tmp_path):
    """Post-training INT8 of the outlier-channel CNN loses > 1.5 points on both targets; the QAT graph (label-free,
    5 epochs) loses fewer, runs the same numerics on OpenVINO (FakeQuantize) and ONNX Runtime (U8U8 Q/DQ), and passes
    the self-test against the original FP32 graph."""
    x_train, _, x_test, y_test = digits_data
    x = demo.DIGITS_SPEC.apply_preprocess(x_test)
    common = dict(input_spec=demo.DIGITS_SPEC, calibration=x_train, preprocess_calibration=True, show_progress=False)
    ptq = edgeship.compress(outlier_model, precision=["fp32", "int8"], output=tmp_path / "ptq.edgeship", **common)
    qat = edgeship.compress(outlier_model, precision=["int8"], output=tmp_path / "qat.edgeship",
                            recipe=Recipe(qat=QAT(epochs=5, lr=1e-3)), **common)
    fp32 = _top1(ptq, "onnxruntime-cpu", "fp32", x, y_test)
    assert fp32 > 95
    section = qat.manifest["qat"]
    assert section["graph"] == "qat.onnx" and "qat.onnx" in qat.manifest["source"]["files"]
    assert section["batch_norm_folded"] and section["overflow_fix"] == "enable"  # the default fleet may lack VNNI
    assert section["fake_quant_error_after"] < section["fake_quant_error_before"]
    assert section["int8_from"] == {"openvino-cpu": "qat", "onnxruntime-cpu": "qat"}
    outputs = {}
    for target in ("openvino-cpu", "onnxruntime-cpu"):
        before, after = _top1(ptq, target, "int8", x, y_test), _top1(qat, target, "int8", x, y_test)
        assert fp32 - before > 1.5, (target, fp32, before)  # the case QAT exists for
        assert after >= before + 3 * 100 / len(x), (target, before, after)  # >= 3 more test images right
        artifact = qat.artifact(target, "int8")
        assert artifact["options"]["int8_from"] == "qat" and artifact["selftest"]["passed"], artifact["selftest"]
        outputs[target] = _run(qat, target, x)
    assert qat.artifact("onnxruntime-cpu", "int8")["options"]["int8_flavour"] == "u8u8-qat"
    agreement = float((outputs["openvino-cpu"].argmax(1) == outputs["onnxruntime-cpu"].argmax(1)).mean())
    assert agreement >= 0.99, agreement
    assert all(r.passed for r in qat.verify_outputs())


@pytest.mark.slow
def test_with_a_budget_qat_is_tried_after_fp_fallback_and_the_fewer_fp_layers_win(outlier_model, digits_data,
                                                                                   tmp_path):
    """max_drop 1.5: post-training INT8 needs FP layers to meet it; the QAT graph meets it with none, so it ships,
    and the artifact records both results."""
    x_train, _, x_test, y_test = digits_data
    bundle = edgeship.compress(outlier_model, input_spec=demo.DIGITS_SPEC, calibration=x_train, precision=["int8"],
                               preprocess_calibration=True, validation=(x_test, y_test), targets=["onnxruntime-cpu"],
                               recipe=Recipe(max_drop=1.5, qat=QAT(epochs=5, lr=1e-3)), output=tmp_path / "b.edgeship",
                               show_progress=False)
    record = bundle.artifact("onnxruntime-cpu", "int8")["options"]["accuracy"]
    assert record["post_training"]["fp_layers"] and record["qat"]["fp_layers"] == []
    assert record["qat"]["met"] and record["met"] and record["method"] == "quantization-aware training"
    assert bundle.artifact("onnxruntime-cpu", "int8")["options"]["int8_from"] == "qat"
    assert bundle.manifest["qat"]["int8_from"] == {"onnxruntime-cpu": "qat"}


def test_cli_qat_flag_sets_the_recipe(tmp_path):
    from edgeship._cli_args import _recipe
    from edgeship.cli import build_parser

    toml = tmp_path / "r.toml"
    toml.write_text("max_drop = 1.0\n[qat]\nlr = 0.0005\n")
    args = build_parser().parse_args(["compress", "m.onnx", "--shape", "?,1,8,8", "-o", str(tmp_path / "o"),
                                      "--recipe", str(toml), "--qat", "7"])
    assert _recipe(args).qat == QAT(epochs=7, lr=5e-4) and _recipe(args).max_drop == 1.0
