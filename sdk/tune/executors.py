"""Where ``tune`` trials run: in this process one after another, or as Ray tasks on a cluster.

One trial = compile one candidate with ``edgeship.compress`` (unless its bundle is already compiled)
and measure it with ``edgeship.benchmark``; :func:`run_trial` does that anywhere and returns a
JSON-ready outcome. The local executor calls it in order (latency is measured with nothing else
running). The Ray executor runs each trial as a task that asks for one unit of a custom resource
named after its target (``{"openvino-cpu": 1}``), so device boxes that join the cluster advertising
their targets form a farm. Bundles travel through the object store as reproducible tar bytes,
checked by SHA-256 and unpacked with every file's hash checked. A worker that dies, or runs past the
trial timeout (its watchdog ends it), is retried; errors edgeship raises on purpose are final. Per
target no more tasks are submitted than the cluster has slots, so on Ctrl-C nothing waits in Ray's
queue: the driver stops submitting and the tasks in flight end with the cluster (or connection) tune
opened — ``ray.cancel`` is not used, as in Ray 2.x it can crash the driver when it races a finishing task.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..cluster import RayCluster, RayScheduler, unpack_checked, watchdog
from ..errors import EdgeshipError, MissingDependencyError, TransferError

if TYPE_CHECKING:
    from ..build.recipe import Recipe
    from ..measure.plan import Measurement
    from ..spec import InputSpec
    from .cache import TrialCache
    from .space import Candidate

@dataclass(frozen=True)
class Job:
    """What a worker needs for one trial beside the shared model and data."""

    candidate: "Candidate"
    key: str
    compile_key: str
    recipe: "Recipe"
    spec: "InputSpec"
    metric: Any  # a metric name or f(predictions, labels) -> float
    measure: "Measurement"  # without threads or options: those are the candidate's
    timeout_s: float | None


Payload = tuple[Any, Any, tuple[np.ndarray, np.ndarray]]  # (model, CalibrationSet, (inputs, labels))
OnDone = Callable[[Job, dict[str, Any]], None]


def failed_outcome(error: str, retry: bool = False) -> dict[str, Any]:
    """An outcome for a trial that produced no measurement."""
    return {"status": "failed", "error": error, "retry": retry, "rows": None, "compiled": False,
            "compile_s": None, "measure_s": None, "worker_s": None, "host": None, "pid": None,
            "manifest_sha256": None, "fp_layers": None, "backend_versions": None}


def run_trial(job: Job, model: Any, calibration: Any, validation: tuple[np.ndarray, np.ndarray],
              bundle_dir: Path, compile: bool) -> dict[str, Any]:
    """Compile (when ``compile``) the candidate into ``bundle_dir`` and measure it; never raises for a
    failed trial. ``retry`` in the outcome says whether the failure may pass on another attempt."""
    from ..benchmarks import benchmark
    from ..build.compress import compress
    from ..bundle.folder import Bundle

    c = job.candidate
    start = time.perf_counter()
    out = failed_outcome("")
    out.update(host=socket.gethostname(), pid=os.getpid())
    try:
        if compile:
            t0 = time.perf_counter()
            compress(model, input_spec=job.spec, output=bundle_dir, calibration=calibration, targets=[c.target],
                     precision=c.base_precision, recipe=job.recipe, validation=validation if c.fallback else None,
                     metric=job.metric if c.fallback else None, show_progress=False)
            out["compile_s"], out["compiled"] = time.perf_counter() - t0, True
        t0 = time.perf_counter()
        measure = replace(job.measure, threads=c.threads, options={c.target: dict(c.options)} if c.options else None)
        report = benchmark(bundle_dir, data=validation, metric=job.metric, measure=measure, targets=[c.target],
                           show_progress=False)
        out["measure_s"] = time.perf_counter() - t0
        rows = [r for r in report.rows if not r.is_reference]
        if not rows:
            raise MissingDependencyError(f"target '{c.target}' is not available on {socket.gethostname()}: "
                                         f"the bundle was compiled but cannot run here")
        reference = next(r for r in report.rows if r.is_reference)
        entry = Bundle.open(bundle_dir).artifact(c.target, c.base_precision)
        accuracy = entry.get("options", {}).get("accuracy") or {}
        out.update(status="ok", error=None, rows={"variant": asdict(rows[0]), "reference": asdict(reference)},
                   manifest_sha256=rows[0].manifest_sha256, backend_versions=entry.get("backend_versions"),
                   fp_layers=len(accuracy.get("fp_layers", [])) if c.fallback else None)
    except MissingDependencyError as exc:  # this machine lacks a backend: another one may have it
        out.update(error=f"{type(exc).__name__}: {exc}", retry=True)
    except EdgeshipError as exc:  # raised on purpose: the same inputs fail the same way
        out.update(error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # anything else may be transient
        out.update(error=f"{type(exc).__name__}: {exc}", retry=True)
    out["worker_s"] = time.perf_counter() - start
    return out


# -- local ---------------------------------------------------------------------------------------------
class LocalExecutor:
    """Trials one after another in this process, compiled straight into the cache folder."""

    name = "local"

    def __init__(self, retries: int = 2) -> None:
        self.retries = retries

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, jobs: Sequence[Job], payload: Payload, cache: "TrialCache", on_done: OnDone) -> None:
        failed_compiles: dict[str, tuple[Job, dict[str, Any]]] = {}
        for job in jobs:
            if job.compile_key in failed_compiles:  # a compile that failed on purpose fails the same way again
                first, outcome = failed_compiles[job.compile_key]
                on_done(job, {**outcome, "attempts": 0, "roundtrip_s": 0.0,
                              "error": f"not run: compiling {first.candidate.label} failed: {outcome['error']}"})
                continue
            attempt = 0
            while True:
                attempt += 1
                compile = not cache.has_bundle(job.compile_key)
                if compile:
                    cache.clear_bundle(job.compile_key)
                t0 = time.perf_counter()
                outcome = run_trial(job, *payload, bundle_dir=cache.bundle_path(job.compile_key), compile=compile)
                if not (outcome["retry"] and attempt <= self.retries):
                    break
            if outcome["retry"]:
                outcome["error"] = f"failed on all {attempt} attempts; the last: {outcome['error']}"
            outcome.update(attempts=attempt, roundtrip_s=time.perf_counter() - t0)
            if compile and outcome["status"] == "failed" and not outcome["compiled"] and not outcome["retry"]:
                failed_compiles[job.compile_key] = (job, outcome)
            on_done(job, outcome)


# -- Ray: the trial task, and trials on the shared scheduler -------------------------------------
def remote_trial(job: Job, model: Any, calibration: Any, validation: tuple[np.ndarray, np.ndarray],
                 bundle_tar: bytes | None, bundle_sha256: str | None) -> tuple[dict[str, Any], bytes | None]:
    """The body of a Ray trial task: unpack the bundle it was sent (or compile it), measure, and return
    the outcome and — when it compiled — the bundle as tar bytes for the driver's cache and later trials."""
    from ..bundle.archive import pack_bytes

    timer = watchdog(job.timeout_s)
    started_at = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="edgeship-trial-") as tmp:
            bundle_dir = Path(tmp) / "trial.edgeship"
            if bundle_tar is not None:
                try:
                    unpack_checked(bundle_tar, bundle_sha256, bundle_dir)
                except TransferError as exc:
                    return failed_outcome(str(exc), retry=True), None
            outcome = run_trial(job, model, calibration, validation, bundle_dir, compile=bundle_tar is None)
            data = None
            if outcome["status"] == "ok" and outcome["compiled"]:
                data, outcome["bundle_sha256"] = pack_bytes(bundle_dir)
            outcome.update(task_started_at=started_at, task_finished_at=time.time())  # wall clock, for overhead
            return outcome, data
    finally:
        if timer is not None:
            timer.cancel()


