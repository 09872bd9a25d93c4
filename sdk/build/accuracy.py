"""Accuracy-aware quantization: a budget on the metric drop, met by returning the most harmful
quantized layers to floating point.

OpenVINO uses NNCF's ``quantize_with_accuracy_control``. Elsewhere (the ONNX Runtime QDQ graph, and
any target whose quantizer takes a list of nodes to leave alone) edgeship ranks the layers itself
with :func:`layer_sensitivity` — each quantizable layer quantized alone, its output error and metric
drop measured — and :func:`fp_fallback` leaves the worst ones in floating point until the budget holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .._defaults import CALIBRATION_SIZE
from ..errors import AccuracyBudgetError, ConfigError

Predict = Callable[[np.ndarray], np.ndarray]  # model-ready inputs (N, ...) -> first output (N, ...)

# Output error is measured on at most this many validation samples.
ERROR_SAMPLES = 128


@dataclass
class AccuracyControl:
    """Validation data, a metric and a budget: the drop (percentage points) an INT8 artifact may lose."""

    inputs: np.ndarray
    labels: np.ndarray
    max_drop: float
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "top1"
    batch_size: int = 64
    reference: float | None = None  # the FP32 metric (fraction), filled by compress
    reference_outputs: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.max_drop >= 0:
            raise ConfigError(f"max_drop must be >= 0 percentage points, got {self.max_drop}")
        if len(self.inputs) != len(self.labels) or len(self.inputs) == 0:
            raise ConfigError(f"validation needs as many labels as inputs (and at least one); "
                              f"got {len(self.inputs)} inputs and {len(self.labels)} labels")
        from ..measure.metrics import get_metric

        self.metric_name, self.metric_fn = get_metric(self.metric)

    def predict(self, run: Predict) -> np.ndarray:
        """The first output over all validation inputs, in batches."""
        return np.concatenate([run(self.inputs[i : i + self.batch_size]) for i in range(0, len(self.inputs), self.batch_size)])

    def score(self, outputs: np.ndarray) -> float:
        """The metric (a fraction) of these outputs on the validation labels."""
        return float(self.metric_fn(outputs, self.labels))

    def drop_pts(self, value: float) -> float:
        """Percentage points lost against the FP32 reference."""
        if self.reference is None:
            raise ConfigError("the FP32 reference metric has not been measured")
        return 100.0 * (self.reference - value)

    def output_error(self, outputs: np.ndarray) -> float:
        """Relative RMS error of ``outputs`` against the FP32 outputs on the first ERROR_SAMPLES samples."""
        ref = self.reference_outputs[:ERROR_SAMPLES]
        got = outputs[:ERROR_SAMPLES]
        return float(np.sqrt(np.mean((got - ref) ** 2)) / (np.sqrt(np.mean(ref**2)) + 1e-12))

    def record(self, value: float, fp_layers: Sequence[str], method: str, **extra: Any) -> dict[str, Any]:
        """What the bundle stores about an accuracy-controlled artifact."""
        return {"metric": self.metric_name, "samples": int(len(self.inputs)), "fp32": self.reference,
                "value": value, "drop_pts": self.drop_pts(value), "max_drop_pts": self.max_drop,
                "met": self.drop_pts(value) <= self.max_drop + 1e-9, "fp_layers": list(fp_layers),
                "method": method, **extra}

    # the accuracy-aware steps a backend runs during compile, as methods: a backend is handed this object in
    # its compile call and never imports the build stage (targets sit below it)
    def fill_reference(self, onnx_path: Any, spec: Any) -> None:
        """The FP32 graph's outputs and metric on the validation data, measured once (:func:`fill_reference`)."""
        fill_reference(self, onnx_path, spec)

    def layer_sensitivity(self, layers: Sequence[str], quantize_only: Callable[[str], Predict],
                          progress_cb: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Per layer quantized alone: output error and metric drop, worst first (:func:`layer_sensitivity`)."""
        return layer_sensitivity(layers, quantize_only, self, progress_cb)

    def fp_fallback(self, ranking: Sequence[str], quantize_excluding: Callable[[list[str]], Predict]
                    ) -> tuple[list[str], float, list[dict[str, Any]]]:
        """The fewest top-ranked layers in FP that meet the budget (:func:`fp_fallback`)."""
        return fp_fallback(ranking, quantize_excluding, self)


def fill_reference(control: AccuracyControl, onnx_path: Any, spec: Any) -> None:
    """Measure the FP32 graph's outputs and metric on the validation data, once (ONNX Runtime, else OpenVINO)."""
    if control.reference_outputs is not None:
        return
    from .._lazy import is_installed, require

    if is_installed("onnxruntime"):
        ort = require("onnxruntime")
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        name = session.get_outputs()[0].name
        run: Predict = lambda x: session.run([name], {spec.name: x})[0]  # noqa: E731
    else:
        require("openvino", "measuring the FP32 reference accuracy")
        from ..targets.openvino import shared_core

        compiled = shared_core().compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        port = compiled.outputs[0]
        run = lambda x: compiled(x)[port]  # noqa: E731
    control.reference_outputs = control.predict(run)
    control.reference = control.score(control.reference_outputs)


def layer_sensitivity(layers: Sequence[str], quantize_only: Callable[[str], Predict],
                      control: AccuracyControl, progress_cb: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Per layer: output error and metric drop when only that layer is quantized; worst first."""
    rows = []
    for layer in layers:
        outputs = control.predict(quantize_only(layer))
        rows.append({"layer": layer, "output_error": control.output_error(outputs),
                     "drop_pts": control.drop_pts(control.score(outputs))})
        if progress_cb:
            progress_cb()
    return sorted(rows, key=lambda r: (r["drop_pts"], r["output_error"]), reverse=True)


def fp_fallback(ranking: Sequence[str], quantize_excluding: Callable[[list[str]], Predict],
                control: AccuracyControl) -> tuple[list[str], float, list[dict[str, Any]]]:
    """Leave the top-k ranked layers in floating point, k = 1, 2, 4, ... then the least k that works.

    Returns (layers kept in FP, metric reached, every trial). Raises AccuracyBudgetError with the
    best trial when even the widest fallback misses the budget.
    """
    trials: list[dict[str, Any]] = []

    def trial(k: int) -> float:
        value = control.score(control.predict(quantize_excluding(list(ranking[:k]))))
        trials.append({"fp_layers": k, "value": value, "drop_pts": control.drop_pts(value)})
        return value

    def ok(value: float) -> bool:
        return control.drop_pts(value) <= control.max_drop + 1e-9

    lo, hi, k = 0, None, 1
    while k <= len(ranking):
        if ok(trial(k)):
            hi = k
            break
        lo, k = k, (k * 2 if k * 2 <= len(ranking) or k == len(ranking) else len(ranking))
    if hi is None:
        best = max(trials, key=lambda t: t["value"])
        raise AccuracyBudgetError(
            f"no mix of INT8 and FP layers met the {control.max_drop} point budget on {control.metric_name}: "
            f"the best found loses {best['drop_pts']:.2f} points with {best['fp_layers']} of {len(ranking)} "
            f"layers in FP (FP32 {100 * control.reference:.2f}%)", trials)
    while hi - lo > 1:  # bisect between the last k that missed and the first that met
        mid = (lo + hi) // 2
        if ok(trial(mid)):
            hi = mid
        else:
            lo = mid
    met = [t for t in trials if t["fp_layers"] == hi][-1]
    return list(ranking[:hi]), met["value"], trials


def sensitivity(
    model: Any,
    calibration: Any,
    validation: tuple[Any, Any],
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "top1",
    *,
    input_spec: Any = None,
    calibration_size: int = CALIBRATION_SIZE,
    seed: int = 0,
    raw_images: bool = False,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Per-layer INT8 sensitivity: each quantizable layer of the FP32 graph quantized alone (QDQ, in the
    bundle's onnxruntime-cpu INT8 flavour when it has one, else the fleet-safe U8S8 with 7-bit weights).

    Args:
        model: a bundle path or :class:`Bundle` (its FP32 source graph is used), or an ``.onnx`` path
            with ``input_spec``.
        calibration, validation: as in ``compress``; ``raw_images`` applies the spec's preprocessing.
    Returns:
        Rows ``{"layer", "output_error", "drop_pts"}``, the most harmful layer first.
    """
    from pathlib import Path

    from .._progress import progress
    from ..bundle.folder import Bundle
    from ..calibration import collect
    from .export import is_onnx_path

    if is_onnx_path(model):
        if input_spec is None:
            raise ConfigError("sensitivity on an .onnx file needs input_spec")
        onnx_path, spec = Path(model), input_spec
    else:
        bundle = model if isinstance(model, Bundle) else Bundle.open(model)
        bundle.verify({"files": bundle.manifest.source_files})
        onnx_path, spec = bundle.source_onnx, input_spec or bundle.spec
    from ..targets.onnxruntime import StaticQuantizer

    flavour = "u8s8-reduce-range"
    if not is_onnx_path(model):
        flavour = next((a["options"].get("int8_flavour", "u8s8") for a in bundle.artifacts
                        if a["target"] == "onnxruntime-cpu" and a["precision"] == "int8"), flavour)

    calib = collect(calibration, spec, size=calibration_size, seed=seed, preprocess=raw_images)
    inputs = np.asarray(validation[0])
    inputs = spec.apply_preprocess(inputs) if raw_images else np.ascontiguousarray(inputs, dtype=spec.dtype)
    control = AccuracyControl(inputs=inputs, labels=np.asarray(validation[1]), max_drop=0.0, metric=metric)
    with StaticQuantizer(onnx_path, spec, calib, flavour=flavour) as quantizer, progress(show_progress) as bar:
        task = bar.add_task("per-layer sensitivity", total=len(quantizer.layers()))
        return quantizer.sensitivity(control, progress_cb=lambda: bar.advance(task))
