"""tensorrt-gpu and tensorrt-jetson: TensorRT engines built from explicit-precision ONNX graphs.

TensorRT 11 removed implicit INT8 (BuilderFlag.INT8 and the calibrator classes) and builds strongly
typed networks, so precision must live in the graph. INT8 is NVIDIA Model Optimizer's ONNX PTQ graph
(``modelopt.onnx.quantization``, run on the CPU execution provider, so it is made on any build machine):
Q/DQ placed the way TensorRT fuses them — residual ``Add`` inputs, pooling and concatenations included, not
only Conv/Gemm/MatMul inputs — symmetric, weights per output channel, the rest in FP16; on Jetson with Q/DQ on
every tensor (``target_dla``), which a DLA needs. FP16 is the graph in float16 with float32 inputs and outputs.

The precision graph goes into the bundle; the engine is built where TensorRT and the GPU are — at compile time
when they are present, or on the device with ``load(..., rebuild=True)`` — with Polygraphy
(``NetworkFromOnnxPath(strongly_typed=True)``, ``CreateConfig``, ``EngineBytesFromNetwork``), and run with
Polygraphy's ``TrtRunner``: device buffers allocated by the runner and reused across calls, no torch on the device.
An engine is tied to the TensorRT version and the GPU it was built for; loading it anywhere else is refused.
``tensorrt-jetson`` builds a static batch (compile option ``batch``, default 1; ``dynamic_batch=True`` for an
optimization profile), records which layers landed on the DLA and which fell back to the GPU, and fails the
compile when more than ``max_gpu_fallback`` of them fell back.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._lazy import is_installed, require
from ..errors import CompileError, ConfigError, MissingDependencyError
from ._onnx_graphs import float16_graph, static_batch, tensorrt_int8_graph
from .base import Artifact, CompileRequest, Runtime, Target, TensorInfo
from .registry import register_target

if TYPE_CHECKING:
    from ..spec import InputSpec

WORKSPACE_BYTES = 2 << 30
OPT_LEVEL = 3
MAX_BATCH = 32  # the optimization profile's max for a dynamic batch dim (opt = 1)
MAX_GPU_FALLBACK = 0.5  # tensorrt-jetson: at most this fraction of the engine's layers may fall back to the GPU


def _trt():
    return require("tensorrt", "the TensorRT targets")


def gpu_identity(device: int = 0) -> dict[str, Any]:
    """Name and compute capability of a CUDA GPU, from cuda-python (what TensorRT's wheel uses; never torch)."""
    if not is_installed("cuda.bindings"):
        raise MissingDependencyError("cuda-python is not installed (pip install 'edgeship[tensorrt]'): it finds the "
                                     "GPU an engine is built for")
    from cuda.bindings import runtime as cudart

    err, props = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise MissingDependencyError(f"no CUDA GPU {device} available (cudaGetDeviceProperties: {err})")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name.strip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}


