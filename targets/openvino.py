"""openvino-cpu: OpenVINO IR (.xml/.bin) compiled for the CPU; INT8 through NNCF post-training quantization."""

from __future__ import annotations

import functools
import queue
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._fleet import Fleet
from .._fleet import fleet as resolve_fleet
from .._lazy import is_installed, require
from ..errors import CompileError, ConfigError
from ..measure.fidelity import significantly_worse
from .base import Artifact, CompileRequest, Runtime, Target, TensorInfo
from .registry import register_target

if TYPE_CHECKING:
    from ..build.accuracy import AccuracyControl
    from ..calibration import CalibrationSet
    from ..spec import InputSpec

DEVICE = "CPU"


def _ov():
    return require("openvino", "the openvino-cpu target")


_CORE_LOCK = threading.Lock()
_CORE: Any = None


def shared_core() -> Any:
    """The process's one ``openvino.Core``, created on first use and kept until exit.

    One Core is what OpenVINO recommends, and here it is also a fix: each Core's CPU plugin installs an
    alternate signal stack on the thread that creates it and, when the Core is destroyed, restores the one it
    found. Two Cores destroyed out of order leave the thread's alternate stack pointing at freed memory, and
    the next signal Python handles there (SIGTERM, SIGINT: its handlers run on the alternate stack) is a
    segfault. A Core that lives as long as the process never restores a stale stack.
    """
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = _ov().Core()
        return _CORE


def _cpu_supports_fp16(core: Any) -> bool:
    return "FP16" in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")


INFERENCE_PRECISIONS = ("f32", "bf16", "f16")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")


