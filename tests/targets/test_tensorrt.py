"""TensorRT targets: the explicit-precision graphs are built and checked here (ONNX Runtime runs them on
the CPU); engine build and the TensorRT runtime run only where TensorRT and a GPU are, else skip with the reason."""

from __future__ import annotations

import edgeship
import numpy as np
import pytest
from edgeship import MissingDependencyError
from edgeship.demo.digits import DIGITS_SPEC
from edgeship.targets import get_target_class
from edgeship.targets._onnx_graphs import tensorrt_int8_graph, tensorrt_int8_problems

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("modelopt.onnx.quantization", reason="NVIDIA Model Optimizer makes the INT8 graph (edgeship[tensorrt-build])")
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


def _qdq_facts(path):
    """(zero points of every Q/DQ, per-channel facts of every Conv weight DQ, op types whose input is a DQ)."""
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    zeros = [inits[n.input[2]] for n in model.graph.node
             if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    fed_by_dq = {n.op_type for n in model.graph.node
                 if any(i in producer and producer[i].op_type == "DequantizeLinear" for i in n.input)}
    return zeros, fed_by_dq, model, inits, producer


def test_int8_graph_is_model_optimizer_qdq_that_meets_tensorrt_rules(trt_bundle):
    graph = _graph(trt_bundle, "int8")
    assert tensorrt_int8_problems(graph) == []
    zeros, fed_by_dq, model, inits, producer = _qdq_facts(graph)
    assert zeros and all(z.dtype == np.int8 and not z.any() for z in zeros)  # symmetric: int8, zero point 0
    assert {"Conv", "MaxPool", "GlobalAveragePool"} <= fed_by_dq | {"MaxPool"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:  # weights per output channel
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        assert next((a.i for a in dq.attribute if a.name == "axis"), 1) == 0
        channels = inits[producer[dq.input[0]].input[0]].shape[0] if dq.input[0] in producer else inits[dq.input[0]].shape[0]
        assert inits[dq.input[1]].shape == (channels,)
    options = trt_bundle.artifact("tensorrt-gpu", "int8")["options"]
    assert options["graph"] == "modelopt int8 QDQ" and options["quantizer"].startswith("nvidia-modelopt ")
    assert options["dynamic_batch"] is True and options["batch"] is None  # the spec's batch is dynamic


@pytest.fixture(scope="module")
def residual_onnx(tmp_path_factory):
    """A small CNN with what TensorRT's Q/DQ rules are about: a residual Add after a Conv, MaxPool, AveragePool,
    a Concat of two Convs and a GlobalAveragePool (random weights: only the graph's structure matters here)."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1)
            self.b1, self.b2 = torch.nn.BatchNorm2d(16), torch.nn.BatchNorm2d(16)
            self.c3, self.c4, self.fc = torch.nn.Conv2d(16, 8, 1), torch.nn.Conv2d(16, 8, 1), torch.nn.Linear(16, 10)

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = torch.relu(y + self.b2(self.c2(y)))
            y = torch.nn.functional.avg_pool2d(torch.nn.functional.max_pool2d(y, 2), 2)
            y = torch.cat([self.c3(y), self.c4(y)], 1)
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("residual") / "net.onnx"
    torch.onnx.export(Net().eval(), torch.zeros(1, 3, 32, 32), str(path), input_names=["input"], output_names=["out"],
                      dynamic_axes={"input": {0: "n"}, "out": {0: "n"}}, dynamo=False)
    return path


RESIDUAL_SPEC = edgeship.InputSpec(shape=(None, 3, 32, 32))


def _random_calibration(n=16):
    from edgeship.calibration import collect

    return collect(np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32), RESIDUAL_SPEC, size=n)


def test_residual_add_pooling_and_concat_are_in_the_int8_domain(residual_onnx, tmp_path):
    out = tmp_path / "int8.onnx"
    tensorrt_int8_graph(residual_onnx, out, RESIDUAL_SPEC, _random_calibration())
    assert tensorrt_int8_problems(out) == []
    _, fed_by_dq, model, _, producer = _qdq_facts(out)
    assert {"Add", "AveragePool", "GlobalAveragePool", "Conv"} <= fed_by_dq
    add = next(n for n in model.graph.node if n.op_type == "Add")
    sides = sorted(producer[i].op_type for i in add.input)
    assert sides == ["Conv", "DequantizeLinear"]  # the residual input quantized; the Conv side fuses into the Conv
    for op in ("MaxPool", "Concat"):  # commuting ops: the Q after them is moved in front by TensorRT
        node = next(n for n in model.graph.node if n.op_type == op)
        users = [u for u in model.graph.node if node.output[0] in u.input]
        assert users and all(u.op_type == "QuantizeLinear" for u in users), op


def test_the_rules_check_fails_the_conv_only_placement(residual_onnx, tmp_path):
    """ONNX Runtime's quantizer restricted to Conv/Gemm inputs (edgeship's TensorRT graph before Model Optimizer)
    leaves the Add, the pools and the Concat outside INT8: the check must say so."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from edgeship.targets._onnx_graphs import calibration_reader

    out, prepared = tmp_path / "conv-only.onnx", tmp_path / "prepared.onnx"
    quant_pre_process(str(residual_onnx), str(prepared), skip_symbolic_shape=True, skip_optimization=True)
    quantize_static(str(prepared), str(out), calibration_reader(RESIDUAL_SPEC, _random_calibration()),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, op_types_to_quantize=["Conv", "Gemm"], calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "OpTypesToExcludeOutputQuantization": ["Conv", "Gemm"], "QuantizeBias": False})
    problems = " | ".join(tensorrt_int8_problems(out))
    for op in ("MaxPool", "AveragePool", "GlobalAveragePool", "Concat"):
        assert f"{op} " in problems, (op, problems)
    assert "Add" not in problems  # here the Add's residual input happens to share the next Conv's DQ


