"""onnxruntime-cpu: ONNX Runtime's CPU execution provider; INT8 as QDQ from ONNX Runtime's static quantizer.

INT8 comes in flavours (``INT8_FLAVOURS``), chosen for the CPUs the recipe declares (``Recipe.cpus``):
full-range U8S8 (uint8 activations, int8 per-channel weights) is what the x86 kernels run fastest and
is exact where the CPU has VNNI/AMX; without VNNI the same kernels sum u8 x s8 pairs in saturating
16 bits (the shipped digits CNN: 97.2 -> 93.7 % top-1 under ``qemu-x86_64 -cpu EPYC``), so a fleet that may
hold such a CPU gets a flavour whose products cannot saturate — 7-bit weights (``reduce_range``) or
U8U8 — chosen by measurement (fake-quant fidelity to FP32; ties: the fixed preference order). NNCF's ONNX path emits int8
activations after residual adds, so the CPU artifact comes from ``onnxruntime.quantization.quantize_static``.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from .._fleet import Fleet
from .._fleet import fleet as resolve_fleet
from .._lazy import is_installed, require
from ..errors import CompileError, ConfigError
from ..measure.fidelity import agreement as _agreement
from ..measure.fidelity import agrees as _agrees
from ..measure.fidelity import significantly_worse as _significantly_worse
from ._onnx_graphs import calibration_reader, float16_graph, tensorrt_int8_graph
from .base import Artifact, CompileRequest, Runtime, Target, TensorInfo
from .registry import register_target

if TYPE_CHECKING:
    from ..build.accuracy import AccuracyControl
    from ..calibration import CalibrationSet
    from ..spec import InputSpec

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _ort():
    return require("onnxruntime", "the onnxruntime-cpu target")


@register_target("onnxruntime-cpu")
class ONNXRuntimeCPU(Target):
    """ONNX Runtime, CPU execution provider."""

    extra = "onnxruntime"
    precisions = ("fp32", "int8")  # the CPU EP has no fast fp16 kernels
    provider: ClassVar[str] = "CPUExecutionProvider"

    @classmethod
    @functools.lru_cache(maxsize=None)
    def availability(cls) -> tuple[bool, str]:
        if not is_installed("onnxruntime"):
            return False, "onnxruntime is not installed (pip install 'edgeship[onnxruntime]')"
        ort = _ort()
        available = ort.get_available_providers()
        if cls.provider not in available:
            return False, f"this onnxruntime build has no {cls.provider} (it has {available})"
        suffix = "" if cls.provider == "CPUExecutionProvider" else f" {cls.provider}"
        return True, f"onnxruntime {ort.__version__}{suffix}"

    def compile(self, request: CompileRequest, out_dir: Path) -> Artifact:
        """INT8 in the flavour that is exact on ``fleet`` (see ``StaticQuantizer.choose_flavour``);
        ``calibration_method`` "minmax" | "percentile" | "entropy", or "auto": chosen by fake-quant
        agreement on the validation inputs when ``accuracy`` brings them, else MinMax."""
        onnx_path, spec, precision, calibration = (request.onnx_path, request.spec, request.precision,
                                                   request.calibration)
        accuracy, keep_fp, fleet, calibration_method = (request.accuracy, request.keep_fp, request.fleet,
                                                        request.calibration_method)
        ort = _ort()
        out_dir.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"execution_provider": "CPUExecutionProvider"}
        if precision == "fp32":
            shutil.copyfile(onnx_path, out_dir / "model.onnx")
        elif precision == "int8" and request.quantized:  # a QAT graph: its trained ranges as U8U8 Q/DQ
            from ._onnx_graphs import fake_quantize_to_qdq

            converted = fake_quantize_to_qdq(onnx_path, out_dir / "model.onnx")
            options.update(quant_format="QDQ", int8_flavour="u8u8-qat", calibration_method="trained ranges",
                           activations="uint8", weights="uint8 per-channel, zero point from the trained range",
                           quantizer=f"quantization-aware training (NNCF FakeQuantize -> Q/DQ, {converted} nodes)",
                           flavour_choice={"flavour": "u8u8-qat", "reason": "uint8 weights cannot saturate without "
                                           "VNNI, and hold NNCF's 8-bit ranges exactly"}, fp_layers=[])
            if accuracy is not None:
                artifact = Artifact(self.name, precision, ["model.onnx"], {"onnxruntime": ort.__version__}, options)
                value = accuracy.score(self.validation_outputs(out_dir, artifact, spec, accuracy))
                options["accuracy"] = accuracy.record(value, [], "quantization-aware training")
        elif precision == "int8":
            if calibration is None:
                raise ConfigError("int8 on onnxruntime-cpu needs calibration data")
            fleet = fleet or resolve_fleet()
            if calibration_method not in ("auto", *CALIBRATION_METHODS):
                raise ConfigError(f"calibration_method must be 'auto' or one of {CALIBRATION_METHODS}, "
                                  f"got {calibration_method!r}")
            with StaticQuantizer(onnx_path, spec, calibration, keep_fp) as quantizer:
                validation = accuracy.inputs if accuracy is not None else None
                if calibration_method != "auto" or validation is None:
                    quantizer.method = "minmax" if calibration_method == "auto" else calibration_method
                    methods = (quantizer.method,)
                else:
                    methods = CALIBRATION_METHODS
                choice = quantizer.choose_flavour(fleet, validation, methods=methods)
                if accuracy is None:
                    quantizer.quantize(out_dir / "model.onnx")
                else:
                    options["accuracy"] = quantizer.quantize_within_budget(out_dir / "model.onnx", accuracy)
            flavour = INT8_FLAVOURS[choice["flavour"]]
            options.update(quant_format="QDQ", int8_flavour=choice["flavour"], flavour_choice=choice,
                           calibration_method=choice["calibration_method"],
                           activations="uint8", weights=flavour.weights,
                           quantizer=f"onnxruntime.quantization {ort.__version__}",
                           fp_layers=sorted(set(keep_fp) | set(options.get("accuracy", {}).get("fp_layers", []))))
        else:
            raise ConfigError(f"onnxruntime-cpu supports precisions {self.precisions}, got '{precision}'")
        return Artifact(
            target=self.name,
            precision=precision,
            files=["model.onnx"],
            backend_versions={"onnxruntime": ort.__version__},
            options=options,
        )

    def load(self, root: Path, artifact: Artifact, spec: "InputSpec", **options: Any) -> "ONNXRuntimeRuntime":
        return ONNXRuntimeRuntime(root / artifact.files[0], spec, artifact.precision,
                                  model_bytes=artifact.contents.get(artifact.files[0]), **options)


QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Int8Flavour:
    """One way to quantize for ONNX Runtime's CPU kernels: weight type and range, and where it is exact."""

    weight_type: str  # "QInt8" | "QUInt8"
    reduce_range: bool
    weights: str  # as the manifest describes them
    saturates_without_vnni: bool


