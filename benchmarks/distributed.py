"""``benchmark(..., executor="ray")``: each bundle measured on the cluster nodes that advertise its targets.

One Ray task per (bundle, target) asks for one unit of the custom resource named after the target
(``{"openvino-cpu": 1}``), so a device that joined the cluster advertising its target measures that
target's artifacts — on the device, not on the driver. The bundle travels as reproducible tar bytes
through the object store, checked by SHA-256 and unpacked with every file's hash checked; the task
runs the ordinary local ``benchmark`` on it and sends the rows back with the host's environment. A
task whose worker dies (or runs past the Executor's ``timeout_s``) is retried ``retries`` times, then reported
in the warnings with the report marked incomplete; a target no node advertises is reported the same way.
"""

from __future__ import annotations

import socket
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .._progress import console, progress
from ..bundle.archive import pack_bytes
from ..bundle.folder import MANIFEST, sha256_file
from ..cluster import RayCluster, RayScheduler, unpack_checked, watchdog
from ..errors import EdgeshipError, MissingDependencyError, TransferError
from .report import REPORT_SCHEMA_VERSION, Report, Row

if TYPE_CHECKING:
    from ..executor import Executor
    from ..bundle.folder import Bundle


def remote_benchmark(data: bytes, sha256: str, name: str, target: str, inputs: Any, kwargs: Mapping[str, Any],
                     timeout_s: float | None) -> dict[str, Any]:
    """The body of one Ray task: unpack the bundle it was sent (into a folder named as the driver's, which
    names the rows), benchmark ``target`` on it, return the rows (as dicts), this host and its environment —
    or the error, and whether another attempt may pass."""
    from .evaluate import benchmark  # back-edge: a Ray task runs the local benchmark on its node

    timer = watchdog(timeout_s)
    host = socket.gethostname()
    try:
        with tempfile.TemporaryDirectory(prefix="edgeship-bench-") as tmp:
            bundle_dir = unpack_checked(data, sha256, Path(tmp) / name)
            report = benchmark(bundle_dir, inputs, targets=[target], show_progress=False, **kwargs)
        rows = [asdict(r) for r in report.rows if r.is_reference or r.target == target]
        if not any(not r["is_reference"] for r in rows):
            raise MissingDependencyError(f"target '{target}' is not available on {host}")
        return {"rows": rows, "host": host, "environment": report.environment, "error": None, "retry": False}
    except (TransferError, MissingDependencyError) as exc:  # another attempt, or another node, may pass
        return {"error": f"{type(exc).__name__}: {exc}", "retry": True, "host": host}
    except EdgeshipError as exc:  # raised on purpose: the same inputs fail the same way
        return {"error": f"{type(exc).__name__}: {exc}", "retry": False, "host": host}
    except Exception as exc:  # anything else may be transient
        return {"error": f"{type(exc).__name__}: {exc}", "retry": True, "host": host}
    finally:
        if timer is not None:
            timer.cancel()


