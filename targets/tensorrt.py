"""tensorrt-gpu and tensorrt-jetson: TensorRT engines built from explicit-precision ONNX graphs.

TensorRT 11 removed implicit INT8 (BuilderFlag.INT8 and the calibrator classes) and builds strongly
typed networks, so precision must live in the graph: INT8 is a symmetric S8S8 Q/DQ graph from
edgeship's calibration (zero-point 0, per-output-channel weight scales, Q/DQ on the inputs and
weights of Conv/Gemm/MatMul), FP16 is the graph converted to float16 with float32 inputs and outputs.
That works on TensorRT 10 and 11 alike.

The precision graph is made on any machine (it needs only onnx and onnxruntime's quantizer) and goes
into the bundle; the engine is built where TensorRT and the GPU are — at compile time when they are
present, or on the device with ``load(..., rebuild=True)``. An engine is tied to the TensorRT version
and the GPU (name, compute capability) it was built for; loading it anywhere else is refused.
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
from ._onnx_graphs import float16_graph, symmetric_qdq
from .base import Artifact, CompileRequest, Runtime, Target, TensorInfo
from .registry import register_target

if TYPE_CHECKING:
    from ..spec import InputSpec

WORKSPACE_BYTES = 2 << 30
OPT_LEVEL = 3
MAX_BATCH = 32  # the optimization profile's max for a dynamic batch dim (opt = 1)


def _trt():
    return require("tensorrt", "the TensorRT targets")


def gpu_identity(device: int = 0) -> dict[str, Any]:
    """Name and compute capability of a CUDA GPU (cuda-python, which TensorRT's wheel uses; else torch)."""
    if is_installed("cuda.bindings"):
        from cuda.bindings import runtime as cudart

        err, props = cudart.cudaGetDeviceProperties(device)
        if int(err) != 0:
            raise MissingDependencyError(f"no CUDA GPU {device} available (cudaGetDeviceProperties: {err})")
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return {"gpu": name.strip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}
    torch = require("torch", "finding the CUDA GPU (install cuda-python or torch)")
    if not torch.cuda.is_available():
        raise MissingDependencyError("no CUDA GPU is visible to torch")
    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


class _TensorRTBase(Target):
    extra = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    runtime_options = {"rebuild": (False, True), "device": (0, 1, 2, 3, 4, 5, 6, 7)}
    dla: ClassVar[bool] = False

    @classmethod
    @functools.lru_cache(maxsize=None)
    def availability(cls) -> tuple[bool, str]:
        if not is_installed("tensorrt"):
            return False, "tensorrt is not installed (pip install 'edgeship[tensorrt]'; NVIDIA's index serves its libs)"
        try:
            identity = gpu_identity()
        except MissingDependencyError as exc:
            return False, str(exc)
        trt = _trt()
        return True, f"tensorrt {trt.__version__} on {identity['gpu']} (sm {identity['compute_capability']})"

    @classmethod
    def can_compile(cls) -> tuple[bool, str]:
        """The precision graph needs onnx and onnxruntime only; the engine waits for the device if need be."""
        for module in ("onnx", "onnxruntime"):
            if not is_installed(module):
                return False, f"{module} is not installed"
        return True, "graph only" if not cls.availability()[0] else "graph and engine"

    def compile(self, request: CompileRequest, out_dir: Path) -> Artifact:
        """``fleet`` does not apply (TensorRT's INT8 runs on the GPU, not CPU kernels); the S8S8 graph is
        calibrated with MinMax whatever ``calibration_method`` says."""
        onnx_path, spec, precision, calibration = (request.onnx_path, request.spec, request.precision,
                                                   request.calibration)
        accuracy, keep_fp = request.accuracy, request.keep_fp
        dla_core = request.options.get("dla_core")
        out_dir.mkdir(parents=True, exist_ok=True)
        graph = out_dir / "model.onnx"
        if precision == "int8":
            if calibration is None:
                raise ConfigError(f"int8 on {self.name} needs calibration data")
            if accuracy is not None:
                raise ConfigError(f"Recipe.max_drop is not yet implemented for {self.name}; build int8 without it")
            symmetric_qdq(onnx_path, graph, spec, calibration, exclude=keep_fp)
        elif precision == "fp16":
            float16_graph(onnx_path, graph)
        else:
            shutil.copyfile(onnx_path, graph)
        options: dict[str, Any] = {"graph": "symmetric S8S8 QDQ" if precision == "int8" else precision,
                                   "workspace_bytes": WORKSPACE_BYTES, "optimization_level": OPT_LEVEL}
        if self.dla:
            options["dla_core"] = 0 if dla_core is None else dla_core
        files = ["model.onnx"]
        versions: dict[str, str] = {}
        if self.availability()[0]:
            meta = build_engine(graph, out_dir / "model.engine", out_dir / "timing.cache", spec, options)
            options["engine"] = meta
            files += ["model.engine", "timing.cache"]
            versions["tensorrt"] = meta["tensorrt"]
        else:
            options["engine"] = None  # built on the device: load(..., rebuild=True)
        return Artifact(target=self.name, precision=precision, files=files, backend_versions=versions, options=options)

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

    dla = True


def build_engine(graph: Path, engine_path: Path | None, cache_path: Path, spec: "InputSpec", options: dict[str, Any],
                 return_bytes: bool = False) -> Any:
    """Parse the ONNX graph (strongly typed where the TensorRT version has it) and build a serialized engine.

    Reuses the timing cache at ``cache_path`` when present and writes it back. Returns the engine's
    metadata (TensorRT version, GPU, compute capability, DLA layer placement), or the engine bytes.
    """
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10 needs it
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CompileError(f"TensorRT could not parse {graph.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.get("workspace_bytes", WORKSPACE_BYTES)))
    config.builder_optimization_level = int(options.get("optimization_level", OPT_LEVEL))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if options.get("dla_core") is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options["dla_core"])
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    dynamic = [d is None for d in spec.shape]
    if any(dynamic):
        profile = builder.create_optimization_profile()
        low = tuple(1 if d is None else d for d in spec.shape)
        high = tuple((MAX_BATCH if i == 0 else 4 * (spec.shape[i] or 1)) if d is None else d
                     for i, d in enumerate(spec.shape))
        profile.set_shape(spec.name, low, low, high)
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompileError(f"TensorRT failed to build an engine from {graph.name} (see the TensorRT log above)")
    engine_bytes = bytes(serialized)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    if return_bytes:
        return engine_bytes
    assert engine_path is not None
    engine_path.write_bytes(engine_bytes)
    meta = {"tensorrt": trt.__version__, **gpu_identity(), "layers": _layer_placement(trt, logger, engine_bytes)}
    return meta


def _layer_placement(trt: Any, logger: Any, engine_bytes: bytes) -> dict[str, list[str]]:
    """Which layers run on a DLA core and which on the GPU, from the engine inspector."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    placement: dict[str, list[str]] = {"dla": [], "gpu": []}
    for layer in info.get("Layers", []):
        name = layer.get("Name", str(layer)) if isinstance(layer, dict) else str(layer)
        on_dla = "DLA" in json.dumps(layer) if isinstance(layer, dict) else "DLA" in name
        placement["dla" if on_dla else "gpu"].append(name)
    return placement


class TensorRTRuntime(Runtime):
    """A deserialized engine and one execution context; device buffers from torch, run on a CUDA stream.

    An execution context (its input shapes and tensor addresses) and the stream are not thread-safe,
    so ``_run`` holds one lock for the whole call: concurrent callers take turns on the GPU. The
    simplest safe choice, not measured (no GPU where it was written); a context and stream per thread
    would let calls overlap, at the cost of each context's activation memory.
    """

    def __init__(self, engine_bytes: bytes, spec: "InputSpec", precision: str, device: int = 0,
                 target: str = "tensorrt-gpu") -> None:
        self._engine_bytes = engine_bytes
        self._device = device
        self.target = target
        super().__init__(spec, precision)

    def _load(self) -> None:
        trt = _trt()
        self._torch = require("torch", "TensorRT device buffers")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(self._engine_bytes)
        if self._engine is None:
            raise CompileError("TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        self._context_lock = threading.Lock()  # one caller at a time on the context and the stream
        self._stream = self._torch.cuda.Stream(device=self._device)
        self._names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in self._names}
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in self._names}

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        def info(name: str) -> TensorInfo:
            shape = tuple(None if d < 0 else int(d) for d in self._engine.get_tensor_shape(name))
            return TensorInfo(name, shape, self._dtypes[name].name)

        return ([info(n) for n in self._names if self._is_input[n]], [info(n) for n in self._names if not self._is_input[n]])

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        device = f"cuda:{self._device}"
        keep = []
        with self._context_lock, torch.cuda.stream(self._stream):
            for name, x in feed.items():
                host = torch.from_numpy(x).pin_memory()
                dev = host.to(device, non_blocking=True)
                keep.append(dev)
                self._context.set_input_shape(name, tuple(x.shape))
                self._context.set_tensor_address(name, dev.data_ptr())
            outputs = {}
            for info in self._outputs:
                shape = tuple(self._context.get_tensor_shape(info.name))
                dev = torch.empty(shape, dtype=getattr(torch, self._dtypes[info.name].name), device=device)
                outputs[info.name] = dev
                self._context.set_tensor_address(info.name, dev.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise CompileError("TensorRT execute_async_v3 failed")
            host_out = {n: t.to("cpu", non_blocking=True) for n, t in outputs.items()}
            self._stream.synchronize()  # under the lock: the next caller's buffers must not race this copy
        return {n: t.numpy() for n, t in host_out.items()}

    def _close(self) -> None:
        del self._context, self._engine
