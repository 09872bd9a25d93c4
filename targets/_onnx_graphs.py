"""ONNX graph rewrites that more than one backend builds from: the calibration reader ONNX Runtime's
quantizer reads, the INT8 Q/DQ graph TensorRT wants (NVIDIA Model Optimizer's placement; also what
``onnxruntime-tensorrt`` runs) with the check of TensorRT's Q/DQ rules, the static-batch graph and the float16 graph.
Made on any build machine with CPU tools; no backend module imports another.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .._lazy import require
from ..errors import CompileError

if TYPE_CHECKING:
    from ..calibration import CalibrationSet
    from ..spec import InputSpec

TRT_CALIBRATION = "max"  # Model Optimizer's MinMax: the ranges edgeship's other INT8 graphs calibrate with


def calibration_reader(spec: "InputSpec", calibration: "CalibrationSet") -> Any:
    """ONNX Runtime's CalibrationDataReader over edgeship's calibration samples, one pass."""
    quantization = require("onnxruntime.quantization", "INT8 quantization")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(calibration.samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            sample = next(self._samples, None)
            return None if sample is None else {spec.name: sample}

    return Reader()


class _NoGpuProbeNoise(logging.Filter):
    """Model Optimizer logs an ERROR when NVML finds no NVIDIA driver; on a CPU build machine that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to get GPU count" not in record.getMessage()


_NO_GPU_PROBE_NOISE = _NoGpuProbeNoise()


@contextlib.contextmanager
def _onnxruntime_quantization_left_as_found() -> Iterator[None]:
    """Undo what Model Optimizer changes in ONNX Runtime's quantizer for the rest of the process: its ONNX PTQ
    replaces methods of the calibrators and quantizers (``ort_patching.patch_ort_modules``) and edits the op
    registries in place (``QDQRegistry``: Relu, Concat, ... removed), which made the onnxruntime-cpu INT8 graph
    compiled after a TensorRT one a different graph. Every ``onnxruntime.quantization`` module and class is put
    back attribute by attribute, and every dict, list and set they hold gets its contents back."""
    import sys

    saved, contents = [], []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("onnxruntime.quantization"):
            continue
        saved.append((module, dict(vars(module))))
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__.startswith("onnxruntime.quantization"):
                saved.append((value, dict(vars(value))))
            elif isinstance(value, (dict, list, set)):
                contents.append((value, value.copy()))
    try:
        yield
    finally:
        for owner, before in saved:
            now = vars(owner)
            for key in [k for k in now if k not in before]:
                delattr(owner, key)
            for key, value in before.items():
                if now.get(key) is not value:
                    setattr(owner, key, value)
        for container, copy in contents:
            if container != copy:
                if isinstance(container, list):
                    container[:] = copy
                else:
                    container.clear()
                    container.update(copy)