INT8_FLAVOURS: dict[str, Int8Flavour] = {
    # uint8 x int8 pairs summed in int16: up to 2 * 255 * 128 = 65280 > 32767 without VNNI
    "u8s8": Int8Flavour("QInt8", False, "int8 per-channel", True),
    # 7-bit weights: 2 * 255 * 64 = 32640 <= 32767, exact on every x86 CPU
    "u8s8-reduce-range": Int8Flavour("QInt8", True, "int8 per-channel, 7-bit range", False),
    # uint8 weights take ONNX Runtime's U8U8 kernels, which widen to 16 bits before multiplying
    "u8u8": Int8Flavour("QUInt8", False, "uint8 per-channel", False),
}
# in preference order: among flavours tied on fidelity the first wins (int8 weights take the u8s8 kernels, VNNI too)
FLEET_SAFE_FLAVOURS = tuple(name for name, f in INT8_FLAVOURS.items() if not f.saturates_without_vnni)
#: ONNX Runtime's calibration methods: edgeship name -> onnxruntime.quantization.CalibrationMethod member
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


class StaticQuantizer:
    """Static QDQ quantization (uint8 activations, per-channel weights), calibrated once on ``calibration``.

    The graph is prepared (shape inference, optimisation) and the activation ranges are computed
    once; every later ``quantize`` call (another flavour, layers excluded or alone) reuses them.
    """

    def __init__(self, src: Path, spec: "InputSpec", calibration: "CalibrationSet", keep_fp: Sequence[str] = (),
                 flavour: str = "u8s8") -> None:
        if flavour not in INT8_FLAVOURS:
            raise ConfigError(f"unknown onnxruntime-cpu INT8 flavour {flavour!r}; known: {sorted(INT8_FLAVOURS)}")
        self._src, self._spec, self._calibration = src, spec, calibration
        self.flavour = flavour
        self.method = "minmax"  # of CALIBRATION_METHODS: how activation ranges come from the calibration set
        self._keep_fp = list(keep_fp)  # always left in floating point
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeship-ort-")
        self._prepared = Path(self._tmp.name) / "prepared.onnx"
        self._cache = Path(self._tmp.name)  # ranges-<method>.json: one calibration pass per method
        self._count = 0
        self._whole: dict[tuple[str, str], Path] = {}  # (flavour, method) -> a whole-graph quantization made

    def __enter__(self) -> "StaticQuantizer":
        require("onnx", "INT8 quantization for onnxruntime-cpu")
        from onnxruntime.quantization.shape_inference import quant_pre_process

        try:
            quant_pre_process(str(self._src), str(self._prepared), skip_symbolic_shape=True)
        except Exception as exc:
            self._tmp.cleanup()
            raise CompileError(f"ONNX Runtime could not prepare {self._src.name} for quantization: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def layers(self) -> list[str]:
        """Names of the quantizable nodes (Conv, ConvTranspose, Gemm, MatMul) of the prepared graph."""
        onnx = require("onnx")
        graph = onnx.load(str(self._prepared), load_external_data=False).graph
        return [n.name for n in graph.node if n.op_type in QUANTIZABLE_OPS and n.name and n.name not in self._keep_fp]

    def quantize(self, dst: Path, exclude: list[str] | None = None, only: list[str] | None = None,
                 flavour: str | None = None) -> Path:
        quantization = require("onnxruntime.quantization", "INT8 quantization for onnxruntime-cpu")
        kind = INT8_FLAVOURS[flavour or self.flavour]
        whole = (flavour or self.flavour, self.method) if not exclude and not only else None
        if whole in self._whole:  # the same graph, already quantized while choosing the flavour or method
            shutil.copyfile(self._whole[whole], dst)
            return dst
        try:
            quantization.quantize_static(
                str(self._prepared),
                str(dst),
                calibration_reader(self._spec, self._calibration),
                quant_format=quantization.QuantFormat.QDQ,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=getattr(quantization.QuantType, kind.weight_type),
                per_channel=True,
                reduce_range=kind.reduce_range,
                calibrate_method=getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[self.method]),
                nodes_to_exclude=(self._keep_fp + list(exclude or [])) or None,
                nodes_to_quantize=only,
                calibration_cache_path=str(self._cache / f"ranges-{self.method}.json"),
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        except Exception as exc:
            raise CompileError(f"ONNX Runtime static quantization failed: {exc}") from exc
        if whole is not None:
            self._whole[whole] = dst
        return dst

    def choose_flavour(self, fleet: Fleet, inputs: np.ndarray | None = None,
                       methods: Sequence[str] = ("minmax",)) -> dict[str, Any]:
        """Pick the INT8 flavour for ``fleet``, then the calibration method among ``methods``, and set
        both on this quantizer; returns why, with the measurements.

        Full-range U8S8 where every declared CPU accumulates INT8 in 32 bits; otherwise each flavour
        that cannot saturate is quantized and measured on ``inputs`` (default: the calibration samples):
        its fake-quant numerics' top-1 agreement with FP32 (``session.disable_quant_qdq``: the
        quantization itself, independent of this CPU's kernels), whether this CPU's fused kernels
        reproduce them, and p50 latency here. Among the flavours not significantly less faithful than
        the best (a paired sign test on the samples where they differ), the first of ``FLEET_SAFE_FLAVOURS``
        wins: the latency here is recorded, not used — the build machine is not the device, and a choice
        by a noisy timing made the same build give different bundles (seen on a 2-core AVX2 EPYC). Several
        ``methods`` are compared the same way on the chosen flavour (ties: the first listed).
        """
        methods = tuple(methods)
        self.method = methods[0]
        measuring = fleet.saturating or len(methods) > 1
        x = inputs if inputs is not None or not measuring else self._calibration.as_batch()
        record: dict[str, Any] = {"fleet": fleet.to_dict(),
                                  "samples": min(256, len(x) if x is not None else len(self._calibration))}
        if measuring:
            x = np.ascontiguousarray(x[:256], dtype=self._spec.dtype)
        reference = None
        comparable = not _answers_vary_in_size(self._src)
        if not fleet.saturating:
            self.flavour = "u8s8"
            reason = f"every declared CPU ({fleet.describe()}) accumulates INT8 products in 32 bits: full-range U8S8"
        elif not comparable:  # detections in the graph: outputs of data-dependent size cannot be compared row by row
            self.flavour = FLEET_SAFE_FLAVOURS[0]
            reason = (f"the fleet ({fleet.describe()}) may hold a CPU without VNNI, where full-range U8S8 saturates; "
                      f"{self.flavour}, the first fleet-safe flavour (the graph's answers vary in size, so flavours "
                      "are not compared)")
            methods = methods[:1]
            self.method = methods[0]
        else:
            from ..measure.latency import measure_latency  # a measuring helper, not orchestration

            reference = _predict(_session(self._src), self._spec.name, x)
            measured, hits = [], {}
            for name in FLEET_SAFE_FLAVOURS:
                path = self.quantize(Path(self._tmp.name) / f"flavour-{name}.onnx", flavour=name)
                fused_session = _session(path)
                fake = _predict(_session(path, fake_quant=True), self._spec.name, x)
                fused = _predict(fused_session, self._spec.name, x)
                one = x[:1]
                p50 = measure_latency(lambda: fused_session.run(None, {self._spec.name: one}), runs=40,
                                      warmup=5).p50_ms
                hits[name] = _agrees(fake, reference)
                measured.append({"flavour": name, "fake_quant_agreement": float(hits[name].mean()),
                                 "fused_vs_fake_agreement_here": _agreement(fused, fake), "p50_ms_here": p50})
            best = max(hits, key=lambda n: hits[n].mean())
            tied = [m for m in measured if not _significantly_worse(hits[m["flavour"]], hits[best])]
            tied_names = {m["flavour"] for m in tied}
            self.flavour = next(name for name in FLEET_SAFE_FLAVOURS if name in tied_names)  # deterministic
            reason = (f"the fleet ({fleet.describe()}) may hold a CPU without VNNI, where full-range U8S8 saturates; "
                      f"{self.flavour} " + ("is the most faithful to FP32" if len(tied) == 1 else
                                             "ties on fidelity to FP32 and comes first in the preference order "
                                             f"{list(FLEET_SAFE_FLAVOURS)}")
                      + f" ({len(x)} samples)")
            record["measured"] = measured
        if len(methods) > 1:
            if reference is None:
                reference = _predict(_session(self._src), self._spec.name, x)
            by_method, hits = [], {}
            for method in methods:
                self.method = method
                path = self.quantize(Path(self._tmp.name) / f"method-{method}.onnx")
                hits[method] = _agrees(_predict(_session(path, fake_quant=True), self._spec.name, x), reference)
                by_method.append({"calibration_method": method, "fake_quant_agreement": float(hits[method].mean())})
            best = max(hits, key=lambda m: hits[m].mean())
            self.method = next(m for m in methods if not _significantly_worse(hits[m], hits[best]))
            reason += f"; calibration {self.method}, the most faithful of {list(methods)} on the validation inputs"
            record["methods_measured"] = by_method
        return {"flavour": self.flavour, "calibration_method": self.method, "reason": reason, **record}

    def _predictor(self, **which: Any):
        """Quantize to a scratch file and return a predict function over it."""
        self._count += 1
        path = self.quantize(Path(self._tmp.name) / f"trial-{self._count}.onnx", **which)
        session = _session(path)
        name = session.get_outputs()[0].name
        return lambda x: session.run([name], {self._spec.name: x})[0]

    def sensitivity(self, control: "AccuracyControl", progress_cb: Any = None) -> list[dict[str, Any]]:
        """Each quantizable layer quantized alone: output error and metric drop, worst first."""
        control.fill_reference(self._src, self._spec)
        return control.layer_sensitivity(self.layers(), lambda layer: self._predictor(only=[layer]), progress_cb)

    def quantize_within_budget(self, dst: Path, control: "AccuracyControl") -> dict[str, Any]:
        """Quantize everything; if the drop is over budget, rank layers and keep the worst in FP."""
        control.fill_reference(self._src, self._spec)
        full = control.score(control.predict(self._predictor()))
        fp_layers: list[str] = []
        extra: dict[str, Any] = {"full_int8_drop_pts": control.drop_pts(full)}
        if control.drop_pts(full) > control.max_drop + 1e-9:
            ranking = self.sensitivity(control)
            fp_layers, _, trials = control.fp_fallback([r["layer"] for r in ranking], lambda ex: self._predictor(exclude=ex))
            extra.update(sensitivity=ranking, trials=trials)
        self.quantize(dst, exclude=fp_layers)
        session = _session(dst)  # measure the very file that goes into the bundle
        name = session.get_outputs()[0].name
        final = control.score(control.predict(lambda x: session.run([name], {self._spec.name: x})[0]))
        method = "edgeship sensitivity ranking + FP fallback" if fp_layers else "full INT8 within budget"
        return control.record(final, fp_layers, method, **extra)


def _answers_vary_in_size(path: Path) -> bool:
    """True when the graph decides how many rows it answers (NMS inside: a two-stage detector)."""
    import onnx

    return any(n.op_type == "NonMaxSuppression" for n in onnx.load(str(path), load_external_data=False).graph.node)


def _predict(session: Any, input_name: str, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The first output of ``session`` on ``x``, in batches (of the graph's own size where its batch is fixed: a
    last, partial one is padded with its last row and the padding's outputs dropped)."""
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed > 0:
        batch = fixed
    outputs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        if isinstance(fixed, int) and fixed > 0 and n < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n, axis=0)])
        outputs.append(session.run(None, {input_name: chunk})[0][:n])
    return np.concatenate(outputs)


