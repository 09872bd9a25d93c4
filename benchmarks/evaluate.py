"""The verb ``benchmark``: every artifact of every bundle against the FP32 reference, on the same inputs."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .._fleet import cpu_flags  # re-exported: edgeship.benchmarks.cpu_flags
from .._progress import progress
from ..bundle.folder import MANIFEST, Bundle, sha256_file
from ..errors import ConfigError
from ..executor import Executor, as_executor
from ..measure.latency import measure_latency, measure_streams, peak_rss_mb, reset_peak_rss
from ..measure.metrics import METRICS, PROPORTIONS, Metric, classification_report, get_metric, proportion_interval
from ..measure.plan import Measurement, as_measurement
from ..measure.stats import bootstrap_indices, percentile_interval
from .report import Report, Row

# CPU features that decide which kernels a backend can use (x86: AVX2 / AVX-512 / VNNI / AMX; Arm: dot product)

def captures_data(source: str | os.PathLike, bundles: Sequence[Bundle]) -> tuple[Any, str]:
    """A capture folder or pack -> (data, what it is, in words) for ``benchmark``: the labelled captures with their
    labels (class indices, or names among the bundle's labels) for accuracy, else every capture (agreement with the
    reference and latency); preprocessed with the bundles' own spec, which must be one."""
    import json

    from ..calibration import captures_validation, from_captures, is_captures, read_captures

    if not is_captures(source):
        raise ConfigError(f"data {source}: expected arrays, or captures (a capture folder or pack)")
    specs = {json.dumps(b.manifest.input_spec, sort_keys=True) for b in bundles}
    if len(specs) != 1:
        raise ConfigError("captures are preprocessed as the bundles' manifests say, and these bundles preprocess "
                          "differently; benchmark them one at a time")
    first = bundles[0]
    if any(c.label is not None for c in read_captures(source)):
        x, y = captures_validation(source, first.spec, classes=first.manifest.labels)
        return (x, y), f"captures {Path(source).name}: {len(y)} labelled"
    calib = from_captures(source, first.spec, size=1 << 30)
    return calib.as_batch(), f"captures {Path(source).name}: {len(calib)}, none labelled (agreement and latency only)"