def test_the_rules_check_fails_a_float_residual_input_and_a_nonzero_zero_point(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    inits = [w, numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(3, np.int8), "zp"),  # not symmetric
             numpy_helper.from_array(np.full((2,), 0.1, np.float32), "ws"),
             numpy_helper.from_array(np.zeros((2,), np.int8), "wzp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq"),
             helper.make_node("QuantizeLinear", ["w", "ws", "wzp"], ["wq"], name="wq", axis=0),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], name="wdq", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Add", ["c", "r"], ["y"], name="add")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 4, 4]) for n in ("x", "y")]
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "bad", io[:1], io[1:], inits)), str(path))
    problems = tensorrt_int8_problems(path)
    assert any(p.startswith("Add 'add': a residual Add needs its inputs dequantized") for p in problems), problems
    assert any(p.startswith("QuantizeLinear 'q' has zero point [3]") for p in problems), problems


def test_jetson_builds_a_static_batch_dla_graph_unless_asked(residual_onnx, tmp_path):
    from edgeship.targets import get_target
    from edgeship.targets.base import CompileRequest

    jetson = get_target("tensorrt-jetson", for_compile=True)
    artifact = jetson.compile(CompileRequest(residual_onnx, RESIDUAL_SPEC, "int8", _random_calibration()),
                              tmp_path / "static")
    graph = onnx.load(str(tmp_path / "static" / "model.onnx"))
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    assert artifact.options["batch"] == 1 and artifact.options["dynamic_batch"] is False
    assert artifact.options["target_dla"] is True and artifact.options["dla_core"] == 0
    assert artifact.options["max_gpu_fallback"] == 0.5
    assert tensorrt_int8_problems(tmp_path / "static" / "model.onnx") == []
    assert sorted(p.name for p in (tmp_path / "static").iterdir()) == ["model.onnx"]  # no scratch file left
    dynamic = jetson.compile(CompileRequest(residual_onnx, RESIDUAL_SPEC, "fp16", options={"dynamic_batch": True}),
                             tmp_path / "dynamic")
    graph = onnx.load(str(tmp_path / "dynamic" / "model.onnx"))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # still dynamic
    assert dynamic.options["dynamic_batch"] is True
    batch4 = jetson.compile(CompileRequest(residual_onnx, RESIDUAL_SPEC, "fp32", options={"batch": 4}), tmp_path / "b4")
    graph = onnx.load(str(tmp_path / "b4" / "model.onnx"))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4 and batch4.options["batch"] == 4
    with pytest.raises(edgeship.ConfigError, match="max_gpu_fallback"):
        jetson.compile(CompileRequest(residual_onnx, RESIDUAL_SPEC, "fp32", options={"max_gpu_fallback": 2.0}),
                       tmp_path / "bad")
    with pytest.raises(edgeship.ConfigError, match="dla_core"):
        get_target("tensorrt-gpu", for_compile=True).compile(
            CompileRequest(residual_onnx, RESIDUAL_SPEC, "fp32", options={"dla_core": 0}), tmp_path / "gpu")


def test_dla_fallback_over_the_limit_fails_the_compile():
    from edgeship.targets.tensorrt import check_dla_fallback

    placement = {"dla": ["conv1", "relu1", "conv2"], "gpu": ["gemm", "softmax"]}
    check_dla_fallback(placement, {"dla_core": 0, "max_gpu_fallback": 0.5})  # 2 of 5 fell back: within 50 %
    with pytest.raises(edgeship.CompileError, match=r"2 of 5 layers fell back from DLA core 0 to the GPU \(40% > "
                                                    r"max_gpu_fallback 25%\): gemm, softmax"):
        check_dla_fallback(placement, {"dla_core": 0, "max_gpu_fallback": 0.25})
    check_dla_fallback(placement, {"dla_core": None, "max_gpu_fallback": 0.25})  # no DLA: nothing to check


