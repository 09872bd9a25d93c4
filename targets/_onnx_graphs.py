"""ONNX graph rewrites that more than one backend builds from: the calibration reader ONNX Runtime's
quantizer reads, the symmetric S8S8 Q/DQ graph TensorRT wants (also what ``onnxruntime-tensorrt`` runs) and the
float16 graph. Made on any build machine with ONNX Runtime's CPU tools; no backend module imports another.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._lazy import require
from ..errors import CompileError

if TYPE_CHECKING:
    from ..calibration import CalibrationSet
    from ..spec import InputSpec

TRT_QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


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


def symmetric_qdq(src: Path, dst: Path, spec: "InputSpec", calibration: "CalibrationSet",
                  exclude: Sequence[str] = ()) -> None:
    """The INT8 graph TensorRT builds from: S8S8 Q/DQ, zero-point 0, per-channel weights, inputs of Conv/Gemm/MatMul."""
    require("onnx", "the TensorRT INT8 graph")
    quantization = require("onnxruntime.quantization", "the TensorRT INT8 graph")
    import tempfile

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgeship-trt-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True, skip_optimization=True)
            quantization.quantize_static(
                str(prepared), str(dst), calibration_reader(spec, calibration),
                quant_format=quantization.QuantFormat.QDQ,
                activation_type=quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(TRT_QUANTIZED_OPS),
                nodes_to_exclude=list(exclude) or None,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "OpTypesToExcludeOutputQuantization": list(TRT_QUANTIZED_OPS),  # Q/DQ on inputs only
                    "QuantizeBias": False,  # TensorRT fuses a float bias
                },
            )
        except Exception as exc:
            raise CompileError(f"building the symmetric Q/DQ graph for TensorRT failed: {exc}") from exc


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
