"""The self-test every bundle carries, and the variant a device chooses by measuring it.

Edge CPUs differ (AVX2 without VNNI, AVX-512 VNNI, AMX, ARM): an INT8 artifact that is exact on the build
machine can lose points on a device. So ``compress`` stores, beside the artifacts::

    selftest/inputs.npy          golden inputs, model-ready: a diverse subset (greedy k-center) of the
                                 validation data, else of the calibration set, else seeded random inputs
    selftest/reference_<i>.npy   output i of the FP32 ONNX source on them (ONNX Runtime CPU, FP32)
    selftest/counts.npy          (whole-graph detectors only) rows of each output per input

hashed in ``source.files`` like the source graph, and records in each artifact's manifest entry what that
artifact measured on the build machine (``selftest``: agreement, max_abs_error, tolerance, build_cpu_flags).
Where the bundle lands, :func:`verify_bundle` runs every artifact whose target is available on the same
inputs and holds it to the same tolerance. The choice of the variant a device runs — :func:`choose`
measures the passing ones, :func:`select_variant` keeps the fastest by tune's tie rule,
:func:`cached_choice` keeps it in an install root's ``choice.json`` — lives in :mod:`edgeship.device.choice`
and is re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .._defaults import CALIBRATION_SIZE
from ..errors import BundleIntegrityError, ConfigError, EdgeshipError, UnknownTargetError

if TYPE_CHECKING:
    from ..spec import InputSpec
    from .folder import Bundle

__all__ = ["SelfTestResult", "all_passed", "print_results", "verify_bundle"]

SELFTEST_DIR = "selftest"
INPUTS_FILE = f"{SELFTEST_DIR}/inputs.npy"
COUNTS_FILE = f"{SELFTEST_DIR}/counts.npy"
NO_SELFTEST = "no self-test in this bundle"

FP32_RELATIVE_ERROR = 1e-3  # an FP32 artifact's max abs error, relative to the largest reference output
DETECTION_FP32_MIN_AGREEMENT = 0.98  # boxes near the score threshold may flip even between two FP32 backends
DETECTION_MIN_SCORE = 0.5  # boxes compared: the confident ones, as a camera application would keep
DETECTION_MIN_COMPARED = 16  # fewer reference boxes than this at DETECTION_MIN_SCORE: compare at a lower score
DETECTION_SCORE_FLOOR = 0.05  # ... but never below torchvision's box_score_thresh (noise below it)
REDUCED_RELATIVE_ERROR = 0.05  # int8/fp16 outputs that are not class scores: max abs error relative to scale
RUN_BATCH = 16  # golden inputs per call where the batch is dynamic (bounded memory for large inputs)
LATENCY_RUNS, LATENCY_WARMUP = 50, 5


# -- building the self-test (compress) -------------------------------------------------------------
def select_golden(spec: "InputSpec", *, validation: np.ndarray | None = None, calib: Any = None,
                  calibration: Any = None, preprocess: bool = False, samples: int = 64,
                  seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """(golden inputs (N, ...) in the model's dtype, where they came from).

    The validation inputs when given, else the calibration set (``calib``, or ``calibration`` collected
    with the spec when compress did not need it), else seeded random inputs of the spec's shape. From
    more than ``samples`` candidates a diverse subset is kept: greedy k-center on the 8x8 thumbnails
    calibration's "diverse" selection uses, seeded.
    """
    from ..calibration._select import cheap_embedding, k_center

    note = None
    if validation is None and calib is None and calibration is not None:
        from ..calibration import collect

        try:
            calib = collect(calibration, spec, size=max(samples, CALIBRATION_SIZE), seed=seed, preprocess=preprocess)
        except EdgeshipError as exc:  # fp32-only compress never needed them; say why they were not used
            note = f"the calibration data could not be used: {exc}"
    if validation is not None:
        pool, source = np.ascontiguousarray(validation, dtype=spec.dtype), "validation data"
    elif calib is not None:
        pool, source = np.ascontiguousarray(calib.as_batch(), dtype=spec.dtype), f"calibration set ({calib.source})"
    else:
        rng = np.random.default_rng(seed)
        shape = (samples, *spec.example_shape(1)[1:])  # a fixed batch runs them in steps; ConfigError for dynamic dims
        if np.dtype(spec.dtype).kind == "f":
            x = rng.standard_normal(shape).astype(spec.dtype)
        else:
            x = rng.integers(0, 128 if spec.dtype == "int8" else 256, size=shape).astype(spec.dtype)
        record = {"source": "random", "selection": f"seeded random {'normal' if x.dtype.kind == 'f' else 'integer'} "
                  f"inputs of the spec's shape (seed {seed}): compress got no calibration or validation data",
                  "samples": int(len(x))}
        if note:
            record["note"] = note
        return x, record
    if len(pool) <= samples:
        return pool, {"source": source, "selection": f"all {len(pool)} samples", "samples": int(len(pool))}
    chosen = np.sort(k_center(cheap_embedding(pool, spec), samples, seed))
    return np.ascontiguousarray(pool[chosen]), {
        "source": source, "samples": int(samples),
        "selection": f"diverse: greedy k-center on 8x8 thumbnails of {len(pool)} samples (seed {seed})"}


def _reference_runtime(onnx_path: Path, spec: "InputSpec") -> tuple[Any, str]:
    """The FP32 reference: the source graph on ONNX Runtime's CPU provider (OpenVINO f32 where ORT is absent)."""
    from .._lazy import is_installed
    from ..targets import Artifact

    if is_installed("onnxruntime"):
        import onnxruntime

        from ..targets.onnxruntime import ONNXRuntimeRuntime

        return ONNXRuntimeRuntime(onnx_path, spec, "fp32"), f"ONNX Runtime {onnxruntime.__version__} CPU, FP32"
    if is_installed("openvino"):
        import openvino

        from ..targets.openvino import OpenVINORuntime

        artifact = Artifact("openvino-cpu", "fp32", [], options={"inference_precision": "f32"})
        return OpenVINORuntime(onnx_path, spec, artifact), f"OpenVINO {openvino.__version__.split('-')[0]} CPU, f32"
    raise ConfigError("the self-test's FP32 reference needs ONNX Runtime or OpenVINO on the build machine "
                      "(pip install \"edgeship[onnxruntime]\")")


def build_selftest(root: Path, spec: "InputSpec", entries: list[dict[str, Any]], source_files: dict[str, str],
                   selected: tuple[np.ndarray, dict[str, Any]], *, load_entry: Any, task: str = "classification",
                   head: Any = None, min_agreement: float = 0.95) -> dict[str, Any]:
    """Write the golden inputs ``selected`` (``select_golden``'s (inputs, where they came from)) and their reference
    outputs under ``root``, hash them into ``source_files``, run every artifact of ``entries`` on them here and
    record the result in its ``selftest``; return the manifest's ``selftest`` section (``{"skipped": why}`` when
    no reference can run here)."""
    from .._fleet import cpu_flags
    from .folder import SOURCE_ONNX, sha256_file

    inputs, origin = selected
    try:
        reference, described = _reference_runtime(root / SOURCE_ONNX, spec)
    except ConfigError as exc:
        return {"skipped": str(exc)}
    graph = head is not None and head.family == "graph"
    with reference:
        names = [o.name for o in reference.outputs]
        batch = _batch_of(reference, len(inputs))
        ref = _run(reference, inputs, batch, graph)
    (root / SELFTEST_DIR).mkdir(exist_ok=True)
    np.save(root / INPUTS_FILE, inputs, allow_pickle=False)
    files = [INPUTS_FILE]
    for i, name in enumerate(names):
        rel = f"{SELFTEST_DIR}/reference_{i}.npy"
        np.save(root / rel, np.concatenate(ref[name]) if graph else ref[name], allow_pickle=False)
        files.append(rel)
    if graph:
        np.save(root / COUNTS_FILE, np.asarray([[len(ref[n][i]) for n in names] for i in range(len(inputs))],
                                               dtype=np.int64), allow_pickle=False)
        files.append(COUNTS_FILE)
    for rel in files:
        source_files[rel] = sha256_file(root / rel)
    scale = _scale(ref, graph)
    section = {"inputs": INPUTS_FILE, "references": files[1 : 1 + len(names)], "outputs": names,
               "counts": COUNTS_FILE if graph else None, "samples": int(len(inputs)), "batch": batch, **origin,
               "reference": f"{described} on {SOURCE_ONNX}", "output_scale": scale,
               "compared": _compared(task, head, ref[names[0]] if not graph else None)}
    golden = Golden(inputs=inputs, references=ref, names=names, batch=batch, task=task, head=head, graph=graph,
                    scale=scale)
    if task == "detection" and head is not None:
        golden.min_score, section["reference_boxes"] = detection_compare_score(_detections(ref, golden))
        section["min_score"] = golden.min_score
        section["compared"] = _compared(task, head, None, golden.min_score, section["reference_boxes"])
    flags = cpu_flags()
    from ..targets import get_target_class

    for entry in entries:
        tolerance = tolerance_for(entry["precision"], golden, min_agreement)
        runs_here, info = get_target_class(entry["target"]).availability()
        if not runs_here:  # a graph made here for a device (TensorRT): the device measures it against the tolerance
            entry["selftest"] = {"agreement": None, "max_abs_error": None, "tolerance": tolerance, "passed": None,
                                 "compared": section["compared"], "build_cpu_flags": flags,
                                 "not_measured": f"{entry['target']} does not run on the build machine: {info}"}
            continue
        with load_entry(root, entry, spec) as rt:
            result = _check(rt, golden, tolerance)
        entry["selftest"] = {"agreement": result.agreement, "max_abs_error": _finite(result.max_abs_error),
                             "tolerance": tolerance, "passed": result.passed, "compared": section["compared"],
                             "build_cpu_flags": flags}
        if not result.passed:
            from .._progress import console

            console.log(f"self-test: {entry['target']} {entry['precision']} fails on the build machine: {result.reason}")
    return section


def detection_compare_score(reference: Sequence[Mapping[str, np.ndarray]]) -> tuple[float, int]:
    """(score from which boxes are compared, reference boxes at that score) for a detector's golden answers.

    DETECTION_MIN_SCORE when the FP32 reference finds at least DETECTION_MIN_COMPARED boxes there; else the score
    of its DETECTION_MIN_COMPARED-th best box (never below DETECTION_SCORE_FLOOR), so an undertrained detector
    with no confident box is still compared on the boxes it does find instead of passing on an empty set.
    """
    scores = np.sort(np.concatenate([np.asarray(r["scores"], dtype=np.float64).ravel() for r in reference]
                                    or [np.zeros(0)]))[::-1]
    if int((scores >= DETECTION_MIN_SCORE).sum()) >= DETECTION_MIN_COMPARED:
        threshold = DETECTION_MIN_SCORE
    else:
        kth = scores[DETECTION_MIN_COMPARED - 1] if len(scores) >= DETECTION_MIN_COMPARED else \
            (scores[-1] if len(scores) else DETECTION_SCORE_FLOOR)
        threshold = max(DETECTION_SCORE_FLOOR, math.floor(float(kth) * 100) / 100)
    return float(threshold), int((scores >= threshold).sum())


def _compared(task: str, head: Any, first: np.ndarray | None, min_score: float = DETECTION_MIN_SCORE,
              reference_boxes: int | None = None) -> str:
    if task == "detection" and head is not None:
        boxes = (f"box agreement (2 x matched / all; IoU 0.5, same label) of detections scoring >= "
                 f"{min_score:g}, after edgeship's postprocessing")
        if reference_boxes is not None:
            boxes += f" ({reference_boxes} reference boxes)"
            if min_score < DETECTION_MIN_SCORE:
                boxes += (f" — below {DETECTION_MIN_SCORE:g}: the FP32 model has fewer than {DETECTION_MIN_COMPARED} "
                          f"boxes >= {DETECTION_MIN_SCORE:g} on the golden inputs")
            if reference_boxes == 0:
                boxes += " — NOTHING IS COMPARED: the FP32 model finds no box on the golden inputs"
        if head.family == "graph":
            return boxes + " (postprocessing in the graph: box counts vary, raw outputs are not compared)"
        return boxes + "; max abs error of the raw head outputs"
    if first is not None and _is_scores(first):
        return "top-1 agreement of the first output with the FP32 reference; max abs error over all outputs"
    return "max abs error over all outputs (the first output is not class scores)"


def _is_scores(x: np.ndarray) -> bool:
    return x.ndim >= 2 and x.shape[1] >= 2


def _scale(ref: Mapping[str, Any], graph: bool) -> float:
    arrays = [a for v in ref.values() for a in (v if graph else [v])]
    peak = max((float(np.abs(a).max()) for a in arrays if a.size and np.issubdtype(a.dtype, np.number)), default=0.0)
    return peak if peak > 0 and math.isfinite(peak) else 1.0


def tolerance_for(precision: str, golden: "Golden", min_agreement: float) -> dict[str, float | None]:
    """What an artifact must reproduce: FP32 the reference itself; FP16/INT8 ``min_agreement`` of it."""
    detection = golden.task == "detection" and golden.head is not None
    scores = detection or _is_scores(golden.references[golden.names[0]])
    if precision == "fp32":
        agreement = (DETECTION_FP32_MIN_AGREEMENT if detection else 1.0) if scores else None
        return {"min_agreement": agreement,
                "max_abs_error": None if golden.graph else FP32_RELATIVE_ERROR * golden.scale}
    if scores:
        return {"min_agreement": float(min_agreement), "max_abs_error": None}
    return {"min_agreement": None, "max_abs_error": REDUCED_RELATIVE_ERROR * golden.scale}


# -- running and comparing -----------------------------------------------------------------------
@dataclass
class Golden:
    """A bundle's golden inputs and reference outputs, loaded (hashes checked) or just computed."""

    inputs: np.ndarray
    references: dict[str, Any]  # name -> array (batch first), or -> per-input arrays (whole-graph detectors)
    names: list[str]
    batch: int
    task: str = "classification"
    head: Any = None
    graph: bool = False
    scale: float = 1.0
    min_score: float = DETECTION_MIN_SCORE  # detectors: boxes compared from this score (the manifest's min_score)


def load_golden(bundle: "Bundle") -> Golden | None:
    """The bundle's golden inputs and references, their SHA-256 checked first; None when it carries none."""
    section = bundle.manifest.selftest
    if not isinstance(section, dict) or "inputs" not in section:
        return None
    files = [section["inputs"], *section["references"]] + ([section["counts"]] if section.get("counts") else [])
    bundle.verify({"files": {rel: bundle.manifest.source_files[rel] for rel in files}})
    inputs = _read(bundle, section["inputs"])
    stored = [_read(bundle, rel) for rel in section["references"]]
    counts = _read(bundle, section["counts"]) if section.get("counts") else None
    names = list(section["outputs"])
    if len(names) != len(stored):
        raise BundleIntegrityError(f"bundle {bundle.path}: the self-test lists {len(names)} outputs but "
                                   f"{len(stored)} reference files")
    head = _detection_head(bundle)
    if counts is not None:
        if counts.shape != (len(inputs), len(names)):
            raise BundleIntegrityError(f"bundle {bundle.path}: {section['counts']} has shape {counts.shape}, "
                                       f"expected {(len(inputs), len(names))}")
        refs = {n: np.split(a, np.cumsum(counts[:, j])[:-1]) for j, (n, a) in enumerate(zip(names, stored))}
    else:
        refs = dict(zip(names, stored))
        if any(len(a) != len(inputs) for a in stored):
            raise BundleIntegrityError(f"bundle {bundle.path}: a self-test reference does not have one row per input")
    return Golden(inputs=inputs, references=refs, names=names, batch=int(section.get("batch") or RUN_BATCH),
                  task=bundle.manifest.task, head=head, graph=counts is not None,
                  scale=float(section.get("output_scale") or 1.0),
                  min_score=_min_score(section.get("min_score", DETECTION_MIN_SCORE), bundle))


def _min_score(value: Any, bundle: "Bundle") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise BundleIntegrityError(f"bundle {bundle.path}: selftest.min_score must be a score in [0, 1], got {value!r}")
    return float(value)


def _read(bundle: "Bundle", rel: str) -> np.ndarray:
    """One self-test .npy, through the checked reader (declared size against the bytes, no pickle)."""
    from .._arrays import load_array_file

    try:
        array = load_array_file(bundle.path / rel, f"self-test file {rel} of bundle")
    except ConfigError as exc:
        raise BundleIntegrityError(str(exc)) from None
    if not isinstance(array, np.ndarray):
        raise BundleIntegrityError(f"self-test file {rel} of bundle {bundle.path} is an .npz; expected one .npy array")
    return array


def _detection_head(bundle: "Bundle") -> Any:
    entry = bundle.manifest.detection
    if not entry:
        return None
    from ..tasks.detection import DetectionHead

    anchors = None
    if entry.get("anchors"):
        bundle.verify({"files": {entry["anchors"]: bundle.manifest.source_files[entry["anchors"]]}})
        anchors = _read(bundle, entry["anchors"])
    return DetectionHead.from_dict(entry["head"], anchors)


def _batch_of(rt: Any, n: int) -> int:
    fixed = rt.inputs[0].shape[0]
    return int(fixed) if fixed else min(n, RUN_BATCH)


def _run(rt: Any, inputs: np.ndarray, batch: int, graph: bool) -> dict[str, Any]:
    """Every golden input through ``rt``: {name: outputs stacked} (whole-graph detectors: {name: per input})."""
    fixed = rt.inputs[0].shape[0]
    step = int(fixed) if fixed else batch
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(inputs), step):
        chunk = inputs[start : start + step]
        short = step - len(chunk) if fixed else 0
        if short:  # a fixed batch: pad with the last input, drop its outputs
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
        for name, value in rt.run(np.ascontiguousarray(chunk)).items():
            parts.setdefault(name, []).append(np.asarray(value) if graph else np.asarray(value)[: step - short])
    if graph:
        return parts
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