def _session(path: Path, threads: int | None = None, fake_quant: bool = False) -> Any:
    """A CPU session; ``fake_quant`` runs Q/DQ pairs as float arithmetic (the quantization numerics alone)."""
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if fake_quant:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ONNXRuntimeRuntime(Runtime):
    """An ONNX Runtime InferenceSession on one execution provider (CPU unless a target says otherwise)."""

    target = "onnxruntime-cpu"

    def __init__(self, model_path: Path, spec: "InputSpec", precision: str, threads: int | None = None,
                 providers: list[Any] | None = None, target: str = "onnxruntime-cpu",
                 model_bytes: bytes | None = None) -> None:
        """``model_bytes``: the model itself (what a bundle hashed); ``model_path`` is then only its name."""
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self._path = model_path
        self._model_bytes = model_bytes
        self._threads = threads
        self._providers = providers or ["CPUExecutionProvider"]
        self.target = target
        super().__init__(spec, precision)

    def _load(self) -> None:
        ort = _ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._threads is not None:
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
        model, self._model_bytes = (self._model_bytes if self._model_bytes is not None else str(self._path)), None
        self._session = ort.InferenceSession(model, options, providers=self._providers)
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        def info(arg: Any) -> TensorInfo:
            shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
            return TensorInfo(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))

        return [info(a) for a in self._session.get_inputs()], [info(a) for a in self._session.get_outputs()]

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._session.run(self._output_names, feed)))

    def _close(self) -> None:
        del self._session


