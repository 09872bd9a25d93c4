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

import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from .._defaults import CALIBRATION_SIZE, CPU_TARGETS
from .._progress import console, progress
from ..build.prune import Prune
from ..build.recipe import Recipe
from ..errors import CompileError, ConfigError, TuneBudgetError
from ..spec import InputSpec
from .cache import TrialCache, array_digest, callable_identity, digest, toolchain_versions
from .executors import Job, LocalExecutor, RayExecutor

if TYPE_CHECKING:
    from ..benchmarks.report import Report, Row
    from ..bundle.folder import Bundle

FALLBACK = "int8+fallback"
PRECISION_CHOICES = ("fp32", "fp16", "int8", FALLBACK)
_HIGHER = ("fp32", "fp16")  # what an INT8 variant must beat on latency to be chosen
_MODIFICATION = {"fp32": 0, "fp16": 1, FALLBACK: 2, "int8": 3}  # among latency ties, the lowest wins
_DEFAULT_TARGETS = CPU_TARGETS
TUNE_SCHEMA_VERSION = 1
_TIMELINE = ("submitted_at", "task_started_at", "task_finished_at", "received_at")


@dataclass(frozen=True)
class Budget:
    """What the chosen variant must meet.

    Args:
        max_drop: accuracy drop against the unpruned FP32 reference, in percentage points of the metric.
        latency_ms: p50 latency per call (batch 1) on the target, in milliseconds; None: no limit.
    """

    max_drop: float = 1.0
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) \
                or not math.isfinite(self.max_drop) or self.max_drop < 0:
            raise ConfigError(f"Budget.max_drop must be a finite number >= 0 (percentage points), got {self.max_drop!r}")
        if self.latency_ms is not None and (isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, (int, float))
                                            or not math.isfinite(self.latency_ms) or self.latency_ms <= 0):
            raise ConfigError(f"Budget.latency_ms must be a number > 0 or None, got {self.latency_ms!r}")

    def meets(self, drop_pts: float | None, p50_ms: float | None) -> bool:
        """Whether a measured drop and p50 are within this budget (a missing value never is)."""
        if drop_pts is None or p50_ms is None or not (math.isfinite(drop_pts) and math.isfinite(p50_ms)):
            return False
        return drop_pts <= self.max_drop + 1e-9 and (self.latency_ms is None or p50_ms <= self.latency_ms)

    def describe(self) -> str:
        return f"drop <= {self.max_drop:g} pts" + (f", p50 <= {self.latency_ms:g} ms" if self.latency_ms else "")

    def to_dict(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "latency_ms": self.latency_ms}


ThreadChoices = tuple[int | None, ...]
OptionChoices = tuple[tuple[tuple[str, Any], ...], ...]  # each choice: sorted (name, value) pairs


