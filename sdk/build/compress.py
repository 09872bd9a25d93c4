"""The verb ``compress``: (prune) -> export -> quantize -> compile for each target -> bundle."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._defaults import CPU_TARGETS
from .._fleet import cpu_flags, fleet
from .._lazy import require
from .._progress import console, progress
from .._version import __version__
from ..bundle.folder import SOURCE_ONNX, Bundle, atomic_folder, sha256_file
from ..bundle.manifest import SCHEMA_VERSION, write_manifest
from ..errors import AccuracyBudgetError, ConfigError, LatencyBudgetError
from ..spec import InputSpec
from ..targets.base import CompileRequest
from .export import export_onnx, is_onnx_path
from .recipe import Recipe

DEFAULT_TARGETS = CPU_TARGETS


def compress(
    model: Any,
    *,
    input_spec: InputSpec,
    output: str | os.PathLike,
    calibration: Any = None,
    targets: Sequence[str] = DEFAULT_TARGETS,
    precision: str | Sequence[str] = "int8",
    recipe: Recipe | None = None,
    finetune: Callable[[Any], Any] | None = None,
    qat_train: Callable[[Any], Any] | None = None,
    validation: tuple[Any, Any] | None = None,
    metric: str | Callable[[np.ndarray, np.ndarray], float] | None = None,
    preprocess_calibration: bool = False,
    show_progress: bool = True,
) -> Bundle:
    """Compile ``model`` for every target and precision into one verified bundle at ``output``.

    Args:
        model: a ``torch.nn.Module`` in eval mode, or a path to an ``.onnx`` file.
        input_spec: the model input (dynamic dims as None) and its preprocessing.
        output: the bundle folder to write (atomically; an existing bundle there is replaced).
        calibration: samples for INT8 (and for Taylor importance / distillation when pruning) —
            an array (N, ...), a torch Dataset/DataLoader, or an iterable of arrays.
        targets: registered target names (see ``edgeship.list_targets()``).
        precision: "fp32", "fp16", "int8", or several of them.
        recipe: calibration subset size and seed, and pruning (``Recipe(prune=Prune(...))``; a torchvision
            detector's backbone is pruned, its heads are kept whole), and each target's compile options
            (``Recipe(target_options={"tensorrt-jetson": {"dla_core": 1}})``; only for targets in ``targets``).
        finetune: ``finetune(pruned_model) -> model``, called after pruning (your own training).
        qat_train: ``qat_train(fake_quantized_model) -> model``: your own training loop for ``recipe.qat``
            instead of the label-free distillation (edgeship.build.qat).
        validation: (inputs, labels) for the accuracy budget ``recipe.max_drop``.
        metric: overrides ``recipe.metric`` (a name, or ``f(predictions, labels) -> float in [0, 1]``).
        preprocess_calibration: the calibration (and validation) inputs are raw images; apply the
            spec's preprocessing.
    Returns:
        The written :class:`Bundle`.
    """
    from ..calibration import collect
    from ..targets import get_target

    recipe = recipe or Recipe()
    precisions = [precision] if isinstance(precision, str) else list(precision)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not precisions or not targets:
        raise ConfigError("compress needs at least one target and one precision")
    if not isinstance(input_spec, InputSpec):
        raise ConfigError(f"input_spec must be an edgeship.InputSpec, got {type(input_spec).__name__}")
    not_built = [name for name in recipe.target_options if name not in targets]
    if not_built:  # an option for a target that is not built is a mistake
        raise ConfigError(f"Recipe.target_options sets compile options for {not_built}, which compress does not "
                          f"build (targets={targets}); add them to targets or drop their options")
    backends = {name: get_target(name, for_compile=True) for name in targets}  # unknown / missing fail before any work
    for name, backend in backends.items():
        for p in precisions:
            if p not in backend.precisions:
                raise ConfigError(f"target '{name}' supports precisions {backend.precisions}, got '{p}'")
    prune_cfg = recipe.prune
    if prune_cfg is not None and is_onnx_path(model):
        raise ConfigError("pruning needs the torch model (an nn.Module); an ONNX file cannot be pruned")
    if _is_detector(model):
        _detector_size(model, input_spec)
    if finetune is not None and prune_cfg is None:
        raise ConfigError("finetune is called after pruning; set recipe=Recipe(prune=Prune(...)) or drop finetune")
    if recipe.qat is not None:
        if "int8" not in precisions:
            raise ConfigError("Recipe.qat trains the model for INT8; add 'int8' to precision or drop qat")
        if is_onnx_path(model):
            raise ConfigError("quantization-aware training needs the torch model (an nn.Module), not an ONNX file")
        not_cpu = [t for t in targets if t not in CPU_TARGETS]
        if not_cpu:
            raise ConfigError(f"a QAT graph compiles for {list(CPU_TARGETS)}; {not_cpu} would not run it — drop "
                              "Recipe.qat or those targets")
        if recipe.keep_fp:
            raise ConfigError("Recipe.keep_fp names ONNX layers to leave in FP; a QAT graph quantizes the layers NNCF "
                              "chose while training — drop keep_fp or qat")
    if qat_train is not None and recipe.qat is None:
        raise ConfigError("qat_train is the training loop of Recipe(qat=QAT(...)); set recipe.qat or drop qat_train")
    needs_calib = "int8" in precisions or (
        prune_cfg is not None and (prune_cfg.importance == "taylor" or prune_cfg.recover == "distill"))
    calib = None
    if needs_calib:
        if calibration is None:
            raise ConfigError("int8, Taylor importance and distillation need calibration data "
                              "(an array, a torch Dataset/DataLoader or an iterable)")
        calib = collect(calibration, input_spec, size=recipe.calibration_size, seed=recipe.seed,
                        preprocess=preprocess_calibration)

    control = _accuracy_control(recipe, validation, metric, precisions, input_spec, preprocess_calibration)
    cpus = fleet(recipe.cpus)  # the CPUs INT8 must be exact on
    calib_check = _check_calibration(calib, input_spec, control)
    output = Path(output)
    source_fingerprint = _fingerprint(model)
    pruning: dict[str, Any] | None = None
    with atomic_folder(output) as tmp:
        if prune_cfg is not None:
            model, pruning = _prune(model, input_spec, recipe, backends, precisions, calib, calibration,
                                    preprocess_calibration, finetune, show_progress, cpus)
        with progress(show_progress) as bar:
            steps = 1 + len(targets) * len(precisions)
            label = Path(model).name if isinstance(model, (str, Path)) else type(model).__name__
            task = bar.add_task(f"export {label}", total=steps)
            spec, exported, head = _export(model, input_spec, tmp / SOURCE_ONNX)
            source_files = {SOURCE_ONNX: sha256_file(tmp / SOURCE_ONNX)}
            detection = None
            if head is not None:
                detection = {"head": head.to_dict(), "anchors": None,
                             "postprocessing": "in graph" if head.family == "graph" else "edgeship (numpy)"}
                if head.family == "graph":  # why the whole graph quantizes (edgeship.tasks.detection)
                    detection["nms"] = "one NMS over class-offset boxes, no If nodes: INT8 on the whole graph"
                if head.anchors is not None:
                    np.save(tmp / "anchors.npy", head.anchors, allow_pickle=False)
                    source_files["anchors.npy"] = sha256_file(tmp / "anchors.npy")
                    detection["anchors"] = "anchors.npy"
            if recipe.keep_fp is not None:
                keep_fp = list(recipe.keep_fp)
                _check_node_names(tmp / SOURCE_ONNX, keep_fp)
            else:
                keep_fp = _automatic_keep_fp(tmp / SOURCE_ONNX, head)
            bar.advance(task)
            entries = []
            qat = _QATGraph(model, spec, recipe, tmp, source_files, calibration, preprocess_calibration, qat_train,
                            cpus, show_progress)
            for name, backend in backends.items():
                for p in precisions:
                    bar.update(task, description=f"compile {name} {p}")
                    rel_dir = Path(name) / p
                    always_qat = p == "int8" and recipe.qat is not None and control is None
                    request = CompileRequest(qat.path() if always_qat else tmp / SOURCE_ONNX, spec, p, calib,
                                             accuracy=control if p == "int8" else None,
                                             keep_fp=tuple(keep_fp) if p == "int8" and not always_qat else (),
                                             fleet=cpus, calibration_method=recipe.calibration_method,
                                             options=dict(recipe.target_options.get(name, {})), quantized=always_qat)
                    try:
                        artifact = backend.compile(request, tmp / rel_dir)
                        record = artifact.options.get("accuracy")
                    except AccuracyBudgetError as exc:  # no INT8/FP mix met it; with QAT there is one more try
                        if not (p == "int8" and recipe.qat is not None and control is not None):
                            raise
                        shutil.rmtree(tmp / rel_dir, ignore_errors=True)
                        best = max(exc.trials or [{"value": float("nan"), "drop_pts": float("nan")}],
                                   key=lambda t: t.get("value", float("-inf")))
                        artifact, record = None, {"met": False, "fp_layers": [], "value": best.get("value"),
                                                  "drop_pts": best.get("drop_pts"), "error": str(exc)}
                    if p == "int8" and recipe.qat is not None:
                        if artifact is not None:
                            artifact.options["int8_from"] = "qat" if always_qat else "post-training"
                        if not always_qat and (not record["met"] or record["fp_layers"]):
                            artifact, record = _try_qat(backend, request, qat, tmp, rel_dir, artifact, record)
                        qat.used_by(name, artifact.options["int8_from"] == "qat")
                    if record is not None and not record["met"]:
                        raise AccuracyBudgetError(
                            f"{name} int8 loses {record['drop_pts']:.2f} points of {record['metric']} "
                            f"(budget {record['max_drop_pts']}) even with {len(record['fp_layers'])} layers in FP: "
                            f"{record['fp_layers']}", record.get("trials", []))
                    files = {(rel_dir / f).as_posix(): sha256_file(tmp / rel_dir / f) for f in artifact.files}
                    entries.append({
                        "target": name,
                        "precision": p,
                        "dir": rel_dir.as_posix(),
                        "files": files,
                        "backend_versions": artifact.backend_versions,
                        "options": artifact.options,
                    })
                    bar.advance(task)
        selftest = _selftest(tmp, spec, entries, source_files, head, control, calib, calibration,
                             preprocess_calibration, recipe)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgeship_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "build_host": {"machine": platform.machine(), "python": platform.python_version(),
                           "cpu_flags": cpu_flags()},
            "fleet": cpus.to_dict(),
            "model": label,
            "source_fingerprint": source_fingerprint,
            "input_spec": spec.to_dict(),
            "source": {"file": SOURCE_ONNX, "files": source_files},
            "task": "detection" if head is not None else "classification",
            "detection": detection,
            "recipe": recipe.to_dict(),
            "calibration": {**calib.summary(), "check": calib_check,
                            "profile": _calibration_profile(tmp / SOURCE_ONNX, spec, calib, head)}
            if calib is not None else None,
            "pruning": pruning,
            "qat": qat.summary(),
            "complexity": _complexity(exported, input_spec),
            "artifacts": entries,
            "selftest": selftest,
        }
        write_manifest(tmp, manifest)
    return Bundle.open(output)


def _try_qat(backend: Any, request: CompileRequest, qat: "_QATGraph", tmp: Path, rel_dir: Path, artifact: Any,
             record: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Post-training INT8 needed FP layers (or missed the budget even with them): compile from the QAT graph too and
    keep the better one — the budget met, then the fewer FP layers (the faster INT8); a tie stays post-training."""
    console.log(f"{backend.name} int8: post-training INT8 {'meets' if record['met'] else 'misses'} the budget with "
                f"{len(record['fp_layers'])} layers in FP (drop {record['drop_pts']} points); trying "
                "quantization-aware training")
    alt = tmp / f"{rel_dir.as_posix()}-qat"
    trained = backend.compile(dataclasses.replace(request, onnx_path=qat.path(), quantized=True, keep_fp=()), alt)
    q = trained.options["accuracy"]
    better = artifact is None or (q["met"] and (not record["met"] or len(q["fp_layers"]) < len(record["fp_layers"])))
    ptq = {k: record.get(k) for k in ("value", "drop_pts", "met", "fp_layers", "error") if k in record}
    qat_result = {k: q[k] for k in ("value", "drop_pts", "met", "fp_layers")}
    if better:
        shutil.rmtree(tmp / rel_dir, ignore_errors=True)
        alt.rename(tmp / rel_dir)
        artifact, record = trained, q
    else:
        shutil.rmtree(alt)
    record["post_training"], record["qat"] = ptq, qat_result
    artifact.options["int8_from"] = "qat" if better else "post-training"
    return artifact, record


QAT_ONNX = "qat.onnx"  # the QAT-trained fake-quantized graph (NNCF FakeQuantize ops), source of INT8 made from it


class _QATGraph:
    """The QAT-trained fake-quantized graph, made on first use (``recipe.qat``), hashed into the bundle's source files."""

    def __init__(self, model: Any, spec: InputSpec, recipe: Recipe, tmp: Path, source_files: dict[str, str],
                 calibration: Any, preprocess: bool, train: Callable[[Any], Any] | None, fleet: Any,
                 show_progress: bool) -> None:
        self.model, self.spec, self.config, self.tmp, self.source_files = model, spec, recipe.qat, tmp, source_files
        self.fleet = fleet
        self.calibration, self.preprocess, self.train, self.show_progress = calibration, preprocess, train, show_progress
        self.info: dict[str, Any] | None = None
        self.targets: dict[str, str] = {}

    def path(self) -> Path:
        if self.info is None:
            from ..calibration import collect
            from .qat import export_qat_graph, quantization_aware_train

            onnx = require("onnx", "quantization-aware training")
            data = collect(self.calibration, self.spec, size=self.config.samples, seed=self.config.seed,
                           preprocess=self.preprocess).as_batch()
            trained, self.info = quantization_aware_train(self.model, data, self.config, train=self.train,
                                                          saturating_fleet=self.fleet.saturating,
                                                          show_progress=self.show_progress)
            names = [o.name for o in onnx.load(str(self.tmp / SOURCE_ONNX), load_external_data=False).graph.output]
            export_qat_graph(trained, self.spec, self.tmp / QAT_ONNX, names, data)
            self.source_files[QAT_ONNX] = sha256_file(self.tmp / QAT_ONNX)
            self.info["graph"] = QAT_ONNX
        return self.tmp / QAT_ONNX

    def used_by(self, target: str, qat: bool) -> None:
        self.targets[target] = "qat" if qat else "post-training"

    def summary(self) -> dict[str, Any] | None:
        """The manifest's ``qat``: None without ``recipe.qat``; else its config, what it measured, and per target
        whether the INT8 artifact came from it."""
        if self.config is None:
            return None
        return {"config": self.config.to_dict(), **(self.info or {"trained": False}), "int8_from": self.targets}


PROFILE_OUTPUT_SAMPLES = 1000  # calibration samples (at most) the FP32 reference answers for the output profile


def _calibration_profile(onnx_path: Path, spec: InputSpec, calib: Any, head: Any) -> dict[str, Any]:
    """What a device compares its inputs and answers with (``edgeship serve --monitor``): the input profile of the
    calibration set and, for a classifier, the FP32 reference's top-1 confidence histogram and class mix on (at most
    ``PROFILE_OUTPUT_SAMPLES`` of) it."""
    from ..bundle.selftest import _reference_runtime
    from ..calibration import input_profile
    from ..tasks.postprocess import confidences, output_profile

    batch = np.ascontiguousarray(calib.as_batch(), dtype=spec.dtype)
    profile: dict[str, Any] = {"input": {**input_profile(batch, spec), "source": f"calibration set ({calib.source})"},
                               "output": None}
    if head is not None:  # a detector's answers are judged on the device without a recorded reference
        return profile
    try:
        runtime, _ = _reference_runtime(onnx_path, spec)
    except ConfigError:
        return profile
    sample = batch[:PROFILE_OUTPUT_SAMPLES]
    step = spec.shape[0] or 16
    usable = len(sample) - len(sample) % step if spec.shape[0] else len(sample)  # a fixed batch: whole ones only
    if not usable:
        runtime.close()
        return profile
    with runtime:
        outputs = [runtime.run(sample[i: i + step]) for i in range(0, usable, step)]
    first = next(iter(outputs[0]))
    merged = {first: np.concatenate([o[first] for o in outputs])}
    if merged[first].ndim != 2 or merged[first].shape[1] < 2:  # not class scores
        return profile
    confidence, classes = confidences(merged, None)
    profile["output"] = output_profile(confidence, classes, merged[first].shape[1])
    return profile


def _selftest(tmp: Path, spec: InputSpec, entries: list[dict[str, Any]], source_files: dict[str, str], head: Any,
              control: Any, calib: Any, calibration: Any, preprocess: bool, recipe: Recipe) -> dict[str, Any]:
    """The bundle's self-test (see :mod:`edgeship.bundle.selftest`): golden inputs from the validation data, else the
    calibration set; the FP32 source's outputs on them; every artifact's result here in its entry."""
    from ..bundle.folder import load_entry
    from ..bundle.selftest import build_selftest, select_golden

    try:
        selected = select_golden(spec, validation=control.inputs if control is not None else None, calib=calib,
                                 calibration=calibration, preprocess=preprocess, samples=recipe.selftest_samples,
                                 seed=recipe.seed)
    except ConfigError as exc:  # e.g. random inputs for a spec with dynamic dims
        return {"skipped": str(exc)}
    return build_selftest(tmp, spec, entries, source_files, selected, load_entry=load_entry,
                          task="detection" if head is not None else "classification", head=head,
                          min_agreement=recipe.selftest_min_agreement)


def _export(model: Any, spec: InputSpec, path: Path) -> tuple[InputSpec, Any, Any]:
    """Export ``model`` (a detector as its dense part) to ``path``: (the spec, what was exported, the detection head)."""
    exported, head = _detection_export(model, spec)
    spec = export_onnx(exported, spec, path, output_names=head.outputs if head is not None else None,
                       check_parity=head is None or head.family != "graph")
    return spec, exported, head


def _detection_export(model: Any, spec: InputSpec) -> tuple[Any, Any]:
    """(what to export, its detection postprocessing) — a torchvision detector becomes its dense part."""
    from ..tasks.detection import prepare_detector

    if not _is_detector(model):
        return model, None
    return prepare_detector(model, _detector_size(model, spec))


def _detector_size(model: Any, spec: InputSpec) -> tuple[int, int]:
    """The fixed (H, W) a detector runs at, checked against what its export needs."""
    from ..tasks.detection import detector_family

    if len(spec.shape) != 4 or spec.layout != "NCHW" or spec.shape[2] is None or spec.shape[3] is None:
        raise ConfigError(f"a detector needs a fixed NCHW input size, e.g. InputSpec(shape=(1, 3, 320, 320)); got {spec.shape}")
    if detector_family(model) == "rcnn" and spec.shape[0] != 1:
        raise ConfigError(f"{type(model).__name__} is exported whole (postprocessing in the graph) for one image "
                          f"at a time; use batch 1 in InputSpec.shape, got {spec.shape}")
    return spec.shape[2], spec.shape[3]


def _is_detector(model: Any) -> bool:
    from ..tasks.detection import detector_family

    return not is_onnx_path(model) and detector_family(model) is not None


def _check_node_names(onnx_path: Path, names: Sequence[str]) -> None:
    """ConfigError for ``Recipe.keep_fp`` names that are no node of the exported graph (they used to be
    ignored silently: the layer meant to stay in FP was quantized)."""
    onnx = require("onnx", "checking Recipe.keep_fp")
    nodes = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node]
    unknown = [n for n in names if n not in set(nodes)]
    if unknown:
        raise ConfigError(f"Recipe.keep_fp names {unknown} that are no node of the exported ONNX graph; its nodes "
                          f"include {nodes[:8]}{' ...' if len(nodes) > 8 else ''} "
                          f"(`edgeship sensitivity` lists the quantizable ones)")