class RayExecutor(RayCluster):
    """Trials as Ray tasks on the shared scheduler (:class:`edgeship.cluster.RayScheduler`): the first trial
    of each compile key compiles, the others follow with its bundle."""

    name = "ray"

    def __init__(self, targets: Sequence[str], address: str | None = None, retries: int = 2) -> None:
        super().__init__(targets, address)
        self.retries = retries

    def run(self, jobs: Sequence[Job], payload: Payload, cache: "TrialCache", on_done: OnDone) -> None:
        """Run every trial; a compile that fails on purpose fails every trial that shares it, unrun."""
        from collections import deque

        from ..bundle.archive import pack_bytes

        ray = self.ray
        timeout = max((j.timeout_s or 0 for j in jobs), default=0) or None
        scheduler = RayScheduler(self, remote_trial, retries=self.retries, timeout_s=timeout,
                                 failed=lambda error: failed_outcome(error, retry=True), num_returns=2)
        shared = [ray.put(x) for x in payload]
        groups: dict[str, deque[Job]] = {}
        for job in jobs:
            groups.setdefault(job.compile_key, deque()).append(job)
        bundles: dict[str, tuple[Any, str]] = {}  # compile key -> (object ref of the tar bytes, their SHA-256)

        def release(key: str, count: int | None = None) -> None:
            group = groups[key]
            for _ in range(len(group) if count is None else min(count, len(group))):
                job = group.popleft()
                # the bundle is looked up when the task is submitted: by then the group's compile may be done
                scheduler.submit(job.candidate.target, job,
                                 lambda job=job: (job, *shared, *bundles.get(job.compile_key, (None, None))))

        def on_result(job: Job, outcome: dict, attempt: int, extra: tuple, submitted_at: float) -> None:
            key = job.compile_key
            if outcome["retry"]:
                outcome["error"] = f"failed on all {attempt} attempts; the last: {outcome['error']}"
            received_at = time.time()
            outcome.update(attempts=attempt, roundtrip_s=received_at - submitted_at, submitted_at=submitted_at,
                           received_at=received_at)
            if outcome["status"] == "ok" and outcome["compiled"]:
                cache.store_bundle_archive(key, ray.get(extra[0]), outcome["bundle_sha256"])
                bundles[key] = (extra[0], outcome["bundle_sha256"])
            on_done(job, outcome)
            if key in bundles:
                release(key)
            elif outcome["status"] == "failed" and not outcome["retry"] and not outcome["compiled"]:
                # the compile itself failed on purpose (e.g. no INT8/FP mix met the budget): it fails
                # the same way for every trial that shares it
                while groups[key]:
                    other = groups[key].popleft()
                    on_done(other, {**outcome, "attempts": 0, "roundtrip_s": 0.0,
                                    "error": f"not run: compiling {job.candidate.label} failed: {outcome['error']}"})
            else:
                release(key, 1)  # the next one compiles

        for key in groups:
            if cache.has_bundle(key):
                data, sha = pack_bytes(cache.bundle_path(key))
                bundles[key] = (ray.put(data), sha)
                release(key)
            else:
                release(key, 1)  # it compiles; the rest of its group follow with its bundle
        try:
            scheduler.run(on_result)
        except KeyboardInterrupt:
            # what is in flight (one task per slot) ends with the cluster or the connection when tune opened
            # it, and otherwise runs to its end with the result dropped (see edgeship.cluster)
            if not self._started and scheduler.pending:
                from .._progress import console

                console.log(f"{len(scheduler.pending)} trial task(s) already running on the Ray cluster finish "
                            "on their own; their results are dropped")
            raise