@register_target("openvino-cpu")
class OpenVINOCPU(Target):
    """OpenVINO on x86 CPUs. The inference precision is always set explicitly: the CPU plugin's
    default hint picks bf16 where the CPU has it, which was slower than f32 and changed top-1."""

    extra = "openvino"
    runtime_options = {"threads": int, "num_streams": int, "performance_hint": PERFORMANCE_HINTS,
                       "inference_precision": INFERENCE_PRECISIONS}

    @classmethod
    @functools.lru_cache(maxsize=None)
    def availability(cls) -> tuple[bool, str]:
        if not is_installed("openvino"):
            return False, "openvino is not installed (pip install 'edgeship[openvino]')"
        ov = _ov()
        if DEVICE not in shared_core().available_devices:
            return False, "OpenVINO reports no CPU device"
        return True, f"openvino {ov.__version__.split('-')[0]}"

    def compile(self, request: CompileRequest, out_dir: Path) -> Artifact:
        """INT8 through NNCF with the overflow fix ``fleet`` needs; ``calibration_method`` picks NNCF's
        activation range estimator ("minmax", "percentile" = mean quantile, "entropy" = histogram), or
        "auto": NNCF's default, or with validation inputs (``accuracy``) the most faithful of all four."""
        onnx_path, spec, precision, calibration = (request.onnx_path, request.spec, request.precision,
                                                   request.calibration)
        accuracy, keep_fp, fleet, calibration_method = (request.accuracy, request.keep_fp, request.fleet,
                                                        request.calibration_method)
        ov = _ov()
        core = shared_core()
        try:
            model = core.read_model(str(onnx_path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise CompileError(f"OpenVINO could not read {onnx_path.name}: {exc}") from exc
        # the graph's own tensor names, by position: OpenVINO ports carry several names and may report any
        options: dict[str, Any] = {"device": DEVICE,
                                   "inputs": [_onnx_name(p, spec.name) for p in model.inputs],
                                   "outputs": [_onnx_name(p, None) for p in model.outputs]}
        if precision == "int8" and request.quantized:  # a QAT graph: its FakeQuantize ops are OpenVINO's own
            options.update(inference_precision="f32", quantizer="quantization-aware training (NNCF FakeQuantize)",
                           int8_flavour="qat fake-quantize", calibration_method="trained ranges",
                           fp_layers=_float_layers(model))
        elif precision == "int8":
            if calibration is None:
                raise ConfigError("int8 on openvino-cpu needs calibration data")
            nncf = require("nncf", "INT8 quantization")
            if calibration_method not in ("auto", *RANGE_ESTIMATORS):
                raise ConfigError(f"calibration_method must be 'auto' or one of {tuple(RANGE_ESTIMATORS)}, "
                                  f"got {calibration_method!r}")
            fleet = fleet or resolve_fleet()
            overflow_fix, why = _overflow_fix(fleet)
            try:
                ignored = _ignored_scope(nncf, keep_fp)

                def quantize(method: str) -> Any:
                    return nncf.quantize(core.read_model(str(onnx_path)), nncf.Dataset(calibration.samples),
                                         subset_size=len(calibration), preset=nncf.QuantizationPreset.PERFORMANCE,
                                         ignored_scope=ignored, advanced_parameters=_advanced(overflow_fix, method))

                method, measured, chosen = calibration_method, None, None
                if calibration_method == "auto":
                    method = "nncf-default"
                    if accuracy is not None:
                        method, measured, chosen = _choose_range_estimator(quantize, core, onnx_path,
                                                                           accuracy.inputs)
                advanced = _advanced(overflow_fix, method)
                if accuracy is None:
                    model = chosen if chosen is not None else quantize(method)
                else:
                    accuracy.fill_reference(onnx_path, spec)
                    model = _quantize_with_accuracy_control(nncf, model, calibration, accuracy, ignored, advanced)
            except Exception as exc:
                raise CompileError(f"NNCF quantization for openvino-cpu failed: {exc}") from exc
            options.update(inference_precision="f32", quantizer=f"nncf {nncf.__version__}", preset="performance",
                           overflow_fix=overflow_fix, int8_flavour=f"nncf overflow_fix={overflow_fix}",
                           calibration_method=method,
                           flavour_choice={"flavour": f"overflow_fix={overflow_fix}", "fleet": fleet.to_dict(),
                                           "reason": why, "calibration_method": method,
                                           **({"methods_measured": measured} if measured else {})},
                           fp_layers=_float_layers(model))
        elif precision == "fp16":
            # FP16 weights in the IR; the CPU computes in f16 only where it has f16 arithmetic.
            options["inference_precision"] = "f16" if _cpu_supports_fp16(core) else "f32"
        else:
            options["inference_precision"] = "f32"
        out_dir.mkdir(parents=True, exist_ok=True)
        xml = out_dir / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=(precision == "fp16"))
        artifact = Artifact(
            target=self.name,
            precision=precision,
            files=["model.xml", "model.bin"],
            backend_versions={"openvino": ov.__version__.split("-")[0]},
            options=options,
        )
        if accuracy is not None and precision == "int8":
            value = accuracy.score(self.validation_outputs(out_dir, artifact, spec, accuracy))
            options["accuracy"] = accuracy.record(value, _float_layers(model), "quantization-aware training"
                                                  if request.quantized else "nncf.quantize_with_accuracy_control")
        return artifact

    def load(self, root: Path, artifact: Artifact, spec: "InputSpec", **options: Any) -> "OpenVINORuntime":
        return OpenVINORuntime(root / artifact.files[0], spec, artifact, **options)


def _onnx_name(port: Any, preferred: str | None) -> str:
    """The name a port had in the ONNX graph: the preferred one if the port has it, else the shortest."""
    names = port.get_names()
    if preferred in names:
        return preferred
    return sorted(names, key=lambda n: (len(n), n))[0] if names else port.get_any_name()


def _ignored_scope(nncf: Any, keep_fp: Sequence[str]) -> Any:
    """ONNX node names -> an NNCF ignored scope over the OpenVINO ops made from them (a convolution
    with a bias becomes '<name>/WithoutBiases' + '<name>')."""
    if not keep_fp:
        return None
    return nncf.IgnoredScope(patterns=[re.escape(name) + "(/WithoutBiases)?$" for name in keep_fp], validate=False)


#: edgeship's calibration method names -> NNCF's activation range estimators
RANGE_ESTIMATORS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "entropy": "HISTOGRAM"}