class _TensorRTBase(Target):
    extra = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    runtime_options = {"rebuild": (False, True), "device": (0, 1, 2, 3, 4, 5, 6, 7)}
    compile_options: ClassVar[dict[str, Any]] = {"batch": int, "dynamic_batch": (False, True)}
    dla: ClassVar[bool] = False

    @classmethod
    @functools.lru_cache(maxsize=None)
    def availability(cls) -> tuple[bool, str]:
        for module, why in (("tensorrt", "NVIDIA's index serves its libs"), ("polygraphy", "it builds and runs engines")):
            if not is_installed(module):
                return False, f"{module} is not installed (pip install 'edgeship[tensorrt]'; {why})"
        try:
            identity = gpu_identity()
        except MissingDependencyError as exc:
            return False, str(exc)
        trt = _trt()
        return True, f"tensorrt {trt.__version__} on {identity['gpu']} (sm {identity['compute_capability']})"

    @classmethod
    def can_compile(cls) -> tuple[bool, str]:
        """The precision graph needs onnx and onnxruntime (INT8: NVIDIA Model Optimizer, ``edgeship[tensorrt-build]``);
        the engine waits for the device if need be."""
        for module in ("onnx", "onnxruntime"):
            if not is_installed(module):
                return False, f"{module} is not installed"
        return True, "graph only" if not cls.availability()[0] else "graph and engine"

    def compile(self, request: CompileRequest, out_dir: Path) -> Artifact:
        """``fleet`` does not apply (TensorRT's INT8 runs on the GPU, not CPU kernels); the INT8 graph is calibrated
        with MinMax whatever ``calibration_method`` says. Compile options: ``batch`` (the static batch, default 1),
        ``dynamic_batch`` (an optimization profile 1..MAX_BATCH; the default on tensorrt-gpu when the spec's batch
        is dynamic, never by default on tensorrt-jetson), and on tensorrt-jetson ``dla_core`` and ``max_gpu_fallback``."""
        spec, precision, calibration = request.spec, request.precision, request.calibration
        options = self._engine_options(request)
        out_dir.mkdir(parents=True, exist_ok=True)
        graph = out_dir / "model.onnx"
        source = request.onnx_path
        if not options["dynamic_batch"] and spec.shape[0] is None:
            source = out_dir / "static.onnx"
            static_batch(request.onnx_path, source, options["batch"])
        try:
            if precision == "int8":
                if calibration is None:
                    raise ConfigError(f"int8 on {self.name} needs calibration data")
                if request.accuracy is not None:
                    raise ConfigError(f"Recipe.max_drop is not yet implemented for {self.name}; build int8 without it")
                options.update(graph="modelopt int8 QDQ" + (" (dla)" if self.dla else ""),
                               **tensorrt_int8_graph(source, graph, spec, calibration, exclude=request.keep_fp,
                                                     dla=self.dla))
            elif precision == "fp16":
                float16_graph(source, graph)
                options["graph"] = "fp16"
            else:
                shutil.copyfile(source, graph)
                options["graph"] = "fp32"
        finally:
            if source != request.onnx_path:
                source.unlink(missing_ok=True)
        files = ["model.onnx"]
        versions: dict[str, str] = {}
        if self.availability()[0]:
            meta = build_engine(graph, out_dir / "model.engine", out_dir / "timing.cache", spec, options)
            check_dla_fallback(meta["layers"], options)
            options["engine"] = meta
            files += ["model.engine", "timing.cache"]
            versions["tensorrt"] = meta["tensorrt"]
        else:
            options["engine"] = None  # built on the device: load(..., rebuild=True)
        return Artifact(target=self.name, precision=precision, files=files, backend_versions=versions, options=options)

    def _engine_options(self, request: CompileRequest) -> dict[str, Any]:
        """The build settings this artifact records: workspace, level, batch, and on Jetson the DLA core and limit."""
        given = self.check_compile_options(request.options)
        batch = given.get("batch", 1)
        dynamic = given.get("dynamic_batch", not self.dla and request.spec.shape[0] is None)
        if dynamic and request.spec.shape[0] is not None:
            raise ConfigError(f"dynamic_batch needs a dynamic batch dim in the InputSpec; its shape is {request.spec.shape}")
        if "batch" in given and (dynamic or request.spec.shape[0] is not None):
            raise ConfigError("batch fixes a dynamic batch dim; give it without dynamic_batch=True, for a spec whose "
                              "batch dim is None")
        options: dict[str, Any] = {"workspace_bytes": WORKSPACE_BYTES, "optimization_level": OPT_LEVEL,
                                   "dynamic_batch": dynamic, "batch": None if dynamic else batch}
        if self.dla:
            options.update(dla_core=given.get("dla_core", 0),
                           max_gpu_fallback=given.get("max_gpu_fallback", MAX_GPU_FALLBACK))
        return options

    def load(self, root: Path, artifact: Artifact, spec: "InputSpec", rebuild: bool = False, device: int = 0,
             **options: Any) -> "TensorRTRuntime":
        if options:
            raise ConfigError(f"{self.name} runtime options are rebuild and device; got {sorted(options)}")
        engine_path = root / "model.engine"
        meta = artifact.options.get("engine")
        here = {"tensorrt": _trt().__version__, **gpu_identity(device)}
        if meta is None or not engine_path.is_file():
            if not rebuild:
                raise CompileError(f"this {self.name} artifact holds no engine (it was compiled without TensorRT); "
                                   "load it with rebuild=True to build the engine on this device")
        elif any(meta.get(k) != v for k, v in here.items()):
            if not rebuild:
                raise CompileError(f"the engine was built for TensorRT {meta.get('tensorrt')} on {meta.get('gpu')} "
                                   f"(sm {meta.get('compute_capability')}); this device has TensorRT {here['tensorrt']} "
                                   f"on {here['gpu']} (sm {here['compute_capability']}). Load with rebuild=True "
                                   "to rebuild it from the bundled ONNX")
        if rebuild:
            engine_bytes = build_engine(root / "model.onnx", None, root / "timing.cache", spec, artifact.options,
                                        return_bytes=True)
        else:  # the engine as the bundle hashed it, when it came from one
            engine_bytes = artifact.contents.get("model.engine") or engine_path.read_bytes()
        return TensorRTRuntime(engine_bytes, spec, artifact.precision, device=device, target=self.name)


@register_target("tensorrt-gpu")
class TensorRTGPU(_TensorRTBase):
    """TensorRT on a discrete NVIDIA GPU."""


@register_target("tensorrt-jetson")
class TensorRTJetson(_TensorRTBase):
    """TensorRT on a Jetson module: layers on a DLA core where it can run them, the rest on the GPU."""

    compile_options = {**_TensorRTBase.compile_options, "dla_core": (0, 1), "max_gpu_fallback": float}
    dla = True