def _automatic_keep_fp(onnx_path: Path, head: Any) -> list[str]:
    """A detector's box and score heads stay in floating point by default (two-stage: the RPN's and the box
    predictor's, and the postprocessing they feed)."""
    if head is None:
        return []
    from ..tasks.detection import head_layers, postprocessing_nodes

    if head.family == "graph":  # and the postprocessing in the graph, which carries pixel coordinates
        return sorted(set(head_layers(onnx_path, two_stage=True)) | set(postprocessing_nodes(onnx_path)))
    return head_layers(onnx_path)


def _check_calibration(calib: Any, spec: InputSpec, control: Any) -> dict[str, Any] | None:
    """Check the calibration set (size, duplicates, value range, drift from the validation data when
    given); findings are logged and recorded in the manifest, never silently dropped."""
    if calib is None:
        return None
    from ..calibration import check, collect

    against = None
    if control is not None:
        against = collect(control.inputs, spec, size=min(1000, len(control.inputs)), seed=0)
    result = check(calib, against=against, spec=spec)
    if not result.ok or result.warnings:
        console.log(f"calibration check:\n{result}")
    return result.to_dict()


def _accuracy_control(recipe: Recipe, validation: Any, metric: Any, precisions: list[str], spec: InputSpec,
                      raw: bool):
    """The accuracy budget for INT8, or None when the recipe sets none."""
    if recipe.max_drop is None:
        if validation is not None:
            raise ConfigError("validation data are used for the accuracy budget; set recipe=Recipe(max_drop=...)")
        return None
    if "int8" not in precisions:
        raise ConfigError("Recipe.max_drop budgets INT8 accuracy; add 'int8' to precision")
    if not (isinstance(validation, tuple) and len(validation) == 2):
        raise ConfigError("Recipe.max_drop needs validation=(inputs, labels)")
    from .accuracy import AccuracyControl

    inputs, labels = np.asarray(validation[0]), np.asarray(validation[1])
    inputs = spec.apply_preprocess(inputs) if raw else np.ascontiguousarray(inputs, dtype=spec.dtype)
    return AccuracyControl(inputs=inputs, labels=labels, max_drop=float(recipe.max_drop),
                           metric=metric if metric is not None else recipe.metric)