def _advanced(overflow_fix: str, method: str) -> Any:
    """NNCF's advanced parameters: the overflow fix, and the activation range estimator unless NNCF's default."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    extra = {}
    if method in RANGE_ESTIMATORS:
        extra["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet, RANGE_ESTIMATORS[method])
    return AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix), **extra)


def _choose_range_estimator(quantize: Any, core: Any, onnx_path: Path,
                            inputs: np.ndarray) -> tuple[str, list, Any]:
    """Quantize with NNCF's default and each range estimator: the first (NNCF's default, then the order
    listed) whose top-1 agreement with FP32 on ``inputs`` is not significantly below the best one's.
    Returns (its name, every measurement, its quantized model)."""
    x = np.ascontiguousarray(inputs[:256])

    def top1(model: Any) -> np.ndarray:
        compiled = core.compile_model(model, DEVICE, {"INFERENCE_PRECISION_HINT": "f32"})
        port = compiled.outputs[0]
        out = np.concatenate([compiled(x[i : i + 64])[port] for i in range(0, len(x), 64)])
        return out.reshape(len(out), -1).argmax(1)

    reference = top1(core.read_model(str(onnx_path)))
    methods = ("nncf-default", *RANGE_ESTIMATORS)
    models = {m: quantize(m) for m in methods}
    hits = {m: top1(models[m]) == reference for m in methods}
    best = max(methods, key=lambda m: hits[m].mean())
    chosen = next(m for m in methods if not significantly_worse(hits[m], hits[best]))
    return chosen, [{"calibration_method": m, "agreement": float(hits[m].mean())} for m in methods], models[chosen]


def _overflow_fix(fleet: Fleet) -> tuple[str, str]:
    """NNCF's overflow fix for ``fleet``: 7-bit weights everywhere unless every declared CPU has VNNI/AMX."""
    if fleet.saturating:
        return "enable", (f"the fleet ({fleet.describe()}) may hold a CPU without VNNI, whose u8 x s8 pair sums "
                          "saturate in 16 bits: every layer's weights use 7 bits (NNCF OverflowFix.ENABLE)")
    return "disable", (f"every declared CPU ({fleet.describe()}) accumulates INT8 products in 32 bits: "
                       "full 8-bit weights (NNCF OverflowFix.DISABLE)")


def _quantize_with_accuracy_control(nncf: Any, model: Any, calibration: "CalibrationSet", control: "AccuracyControl",
                                    ignored: Any = None, advanced: Any = None) -> Any:
    """NNCF's accuracy-aware INT8: quantize, then revert the most harmful layers to FP until the drop fits."""
    items = [(control.inputs[i : i + 1], control.labels[i : i + 1]) for i in range(len(control.inputs))]

    def validate(compiled: Any, data: Any) -> tuple[float, None]:
        port = compiled.outputs[0]
        outputs = np.concatenate([compiled(x)[port] for x, _ in data])
        labels = np.concatenate([y for _, y in data])
        return float(control.metric_fn(outputs, labels)), None

    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(calibration.samples),
        nncf.Dataset(items),
        validate,
        max_drop=control.max_drop / 100.0,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calibration),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        ignored_scope=ignored,
        advanced_quantization_parameters=advanced,
    )