def build_engine(graph: Path, engine_path: Path | None, cache_path: Path, spec: "InputSpec", options: dict[str, Any],
                 return_bytes: bool = False) -> Any:
    """Build a serialized engine from the ONNX graph with Polygraphy: a strongly typed network (the graph's own
    precisions), the timing cache at ``cache_path`` reused and written back, an optimization profile only for a
    dynamic batch, on Jetson a DLA core with GPU fallback. Returns the engine's metadata (TensorRT version, GPU,
    compute capability, DLA / GPU layer placement), or the engine bytes."""
    trt = _trt()
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessConfig, Profile

    profiles = None
    if options.get("dynamic_batch"):
        low = (1, *spec.shape[1:])
        profiles = [Profile().add(spec.name, min=low, opt=low, max=(MAX_BATCH, *spec.shape[1:]))]
    dla_core = options.get("dla_core")
    config = CreateConfig(
        profiles=profiles, load_timing_cache=str(cache_path) if cache_path.is_file() else None,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(options.get("workspace_bytes", WORKSPACE_BYTES))},
        builder_optimization_level=int(options.get("optimization_level", OPT_LEVEL)),
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED, use_dla=dla_core is not None,
        allow_gpu_fallback=dla_core is not None)
    if dla_core is not None:
        config = PostprocessConfig(config, lambda builder, network, cfg: setattr(cfg, "DLA_core", int(dla_core)))
    try:
        engine_bytes = bytes(EngineBytesFromNetwork(NetworkFromOnnxPath(str(graph), strongly_typed=True),
                                                    config=config, save_timing_cache=str(cache_path))())
    except Exception as exc:  # Polygraphy reports a failed parse or build as an exception of its own
        raise CompileError(f"TensorRT failed to build an engine from {graph.name}: {exc}") from exc
    if return_bytes:
        return engine_bytes
    assert engine_path is not None
    engine_path.write_bytes(engine_bytes)
    return {"tensorrt": trt.__version__, **gpu_identity(), "layers": _layer_placement(trt, engine_bytes)}


def _layer_placement(trt: Any, engine_bytes: bytes) -> dict[str, list[str]]:
    """Which layers run on a DLA core and which on the GPU, from the engine inspector."""
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    placement: dict[str, list[str]] = {"dla": [], "gpu": []}
    for layer in info.get("Layers", []):
        name = layer.get("Name", str(layer)) if isinstance(layer, dict) else str(layer)
        on_dla = "DLA" in json.dumps(layer) if isinstance(layer, dict) else "DLA" in name
        placement["dla" if on_dla else "gpu"].append(name)
    return placement


def check_dla_fallback(placement: dict[str, list[str]], options: dict[str, Any]) -> None:
    """CompileError when more than ``max_gpu_fallback`` of a DLA build's layers fell back to the GPU (naming them)."""
    limit = options.get("max_gpu_fallback")
    if options.get("dla_core") is None or limit is None:
        return
    on_dla, on_gpu = placement.get("dla", []), placement.get("gpu", [])
    total = len(on_dla) + len(on_gpu)
    if total and len(on_gpu) / total > limit:
        raise CompileError(f"{len(on_gpu)} of {total} layers fell back from DLA core {options['dla_core']} to the GPU "
                           f"({len(on_gpu) / total:.0%} > max_gpu_fallback {limit:.0%}): {', '.join(on_gpu[:8])}"
                           + (" ..." if len(on_gpu) > 8 else "") + "; raise Recipe.target_options"
                           "['tensorrt-jetson']['max_gpu_fallback'] to accept it, or keep those layers out of the model")


class TensorRTRuntime(Runtime):
    """A deserialized engine behind Polygraphy's ``TrtRunner``: one execution context and CUDA stream, device
    buffers allocated by the runner on the first call and reused (grown only for a larger batch); no torch.

    A context and its buffers are not thread-safe, so ``_run`` holds one lock for the whole call: concurrent
    callers take turns on the GPU. The simplest safe choice, not measured (no GPU where it was written).
    """

    def __init__(self, engine_bytes: bytes, spec: "InputSpec", precision: str, device: int = 0,
                 target: str = "tensorrt-gpu") -> None:
        self._engine_bytes = engine_bytes
        self._device = device
        self.target = target
        super().__init__(spec, precision)

    def _load(self) -> None:
        trt = _trt()
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        if self._device != 0:
            from cuda.bindings import runtime as cudart

            err, = cudart.cudaSetDevice(self._device)
            if int(err) != 0:
                raise MissingDependencyError(f"no CUDA GPU {self._device} available (cudaSetDevice: {err})")
        try:
            self._engine = EngineFromBytes(self._engine_bytes)()
        except Exception as exc:
            raise CompileError(f"TensorRT could not deserialize the engine: {exc}") from exc
        self._runner = TrtRunner(self._engine)
        self._runner.activate()
        self._lock = threading.Lock()  # one caller at a time on the context, its stream and its buffers
        self._names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in self._names}
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in self._names}

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        def info(name: str) -> TensorInfo:
            shape = tuple(None if d < 0 else int(d) for d in self._engine.get_tensor_shape(name))
            return TensorInfo(name, shape, self._dtypes[name].name)

        return ([info(n) for n in self._names if self._is_input[n]], [info(n) for n in self._names if not self._is_input[n]])

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            outputs = self._runner.infer(feed, check_inputs=False)
            # the runner's host buffers are reused by the next call: the caller gets copies
            return {info.name: np.array(outputs[info.name], copy=True) for info in self._outputs}

    def _close(self) -> None:
        self._runner.deactivate()
        del self._runner, self._engine