def _complexity(model: Any, spec: InputSpec) -> dict[str, int] | None:
    """Parameters and MACs of a torch model at batch 1 (None for ONNX input or without torch-pruning)."""
    from .._lazy import is_installed

    if is_onnx_path(model) or not is_installed("torch_pruning"):
        return None
    import torch

    from .prune import count_macs_params

    macs, params = count_macs_params(model, torch.zeros(spec.example_shape(1), dtype=getattr(torch, spec.dtype)))
    return {"params": params, "macs": macs}


def _fingerprint(model: Any) -> str:
    """Identifies the unpruned source model, so that variants of one model can be compared."""
    if is_onnx_path(model):
        return sha256_file(Path(model)) if Path(model).is_file() else ""
    from .prune import model_fingerprint

    return model_fingerprint(model) if hasattr(model, "state_dict") else ""


# timed calls per candidate of the latency search: enough for a p50 interval a few percent wide
SEARCH_RUNS = 50


def _prune(model, spec, recipe, backends, precisions, calib, calibration, preprocess_calibration,
           finetune, show_progress, cpus=None) -> tuple[Any, dict[str, Any]]:
    """Prune (``recipe.prune``) at the fixed ratio or the least ratio that meets the latency budget; then recover."""
    from .._lazy import require
    from ..calibration import CalibrationWarning, collect
    from .prune import distill, prune_model

    config = recipe.prune
    torch = require("torch", "pruning")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"pruning needs a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ConfigError("the model is in training mode; call model.eval() first")
    example = torch.from_numpy(np.zeros(spec.example_shape(1), dtype=spec.dtype))
    calib_batch = calib.as_batch() if calib is not None else None
    search: list[dict[str, Any]] = []
    if config.latency_ms is not None:
        target = next(iter(backends))
        ratio, search = _search_ratio(model, spec, recipe, backends[target], precisions[0], calib, calib_batch,
                                      example, show_progress, cpus)
    else:
        ratio = config.ratio
    result = prune_model(model, example, config, ratio, calib_batch)
    pruned = result.model
    distill_samples = None
    if config.recover == "distill" and ratio > 0:
        data = collect(calibration, spec, size=config.distill_samples, seed=config.seed,
                       preprocess=preprocess_calibration).as_batch()
        distill_samples = len(data)
        if distill_samples < config.distill_samples:  # a CalibrationSet (tune passes one) is used as it is
            warnings.warn(f"distillation asked for Prune.distill_samples={config.distill_samples} samples; the "
                          f"calibration given holds {distill_samples}, so it distils on those (pass the raw source "
                          "to draw more)", CalibrationWarning, stacklevel=3)
        pruned = distill(pruned, model, data, config, show_progress=show_progress)
    if finetune is not None:
        pruned = finetune(pruned)
        if not isinstance(pruned, torch.nn.Module):
            raise ConfigError(f"finetune must return the nn.Module, got {type(pruned).__name__}")
        pruned.eval()
    summary = {"config": config.to_dict(), **result.summary(), "search": search, "distill_samples": distill_samples,
               "recovery": "distill" if config.recover == "distill" and ratio > 0 else
                           ("finetune" if finetune is not None else "none")}
    return pruned, summary