def benchmark(
    bundles: Sequence[str | os.PathLike | Bundle] | str | os.PathLike | Bundle,
    data: tuple[np.ndarray, np.ndarray] | np.ndarray | str | os.PathLike,
    metric: str | Metric = "top1",
    *,
    reference: Any = None,
    targets: Sequence[str] | None = None,
    measure: Measurement | None = None,
    preprocess: bool = False,
    budget_pts: float = 1.0,
    agreement_threshold: float = 0.99,
    save_to: str | os.PathLike | None = None,
    sign_key: Any = None,
    show_progress: bool = True,
    executor: str | Executor = "local",
) -> Report:
    """Measure accuracy and latency of each bundle artifact against an FP32 reference.

    Args:
        bundles: bundle paths (or Bundle objects; they are re-opened from disk so that the report
            records the manifest the rows were measured on).
        data: (inputs, labels) for accuracy, or inputs alone (latency and agreement only), or a device's captures
            (a folder or pack: :func:`captures_data`).
        metric: "top1", "top5", or ``f(predictions, labels) -> float in [0, 1]``.
        reference: a torch ``nn.Module`` to compare against (torch eager FP32); default: each
            bundle's FP32 ONNX graph in ONNX Runtime.
        targets: only these targets (default: every artifact whose backend is available here).
        measure: how each row is timed (:class:`edgeship.Measurement`: runs, warmup, batch size, streams,
            threads, runtime options, bootstrap resamples); default ``Measurement()``.
        preprocess: ``data`` inputs are raw images; apply each bundle's preprocessing (and measure
            end-to-end latency: preprocessing + inference + arg-max).
        budget_pts: accuracy budget in points; per target the fastest variant within it is marked.
        agreement_threshold: rows agreeing with the reference on fewer samples (fraction) are flagged.
        save_to: a folder: the report is saved there after every row (``complete: false``) and at the
            end; a Ctrl-C saves the rows measured so far, marked incomplete, then re-raises.
        sign_key: an Ed25519 private key (PEM path or bytes): the final report.json is signed
            (``report.json.sig``), so ``edgeship gate --verify`` refuses an edited one.
        executor: "local" (here), "ray", or an :class:`edgeship.Executor` (its address, retries and task
            timeout): each (bundle, target) runs as a Ray task on a node that advertises the target as a
            custom resource (see :mod:`edgeship.benchmarks.distributed`).
    """
    from ..targets import list_targets

    if isinstance(bundles, (str, os.PathLike, Bundle)):
        bundles = [bundles]
    data_source = None
    if isinstance(data, (str, os.PathLike)):  # a device's captures, preprocessed as the bundles' manifests say
        data, data_source = captures_data(data, [Bundle.open(b.path if isinstance(b, Bundle) else b) for b in bundles])
        preprocess = False
    x, labels = data if isinstance(data, tuple) else (data, None)
    x = np.asarray(x)
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(x):
            raise ConfigError(f"data has {len(x)} inputs but {len(labels)} labels")
    if not len(x):
        raise ConfigError("data holds no inputs")
    measure = as_measurement(measure)
    if not 0 < agreement_threshold <= 1:
        raise ConfigError(f"agreement_threshold is a fraction in (0, 1], got {agreement_threshold}")
    run_on = as_executor(executor)
    metric_name, metric_fn = get_metric(metric)
    available = list_targets(available_only=True)
    threads = measure.threads
    opts = {} if threads is None else {"threads": threads}
    per_target = _target_options(measure.options, opts)
    opened = [Bundle.open(b.path if isinstance(b, Bundle) else b) for b in bundles]
    rss_per_row = reset_peak_rss()
    settings = {"runs": measure.runs, "warmup": measure.warmup, "batch_size": measure.batch_size, "threads": threads,
                "samples": int(len(x)), "options": measure.to_dict()["options"],
                "reference": "torch eager" if reference is not None else "onnxruntime fp32", "streams": measure.streams,
                "budget_pts": budget_pts, "agreement_threshold": agreement_threshold,
                "intervals": "95%: Wilson for top1/top5/agreement, bootstrap for latency percentiles (1000 resamples, "
                             f"seed 0) and user metrics ({measure.ci_resamples} resamples)",
                "end_to_end": "preprocessing + inference + arg-max on raw inputs" if preprocess else None,
                "peak_rss": "per row" if rss_per_row else "process peak so far",
                "targets": list(targets) if targets else None}
    if data_source is not None:
        settings["data"] = data_source
    if run_on.kind == "ray":
        from .distributed import benchmark_on_ray

        kwargs = dict(metric=metric, measure=measure, preprocess=preprocess, budget_pts=budget_pts,
                      agreement_threshold=agreement_threshold, reference=reference)
        settings.update(metric=metric_name, executor="ray", retries=run_on.retries, task_timeout_s=run_on.timeout_s)
        return benchmark_on_ray(opened, (x, labels) if labels is not None else x, kwargs=kwargs, targets=targets,
                                executor=run_on, budget_pts=budget_pts, settings=settings,
                                save_to=Path(save_to) if save_to is not None else None,
                                show_progress=show_progress, sign_key=sign_key)
    env = environment(threads)
    env["bundles"] = {str(b.path.resolve()): sha256_file(b.path / MANIFEST) for b in opened}
    report = Report(rows=[], metric=metric_name, settings=settings, environment=env, complete=False)
    folder = Path(save_to) if save_to is not None else None
    if folder is not None and (folder / "report.html").is_file():
        (folder / "report.html").unlink()  # a page from an earlier run must not sit beside this run's rows

    def add(row: Row) -> None:
        report.rows.append(row)
        if folder is not None:
            report.save(folder, html=False)

    try:
        with progress(show_progress) as bar:
            total = sum(1 + len(b.variants) for b in opened)
            task = bar.add_task("benchmark", total=total)
            for bundle in opened:
                name = bundle.path.name.removesuffix(".edgeship")
                where = {"bundle": str(bundle.path.resolve()),
                         "manifest_sha256": env["bundles"][str(bundle.path.resolve())]}
                inputs = bundle.spec.apply_preprocess(x) if preprocess else np.ascontiguousarray(x, dtype=bundle.spec.dtype)
                bar.update(task, description=f"{name}: reference")
                reset_peak_rss()
                ref_rt, ref_target = _reference_runtime(bundle, reference, threads)
                with ref_rt:
                    measured, ref_out = _measure(ref_rt, inputs, x, labels, (metric_name, metric_fn), measure,
                                                 preprocess, None)
                source = bundle.manifest.source_fingerprint[:16]
                ref_row = Row(variant=name, target=ref_target, precision="fp32", is_reference=True, drop_pts=None,
                              agreement_pct=None, size_mb=bundle.source_onnx.stat().st_size / 1e6, source=source,
                              threads=threads, peak_rss_mb=peak_rss_mb(), **where, **measured)
                add(ref_row)
                pruning = bundle.manifest.pruning
                if pruning.get("search"):
                    report.pruning_search[name] = pruning["search"]
                complexity = bundle.manifest.complexity
                shrunk = ({"params": complexity["params"], "macs": complexity["macs"],
                           "prune_ratio": pruning.get("ratio", 0.0), "macs_ratio": pruning.get("macs_ratio", 1.0)}
                          if complexity else {})
                bar.advance(task)
                for target, precision in bundle.variants:
                    bar.update(task, description=f"{name}: {target} {precision}")
                    if (targets is not None and target not in targets) or target not in available:
                        bar.advance(task)
                        continue
                    reset_peak_rss()
                    load_opts = {**opts, **per_target.get(target, {})}
                    with bundle.load(target, precision, **load_opts) as rt:
                        more = (lambda: bundle.load(target, precision, **load_opts)) if measure.streams > 1 else None
                        measured, out = _measure(rt, inputs, x, labels, (metric_name, metric_fn), measure,
                                                 preprocess, more)
                    entry = bundle.artifact(target, precision)
                    row = Row(variant=name, target=target, precision=precision, source=source, threads=threads,
                              peak_rss_mb=peak_rss_mb(), options=dict(per_target[target]) if per_target.get(target) else None,
                              size_mb=bundle.size_bytes(entry) / 1e6,
                              int8_flavour=entry.get("options", {}).get("int8_flavour"),
                              **where, **shrunk, **measured, **_against_reference(out, ref_out, measured, ref_row))
                    add(replace(row, flags=_flags(row, budget_pts, agreement_threshold)))
                    bar.advance(task)
    except KeyboardInterrupt:
        _finish(report, budget_pts)
        report.warnings.insert(0, f"interrupted after {len(report.rows)} rows: the report is incomplete")
        if folder is not None:
            report.save(folder)
        raise
    report.complete = True
    _finish(report, budget_pts)
    if folder is not None:
        report.save(folder, sign_key=sign_key)
    return report