def tensorrt_int8_graph(src: Path, dst: Path, spec: "InputSpec", calibration: "CalibrationSet",
                        exclude: Sequence[str] = (), dla: bool = False) -> dict[str, Any]:
    """The INT8 graph TensorRT builds from, made by NVIDIA Model Optimizer's ONNX PTQ on the CPU execution provider.

    Model Optimizer places Q/DQ the way TensorRT fuses them (Conv/Gemm/MatMul inputs and weights, the residual
    input of an ``Add`` that follows a Conv, pooling inputs; commuting ops such as MaxPool and Concat take the scale
    of the Q after them), symmetric with zero point 0, weights per output channel, and leaves what TensorRT would
    not run in INT8 in FP16. ``exclude``: node names kept out of INT8 (``keep_fp``); ``dla``: Q/DQ on every tensor,
    which a DLA needs to run a layer at all. Returns what the artifact records about it.
    """
    quantization = require("modelopt.onnx.quantization", "the TensorRT INT8 graph (NVIDIA Model Optimizer)")
    import importlib.metadata
    import re
    import shutil
    import tempfile

    logging.getLogger("modelopt.onnx").addFilter(_NO_GPU_PROBE_NOISE)
    with tempfile.TemporaryDirectory(prefix="edgeship-trt-") as tmp, _onnxruntime_quantization_left_as_found():
        # Model Optimizer writes intermediate files beside its input
        source = Path(tmp) / "model.onnx"
        shutil.copyfile(src, source)
        try:
            quantization.quantize(
                str(source), quantize_mode="int8", calibration_data={spec.name: calibration.as_batch()},
                calibration_method=TRT_CALIBRATION, calibration_eps=["cpu"],
                nodes_to_exclude=[f"^{re.escape(name)}$" for name in exclude] or None,
                high_precision_dtype="fp16", target_dla=dla, output_path=str(Path(tmp) / "int8.onnx"),
                log_level="ERROR")
        except Exception as exc:
            raise CompileError(f"NVIDIA Model Optimizer could not quantize the graph for TensorRT: "
                               f"{type(exc).__name__}: {exc}") from exc
        shutil.move(str(Path(tmp) / "int8.onnx"), dst)
    problems = tensorrt_int8_problems(dst)
    if problems:
        raise CompileError("the TensorRT INT8 graph breaks TensorRT's Q/DQ rules: " + "; ".join(problems[:5]))
    return {"quantizer": f"nvidia-modelopt {importlib.metadata.version('nvidia-modelopt')} onnx ptq",
            "calibration_method": TRT_CALIBRATION, "high_precision": "fp16", "target_dla": dla,
            "fp_layers": sorted(exclude)}


def tensorrt_int8_problems(path: Path) -> list[str]:
    """What in an INT8 Q/DQ graph TensorRT would not run as INT8 the way the graph intends, in words ([] when none).

    The rules (TensorRT's Q/DQ fusion, NVIDIA/TensorRT issues 1992 and 3197): every zero point is 0 (symmetric
    INT8); every Conv/ConvTranspose weight is dequantized per output channel (axis 0); a Conv's activation input
    comes through a DequantizeLinear; every residual ``Add`` (two activations) has its inputs dequantized, except
    one that comes straight from the Conv it fuses into; every MaxPool/AveragePool/GlobalAveragePool and Concat is in the INT8 domain — a
    DequantizeLinear on each input, or, for the ops a scale commutes through (MaxPool, Concat), a QuantizeLinear
    on every consumer of its output, which TensorRT moves in front of it.
    """
    onnx = require("onnx", "checking the TensorRT INT8 graph")
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    problems = []

    def dequantized(name: str) -> bool:
        return name in producer and producer[name].op_type == "DequantizeLinear"

    def quantized_after(node: Any) -> bool:
        users = [u for out in node.output for u in consumers.get(out, [])]
        return bool(users) and all(u.op_type == "QuantizeLinear" for u in users)

    for n in graph.node:
        label = f"{n.op_type} {n.name!r}"
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            zero = numpy_helper.to_array(inits[n.input[2]])
            if zero.dtype != np.int8 or zero.any():
                problems.append(f"{label} has zero point {zero.ravel()[:4]} ({zero.dtype}); TensorRT needs int8 0")
        if n.op_type in ("Conv", "ConvTranspose"):
            if not dequantized(n.input[0]):
                continue  # a layer kept in FP (keep_fp, or Model Optimizer's choice): not an INT8 layer
            weight = producer.get(n.input[1])
            if weight is None or weight.op_type != "DequantizeLinear":
                problems.append(f"{label} has a quantized input but a float weight")
                continue
            axis = next((a.i for a in weight.attribute if a.name == "axis"), 1)
            scale = inits.get(weight.input[1])
            channels = _initializer_or_quantized_shape(weight.input[0], inits, producer)
            if axis != 0 or scale is None or list(scale.dims) != channels[:1]:
                problems.append(f"{label}: its weight is not dequantized per output channel "
                                f"(axis {axis}, scales {list(scale.dims) if scale is not None else None})")
        elif n.op_type == "Add" and not any(i in inits or _constant(i, producer) for i in n.input):
            plain = [i for i in n.input if not dequantized(i)]  # inputs that arrive in float
            fused = len(plain) == 1 and producer.get(plain[0]) is not None and \
                producer[plain[0]].op_type in ("Conv", "ConvTranspose")
            if plain and not fused:
                problems.append(f"{label}: a residual Add needs its inputs dequantized (one of them may be the Conv it "
                                "fuses into); here they are not, so TensorRT runs it outside INT8")
        elif n.op_type in ("MaxPool", "AveragePool", "GlobalAveragePool", "Concat"):
            inputs = [i for i in n.input if i not in inits]
            commutes = n.op_type in ("MaxPool", "Concat")
            if not (all(dequantized(i) for i in inputs) or (commutes and quantized_after(n))):
                problems.append(f"{label} is not in the INT8 domain (no Q/DQ on its inputs"
                                + (" nor a QuantizeLinear after it" if commutes else "") + "): TensorRT runs it in "
                                "FP16/FP32 and reformats around it")
    return problems