@dataclass(frozen=True)
class SearchSpace:
    """The candidates ``tune`` compiles and measures: every combination of the fields, per target.

    Args:
        prune_ratios: channel pruning ratios (0.0 = unpruned), each through ``Recipe(prune=Prune(ratio=...))``.
        precisions: among "fp32", "fp16", "int8" and "int8+fallback" (INT8 with the accuracy-aware FP
            fallback held to the budget's ``max_drop``); a precision a target lacks (fp16 on
            onnxruntime-cpu) is skipped for that target.
        threads: CPU threads of the runtime (None = the backend's own choice); a mapping
            {target: choices} sets them per target (targets not in it get (None,)).
        options: per target, choices of its other runtime options (``Target.runtime_options``), e.g.
            ``{"openvino-cpu": ({}, {"inference_precision": "bf16"}, {"performance_hint": "THROUGHPUT"})}``;
            ``{}`` is the target's default. Targets not in it get ({},).
        prune: how to prune (importance, recovery, protected layers); its ratio is replaced by each of
            ``prune_ratios``. None: ``Prune``'s defaults.
        calibration_size, seed: the calibration subset drawn once for every candidate.
    """

    prune_ratios: tuple[float, ...] = (0.0,)
    precisions: tuple[str, ...] = PRECISION_CHOICES
    threads: ThreadChoices | Mapping[str, ThreadChoices] = (None,)
    options: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    prune: Prune | None = None
    calibration_size: int = CALIBRATION_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        ratios = tuple(float(r) for r in _as_tuple(self.prune_ratios, "prune_ratios"))
        if not ratios or any(not 0.0 <= r < 1.0 for r in ratios):
            raise ConfigError(f"SearchSpace.prune_ratios must be ratios in [0, 1), got {self.prune_ratios!r}")
        object.__setattr__(self, "prune_ratios", tuple(dict.fromkeys(ratios)))
        precisions = _as_tuple(self.precisions, "precisions")
        bad = [p for p in precisions if p not in PRECISION_CHOICES]
        if not precisions or bad:
            raise ConfigError(f"SearchSpace.precisions must be among {PRECISION_CHOICES}, got {self.precisions!r}")
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(precisions)))
        if isinstance(self.threads, Mapping):
            object.__setattr__(self, "threads", {str(t): _threads(v) for t, v in self.threads.items()})
        else:
            object.__setattr__(self, "threads", _threads(self.threads))
        object.__setattr__(self, "options", _option_choices(self.options))
        if self.prune is not None and not isinstance(self.prune, Prune):
            raise ConfigError(f"SearchSpace.prune must be an edgeship.Prune or None, got {type(self.prune).__name__}")
        if not isinstance(self.calibration_size, int) or self.calibration_size < 1 or not isinstance(self.seed, int):
            raise ConfigError(f"SearchSpace.calibration_size must be an int >= 1 and seed an int, "
                              f"got {self.calibration_size!r} and {self.seed!r}")

    def threads_for(self, target: str) -> ThreadChoices:
        """The thread choices of ``target``."""
        if isinstance(self.threads, Mapping):
            return self.threads.get(target, (None,))
        return self.threads

    def options_for(self, target: str) -> OptionChoices:
        """The runtime option choices of ``target`` (each a sorted tuple of (name, value) pairs)."""
        return self.options.get(target, ((),))

    def candidates(self, targets: Sequence[str]) -> tuple[list["Candidate"], list[str]]:
        """(every candidate, unpruned ones first; the (target, precision) pairs skipped and why)."""
        from ..targets import get_target_class

        out, skipped = [], []
        for ratio in sorted(self.prune_ratios):
            for target in targets:
                supported = get_target_class(target).precisions
                for precision in self.precisions:
                    base = "int8" if precision == FALLBACK else precision
                    if base not in supported:
                        if ratio == min(self.prune_ratios):
                            skipped.append(f"{target} {precision}: the target supports {supported}")
                        continue
                    for threads in self.threads_for(target):
                        for options in self.options_for(target):
                            out.append(Candidate(target, precision, ratio, threads, options))
        return out, skipped

    def recipe(self, candidate: "Candidate", budget: Budget, metric: Any) -> Recipe:
        """The compress recipe of ``candidate``."""
        prune = None
        if candidate.prune_ratio > 0:
            prune = dataclasses.replace(self.prune or Prune(ratio=candidate.prune_ratio),
                                        ratio=candidate.prune_ratio, latency_ms=None)
        return Recipe(calibration_size=self.calibration_size, seed=self.seed, prune=prune,
                      max_drop=budget.max_drop if candidate.fallback else None,
                      metric=metric if isinstance(metric, str) else "top1")

    def to_dict(self) -> dict[str, Any]:
        threads = dict(self.threads) if isinstance(self.threads, Mapping) else list(self.threads)
        return {"prune_ratios": list(self.prune_ratios), "precisions": list(self.precisions), "threads": threads,
                "options": {t: [dict(c) for c in choices] for t, choices in self.options.items()},
                "prune": self.prune.to_dict() if self.prune is not None else None,
                "calibration_size": self.calibration_size, "seed": self.seed}


def _as_tuple(value: Any, name: str) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ConfigError(f"SearchSpace.{name} must be a tuple or list, got {value!r}")
    return tuple(value)


