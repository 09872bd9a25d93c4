"""The two contracts every backend implements: a Target compiles, a Runtime runs.

A Target turns the bundle's FP32 ONNX model into an artifact (files in the bundle) and loads that
artifact into a Runtime. The base Runtime owns the public surface — input validation against the
InputSpec, optional preprocessing, the lifecycle and the context manager — so a backend writes only
``_load``, ``_io``, ``_run`` and ``_close``.

Threads: one Runtime may be shared by many threads. ``run`` from any thread returns exactly what it
returns single-threaded (each backend's ``_run`` must be safe to call concurrently), and ``close()``
refuses new runs, waits for the runs in flight, then releases the backend once.
"""

from __future__ import annotations

import enum
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from ..errors import BundleIntegrityError, EdgeshipError, InputValidationError, RuntimeStateError
from ..spec import shape_matches

if TYPE_CHECKING:
    from .._fleet import Fleet
    from ..build.accuracy import AccuracyControl
    from ..calibration import CalibrationSet
    from ..spec import InputSpec

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (None = dynamic) and dtype of one model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TensorInfo":
        return cls(name=str(data["name"]), shape=tuple(data["shape"]), dtype=str(data["dtype"]))


@dataclass
class Artifact:
    """What a Target's compile step produced: files relative to the bundle root, plus metadata."""

    target: str
    precision: str
    files: list[str]
    backend_versions: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    #: file name (as in ``files``) -> the bytes whose hash was checked, when loaded from a bundle: the backend
    #: loads these, never the file again by path (between the hash check and the load it could have changed)
    contents: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class CompileRequest:
    """What a backend is asked to build: one precision of the FP32 ONNX graph, and how (see :meth:`Target.compile`).

    ``options`` holds what only some targets read (TensorRT: ``dla_core``); a backend never imports the build
    stage — the accuracy-aware steps come with ``accuracy``, an :class:`edgeship.build.accuracy.AccuracyControl`.
    """

    onnx_path: Path
    spec: "InputSpec"
    precision: str
    calibration: "CalibrationSet | None" = None
    accuracy: "AccuracyControl | None" = None
    keep_fp: tuple[str, ...] = ()
    fleet: "Fleet | None" = None
    calibration_method: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)
    #: ``onnx_path`` already holds its INT8 ranges (NNCF FakeQuantize ops of a quantization-aware-trained graph):
    #: compile it as it is, no calibration, no FP fallback
    quantized: bool = False


