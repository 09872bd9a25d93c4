"""The verb ``tune``: compile and measure every candidate variant, then choose the fastest within a budget.

A candidate is a pruning ratio, a target, a precision (``fp32``, ``fp16``, ``int8``, or
``int8+fallback`` — INT8 with accuracy-aware floating-point fallback) and runtime options (threads, and
the target's own: OpenVINO's inference precision hint, performance hint and streams).
Each one is compiled with :func:`edgeship.compress` and measured with :func:`edgeship.benchmark`
on the validation data and the target itself — nothing is estimated. INT8 is not assumed to be the
fastest: it is measured like the rest, and an INT8 variant slower than a higher-precision one of the
same model on the same target is never chosen.

The choice is the fastest variant (p50 latency) whose accuracy drop against the unpruned FP32
reference is within ``Budget.max_drop`` and whose p50 is within ``Budget.latency_ms`` — where p50
95% intervals overlap the fastest one's, the least modified variant of the tie wins (see
:func:`select`); when none is within the budget, :class:`~edgeship.errors.TuneBudgetError` names the
nearest trials. Trials are cached on disk by
content hash (see :mod:`edgeship.tune.cache`), so a re-run does no repeated work and an interrupted sweep
resumes. ``executor="ray"`` runs the trials as Ray tasks (see :mod:`edgeship.tune.executors`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._defaults import CPU_TARGETS
from .._progress import console, progress
from ..errors import ConfigError, TuneBudgetError
from ..executor import Executor, as_executor
from ..measure.plan import Measurement, as_measurement
from ..spec import InputSpec
from .cache import TrialCache, array_digest, callable_identity, digest, toolchain_versions
from .executors import Job, LocalExecutor, RayExecutor
from .report import _assemble, _partial_report, _stats
from .selection import _current_best, _least_modified_of_fastest, _p50_overlaps, _slower_int8, select  # noqa: F401
from .space import FALLBACK, PRECISION_CHOICES, Budget, Candidate, OptionChoices, SearchSpace, ThreadChoices
from .trial import Trial, TuneResult

__all__ = ["FALLBACK", "PRECISION_CHOICES", "TUNE_SCHEMA_VERSION", "Budget", "Candidate", "OptionChoices", "SearchSpace",
           "ThreadChoices", "Trial", "TuneResult", "select", "tune"]

# _least_modified_of_fastest, _p50_overlaps and _slower_int8 stay importable here: device.choice applies them.
_DEFAULT_TARGETS = CPU_TARGETS
TUNE_SCHEMA_VERSION = 1


def tune(
    model: Any,
    *,
    calibration: Any,
    validation: tuple[Any, Any],
    input_spec: InputSpec,
    targets: Sequence[str] = _DEFAULT_TARGETS,
    budget: Budget | None = None,
    space: SearchSpace | None = None,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "top1",
    measure: Measurement | None = None,
    executor: str | Executor = "local",
    cache_dir: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    preprocess_calibration: bool = False,
    show_progress: bool = True,
) -> TuneResult:
    """Compile and measure every candidate of ``space`` on each target; choose the fastest within ``budget``.

    Args:
        model: a ``torch.nn.Module`` in eval mode, or a path to an ``.onnx`` file (no pruning then).
        calibration: INT8 calibration samples, as for ``compress`` (drawn once for every candidate).
        validation: (inputs, labels): accuracy of every candidate and the budget of ``int8+fallback``.
        input_spec: the model input and its preprocessing.
        targets: registered target names.
        budget: the accuracy drop and latency the choice must meet (default ``Budget()``: 1 point, no latency limit).
        space: the candidates (default ``SearchSpace()``: unpruned, every precision, default threads).
        metric: "top1", "top5", or ``f(predictions, labels) -> float in [0, 1]``.
        measure: how each trial is timed (:class:`edgeship.Measurement`: runs, warmup, batch size, streams,
            bootstrap resamples); threads and runtime options are searched, so they belong to ``space``.
        executor: "local" (in this process, one trial at a time), "ray" (Ray tasks; ``pip install
            "edgeship[ray]"``), or an :class:`edgeship.Executor`: the Ray cluster's address ("auto", "HOST:PORT",
            None: a one-machine cluster for the sweep that runs one trial at a time; ``$RAY_ADDRESS`` is
            honoured), extra attempts for a trial whose worker died, timed out or failed for a reason other
            than an edgeship error (local trials too; after them it is reported as failed), and the Ray
            trial timeout (a worker running one trial longer is ended and retried).
        cache_dir: the trial cache (default ``$EDGESHIP_CACHE/tune``, i.e. ``~/.cache/edgeship/tune``).
        output: a folder: the chosen bundle goes to ``output/best.edgeship`` and the report to
            ``output/report`` (also when nothing meets the budget, or the sweep is interrupted).
        preprocess_calibration: calibration and validation inputs are raw images; apply the spec's preprocessing.
    Returns:
        A :class:`TuneResult`.
    Raises:
        TuneBudgetError: no measured variant meets the budget (it names the nearest trials).
        CompileError: every unpruned trial failed, so there is no FP32 reference to judge drops by.
        KeyboardInterrupt: re-raised after the finished trials are cached (and the report saved to ``output``).
    """
    from ..calibration import collect

    started = time.perf_counter()
    budget = budget if budget is not None else Budget()
    space = space if space is not None else SearchSpace()
    targets = [targets] if isinstance(targets, str) else list(dict.fromkeys(targets))
    measure, run_on = _check_call(budget, space, input_spec, targets, metric, measure, executor)
    source_id = _model_identity(model, space)
    if not (isinstance(validation, tuple) and len(validation) == 2 and validation[1] is not None):
        raise ConfigError("validation must be (inputs, labels): every candidate's accuracy is measured on it")
    x_val, y_val = np.asarray(validation[0]), np.asarray(validation[1])
    if len(x_val) != len(y_val) or not len(x_val):
        raise ConfigError(f"validation needs as many labels as inputs (and at least one); "
                          f"got {len(x_val)} inputs and {len(y_val)} labels")

    # the data every candidate shares, model-ready, drawn once
    calib = collect(calibration, input_spec, size=space.calibration_size, seed=space.seed,
                    preprocess=preprocess_calibration)
    x_val = input_spec.apply_preprocess(x_val) if preprocess_calibration else np.ascontiguousarray(x_val, dtype=input_spec.dtype)
    candidates, skipped = space.candidates(targets)
    added_reference = None
    if not any(c.prune_ratio == 0 for c in candidates):  # drops are judged against the unpruned FP32 graph
        added_reference = Candidate(targets[0], "fp32", 0.0, space.threads_for(targets[0])[0])
        candidates.insert(0, added_reference)
    jobs = _jobs(candidates, space, budget, metric, input_spec, source_id, calib.sha256, array_digest(x_val, y_val),
                 measure, run_on.timeout_s)

    cache = TrialCache(cache_dir if cache_dir is not None else _default_cache_dir())
    trials: dict[str, Trial] = {}
    for job in jobs:
        record = cache.load(job.key)
        if record is not None:
            trials[job.key] = Trial.from_record(job.candidate, record, cache, cached=True)
    todo = [job for job in jobs if job.key not in trials]
    settings = {"budget": budget.to_dict(), "space": space.to_dict(), "targets": targets, "executor": run_on.kind,
                "metric": metric if isinstance(metric, str) else callable_identity(metric), "runs": measure.runs,
                "warmup": measure.warmup, "batch_size": measure.batch_size, "cache_dir": str(cache.root), "skipped": skipped,
                "reference": "onnxruntime fp32 of the unpruned graph",
                "agreement": "with each variant's own FP32 graph",
                "added_reference_trial": added_reference.label if added_reference else None}

    with progress(show_progress) as bar:
        task = bar.add_task(_describe_progress(len(trials), len(jobs), None), total=len(jobs), completed=len(trials))

        def on_done(job: Job, outcome: dict[str, Any]) -> None:
            record = {"compile_key": job.compile_key, "candidate": job.candidate.to_dict(), **outcome}
            record.pop("retry", None)
            record.pop("bundle_sha256", None)
            if outcome["status"] == "ok" or not outcome.get("retry"):  # deterministic outcomes only
                cache.store(job.key, record)
            trial = Trial.from_record(job.candidate, {**record, "key": job.key}, cache, cached=False)
            trials[job.key] = trial
            best = _current_best(trials, budget)  # also judges every drop against the reference, once it is known
            if show_progress:
                console.log(f"trial {len(trials)}/{len(jobs)} {trial.summary()}"
                            + (f" [{trial.attempts} attempts]" if trial.attempts > 1 else ""))
            bar.update(task, advance=1, description=_describe_progress(len(trials), len(jobs), best))

        try:
            if todo:
                runner = (LocalExecutor(run_on.retries) if run_on.kind == "local"
                          else RayExecutor(targets, run_on.address, run_on.retries))
                with runner:
                    settings["ray_startup_s"] = getattr(runner, "startup_s", None)
                    runner.run(todo, (model, calib, (x_val, y_val)), cache, on_done)
        except KeyboardInterrupt:
            # a trial whose record reached the cache just before the interrupt (between cache.store and
            # trials[...] in on_done) is finished: count it, so the report holds exactly what a re-run reuses
            for job in jobs:
                record = cache.load(job.key) if job.key not in trials else None
                if record is not None:
                    trials[job.key] = Trial.from_record(job.candidate, record, cache, cached=False)
            partial = _partial_report(trials, jobs, budget, settings, started)
            if output is not None and partial is not None:
                partial.save(Path(output) / "report")
            raise
    ordered = [trials[j.key] for j in jobs]
    try:
        result = _assemble(ordered, budget, settings, _stats(ordered, len(jobs), time.perf_counter() - started))
    except TuneBudgetError as exc:
        if output is not None and exc.report is not None:
            exc.report.save(Path(output) / "report")
        raise
    if output is not None:
        result.save(output)
    return result


# -- planning -------------------------------------------------------------------------------------------
def _check_call(budget: Any, space: Any, spec: Any, targets: list[str], metric: Any, measure: Any,
                executor: Any) -> tuple[Measurement, Executor]:
    """Refuse bad arguments before any work, each with what was expected and what came; returns the
    measurement and executor to use."""
    from ..measure.metrics import get_metric
    from ..targets import get_target, get_target_class

    if not isinstance(budget, Budget):
        raise ConfigError(f"budget must be an edgeship.Budget, got {type(budget).__name__}")
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space must be an edgeship.SearchSpace, got {type(space).__name__}")
    if not isinstance(spec, InputSpec):
        raise ConfigError(f"input_spec must be an edgeship.InputSpec, got {type(spec).__name__}")
    measure = as_measurement(measure)
    if measure.threads is not None or measure.options is not None:
        raise ConfigError("tune searches threads and runtime options: give them as SearchSpace(threads=..., "
                          "options=...), not in Measurement")
    run_on = as_executor(executor)
    if not targets:
        raise ConfigError("tune needs at least one target")
    for name in targets:
        if run_on.kind == "local":  # compiled and run here: the backend must be installed here
            get_target(name, for_compile=True)
        else:  # on Ray the workers need the backend, not this machine; the name must still be known
            get_target_class(name)
    get_metric(metric)  # an unknown metric name fails here, not in every trial
    return measure, run_on


def _model_identity(model: Any, space: SearchSpace) -> dict[str, Any]:
    """What identifies the source model in cache keys: its weights' fingerprint and its architecture."""
    from ..build.compress import _fingerprint
    from ..build.export import is_onnx_path

    if is_onnx_path(model):
        if not Path(model).is_file():
            raise ConfigError(f"model file not found: {model}")
        if any(r > 0 for r in space.prune_ratios):
            raise ConfigError("pruning needs the torch model (an nn.Module); an ONNX file cannot be pruned — "
                              "use SearchSpace(prune_ratios=(0.0,))")
        return {"onnx_sha256": _fingerprint(model)}
    if not hasattr(model, "state_dict") or not hasattr(model, "eval"):
        raise ConfigError(f"model must be a torch.nn.Module or a path to an .onnx file, got {type(model).__name__}")
    if getattr(model, "training", False):
        raise ConfigError("the model is in training mode; call model.eval() first")
    return {"state_sha256": _fingerprint(model), "architecture": repr(model),
            "class": f"{type(model).__module__}.{type(model).__qualname__}"}