@dataclass(frozen=True)
class _Outcome:
    agreement: float | None
    max_abs_error: float | None
    passed: bool
    reason: str


def _check(rt: Any, golden: Golden, tolerance: Mapping[str, Any]) -> _Outcome:
    got = _run(rt, golden.inputs, golden.batch, golden.graph)
    names = golden.names
    if not all(n in got for n in names):  # a backend that names its outputs otherwise: match by position
        got = dict(zip(names, got.values()))
    agreement, error = compare(got, golden)
    return _Outcome(agreement, error, *judge(agreement, error, tolerance))


def compare(outputs: Mapping[str, Any], golden: Golden) -> tuple[float | None, float | None]:
    """(agreement, max abs error) of an artifact's outputs with the golden references (see module doc)."""
    names = golden.names
    error = None
    if not golden.graph:
        diffs = []
        for n in names:
            a, b = np.asarray(outputs[n], dtype=np.float64), np.asarray(golden.references[n], dtype=np.float64)
            if a.shape != b.shape:
                return None, float("inf")
            diffs.append(float(np.abs(a - b).max()) if a.size else 0.0)
        error = max(diffs, default=0.0)
        if not math.isfinite(error):
            error = float("inf")
    if golden.task == "detection" and golden.head is not None:
        return _box_agreement(outputs, golden), error
    first = golden.references[names[0]]
    if _is_scores(first):
        from ..measure.metrics import top1_agreement

        return top1_agreement(outputs[names[0]], first), error
    return None, error