def _threads(value: Any) -> ThreadChoices:
    choices = _as_tuple(value, "threads")
    if not choices or any(t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1) for t in choices):
        raise ConfigError(f"SearchSpace.threads must hold ints >= 1 or None, got {value!r}")
    return tuple(dict.fromkeys(choices))


def _option_choices(value: Any) -> dict[str, OptionChoices]:
    """{target: choices} with each choice checked against the target's runtime options and made hashable."""
    from ..targets import get_target_class

    if not isinstance(value, Mapping):
        raise ConfigError(f"SearchSpace.options must map a target name to a list of option dicts, got {value!r}")
    out = {}
    for target, choices in value.items():
        cls = get_target_class(str(target))
        choices = _as_tuple(choices, f"options[{target!r}]")
        if not choices:
            raise ConfigError(f"SearchSpace.options[{target!r}] holds no choice; use ({{}},) for the default")
        checked = []
        for choice in choices:
            opts = cls.check_options(choice)
            if "threads" in opts:
                raise ConfigError("threads are swept by SearchSpace.threads, not SearchSpace.options")
            checked.append(tuple(sorted(opts.items())))
        out[str(target)] = tuple(dict.fromkeys(checked))
    return out


@dataclass(frozen=True)
class Candidate:
    """One variant to compile and measure."""

    target: str
    precision: str  # one of PRECISION_CHOICES
    prune_ratio: float = 0.0
    threads: int | None = None
    options: tuple[tuple[str, Any], ...] = ()  # runtime options beside threads, sorted (name, value) pairs

    @property
    def fallback(self) -> bool:
        return self.precision == FALLBACK

    @property
    def base_precision(self) -> str:
        """The artifact's precision ("int8" for the fallback variant)."""
        return "int8" if self.fallback else self.precision

    @property
    def variant(self) -> str:
        """The report's variant name: the pruning ratio and runtime options, e.g. 'p0.25-t2-inference_precision=bf16'."""
        return (f"p{self.prune_ratio:g}" + (f"-t{self.threads}" if self.threads is not None else "")
                + "".join(f"-{k}={v}" for k, v in self.options))

    @property
    def label(self) -> str:
        return f"{self.variant} {self.target} {self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "options": dict(self.options)}