def test_the_tensorrt_runtime_path_imports_without_torch():
    """On a Jetson torch is a multi-GB install the runtime must not need: the target module, Polygraphy's engine
    loader and runner import with torch made unimportable (TensorRT itself is absent here; it is imported lazily)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "import edgeship.targets.tensorrt as t\n"
            "from polygraphy.backend.trt import EngineFromBytes, TrtRunner, EngineBytesFromNetwork, NetworkFromOnnxPath\n"
            "assert t.TensorRTRuntime and TrtRunner\n"
            "assert 'torch' not in [m.split('.')[0] for m, v in sys.modules.items() if v is not None]\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


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


@pytest.mark.slow
def test_int8_graph_keeps_a_trained_fashion_mnist_resnet_within_a_point(tmp_path):
    """A ResNet-style CNN (residual Adds, stride-2 blocks, global pooling) trained for one epoch on 8,000
    Fashion-MNIST images: ONNX Runtime's CPU provider running the TensorRT INT8 Q/DQ graph keeps top-1 on 2,000
    held-out images within 1 point of the FP32 graph, and the graph meets TensorRT's Q/DQ rules."""
    pytest.importorskip("torch")
    from edgeship.benchmarks.suites import fidelity

    try:
        x_train, y_train, x_test, y_test = fidelity.load_fashion_mnist()
    except edgeship.ConfigError as exc:
        pytest.skip(str(exc))
    model, _ = fidelity.train_model("resnet", x_train[:8000], y_train[:8000], epochs=1, seed=0,
                                    cache_dir=tmp_path / "cache", threads=2, show_progress=False)
    bundle = edgeship.compress(model, input_spec=fidelity.FASHION_SPEC, calibration=fidelity.nhwc(x_train[8000:]),
                               preprocess_calibration=True, targets=["tensorrt-gpu"], precision=["fp32", "int8"],
                               output=tmp_path / "fashion.edgeship", show_progress=False)
    graph = _graph(bundle, "int8")
    assert tensorrt_int8_problems(graph) == []
    _, fed_by_dq, *_ = _qdq_facts(graph)
    assert {"Add", "Conv", "GlobalAveragePool"} <= fed_by_dq  # the residual Adds are in the INT8 domain
    x, y = fidelity.FASHION_SPEC.apply_preprocess(fidelity.nhwc(x_test[:2000])), y_test[:2000]
    ref, ref_top1 = _cpu_top1(_graph(bundle, "fp32"), x, y)
    out, top1 = _cpu_top1(graph, x, y)
    assert ref_top1 > 0.7  # it learned something: a drop on chance-level outputs would prove nothing
    assert ref_top1 - top1 <= 0.01, (ref_top1, top1)


@pytest.mark.skipif(TRT_OK, reason="TensorRT is present here: the device check builds engines instead")
def test_the_device_check_runs_its_cpu_side_and_says_tensorrt_is_absent(capsys):
    from edgeship.benchmarks.suites import tensorrt_check

    assert tensorrt_check.main([]) == 0
    out = capsys.readouterr().out
    assert "TensorRT is not usable here" in out and "no engine was built" in out
    rows = [line for line in out.splitlines() if "onnxruntime cpu" in line]
    assert [row.split("│")[1].strip() for row in rows] == ["fp32", "fp16", "int8"]
    assert all("ok" in row for row in rows)  # the INT8 graph meets TensorRT's Q/DQ rules


def test_a_tensorrt_int8_compile_leaves_onnx_runtime_s_quantizer_as_it_found_it(digits_model, digits_data,
                                                                                 digits_bundle, tmp_path):
    """Model Optimizer patches ONNX Runtime's calibrators for the rest of the process; compiled after a TensorRT
    INT8 graph, the onnxruntime-cpu INT8 artifact is still byte-identical to one compiled without it."""
    bundle = edgeship.compress(digits_model, input_spec=DIGITS_SPEC, calibration=digits_data[0],
                               preprocess_calibration=True, targets=["tensorrt-gpu", "onnxruntime-cpu"],
                               precision="int8", output=tmp_path / "both.edgeship", show_progress=False)
    assert (bundle.artifact("onnxruntime-cpu", "int8")["files"]
            == digits_bundle.artifact("onnxruntime-cpu", "int8")["files"])