def _detections(out: Mapping[str, Any], golden: Golden) -> list[dict[str, np.ndarray]]:
    """A detector's raw outputs on the golden inputs as boxes per input, through edgeship's postprocessing."""
    from ..tasks.detection import postprocess

    head = golden.head
    order = [n for n in head.outputs] if all(n in out for n in head.outputs) else golden.names
    if golden.graph:
        return [postprocess([out[n][i] for n in order], head)[0] for i in range(len(golden.inputs))]
    return postprocess([np.asarray(out[n]) for n in order], head)


def _box_agreement(outputs: Mapping[str, Any], golden: Golden) -> float:
    from ..tasks.metrics import box_agreement

    return box_agreement(_detections(outputs, golden), _detections(golden.references, golden), iou=0.5,
                         min_score=golden.min_score)


def judge(agreement: float | None, error: float | None, tolerance: Mapping[str, Any]) -> tuple[bool, str]:
    """(passed, why not) of a measured agreement and max abs error against a tolerance."""
    fails = []
    need = tolerance.get("min_agreement")
    if need is not None and (agreement is None or not agreement >= need - 1e-12):
        fails.append(f"agreement {_fmt(agreement, '.3f')} < {need:.3f}")
    limit = tolerance.get("max_abs_error")
    if limit is not None and (error is None or not error <= limit):
        fails.append(f"max abs error {_fmt(error, '.3g')} > {limit:.3g}")
    return not fails, "; ".join(fails)