def _constant(name: str, producer: dict[str, Any]) -> bool:
    """Whether ``name`` is a Constant node's output (a bias Add, not a residual one)."""
    return name in producer and producer[name].op_type == "Constant"


def _initializer_or_quantized_shape(name: str, inits: dict[str, Any], producer: dict[str, Any]) -> list[int]:
    """The shape of a weight given as an initializer, or as QuantizeLinear of one."""
    if name in inits:
        return list(inits[name].dims)
    q = producer.get(name)
    if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inits:
        return list(inits[q.input[0]].dims)
    return []


def static_batch(src: Path, dst: Path, batch: int) -> None:
    """The graph with its batch dimension fixed to ``batch`` on every input and output (a DLA runs static shapes)."""
    onnx = require("onnx", "a static-batch graph")
    model = onnx.load(str(src))
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    del model.graph.value_info[:]  # stale symbolic shapes; inference fills them again
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise CompileError(f"fixing the batch to {batch} made an invalid graph: {exc}") from exc
    onnx.save(model, str(dst))


def float16_graph(src: Path, dst: Path) -> None:
    """The graph in float16 with float32 inputs and outputs (what a strongly typed FP16 engine needs)."""
    onnx = require("onnx", "the TensorRT FP16 graph")
    require("onnxruntime", "the TensorRT FP16 graph")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    except Exception as exc:
        raise CompileError(f"converting the graph to float16 failed: {exc}") from exc


FAKE_QUANTIZE_DOMAIN = "org.openvinotoolkit"  # where NNCF's torch export puts its FakeQuantize op


def has_fake_quantize(path: Path) -> bool:
    """Whether the ONNX graph at ``path`` holds NNCF FakeQuantize nodes (a quantization-aware-trained graph)."""
    onnx = require("onnx", "reading ONNX graphs")
    return any(n.op_type == "FakeQuantize" for n in onnx.load(str(path), load_external_data=False).graph.node)