@dataclass
class Trial:
    """One candidate's outcome: the measured row (accuracy, drop, latency) or why it failed."""

    candidate: Candidate
    status: str  # "ok" | "failed"
    row: "Row | None"
    reference: "Row | None" = None  # the benchmark's FP32 row of the same bundle's source graph
    error: str | None = None
    attempts: int = 1
    cached: bool = False
    compiled: bool = False
    compile_s: float | None = None
    measure_s: float | None = None
    worker_s: float | None = None
    roundtrip_s: float | None = None
    host: str | None = None
    pid: int | None = None
    bundle_path: Path | None = None
    fp_layers: int | None = None
    key: str = ""
    timeline: dict[str, float] = field(default_factory=dict)  # Ray: submitted_at, task_started_at, ... (unix s)
    notes: list[str] = field(default_factory=list)  # why it was or was not chosen

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.row is not None

    @property
    def label(self) -> str:
        return self.candidate.label

    @property
    def p50_ms(self) -> float | None:
        return self.row.p50_ms if self.row is not None else None

    @property
    def accuracy_pct(self) -> float | None:
        return self.row.accuracy_pct if self.row is not None else None

    @property
    def drop_pts(self) -> float | None:
        return self.row.drop_pts if self.row is not None else None

    @property
    def bundle(self) -> "Bundle":
        """The compiled bundle this trial measured (in the cache folder)."""
        from ..bundle.folder import Bundle

        if self.bundle_path is None:
            raise ConfigError(f"trial {self.label} has no bundle: it {self.status} ({self.error})")
        return Bundle.open(self.bundle_path)

    def save(self, path: str | os.PathLike) -> "Bundle":
        """Copy this trial's bundle to ``path`` (written atomically, verified first); returns it."""
        from ..bundle.folder import Bundle, atomic_folder

        source = self.bundle
        source.verify()
        with atomic_folder(Path(path)) as tmp:
            shutil.copytree(source.path, tmp, dirs_exist_ok=True)
        return Bundle.open(path)

    def summary(self) -> str:
        if not self.ok:
            return f"{self.label}: failed ({self.error})"
        return (f"{self.label}: {_fmt(self.accuracy_pct, '.2f')}% (drop {_fmt(self.drop_pts, '+.2f')} pts), "
                f"p50 {_fmt(self.p50_ms, '.3f')} ms")

    @classmethod
    def from_record(cls, candidate: Candidate, record: dict[str, Any], cache: TrialCache, cached: bool) -> "Trial":
        """Rebuild a trial from its JSON record (rows parsed by the report's own reader)."""
        from ..benchmarks.report import REPORT_SCHEMA_VERSION, Report

        row = reference = None
        bundle_path = None
        if record.get("status") == "ok" and record.get("rows"):
            parsed = Report.from_dict({"schema_version": REPORT_SCHEMA_VERSION,
                                       "rows": [record["rows"]["variant"], record["rows"]["reference"]]})
            row, reference = parsed.rows
            bundle_path = cache.bundle_path(record["compile_key"])
            row.bundle = str(bundle_path.resolve())  # where it lives now (a Ray worker measured it elsewhere)
            reference.bundle = row.bundle
        return cls(candidate=candidate, status=record.get("status", "failed"), row=row, reference=reference,
                   error=record.get("error"), attempts=int(record.get("attempts", 1)), cached=cached,
                   compiled=bool(record.get("compiled")) and not cached, compile_s=record.get("compile_s"),
                   measure_s=record.get("measure_s"), worker_s=record.get("worker_s"),
                   roundtrip_s=record.get("roundtrip_s"), host=record.get("host"), pid=record.get("pid"),
                   bundle_path=bundle_path,
                   fp_layers=record.get("fp_layers"), key=record.get("key", ""),
                   timeline={k: record[k] for k in _TIMELINE if record.get(k) is not None})