def _finite(v: float | None) -> float | None:
    """A number for the manifest / choice.json (strict JSON): NaN and Inf (mismatched or broken outputs) as None."""
    return v if v is None or math.isfinite(v) else None


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


# -- verifying a bundle here -----------------------------------------------------------------------
@dataclass
class SelfTestResult:
    """One artifact's self-test on this machine: ``status`` "passed", "failed" or "skipped" (with the reason)."""

    target: str
    precision: str
    status: str
    agreement: float | None = None
    max_abs_error: float | None = None
    tolerance: dict[str, Any] | None = None
    p50_ms: float | None = None
    p50_ci_ms: tuple[float, float] | None = None
    reason: str = ""
    compared: str = ""
    cpu_flags: list[str] = field(default_factory=list)
    build: dict[str, Any] | None = None  # what the build machine measured (the manifest's record)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["p50_ci_ms"] = list(self.p50_ci_ms) if self.p50_ci_ms is not None else None
        data["max_abs_error"] = _finite(self.max_abs_error)
        return data


def all_passed(results: Sequence[SelfTestResult]) -> bool:
    """Whether every artifact that ran passed (skipped ones neither pass nor fail)."""
    return all(r.passed for r in results if not r.skipped)


def verify_bundle(bundle: "Bundle", target: str | None = None, precision: str | None = None, *,
                  measure: bool = True, runs: int = LATENCY_RUNS, warmup: int = LATENCY_WARMUP,
                  **options: Any) -> list[SelfTestResult]:
    """Run the self-test of every artifact (of ``target`` / ``precision`` when given) whose target is available
    here; the others are skipped with the reason. ``measure``: also the p50 latency at the golden batch of one
    (``options`` go to the runtime, e.g. ``threads``)."""
    from .._fleet import cpu_flags
    from ..measure.latency import measure_latency
    from ..targets import get_target_class

    entries = [e for e in bundle.manifest.artifacts
               if (target is None or e["target"] == target) and (precision is None or e["precision"] == precision)]
    if not entries:
        raise UnknownTargetError(f"bundle {bundle.path} has no artifact for target={target!r} precision={precision!r}; "
                                 f"it has {bundle.variants}")
    section = bundle.manifest.selftest
    golden = load_golden(bundle)
    flags = cpu_flags()
    results = []
    for entry in entries:
        t, p, build = entry["target"], entry["precision"], entry.get("selftest")
        base = dict(target=t, precision=p, cpu_flags=flags, build=build)
        if golden is None or build is None:
            why = NO_SELFTEST if golden is None else "no self-test recorded for this artifact"
            if isinstance(section, dict) and section.get("skipped"):
                why += f" ({section['skipped']})"
            results.append(SelfTestResult(status="skipped", reason=why, **base))
            continue
        try:
            ok, info = get_target_class(t).availability()
        except UnknownTargetError:
            ok, info = False, "not registered in this edgeship"
        if not ok:
            results.append(SelfTestResult(status="skipped", reason=f"{t} is not available here: {info}", **base))
            continue
        tolerance = build["tolerance"]
        compared = build.get("compared", "")
        try:
            with bundle.load(t, p, **options) as rt:
                outcome = _check(rt, golden, tolerance)
                stats = None
                if measure:
                    x = np.ascontiguousarray(golden.inputs[: rt.inputs[0].shape[0] or 1])
                    stats = measure_latency(lambda: rt.run(x), runs=runs, warmup=warmup)
        except Exception as exc:  # an artifact that cannot run here fails its self-test, with the reason
            results.append(SelfTestResult(status="failed", tolerance=tolerance, compared=compared,
                                          reason=f"could not run here: {type(exc).__name__}: {exc}", **base))
            continue
        results.append(SelfTestResult(
            status="passed" if outcome.passed else "failed", agreement=outcome.agreement,
            max_abs_error=outcome.max_abs_error, tolerance=tolerance, compared=compared, reason=outcome.reason,
            p50_ms=stats.p50_ms if stats else None, p50_ci_ms=tuple(stats.p50_ci) if stats else None, **base))
    return results


def print_results(results: Sequence[SelfTestResult], title: str | None = None, console: Any = None) -> None:
    """The self-test as a table: target, precision, agreement, max error, tolerance, p50, pass."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for header in ("target", "precision", "agreement", "max error", "tolerance", "p50 ms", "pass"):
        table.add_column(header, justify="left" if header in ("target", "precision", "tolerance", "pass") else "right")
    for r in results:
        tol = r.tolerance or {}
        parts = []
        if tol.get("min_agreement") is not None:
            parts.append(f"agree >= {tol['min_agreement']:.3f}")
        if tol.get("max_abs_error") is not None:
            parts.append(f"err <= {tol['max_abs_error']:.2g}")
        verdict = {"passed": "[green]pass[/]", "failed": "[red]FAIL[/]", "skipped": "[yellow]skipped[/]"}[r.status]
        if r.reason:
            verdict += f" ({r.reason})"
        table.add_row(r.target, r.precision, _fmt(r.agreement, ".3f"), _fmt(r.max_abs_error, ".2g"),
                      ", ".join(parts) or "—", _fmt(r.p50_ms, ".3f"), verdict)
    (console or Console(width=160)).print(table)