def _jobs(candidates: list[Candidate], space: SearchSpace, budget: Budget, metric: Any, spec: InputSpec,
          source_id: dict[str, Any], calib_sha: str, val_sha: str, measure: Measurement,
          timeout_s: float | None) -> list[Job]:
    """A job per candidate with its compile key (what decides the bundle) and trial key (+ the measurement)."""
    metric_id = metric if isinstance(metric, str) else callable_identity(metric)
    timing = {"runs": measure.runs, "warmup": measure.warmup, "ci_resamples": measure.ci_resamples}
    timing.update({k: v for k, v in (("batch_size", measure.batch_size), ("streams", measure.streams)) if v != 1})
    base = {"schema": TUNE_SCHEMA_VERSION, "model": source_id, "calibration_sha256": calib_sha,
            "input_spec": spec.to_dict(), "versions": toolchain_versions()}
    jobs = []
    for c in candidates:
        recipe = space.recipe(c, budget, metric)
        compile_key = digest({**base, "recipe": recipe.to_dict(), "target": c.target, "precision": c.precision,
                              "validation_sha256": val_sha if c.fallback else None,
                              "metric": metric_id if c.fallback else None})
        key = digest({"compile_key": compile_key, "threads": c.threads, "options": dict(c.options), "validation_sha256": val_sha,
                      "metric": metric_id, **timing})
        jobs.append(Job(candidate=c, key=key, compile_key=compile_key, recipe=recipe, spec=spec, metric=metric,
                        measure=measure, timeout_s=timeout_s))
    return jobs


def _default_cache_dir() -> Path:
    from .._defaults import cache_dir

    return cache_dir() / "tune"


def _describe_progress(done: int, total: int, best: Trial | None) -> str:
    where = f"tune {done}/{total}"
    if best is None:
        return where
    return f"{where} — best: {best.label} p50 {best.p50_ms:.3f} ms, drop {best.drop_pts:+.2f} pts"