class Target(ABC):
    """A backend adapter, registered by name with ``@register_target``."""

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""  # the pip extra that installs the backend
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS
    # what ``load(**options)`` accepts: name -> the allowed values (a tuple) or the type of an int >= 1
    runtime_options: ClassVar[Mapping[str, tuple[Any, ...] | type]] = {"threads": int}
    # what compile reads from ``CompileRequest.options`` (set by ``Recipe.target_options``): name -> the allowed
    # values (a tuple, matched with their type: True is not 1), or a type: ``int`` an int >= 1, ``float`` a
    # number in [0, 1] (a fraction)
    compile_options: ClassVar[Mapping[str, tuple[Any, ...] | type]] = {}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` as a dict when every one is a runtime option of this target with an allowed value,
        else ConfigError naming what is accepted — so a sweep fails before it compiles anything."""
        return _check_option_values(cls.name, "runtime", cls.runtime_options, options, exact=False)

    @classmethod
    def check_compile_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` as a dict when every one is a compile option of this target with an allowed value,
        else ConfigError naming the target, the option and what is accepted — before anything is compiled."""
        from ..errors import ConfigError

        if isinstance(options, Mapping) and options and not cls.compile_options:
            raise ConfigError(f"{cls.name} has no compile options; got {', '.join(map(repr, options))}")
        return _check_option_values(cls.name, "compile", cls.compile_options, options, exact=True)

    @classmethod
    @abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """(True, backend version) when usable here, else (False, the reason)."""

    @classmethod
    def can_compile(cls) -> tuple[bool, str]:
        """Whether this machine can build the artifact (by default: the backend is available here)."""
        return cls.availability()

    @abstractmethod
    def compile(self, request: "CompileRequest", out_dir: Path) -> Artifact:
        """Build this target's artifact for ``request`` into ``out_dir`` (its files named relative to it).

        ``request.keep_fp`` names ONNX nodes that INT8 must leave in floating point (e.g. a detector's heads).
        ``fleet`` is the CPUs the bundle will run on (``Recipe.cpus``, resolved): INT8 for a CPU target
        must be numerically safe on every one of them; ``artifact.options["flavour_choice"]`` says how.
        ``calibration_method`` ("auto", "minmax", "percentile", "entropy") is how activation ranges
        come from the calibration set; "auto" lets the target choose (by measurement on the validation
        inputs when ``accuracy`` brings them).

        With ``accuracy`` (INT8 only), layers are returned to floating point until the metric drop on
        the validation data is within the budget; ``artifact.options["accuracy"]`` records the result.
        """

    @abstractmethod
    def load(self, root: Path, artifact: Artifact, spec: "InputSpec", **options: Any) -> "Runtime":
        """A Runtime for ``artifact`` whose files live under ``root``."""

    def validation_outputs(self, root: Path, artifact: Artifact, spec: "InputSpec", control: "AccuracyControl") -> np.ndarray:
        """The artifact's first output on the validation inputs, run through this target's own Runtime."""
        with self.load(root, artifact, spec) as rt:
            name = rt.outputs[0].name
            fixed = rt.inputs[0].shape[0]
            if fixed is not None and fixed != control.batch_size:
                control.batch_size = fixed
            return control.predict(lambda x: rt.run(x)[name])


def _describe_allowed(allowed: tuple[Any, ...] | type) -> str:
    if allowed is int:
        return "int >= 1"
    if allowed is float:
        return "float in [0, 1]"
    return "/".join(map(str, allowed))


def _allowed(value: Any, allowed: tuple[Any, ...] | type, exact: bool) -> bool:
    """Whether ``value`` is one of ``allowed`` (see ``Target.runtime_options``); ``exact`` also matches the type
    of a tuple's values (True is not 1, 1.0 is not 1)."""
    if allowed is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if allowed is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if exact:
        return any(type(value) is type(a) and value == a for a in allowed)
    return value in allowed


def _check_option_values(target: str, kind: str, table: Mapping[str, tuple[Any, ...] | type],
                         options: Mapping[str, Any], exact: bool) -> dict[str, Any]:
    """``options`` as a dict when each is in ``table`` ({name: allowed}) with an allowed value, else ConfigError
    saying what ``target`` accepts as its ``kind`` ("runtime", "compile") options."""
    from ..errors import ConfigError

    if not isinstance(options, Mapping):
        raise ConfigError(f"{target} {kind} options must be a mapping of name to value, got {options!r}")
    accepted = ", ".join(f"{k} ({_describe_allowed(v)})" for k, v in table.items()) or "none"
    for name, value in options.items():
        allowed = table.get(name)
        if allowed is None:
            raise ConfigError(f"{target} has no {kind} option {name!r}; it accepts: {accepted}")
        if not _allowed(value, allowed, exact):
            raise ConfigError(f"{target} {kind} option {name}={value!r} is not allowed; it accepts: {accepted}")
    return dict(options)


class RuntimeState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class Runtime(ABC):
    """Runs one compiled model. ``run(inputs) -> {output name: array}`` is the same on every target.

    Use as a context manager, or call ``close()``; a closed runtime refuses to run. Safe to share
    between threads: ``run`` may be called concurrently, and ``close()`` waits for runs in flight.
    """

    target: str = ""

    def __init__(self, spec: "InputSpec", precision: str) -> None:
        self.spec = spec
        self.precision = precision
        self._state = RuntimeState.OPEN
        # runs in flight, counted under one lock: two uncontended acquires per run, and close() waits on it
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._released = False  # _close() has been called (exactly once)
        try:
            self._load()
        except EdgeshipError:
            raise
        except Exception as exc:  # a backend's own error (InvalidProtobuf, OpenVINO's RuntimeError, ...)
            detail = " ".join(str(exc).split())[:400]
            raise BundleIntegrityError(f"{self.target} could not load this {precision} artifact (its files are "
                                       f"corrupt or not what this backend reads): {type(exc).__name__}: {detail}"
                                       ) from exc
        self._inputs, self._outputs = self._io()
        self._input_names = {i.name for i in self._inputs}  # checked on every run

    # -- public surface ----------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorInfo]:
        """The model's inputs as the backend reports them."""
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        """The model's outputs as the backend reports them."""
        return list(self._outputs)

    @property
    def state(self) -> RuntimeState:
        return self._state

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw images -> model input, exactly as at calibration (the spec's preprocessing)."""
        return self.spec.apply_preprocess(raw)

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray], preprocess: bool = False) -> dict[str, np.ndarray]:
        """Validate ``inputs`` against the spec, run the model, return {output name: array}.

        Args:
            inputs: one array for a single-input model, or {input name: array}.
            preprocess: treat the array as raw images and apply the spec's preprocessing first.

        Raises:
            InputValidationError: the inputs do not fit the spec (names, dtype, shape, empty, NaN/Inf).
            RuntimeStateError: the runtime was closed before this run started.
        """
        with self._lock:  # registered and checked at once: close() either refuses this run or waits for it
            if self._state is not RuntimeState.OPEN:
                raise RuntimeStateError(f"this {self.target} runtime is closed; load the bundle again to run it")
            self._in_flight += 1
        try:
            return self._run(self._validate(inputs, preprocess))
        finally:
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0 and self._state is RuntimeState.CLOSED:
                    self._idle.notify_all()

    def close(self) -> None:
        """Refuse new runs, wait for the runs in flight, then release the backend's resources.

        Idempotent and thread-safe: whichever call comes first releases the backend once, and every
        call returns only after it has been released. Must not be called from inside a run (it would
        wait for itself).
        """
        with self._idle:
            self._state = RuntimeState.CLOSED
            self._idle.wait_for(lambda: self._in_flight == 0)
            if self._released:
                return
            self._released = True
            # still under the lock: a second close() returns only once this one has released the backend,
            # and a run arriving now waits a moment and then sees CLOSED
            self._close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} target={self.target} precision={self.precision} {self._state.value}>"

    # -- validation --------------------------------------------------------------------------
    def _validate(self, inputs: np.ndarray | Mapping[str, np.ndarray], preprocess: bool) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping):
            if len(self._inputs) != 1:
                names = [i.name for i in self._inputs]
                raise InputValidationError(f"this model has {len(names)} inputs {names}; pass a dict name -> array")
            inputs = {self._inputs[0].name: inputs}
        if inputs.keys() != self._input_names:
            raise InputValidationError(f"expected inputs {sorted(self._input_names)}, got {sorted(inputs)}")
        feed: dict[str, np.ndarray] = {}
        for info in self._inputs:
            x = inputs[info.name]
            if preprocess:
                x = self.preprocess(x)
            if not isinstance(x, np.ndarray):
                raise InputValidationError(
                    f"input '{info.name}' must be a numpy.ndarray, got {type(x).__name__}"
                )
            if x.dtype != info.dtype:
                raise InputValidationError(
                    f"input '{info.name}' must have dtype {info.dtype}, got {x.dtype}"
                    + ("; pass preprocess=True for raw images" if x.dtype == np.uint8 and not preprocess else "")
                )
            if not shape_matches(x.shape, info.shape):
                shown = "(" + ", ".join("?" if d is None else str(d) for d in info.shape) + ")"
                raise InputValidationError(
                    f"input '{info.name}' must have shape {shown} (? = any size), got {tuple(x.shape)}"
                )
            if x.size == 0:  # some backends return stale outputs of an earlier run for an empty batch
                raise InputValidationError(
                    f"input '{info.name}' must hold at least one sample and no zero-size dimension, "
                    f"got shape {tuple(x.shape)}"
                )
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                bad = int(x.size - np.count_nonzero(np.isfinite(x)))
                raise InputValidationError(f"input '{info.name}' contains {bad} NaN/Inf values; expected finite numbers")
            feed[info.name] = x if x.flags.c_contiguous else np.ascontiguousarray(x)
        return feed

    # -- what a backend implements -----------------------------------------------------------
    @abstractmethod
    def _load(self) -> None:
        """Load the artifact into the backend (the heavy work)."""

    @abstractmethod
    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """The loaded model's inputs and outputs."""

    @abstractmethod
    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated, contiguous, non-empty inputs; return {output name: array} of arrays the caller owns.

        Called from many threads at once: a backend whose session is not thread-safe guards it itself.
        """

    @abstractmethod
    def _close(self) -> None:
        """Release backend resources; called once, after every run has returned."""