@dataclass
class TuneResult:
    """What ``tune`` measured and chose.

    Attributes:
        best: the chosen trial (``best.bundle``, ``best.row``, ``best.save(path)``).
        best_by_target: per target, the fastest trial within the budget.
        trials: every trial, in sweep order (failed ones included).
        pareto: the trials no other beats on both accuracy and p50 latency, fastest first.
        report: an edgeship Report with every trial (``report.save(folder)``).
        stats: counts (trials, compiled, measured, cached, failed) and the wall time.
    """

    best: Trial
    best_by_target: dict[str, Trial]
    trials: list[Trial]
    pareto: list[Trial]
    report: "Report"
    budget: Budget
    stats: dict[str, Any]

    @property
    def bundle(self) -> "Bundle":
        """The chosen bundle."""
        return self.best.bundle

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the chosen bundle to ``folder/best.edgeship`` and the report to ``folder/report``."""
        folder = Path(folder)
        self.best.save(folder / "best.edgeship")
        self.report.save(folder / "report")
        return folder

    def summary(self) -> str:
        lines = [f"chosen: {self.best.summary()} — the fastest of {len(self.trials)} trials within {self.budget.describe()}"]
        lines += [f"  fastest on {t}: {trial.summary()}" for t, trial in self.best_by_target.items() if trial is not self.best]
        return "\n".join(lines)


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
    executor: str = "local",
    address: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    preprocess_calibration: bool = False,
    runs: int = 100,
    warmup: int = 10,
    ci_resamples: int = 200,
    retries: int = 2,
    trial_timeout_s: float | None = None,
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
        executor: "local" (in this process, one trial at a time) or "ray" (Ray tasks; ``pip install "edgeship[ray]"``).
        address: the Ray cluster: "auto" (the one running on this machine), "HOST:PORT", or None (start a
            one-machine cluster for the sweep that runs one trial at a time; ``$RAY_ADDRESS`` is honoured).
        cache_dir: the trial cache (default ``$EDGESHIP_CACHE/tune``, i.e. ``~/.cache/edgeship/tune``).
        output: a folder: the chosen bundle goes to ``output/best.edgeship`` and the report to
            ``output/report`` (also when nothing meets the budget, or the sweep is interrupted).
        preprocess_calibration: calibration and validation inputs are raw images; apply the spec's preprocessing.
        runs, warmup, ci_resamples: latency calls per trial, untimed calls before them, bootstrap resamples
            of a user metric's interval.
        retries: extra attempts for a trial whose worker died, timed out or failed for a reason other
            than an edgeship error; after them it is reported as failed.
        trial_timeout_s: Ray only: a worker running one trial longer than this is ended (and retried).
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
    _check_call(budget, space, input_spec, targets, metric, executor, address, runs, warmup, retries, trial_timeout_s)
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
                 runs, warmup, ci_resamples, trial_timeout_s)

    cache = TrialCache(cache_dir if cache_dir is not None else _default_cache_dir())
    trials: dict[str, Trial] = {}
    for job in jobs:
        record = cache.load(job.key)
        if record is not None:
            trials[job.key] = Trial.from_record(job.candidate, record, cache, cached=True)
    todo = [job for job in jobs if job.key not in trials]
    settings = {"budget": budget.to_dict(), "space": space.to_dict(), "targets": targets, "executor": executor,
                "metric": metric if isinstance(metric, str) else callable_identity(metric), "runs": runs,
                "warmup": warmup, "cache_dir": str(cache.root), "skipped": skipped,
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
                runner = LocalExecutor(retries) if executor == "local" else RayExecutor(targets, address, retries)
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
def _check_call(budget: Any, space: Any, spec: Any, targets: list[str], metric: Any, executor: str,
                address: str | None, runs: int, warmup: int, retries: int, timeout_s: float | None) -> None:
    """Refuse bad arguments before any work, each with what was expected and what came."""
    from ..measure.metrics import get_metric
    from ..targets import get_target, get_target_class

    if not isinstance(budget, Budget):
        raise ConfigError(f"budget must be an edgeship.Budget, got {type(budget).__name__}")
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space must be an edgeship.SearchSpace, got {type(space).__name__}")
    if not isinstance(spec, InputSpec):
        raise ConfigError(f"input_spec must be an edgeship.InputSpec, got {type(spec).__name__}")
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    if address is not None and executor != "ray":
        raise ConfigError("address is the Ray cluster's; pass executor='ray' with it")
    if not isinstance(retries, int) or retries < 0 or runs < 1 or warmup < 0:
        raise ConfigError(f"retries must be an int >= 0, runs >= 1 and warmup >= 0; got {retries}, {runs}, {warmup}")
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"trial_timeout_s must be > 0 seconds or None, got {timeout_s!r}")
    if not targets:
        raise ConfigError("tune needs at least one target")
    for name in targets:
        if executor == "local":  # compiled and run here: the backend must be installed here
            get_target(name, for_compile=True)
        else:  # on Ray the workers need the backend, not this machine; the name must still be known
            get_target_class(name)
    get_metric(metric)  # an unknown metric name fails here, not in every trial


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
          source_id: dict[str, Any], calib_sha: str, val_sha: str, runs: int, warmup: int, ci_resamples: int,
          timeout_s: float | None) -> list[Job]:
    """A job per candidate with its compile key (what decides the bundle) and trial key (+ the measurement)."""
    metric_id = metric if isinstance(metric, str) else callable_identity(metric)
    base = {"schema": TUNE_SCHEMA_VERSION, "model": source_id, "calibration_sha256": calib_sha,
            "input_spec": spec.to_dict(), "versions": toolchain_versions()}
    jobs = []
    for c in candidates:
        recipe = space.recipe(c, budget, metric)
        compile_key = digest({**base, "recipe": recipe.to_dict(), "target": c.target, "precision": c.precision,
                              "validation_sha256": val_sha if c.fallback else None,
                              "metric": metric_id if c.fallback else None})
        key = digest({"compile_key": compile_key, "threads": c.threads, "options": dict(c.options), "validation_sha256": val_sha,
                      "metric": metric_id, "runs": runs, "warmup": warmup, "ci_resamples": ci_resamples})
        jobs.append(Job(candidate=c, key=key, compile_key=compile_key, recipe=recipe, spec=spec, metric=metric,
                        runs=runs, warmup=warmup, ci_resamples=ci_resamples, timeout_s=timeout_s))
    return jobs


def _default_cache_dir() -> Path:
    from .._defaults import cache_dir

    return cache_dir() / "tune"


# -- selection ------------------------------------------------------------------------------------------
def _reference(trials: Sequence[Trial]) -> "Row | None":
    """The FP32 reference row: the benchmark's FP32 row of an unpruned trial (all unpruned trials share it)."""
    for t in trials:
        if t.ok and t.candidate.prune_ratio == 0 and t.reference is not None and t.reference.accuracy_pct is not None:
            return t.reference
    return None