def benchmark_on_ray(bundles: Sequence["Bundle"], data: Any, *, kwargs: dict[str, Any], targets: Sequence[str] | None,
                     executor: "Executor", budget_pts: float, settings: dict[str, Any], save_to: Path | None,
                     show_progress: bool, sign_key: Any = None) -> Report:
    """Measure every (bundle, target) as a Ray task and assemble one report (see the module doc)."""
    from ..targets import list_targets
    from .evaluate import _finish  # back-edge: the same finishing step as a local run

    wanted = list(dict.fromkeys(t for b in bundles for t, _ in b.variants if targets is None or t in targets))
    if not wanted:
        raise MissingDependencyError(f"the bundles have no artifact for the targets {list(targets or [])}")
    here = set(list_targets(available_only=True))
    report = Report(rows=[], metric=settings.get("metric", "top1"), settings=settings, complete=False)
    results: dict[tuple[int, str], dict[str, Any]] = {}
    failures: list[str] = []

    with RayCluster(wanted, executor.address, strict=False, advertise=[t for t in wanted if t in here]) as cluster:
        ray = cluster.ray
        scheduler = RayScheduler(cluster, remote_benchmark, retries=executor.retries, timeout_s=executor.timeout_s,
                                 failed=lambda error: {"error": error, "retry": True, "host": None})
        shared_inputs, shared_kwargs = ray.put(data), ray.put(kwargs)
        packed = []
        for bundle in bundles:
            tar, sha = pack_bytes(bundle.path)
            packed.append((ray.put(tar), sha))
        failures += [f"{t}: not measured — no node of the Ray cluster advertises it" for t in cluster.missing]
        total = 0
        for i, bundle in enumerate(bundles):
            for t in dict.fromkeys(t for t, _ in bundle.variants):
                if t in cluster.targets:
                    scheduler.submit(t, (i, t), (packed[i][0], packed[i][1], bundle.path.name, t, shared_inputs,
                                                 shared_kwargs, executor.timeout_s))
                    total += 1

        try:
            with progress(show_progress) as bar:
                progress_task = bar.add_task(f"benchmark on Ray ({len(cluster.targets)} targets)", total=total)

                def on_result(key: tuple[int, str], outcome: dict, attempt: int, extra: tuple, _: float) -> None:
                    i, t = key
                    name = bundles[i].path.name
                    if outcome["error"] is not None:
                        failures.append(f"{name} on {t}: failed after {attempt} attempt{'s' if attempt > 1 else ''}"
                                        f": {outcome['error']}")
                    else:
                        results[(i, t)] = outcome
                    if show_progress:
                        console.log(f"{name} {t}: " + ("measured on " + outcome["host"] if outcome["error"] is None
                                                       else "failed"))
                    bar.advance(progress_task)
                    _assemble(report, bundles, results, failures, cluster)
                    if save_to is not None:
                        report.save(save_to, html=False)

                scheduler.run(on_result)
        except KeyboardInterrupt:
            _assemble(report, bundles, results, failures, cluster)
            _finish(report, budget_pts)
            report.warnings = list(failures) + report.warnings
            report.warnings.insert(0, f"interrupted after {len(results)} of {total} (bundle, target) tasks: "
                                      "the report is incomplete")
            if save_to is not None:
                report.save(save_to)
            raise
    _assemble(report, bundles, results, failures, cluster)
    report.complete = not failures
    _finish(report, budget_pts)
    report.warnings = failures + report.warnings
    if save_to is not None:
        report.save(save_to, sign_key=sign_key)
    return report


def _assemble(report: Report, bundles: Sequence["Bundle"], results: Mapping[tuple[int, str], dict[str, Any]],
              failures: Sequence[str], cluster: RayCluster) -> None:
    """The report's rows in bundle order: one reference row per bundle (from its first measured target's
    task), then each target's rows; rows name the host that measured them and the bundle on this machine."""
    rows: list[Row] = []
    hosts: dict[str, Any] = {}
    for i, bundle in enumerate(bundles):
        where = str(bundle.path.resolve())
        measured = [(t, results[(i, t)]) for t in dict.fromkeys(t for t, _ in bundle.variants) if (i, t) in results]
        for n, (t, outcome) in enumerate(measured):
            hosts[outcome["host"]] = outcome["environment"]
            parsed = Report.from_dict({"schema_version": REPORT_SCHEMA_VERSION, "rows": outcome["rows"]}).rows
            for row in parsed:
                if row.is_reference and n > 0:
                    continue  # one reference per bundle; each task measured its own on its host
                rows.append(replace(row, bundle=where, host=outcome["host"]))
    report.rows = rows
    report.environment = {"executor": "ray", "address": cluster.address, "hosts": hosts,
                          "targets_measured": cluster.targets, "targets_missing": cluster.missing,
                          "bundles": {str(b.path.resolve()): sha256_file(b.path / MANIFEST) for b in bundles}}
    report.warnings = list(failures)
