"""TensorRT targets: the explicit-precision graphs are built and checked here (ONNX Runtime runs them on
the CPU); engine build and the TensorRT runtime run only where TensorRT and a GPU are, else skip with the reason."""

from __future__ import annotations

import edgeship
import numpy as np
import pytest
from edgeship import MissingDependencyError
from edgeship.demo.digits import DIGITS_SPEC
from edgeship.targets import get_target_class

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
TRT_OK, TRT_REASON = get_target_class("tensorrt-gpu").availability()


@pytest.fixture(scope="module")
def trt_bundle(digits_model, digits_data, tmp_path_factory):
    return edgeship.compress(digits_model, input_spec=DIGITS_SPEC, calibration=digits_data[0], preprocess_calibration=True,
                             targets=["tensorrt-gpu"], precision=["fp32", "fp16", "int8"],
                             output=tmp_path_factory.mktemp("trt") / "digits.edgeship", show_progress=False)


def _graph(bundle, precision):
    entry = bundle.artifact("tensorrt-gpu", precision)
    return bundle.path / entry["dir"] / "model.onnx"


def _cpu_top1(path, x, y):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    return out, float((out.argmax(1) == y).mean())


def test_int8_graph_is_symmetric_s8s8_qdq_on_conv_and_gemm_inputs(trt_bundle):
    model = onnx.load(str(_graph(trt_bundle, "int8")))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name  # S8, zero-point 0
        for consumer in consumers.get(node.output[0], []):
            if node.op_type == "DequantizeLinear":
                assert consumer in ("Conv", "Gemm", "MatMul", "ConvTranspose"), consumer  # inputs of those only
    weight_dq = [n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weight_dq
    for node in weight_dq:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        assert axis == 0 and inits[node.input[1]].shape == (inits[node.input[0]].shape[0],)  # per output channel
    assert trt_bundle.artifact("tensorrt-gpu", "int8")["options"]["graph"] == "symmetric S8S8 QDQ"


def test_int8_and_fp16_graphs_keep_accuracy(trt_bundle, digits_data):
    _, _, x_test, y_test = digits_data
    x = DIGITS_SPEC.apply_preprocess(x_test)
    ref, ref_top1 = _cpu_top1(_graph(trt_bundle, "fp32"), x, y_test)
    for precision in ("int8", "fp16"):
        out, top1 = _cpu_top1(_graph(trt_bundle, precision), x, y_test)
        assert ref_top1 - top1 <= 0.01, (precision, ref_top1, top1)
        assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.98


def test_fp16_graph_has_float32_io_and_float16_weights(trt_bundle):
    model = onnx.load(str(_graph(trt_bundle, "fp16")))
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [f32]
    weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)


@pytest.mark.skipif(TRT_OK, reason="TensorRT is present here: the engine is built at compile time")
def test_without_tensorrt_the_bundle_holds_the_graph_and_loading_says_what_is_missing(trt_bundle):
    entry = trt_bundle.artifact("tensorrt-gpu", "int8")
    assert entry["options"]["engine"] is None
    assert sorted(entry["files"]) == [f"{entry['dir']}/model.onnx"]
    with pytest.raises(MissingDependencyError, match="edgeship\\[tensorrt\\]"):
        edgeship.load(trt_bundle.path, target="tensorrt-gpu", precision="int8")


def test_execution_provider_targets_are_listed_with_their_reason():
    listed = edgeship.list_targets()
    for name in ("onnxruntime-cuda", "onnxruntime-tensorrt", "onnxruntime-openvino", "tensorrt-gpu", "tensorrt-jetson"):
        assert name in listed
        ok, reason = get_target_class(name).availability()
        assert ok or listed[name] == f"unavailable: {reason}"


@pytest.mark.skipif(not TRT_OK, reason=f"tensorrt-gpu: {TRT_REASON}")
def test_engine_runs_and_is_tied_to_its_gpu(trt_bundle, digits_data, tmp_path):  # pragma: no cover - needs a GPU
    _, _, x_test, y_test = digits_data
    x = DIGITS_SPEC.apply_preprocess(x_test)
    ref, _ = _cpu_top1(_graph(trt_bundle, "fp32"), x, y_test)
    for precision in ("fp32", "fp16", "int8"):
        entry = trt_bundle.artifact("tensorrt-gpu", precision)
        assert entry["options"]["engine"]["gpu"]
        with edgeship.load(trt_bundle.path, target="tensorrt-gpu", precision=precision) as rt:
            out = rt.run(x[:32])["output"]
        assert np.mean(out.argmax(1) == ref[:32].argmax(1)) >= 0.95