class _ExecutionProviderTarget(ONNXRuntimeCPU):
    """ONNX Runtime on an accelerator's execution provider, present when ONNX Runtime was built with it.

    Each provider gets the INT8 flavour it runs: symmetric S8S8 Q/DQ for TensorRT (it takes no
    uint8 activations), U8S8 Q/DQ for OpenVINO; FP16 as a float16 graph with float32 inputs/outputs.
    """

    int8_graph: ClassVar[str] = "u8s8"

    @classmethod
    def can_compile(cls) -> tuple[bool, str]:
        """The graphs need onnx and ONNX Runtime's quantizer, not the provider itself."""
        for module in ("onnx", "onnxruntime"):
            if not is_installed(module):
                return False, f"{module} is not installed"
        return True, "graph only"

    def compile(self, request: CompileRequest, out_dir: Path) -> Artifact:
        onnx_path, spec, precision, calibration = (request.onnx_path, request.spec, request.precision,
                                                   request.calibration)
        accuracy, keep_fp = request.accuracy, request.keep_fp
        if precision == "int8" and self.int8_graph == "s8s8":
            if calibration is None:
                raise ConfigError(f"int8 on {self.name} needs calibration data")
            if accuracy is not None:
                raise ConfigError(f"Recipe.max_drop is not yet implemented for {self.name}")
            out_dir.mkdir(parents=True, exist_ok=True)
            made = tensorrt_int8_graph(onnx_path, out_dir / "model.onnx", spec, calibration, exclude=keep_fp)
            artifact = Artifact(self.name, precision, ["model.onnx"], {"onnxruntime": _ort().__version__},
                                {"quant_format": "QDQ", "activations": "int8 symmetric", "weights": "int8 per-channel",
                                 **made})
        elif precision == "fp16":
            out_dir.mkdir(parents=True, exist_ok=True)
            float16_graph(onnx_path, out_dir / "model.onnx")
            artifact = Artifact(self.name, precision, ["model.onnx"], {"onnxruntime": _ort().__version__},
                                {"graph": "float16, float32 inputs and outputs"})
        else:
            artifact = super().compile(request, out_dir)
            artifact.target = self.name
        artifact.options["execution_provider"] = self.provider
        return artifact

    def load(self, root: Path, artifact: Artifact, spec: "InputSpec", **options: Any) -> "ONNXRuntimeRuntime":
        return ONNXRuntimeRuntime(root / artifact.files[0], spec, artifact.precision,
                                  providers=[self.provider, "CPUExecutionProvider"], target=self.name,
                                  model_bytes=artifact.contents.get(artifact.files[0]), **options)


@register_target("onnxruntime-cuda")
class ONNXRuntimeCUDA(_ExecutionProviderTarget):
    """ONNX Runtime's CUDA execution provider (FP32 and FP16; its INT8 kernels cover few ops)."""

    provider = "CUDAExecutionProvider"
    precisions = ("fp32", "fp16")


@register_target("onnxruntime-tensorrt")
class ONNXRuntimeTensorRT(_ExecutionProviderTarget):
    """ONNX Runtime's TensorRT execution provider, fed the same explicit-precision graphs as tensorrt-gpu."""

    provider = "TensorrtExecutionProvider"
    precisions = ("fp32", "fp16", "int8")
    int8_graph = "s8s8"


@register_target("onnxruntime-openvino")
class ONNXRuntimeOpenVINO(_ExecutionProviderTarget):
    """ONNX Runtime's OpenVINO execution provider (onnxruntime-openvino builds)."""

    provider = "OpenVINOExecutionProvider"
    precisions = ("fp32", "int8")