def _apply_reference(trials: Sequence[Trial], reference: "Row") -> None:
    """Every drop against the unpruned reference (a pruned bundle's own FP32 graph is already pruned)."""
    for t in trials:
        if t.ok and t.row.accuracy_pct is not None:
            t.row.drop_pts = reference.accuracy_pct - t.row.accuracy_pct


def _slower_int8(trials: Sequence[Trial]) -> dict[int, str]:
    """INT8 trials slower (p50) than an FP32/FP16 trial of the same target, pruning and threads -> why."""
    out: dict[int, str] = {}
    for t in trials:
        if not t.ok or t.candidate.base_precision != "int8":
            continue
        for other in trials:
            c, o = t.candidate, other.candidate
            if (other.ok and o.precision in _HIGHER
                    and (o.target, o.prune_ratio, o.threads, o.options) == (c.target, c.prune_ratio, c.threads, c.options)
                    and other.p50_ms < t.p50_ms):
                out[id(t)] = (f"INT8 is slower than {o.precision.upper()} here (p50 {t.p50_ms:.3f} vs "
                              f"{other.p50_ms:.3f} ms): never chosen")
                break
    return out


def select(trials: Sequence[Trial], budget: Budget) -> tuple[Trial | None, dict[str, Trial], dict[int, str]]:
    """(the chosen trial within ``budget``, the chosen one per target, why INT8 trials were excluded).

    The choice is the fastest p50 — but trials whose p50 95% interval overlaps the fastest one's are
    tied with it (the difference is measurement noise), and among tied trials the least modified wins:
    higher precision (fp32, fp16, int8+fallback, int8), then less pruning, then fewer non-default runtime
    options, then the lower p50. So a
    noise-level edge never picks INT8 or pruning over FP32. Trials must carry drops against the
    reference already.
    """
    excluded = _slower_int8(trials)
    eligible = [t for t in trials if t.ok and id(t) not in excluded and budget.meets(t.drop_pts, t.p50_ms)]
    per_target: dict[str, Trial] = {}
    for target in dict.fromkeys(t.candidate.target for t in eligible):
        per_target[target] = _least_modified_of_fastest([t for t in eligible if t.candidate.target == target])
    best = _least_modified_of_fastest(eligible) if eligible else None
    return best, per_target, excluded


def _least_modified_of_fastest(trials: Sequence[Trial]) -> Trial:
    """The fastest trial, or the least modified one among those whose p50 cannot be told from it."""
    fastest = min(trials, key=lambda t: (t.p50_ms, t.label))
    tied = [t for t in trials if t is fastest or _p50_overlaps(t, fastest)]
    return min(tied, key=lambda t: (_MODIFICATION[t.candidate.precision], t.candidate.prune_ratio,
                                    len(t.candidate.options), t.p50_ms, t.label))


def _p50_overlaps(t: Trial, fastest: Trial) -> bool:
    """Whether ``t``'s p50 95% interval reaches down to the fastest trial's (exact p50 when an interval is missing)."""
    a, b = t.row.p50_ci_ms, fastest.row.p50_ci_ms
    if a is None or b is None:
        return t.p50_ms == fastest.p50_ms
    return a[0] <= b[1]


