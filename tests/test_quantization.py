"""INT8 end to end on the digits CNN: accuracy held against torch FP32, and the quantized graphs are what
each target's fast kernels need. Uses the session's trained model and compressed bundle."""

from __future__ import annotations

from collections import Counter

import edgeship
import numpy as np
import onnx
import pytest
from conftest import CPU_TARGETS, torch_forward
from edgeship import demo
from edgeship.benchmarks import top1, top1_agreement

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def test_inputs(digits_data):
    _, _, x_test, y_test = digits_data
    return demo.DIGITS_SPEC.apply_preprocess(x_test), y_test


@pytest.fixture(scope="module")
def reference_logits(digits_model, test_inputs):
    return torch_forward(digits_model, test_inputs[0])


def test_torch_fp32_reference_is_trained(reference_logits, test_inputs):
    assert top1(reference_logits, test_inputs[1]) >= 0.93  # else the comparisons below would mean little


@pytest.mark.parametrize("target", CPU_TARGETS)
def test_int8_holds_accuracy_direct(digits_bundle, reference_logits, test_inputs, target):
    x, y = test_inputs
    with digits_bundle.load(target, "int8") as rt:
        logits = rt.run(x)["output"]
    assert logits.shape == reference_logits.shape
    drop_pts = 100 * (top1(reference_logits, y) - top1(logits, y))
    assert drop_pts <= 1.0, f"{target} int8 loses {drop_pts:.2f} top-1 points against torch fp32"
    agreement = top1_agreement(logits, reference_logits)
    assert agreement >= 0.98, f"{target} int8 agrees with torch fp32 on only {100 * agreement:.2f}% of digits"


@pytest.mark.parametrize("target", CPU_TARGETS)
def test_fp32_artifacts_match_torch(digits_bundle, reference_logits, test_inputs, target):
    with digits_bundle.load(target, "fp32") as rt:
        logits = rt.run(test_inputs[0])["output"]
    np.testing.assert_allclose(logits, reference_logits, rtol=1e-3, atol=1e-3 * np.abs(reference_logits).max())
    assert top1_agreement(logits, reference_logits) == 1.0


def test_benchmark_report_against_torch(digits_bundle, digits_model, digits_data):
    _, _, x_test, y_test = digits_data
    report = edgeship.benchmark(digits_bundle, (x_test, y_test), reference=digits_model, preprocess=True,
                                show_progress=False, measure=edgeship.Measurement(runs=5, warmup=1))
    ref = report.rows[0]
    assert ref.is_reference and ref.target == "torch" and ref.precision == "fp32"
    assert [(r.target, r.precision) for r in report.rows[1:]] == digits_bundle.variants
    for row in report.rows[1:]:
        assert row.drop_pts == pytest.approx(ref.accuracy_pct - row.accuracy_pct)
        assert row.drop_pts <= 1.0, row
        assert row.agreement_pct >= 98.0, row
        if row.precision == "fp32":
            assert row.agreement_pct == 100.0
    # the torch reference here gives the same accuracy as computing it by hand
    expected = 100 * top1(torch_forward(digits_model, demo.DIGITS_SPEC.apply_preprocess(x_test)), y_test)
    assert ref.accuracy_pct == pytest.approx(expected)


def test_int8_artifacts_are_smaller(digits_bundle):
    for target in CPU_TARGETS:
        fp32 = digits_bundle.size_bytes(digits_bundle.artifact(target, "fp32"))
        int8 = digits_bundle.size_bytes(digits_bundle.artifact(target, "int8"))
        assert int8 < 0.75 * fp32, (target, fp32, int8)


def test_onnxruntime_int8_is_u8s8_qdq(digits_bundle):
    """uint8 activations and int8 per-channel weights: the flavour ONNX Runtime's x86 kernels run fast (full range
    on a VNNI fleet, 7-bit weights on the default fleet; the choice among fleet-safe flavours tied on fidelity
    is a fixed order, not a timing, so it is the same on every build machine)."""
    flavour = digits_bundle.artifact("onnxruntime-cpu", "int8")["options"]["int8_flavour"]
    assert flavour in ("u8s8", "u8s8-reduce-range"), flavour
    model = onnx.load(str(digits_bundle.path / "onnxruntime-cpu" / "int8" / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    produced_by = {out: n for n in model.graph.node for out in n.output}

    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize, "no QuantizeLinear: the model is not QDQ-quantized"
    for node in quantize:  # activations
        assert inits[node.input[2]].data_type == onnx.TensorProto.UINT8, node.name

    assert weights
    for name in weights:
        deq = produced_by[name]
        assert deq.op_type == "DequantizeLinear", f"weight {name} is not dequantized from int8"
        assert inits[deq.input[0]].data_type == onnx.TensorProto.INT8, name  # int8 weight values
        assert inits[deq.input[2]].data_type == onnx.TensorProto.INT8, name  # symmetric int8 zero points
        axis = {a.name: a.i for a in deq.attribute}.get("axis")
        assert axis is not None and len(inits[deq.input[1]].dims) == 1 and inits[deq.input[1]].dims[0] > 1, \
            f"weight {name} is not quantized per channel"

    counts = Counter(n.op_type for n in model.graph.node)
    assert counts["Conv"] == 3 and counts["Gemm"] == 1  # the graph itself is intact


def test_openvino_int8_has_fake_quantize_and_int8_weights(digits_bundle):
    import openvino as ov

    model = ov.Core().read_model(str(digits_bundle.path / "openvino-cpu" / "int8" / "model.xml"))
    ops = list(model.get_ops())
    types = Counter(op.get_type_name() for op in ops)
    assert types["FakeQuantize"] >= 4  # activations quantized
    int8_constants = [op for op in ops if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    assert len(int8_constants) == types["Convolution"] + types["MatMul"] == 4  # every weight stored as int8


def test_int8_compress_is_reproducible(digits_model, digits_data, digits_bundle, tmp_path):
    """The same model, data and seed give the same calibration set and the same ONNX Runtime INT8 graph."""
    bundle = edgeship.compress(digits_model, input_spec=demo.DIGITS_SPEC, output=tmp_path / "again.edgeship",
                               calibration=digits_data[0], targets=["onnxruntime-cpu"], precision="int8",
                               preprocess_calibration=True, show_progress=False)
    assert bundle.manifest["calibration"] == digits_bundle.manifest["calibration"]
    assert (bundle.artifact("onnxruntime-cpu", "int8")["files"]
            == digits_bundle.artifact("onnxruntime-cpu", "int8")["files"])


def test_keep_fp_names_that_are_no_node_of_the_graph_are_refused(small_onnx, tmp_path):
    """A misspelt layer name used to be ignored silently: the layer meant to stay FP was quantized."""
    from edgeship import ConfigError, Recipe

    from conftest import SMALL_SPEC

    out = tmp_path / "never.edgeship"
    with pytest.raises(ConfigError, match=r"keep_fp names \['no_such_conv'\]"):
        edgeship.compress(small_onnx, input_spec=SMALL_SPEC, output=out, targets=["onnxruntime-cpu"], precision="int8",
                          calibration=np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32),
                          recipe=Recipe(keep_fp=("no_such_conv",)), show_progress=False)
    assert not out.exists()