def _search_ratio(model, spec, recipe, backend, precision, calib, calib_batch, example,
                  show_progress, cpus=None) -> tuple[float, list[dict[str, Any]]]:
    """The least pruning ratio whose latency on the target meets ``recipe.prune.latency_ms``, measured so that no
    single noisy p50 decides.

    Latency is not monotonic in the ratio (resnet18 INT8: 0.9 measured slower than 0.45) and one p50 is noisy, so
    the ratios of a grid over [0, max_ratio] (``Prune.search_grid`` points) are measured in increasing order until
    one meets the budget, then the interval between it and the grid point below is refined by bisection
    (``search_steps``). A ratio meets the budget only when the upper end of its p50's 95 % interval does. Each
    candidate is compiled as compress will compile it: the recipe's ``keep_fp`` (else the automatic one), its
    calibration method, fleet and the target's compile options. ``backend`` is the registered target."""
    from ..measure.latency import measure_latency
    from .prune import prune_model

    config, target_name = recipe.prune, backend.name
    steps: list[dict[str, Any]] = []
    x = calib.samples[0] if calib is not None else np.zeros(spec.example_shape(1), dtype=spec.dtype)

    def meets(ratio: float) -> bool:
        result = prune_model(model, example, config, ratio, calib_batch)
        with tempfile.TemporaryDirectory(prefix="edgeship-search-") as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            _, _, head = _export(result.model, spec, onnx_path)
            keep_fp = ((list(recipe.keep_fp) if recipe.keep_fp is not None else _automatic_keep_fp(onnx_path, head))
                       if precision == "int8" else [])
            request = CompileRequest(onnx_path, spec, precision, calib, keep_fp=tuple(keep_fp), fleet=cpus,
                                     calibration_method=recipe.calibration_method,
                                     options=dict(recipe.target_options.get(target_name, {})))
            artifact = backend.compile(request, Path(tmp) / "artifact")
            with backend.load(Path(tmp) / "artifact", artifact, spec) as rt:
                stats = measure_latency(lambda: rt.run(x), runs=SEARCH_RUNS, warmup=5)
        low, high = stats.p50_ci
        ok = bool(high <= config.latency_ms)
        steps.append({"ratio": ratio, "p50_ms": stats.p50_ms, "p50_ci_ms": [low, high], "meets": ok,
                      "macs": result.macs_after, "params": result.params_after, "keep_fp": list(keep_fp),
                      "target": target_name, "precision": precision})
        console.log(f"prune search: ratio {ratio:.3f} -> p50 {stats.p50_ms:.3f} ms (95% {low:.3f}..{high:.3f}) on "
                    f"{target_name} {precision}: {'meets' if ok else 'misses'} {config.latency_ms} ms")
        return ok

    grid = [config.max_ratio * i / (config.search_grid - 1) for i in range(config.search_grid)]
    with progress(show_progress) as bar:
        task = bar.add_task(f"latency search on {target_name} {precision}", total=len(grid) + config.search_steps)
        below = None
        for ratio in grid:
            found = meets(ratio)
            bar.advance(task)
            if found:
                break
            below = ratio
        else:
            best = min(steps, key=lambda s: s["p50_ci_ms"][1])
            raise LatencyBudgetError(
                f"no pruning ratio up to {config.max_ratio} meets {config.latency_ms} ms on {target_name} {precision} "
                f"(the upper end of its p50's 95% interval): the best reached is {best['p50_ms']:.3f} ms "
                f"(95% up to {best['p50_ci_ms'][1]:.3f}) at ratio {best['ratio']}; measured {steps}", steps)
        if below is None:
            return 0.0, steps  # the unpruned model meets it
        lo, hi = below, ratio
        for _ in range(config.search_steps):
            mid = (lo + hi) / 2
            if meets(mid):
                hi = mid
            else:
                lo = mid
            bar.advance(task)
    return hi, steps