def _current_best(trials: Mapping[str, Trial], budget: Budget) -> Trial | None:
    """The choice so far (for the progress line); None until the reference is measured."""
    done = list(trials.values())
    reference = _reference(done)
    if reference is None:
        return None
    _apply_reference(done, reference)
    return select(done, budget)[0]


def _distance(t: Trial, budget: Budget) -> tuple[int, float]:
    """How far a trial misses the budget: (how many of its limits it misses, the sum of relative overshoots)."""
    overs = [max(0.0, (t.drop_pts or 0.0) - budget.max_drop) / max(budget.max_drop, 1.0)]
    if budget.latency_ms is not None:
        overs.append(max(0.0, t.p50_ms - budget.latency_ms) / budget.latency_ms)
    return sum(o > 0 for o in overs), sum(overs)


# -- the result and its report --------------------------------------------------------------------------
def _stats(trials: Sequence[Trial], planned: int, wall_s: float) -> dict[str, Any]:
    return {"trials": planned, "finished": len(trials), "compiled": sum(t.compiled for t in trials),
            "measured": sum(not t.cached and t.measure_s is not None for t in trials),
            "cached": sum(t.cached for t in trials), "failed": sum(not t.ok for t in trials),
            "retried": sum(t.attempts > 1 for t in trials), "wall_s": wall_s}


def _assemble(trials: list[Trial], budget: Budget, settings: dict[str, Any], stats: dict[str, Any]) -> TuneResult:
    """Judge every trial against the reference and the budget, choose, and build the report."""
    reference = _reference(trials)
    if reference is None:
        errors = "; ".join(t.summary() for t in trials if t.candidate.prune_ratio == 0)
        raise CompileError(f"no FP32 reference: every unpruned trial failed, so no drop can be judged: {errors}")
    _apply_reference(trials, reference)
    best, per_target, excluded = select(trials, budget)
    report = _report(trials, reference, budget, settings, stats, best, per_target, excluded, complete=True)
    front_rows = {id(r) for r in report.pareto_front()}
    pareto = sorted((t for t in trials if t.ok and id(t.row) in front_rows), key=lambda t: t.p50_ms)
    if best is None:
        measured = [t for t in trials if t.ok]
        nearest = sorted(measured, key=lambda t: (id(t) in excluded, *_distance(t, budget), t.p50_ms))[:3]
        failed = len(trials) - len(measured)
        raise TuneBudgetError(
            f"no variant meets the budget ({budget.describe()}, drop vs the FP32 reference at "
            f"{reference.accuracy_pct:.2f}%) among {len(trials)} trials ({len(measured)} measured, {failed} failed); "
            "nearest: " + "; ".join(t.summary() + (f" [{excluded[id(t)]}]" if id(t) in excluded else "") for t in nearest),
            nearest, report)
    return TuneResult(best=best, best_by_target=per_target, trials=trials, pareto=pareto, report=report,
                      budget=budget, stats=stats)