def _against_reference(out: np.ndarray, ref_out: np.ndarray, measured: Mapping[str, Any],
                       ref_row: Row) -> dict[str, Any]:
    """A variant's top-1 agreement with the reference (and its interval) and its accuracy drop in points."""
    fields: dict[str, Any] = {"agreement_pct": None, "agreement_ci_pct": None, "drop_pts": None}
    if out.ndim == 2 and ref_out.ndim == 2 and out.shape == ref_out.shape:
        same = int(np.count_nonzero(out.argmax(axis=1) == ref_out.argmax(axis=1)))
        lo, hi = proportion_interval(same / len(out), len(out))
        fields.update(agreement_pct=100.0 * same / len(out), agreement_ci_pct=(100.0 * lo, 100.0 * hi))
    if measured["accuracy_pct"] is not None and ref_row.accuracy_pct is not None:
        fields["drop_pts"] = ref_row.accuracy_pct - measured["accuracy_pct"]
    return fields


def _target_options(options: Mapping[str, Mapping[str, Any]] | None, common: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-target runtime options, each checked against what its target accepts (with ``threads`` beside them)."""
    from ..targets import get_target_class

    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"options must map a target name to its runtime options, got {options!r}")
    checked = {}
    for target, values in options.items():
        cls = get_target_class(target)
        checked[target] = cls.check_options(values)
        cls.check_options({**common, **checked[target]})
        if "threads" in checked[target] and "threads" in common:
            raise ConfigError(f"threads is given twice (Measurement threads= and options[{target!r}]); give it once")
    return checked


def _finish(report: Report, budget_pts: float) -> None:
    """What is derived from all rows together: latency ratios, recommendations, precision warnings."""
    report.link_pruned_variants()
    report.mark_recommended(budget_pts)
    report.warnings = report.precision_warnings()


def _flags(row: Row, budget_pts: float, agreement_threshold: float) -> list[str]:
    """What a reader must not miss about a row, in words."""
    flags = []
    if row.accuracy_pct is not None and not np.isfinite(row.accuracy_pct):
        flags.append("accuracy is not a number")
    if row.agreement_pct is not None and row.agreement_pct < 100.0 * agreement_threshold:
        flags.append(f"agreement {row.agreement_pct:.2f}% < {100.0 * agreement_threshold:g}%")
    if row.drop_pts is not None and row.drop_pts > budget_pts:
        flags.append(f"drop {row.drop_pts:.2f} pts > budget {budget_pts:g}")
    if row.p99_ms is not None and not np.isfinite(row.p99_ms):
        flags.append("latency is not a number")
    return flags


def _reference_runtime(bundle: Bundle, reference: Any, threads: int | None):
    if reference is not None:
        from ..targets.torch import TorchRuntime

        return TorchRuntime(reference, bundle.spec, threads=threads), "torch"
    from ..targets.onnxruntime import ONNXRuntimeRuntime

    bundle.verify({"files": bundle.manifest.source_files})
    return ONNXRuntimeRuntime(bundle.source_onnx, bundle.spec, "fp32", threads=threads), "onnxruntime-cpu"


def _first(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(outputs.values()))


def _predict(rt, inputs: np.ndarray, batch: int) -> np.ndarray:
    """First output over all inputs, in batches (a fixed batch dim is honoured)."""
    fixed = rt.inputs[0].shape[0]
    step = fixed if fixed is not None else batch
    outs = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start : start + step]
        if fixed is not None and len(chunk) < fixed:  # pad the last chunk of a fixed-batch model
            pad = np.repeat(chunk[-1:], fixed - len(chunk), axis=0)
            outs.append(_first(rt.run(np.concatenate([chunk, pad])))[: len(chunk)])
        else:
            outs.append(_first(rt.run(chunk)))
    return np.concatenate(outs)


def _accuracy(out: np.ndarray, labels: np.ndarray, metric_name: str, metric_fn: Metric,
              resamples: int) -> tuple[float, tuple[float, float] | None]:
    """The metric in percent and its 95 % interval (Wilson for built-in proportions, bootstrap otherwise)."""
    value = float(metric_fn(out, labels))
    if not np.isfinite(value):
        return 100.0 * value, None
    if metric_name in PROPORTIONS and metric_fn is METRICS[metric_name]:
        lo, hi = proportion_interval(value, len(labels))
    elif resamples:
        replicates = [float(metric_fn(out[idx], labels[idx])) for idx in bootstrap_indices(len(labels), resamples)]
        lo, hi = percentile_interval(replicates)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return 100.0 * value, None
    else:
        return 100.0 * value, None
    return 100.0 * value, (100.0 * lo, 100.0 * hi)


def _classes(out: np.ndarray, labels: np.ndarray | None) -> dict[str, Any] | None:
    """Per-class precision / recall / F1 when the outputs are class scores and the labels class ids."""
    if labels is None or out.ndim != 2:
        return None
    flat = labels[:, 0] if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if flat.ndim != 1 or flat.dtype.kind not in "iu" or (flat.size and (flat.min() < 0 or flat.max() >= out.shape[1])):
        return None
    return classification_report(out, flat)


def _measure(rt, inputs: np.ndarray, raw: np.ndarray, labels: np.ndarray | None, metric: tuple[str, Metric],
             measure: Measurement, preprocess: bool, load_more: Callable[[], Any] | None) -> tuple[dict[str, Any], np.ndarray]:
    """Accuracy, per-class metrics, model-only and end-to-end latency and stream throughput of one runtime:
    the measured fields of its Row, and its first output over all inputs."""
    metric_name, metric_fn = metric
    out = _predict(rt, inputs, batch=64)
    accuracy, accuracy_ci = (None, None) if labels is None else _accuracy(out, labels, metric_name, metric_fn,
                                                                          measure.ci_resamples)
    batch = measure.batch_size
    sample = np.ascontiguousarray(inputs[:batch])
    if len(sample) < batch:
        raise ConfigError(f"batch_size {batch} is larger than the {len(inputs)} inputs given")
    stats = measure_latency(lambda: rt.run(sample), runs=measure.runs, warmup=measure.warmup, batch=batch)
    fields: dict[str, Any] = dict(
        accuracy_pct=accuracy, accuracy_ci_pct=accuracy_ci, p50_ms=stats.p50_ms, p90_ms=stats.p90_ms,
        p99_ms=stats.p99_ms, throughput=stats.throughput, batch=batch, runs=measure.runs, samples=int(len(inputs)),
        p50_ci_ms=stats.p50_ci, p99_ci_ms=stats.p99_ci, cpu_flags=cpu_flags())
    report = _classes(out, labels)
    if report is not None:
        fields.update(per_class={k: report[k] for k in ("precision", "recall", "f1", "support")},
                      macro_precision_pct=100.0 * report["macro_precision"],
                      macro_recall_pct=100.0 * report["macro_recall"], macro_f1_pct=100.0 * report["macro_f1"])
    if preprocess:
        raw_sample = np.ascontiguousarray(raw[:batch])
        e2e = measure_latency(lambda: _first(rt.run(raw_sample, preprocess=True)).argmax(axis=-1),
                              runs=measure.runs, warmup=measure.warmup, batch=batch)
        fields.update(e2e_p50_ms=e2e.p50_ms, e2e_p99_ms=e2e.p99_ms)
    if load_more is not None and measure.streams > 1:
        with contextlib.ExitStack() as stack:
            runtimes = [rt] + [stack.enter_context(load_more()) for _ in range(measure.streams - 1)]
            fields.update(streams=measure.streams, streams_throughput=measure_streams(
                [lambda r=r: r.run(sample) for r in runtimes], calls=measure.runs, batch=batch))
    return fields, out


def environment(threads: int | None = None) -> dict[str, Any]:
    """Where the numbers were measured: CPU and its flags, cores, Python, numpy and backend versions, threads."""
    from .._version import __version__
    from ..targets import list_targets

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {
        "edgeship": __version__,
        "cpu": cpu,
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "threads": threads,
        "backends": list_targets(available_only=True),
    }
    if "torch" in sys.modules:  # the reference ran in torch: its version matters; never import it just for this
        env["torch"] = sys.modules["torch"].__version__
    return env