def fake_quantize_to_qdq(src: Path, dst: Path) -> int:
    """NNCF's FakeQuantize nodes (``src``) as ONNX Q/DQ, all uint8 (U8U8: no AVX2 saturation, exact on any CPU);
    returns how many were converted.

    FakeQuantize(x, lo, hi, lo, hi, levels) rounds ``(x - lo) / s`` to 0..levels-1 with ``s = (hi - lo) /
    (levels - 1)``: that is QuantizeLinear(scale s, zero point -lo / s) when -lo / s is an integer in 0..255, which
    NNCF's ranges are (unsigned: lo = 0; signed: 128 or 127 steps below zero). A constant input (weights) becomes
    its uint8 values and one DequantizeLinear, per output channel where the range is; an activation a
    QuantizeLinear + DequantizeLinear pair (its levels must be 256, the uint8 range).
    """
    onnx = require("onnx", "converting a QAT graph")
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    nodes, converted, added = [], 0, []
    for node in graph.node:
        if node.op_type != "FakeQuantize":
            nodes.append(node)
            continue
        levels = next((a.i for a in node.attribute if a.name == "levels"), 256)
        x, lo_name, hi_name, olo_name, ohi_name = node.input
        try:
            lo, hi = consts[lo_name].astype(np.float64), consts[hi_name].astype(np.float64)
            if not (np.array_equal(consts[olo_name], consts[lo_name]) and np.array_equal(consts[ohi_name],
                                                                                           consts[hi_name])):
                raise KeyError(node.name)
        except KeyError:
            raise CompileError(f"QAT graph: FakeQuantize {node.name!r} has ranges that are not constants equal on "
                               "input and output; edgeship converts only NNCF's own") from None
        scale = (hi - lo) / (levels - 1)
        zero = -lo / np.where(scale > 0, scale, 1.0)
        if levels > 256 or not np.all(scale > 0) or np.abs(zero - np.round(zero)).max() > 1e-3 \
                or zero.min() < -0.5 or zero.max() > 255.5:
            raise CompileError(f"QAT graph: FakeQuantize {node.name!r} (levels {levels}) is not an 8-bit range with "
                               "an integer zero point")
        zero = np.round(zero).astype(np.uint8)
        base = f"{node.name or node.output[0]}_qdq"
        per_channel = scale.size > 1
        wide = [i for i, d in enumerate(scale.shape) if d > 1]  # (C,1,1,1) weights: axis 0; (1,C,1,1) activations: 1
        if len(wide) > 1:
            raise CompileError(f"QAT graph: FakeQuantize {node.name!r} has ranges of shape {scale.shape}; Q/DQ takes "
                               "one per tensor or one per channel of one axis")
        scale_t = scale.astype(np.float32).reshape(-1) if per_channel else np.float32(scale.reshape(-1)[0])
        zero_t = zero.reshape(-1) if per_channel else np.uint8(zero.reshape(-1)[0])
        axis = [helper.make_attribute("axis", wide[0])] if per_channel else []
        added += [numpy_helper.from_array(np.asarray(scale_t, np.float32), f"{base}_scale"),
                  numpy_helper.from_array(np.asarray(zero_t, np.uint8), f"{base}_zero")]
        if x in consts:  # weights: stored as uint8, dequantized once
            w = consts[x].astype(np.float64)  # the ranges broadcast against it, as FakeQuantize's do
            q = np.clip(np.round(w / scale) + zero.astype(np.float64), 0, levels - 1).astype(np.uint8)
            added.append(numpy_helper.from_array(q, f"{base}_q"))
            dq = helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero"], list(node.output),
                                  name=f"{base}_dq")
            dq.attribute.extend(axis)
            nodes.append(dq)
        else:
            if levels != 256:
                raise CompileError(f"QAT graph: activation FakeQuantize {node.name!r} has {levels} levels; "
                                   "ONNX Q/DQ needs 256")
            q = helper.make_node("QuantizeLinear", [x, f"{base}_scale", f"{base}_zero"], [f"{base}_q"], name=f"{base}_q")
            dq = helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero"],
                                  list(node.output), name=f"{base}_dq")
            q.attribute.extend(axis)
            dq.attribute.extend(axis)
            nodes += [q, dq]
        converted += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {i for n in graph.node for i in n.input}  # the ranges' Constant nodes, now read by nothing
    kept_nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    # weights now stored quantized: drop their float copies
    kept = [i for i in graph.initializer if i.name in used or i.name in {o.name for o in graph.output}]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    opsets = [o for o in model.opset_import if o.domain != FAKE_QUANTIZE_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in model.opset_import):
        raise CompileError("QAT graph: per-channel Q/DQ needs ONNX opset >= 13")
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return converted