def _report(trials: Sequence[Trial], reference: "Row", budget: Budget, settings: dict[str, Any],
            stats: dict[str, Any], best: Trial | None, per_target: Mapping[str, Trial], excluded: Mapping[int, str],
            complete: bool) -> "Report":
    """An edgeship Report: the reference row, then one row per trial (failed ones flagged, never dropped)."""
    from ..benchmarks.evaluate import environment
    from ..benchmarks.report import Report, Row

    ref = dataclasses.replace(reference, variant="reference", flags=[], recommended=False)
    rows = [ref]
    chosen_ids = {id(t) for t in per_target.values()}
    for t in trials:
        if t.ok:
            row = t.row
            row.variant, row.precision, row.recommended = t.candidate.variant, t.candidate.precision, id(t) in chosen_ids
            flags = []
            if t is best:
                flags.append("chosen" + _tie_note(t, trials, budget, excluded))
            if row.drop_pts is not None and row.drop_pts > budget.max_drop + 1e-9:
                flags.append(f"drop {row.drop_pts:.2f} pts > budget {budget.max_drop:g}")
            if budget.latency_ms is not None and row.p50_ms > budget.latency_ms:
                flags.append(f"p50 {row.p50_ms:.3f} ms > budget {budget.latency_ms:g}")
            if id(t) in excluded:
                flags.append(excluded[id(t)])
            if t.fp_layers:
                flags.append(f"{t.fp_layers} layers left in FP")
            row.flags = flags
        else:
            nan = float("nan")
            row = Row(variant=t.candidate.variant, target=t.candidate.target, precision=t.candidate.precision,
                      accuracy_pct=None, drop_pts=None, agreement_pct=None, p50_ms=nan, p90_ms=nan, p99_ms=nan,
                      throughput=nan, size_mb=None, threads=t.candidate.threads,
                      options=dict(t.candidate.options) or None,
                      flags=[f"failed after {t.attempts} attempt{'s' if t.attempts != 1 else ''}: {t.error}"])
        t.notes = list(row.flags)
        rows.append(row)
    report = Report(rows=rows, metric=str(settings["metric"]), settings=dict(settings), environment=environment(),
                    complete=complete)
    report.link_pruned_variants()
    front = report.pareto_front()
    report.settings.update(stats=stats, chosen=best.label if best is not None else None,
                           fastest_by_target={k: v.label for k, v in per_target.items()},
                           pareto=[f"{r.variant} {r.target} {r.precision}" for r in front],
                           trials=[_trial_info(t) for t in trials])
    report.warnings = report.precision_warnings()
    report.warnings += [f"{t.label} failed after {t.attempts} attempts: {t.error}" for t in trials if not t.ok]
    if not complete:
        report.warnings.insert(0, f"interrupted after {len(trials)} of {stats['trials']} trials: the report is incomplete")
    return report


def _tie_note(best: Trial, trials: Sequence[Trial], budget: Budget, excluded: Mapping[int, str]) -> str:
    """Why the chosen trial is not the one with the lowest p50, when it is not."""
    eligible = [t for t in trials if t.ok and id(t) not in excluded and budget.meets(t.drop_pts, t.p50_ms)]
    fastest = min(eligible, key=lambda t: (t.p50_ms, t.label))
    if fastest is best:
        return ""
    return (f" over {fastest.label} (p50 {fastest.p50_ms:.3f} vs {best.p50_ms:.3f} ms: the 95% intervals overlap, "
            "so the least modified of the tied variants)")


def _trial_info(t: Trial) -> dict[str, Any]:
    """Per-trial bookkeeping for the report's settings: where and how it ran (Ray: wall-clock submit,
    task start and end, receipt — what the overhead of the cluster is computed from)."""
    return {"label": t.label, "status": t.status, "key": t.key[:16], "cached": t.cached, "attempts": t.attempts,
            "compile_s": t.compile_s, "measure_s": t.measure_s, "worker_s": t.worker_s,
            "roundtrip_s": t.roundtrip_s, "host": t.host, "pid": t.pid, **t.timeline}


def _partial_report(trials: Mapping[str, Trial], jobs: Sequence[Job], budget: Budget, settings: dict[str, Any],
                    started: float) -> "Report | None":
    """The report of the trials finished before an interrupt (None when no reference was measured yet)."""
    ordered = [trials[j.key] for j in jobs if j.key in trials]
    reference = _reference(ordered)
    if reference is None:
        return None
    _apply_reference(ordered, reference)
    best, per_target, excluded = select(ordered, budget)
    stats = _stats(ordered, len(jobs), time.perf_counter() - started)
    return _report(ordered, reference, budget, settings, stats, best, per_target, excluded, complete=False)


def _describe_progress(done: int, total: int, best: Trial | None) -> str:
    where = f"tune {done}/{total}"
    if best is None:
        return where
    return f"{where} — best: {best.label} p50 {best.p50_ms:.3f} ms, drop {best.drop_pts:+.2f} pts"


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)