def _float_layers(model: Any) -> list[str]:
    """Convolutions and matrix products whose weights stayed in floating point (not quantized)."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"):
            weights = op.input_value(1).get_node()
            if weights.get_type_name() == "Constant" and weights.get_element_type().is_real():
                names.append(op.get_friendly_name())
    return names


class OpenVINORuntime(Runtime):
    """A compiled OpenVINO model and a pool of infer requests, so one runtime serves many threads.

    An infer request is not thread-safe (one request shared by 8 threads returned other callers'
    outputs, or raised "Infer Request is busy"), so each ``run`` takes a free request from the pool, or creates one when all are busy,
    and puts it back after the call: the pool grows to the most concurrent callers, and
    ``share_outputs=False`` copies the outputs so a result never aliases a request's buffers.

    A pool rather than one request under a lock, by measurement (``python -m
    edgeship.benchmarks.suites.runtime_threads``, digits CNN FP32 batch 1, ~0.12 ms a run, 2-core AVX-512 VM):
    for one thread the guard alone costs under 0.6 µs a call either way (pool 0.1-0.2, lock 0.3-0.55;
    < 0.5 % of a run) and whole runs were within run-to-run noise (pool/lock 0.84-1.49 over 4 runs);
    for 4 threads the pool gave 1.1-1.25x the runs/s under the LATENCY hint and 1.8-2.4x under
    THROUGHPUT, where a lock leaves the extra streams idle.
    """

    target = "openvino-cpu"

    def __init__(
        self,
        xml_path: Path,
        spec: "InputSpec",
        artifact: Artifact,
        threads: int | None = None,
        performance_hint: str = "LATENCY",
        inference_precision: str | None = None,
        num_streams: int | None = None,
    ) -> None:
        """``inference_precision`` overrides the artifact's pinned hint ("f32", "bf16", "f16"), e.g. to
        measure whether bf16 pays on this CPU; ``performance_hint`` is OpenVINO's ("LATENCY", "THROUGHPUT");
        ``num_streams`` sets the CPU plugin's parallel inference streams (default: the hint's choice)."""
        self._xml = xml_path
        weights = xml_path.with_suffix(".bin").name
        # the IR as hashed by the bundle (xml, bin), when it came from one: read from memory, not again by path
        self._ir = ((artifact.contents[xml_path.name], artifact.contents.get(weights, b""))
                    if xml_path.name in artifact.contents else None)
        self._names = {"inputs": artifact.options.get("inputs"), "outputs": artifact.options.get("outputs")}
        precision = inference_precision or artifact.options.get("inference_precision", "f32")
        if precision not in INFERENCE_PRECISIONS:
            raise ConfigError(f"inference_precision must be 'f32', 'bf16' or 'f16', got {precision!r}")
        if performance_hint not in PERFORMANCE_HINTS:
            raise ConfigError(f"performance_hint must be LATENCY, THROUGHPUT or CUMULATIVE_THROUGHPUT, got {performance_hint!r}")
        self._config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": performance_hint}
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads must be >= 1, got {threads}")
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        if num_streams is not None:
            if isinstance(num_streams, bool) or not isinstance(num_streams, int) or num_streams < 1:
                raise ConfigError(f"num_streams must be an int >= 1, got {num_streams!r}")
            self._config["NUM_STREAMS"] = int(num_streams)
        super().__init__(spec, artifact.precision)

    def _load(self) -> None:
        self._core = shared_core()
        if self._ir is not None:
            model, self._ir = self._core.read_model(*self._ir), None
        else:
            model = str(self._xml)
        self._compiled = self._core.compile_model(model, DEVICE, self._config)
        self._output_ports = list(self._compiled.outputs)
        self._requests_lock = threading.Lock()
        self._requests = [self._compiled.create_infer_request()]  # every request made, released by _close
        self._free: queue.SimpleQueue = queue.SimpleQueue()  # the idle ones
        self._free.put(self._requests[0])

    def _take_request(self) -> Any:
        """An idle infer request, or a new one when every request is busy in another thread."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            with self._requests_lock:
                request = self._compiled.create_infer_request()
                self._requests.append(request)
            return request

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        def info(port: Any) -> TensorInfo:
            shape = tuple(None if d.is_dynamic else d.get_length() for d in port.get_partial_shape())
            return TensorInfo(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name)

        inputs = [info(p) for p in self._compiled.inputs]
        outputs = [info(p) for p in self._output_ports]
        # name each tensor as the ONNX graph did (recorded at compile time), by position
        for infos, names in ((inputs, self._names.get("inputs")), (outputs, self._names.get("outputs"))):
            if names and len(names) == len(infos):
                infos[:] = [TensorInfo(n, i.shape, i.dtype) for n, i in zip(names, infos)]
        return inputs, outputs

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._take_request()
        try:  # share_outputs=False: the arrays are copies the caller owns, not views of the request's tensors
            result = request.infer(feed, share_inputs=True, share_outputs=False)
            return {info.name: result[port] for info, port in zip(self._outputs, self._output_ports)}
        finally:
            self._free.put(request)

    def _close(self) -> None:
        # the base class calls this once every run has returned, so every request is idle in the pool
        with self._requests_lock:
            self._requests.clear()
        del self._free, self._compiled, self._core
