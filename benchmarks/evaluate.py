"""The verb ``benchmark``: every artifact of every bundle against the FP32 reference, on the same inputs."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._progress import progress
from ..bundle import Bundle
from ..errors import ConfigError
from .latency import measure_latency
from .metrics import Metric, get_metric, top1_agreement
from .report import Report, Row


def benchmark(
    bundles: Sequence[str | os.PathLike | Bundle] | str | os.PathLike | Bundle,
    data: tuple[np.ndarray, np.ndarray] | np.ndarray,
    metric: str | Metric = "top1",
    *,
    reference: Any = None,
    targets: Sequence[str] | None = None,
    runs: int = 100,
    warmup: int = 10,
    batch_size: int = 1,
    threads: int | None = None,
    preprocess: bool = False,
    show_progress: bool = True,
) -> Report:
    """Measure accuracy and latency of each bundle artifact against an FP32 reference.

    Args:
        bundles: bundle paths (or Bundle objects).
        data: (inputs, labels) for accuracy, or inputs alone (latency and agreement only).
        metric: "top1", "top5", or ``f(predictions, labels) -> float in [0, 1]``.
        reference: a torch ``nn.Module`` to compare against (torch eager FP32); default: each
            bundle's FP32 ONNX graph in ONNX Runtime.
        targets: only these targets (default: every artifact whose backend is available here).
        runs, warmup, batch_size: latency measurement: timed calls, untimed calls, samples per call.
        threads: CPU threads for every runtime (default: each backend's own choice).
        preprocess: ``data`` inputs are raw images; apply each bundle's preprocessing.
    """
    from ..targets import list_targets

    if isinstance(bundles, (str, os.PathLike, Bundle)):
        bundles = [bundles]
    x, labels = data if isinstance(data, tuple) else (data, None)
    x = np.asarray(x)
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(x):
            raise ConfigError(f"data has {len(x)} inputs but {len(labels)} labels")
    metric_name, metric_fn = get_metric(metric)
    available = list_targets(available_only=True)
    opts = {} if threads is None else {"threads": threads}
    rows: list[Row] = []
    search: dict[str, list[dict[str, Any]]] = {}
    opened = [b if isinstance(b, Bundle) else Bundle.open(b) for b in bundles]
    with progress(show_progress) as bar:
        total = sum(1 + len(b.variants) for b in opened)
        task = bar.add_task("benchmark", total=total)
        for bundle in opened:
            name = bundle.path.name.removesuffix(".edgeship")
            inputs = bundle.spec.apply_preprocess(x) if preprocess else np.ascontiguousarray(x, dtype=bundle.spec.dtype)
            bar.update(task, description=f"{name}: reference")
            ref_rt, ref_target = _reference_runtime(bundle, reference, threads)
            with ref_rt:
                ref_row, ref_out = _measure(ref_rt, inputs, labels, metric_fn, runs, warmup, batch_size)
            ref_row.variant, ref_row.target, ref_row.precision, ref_row.is_reference = name, ref_target, "fp32", True
            ref_row.size_mb = bundle.source_onnx.stat().st_size / 1e6
            ref_row.source = bundle.manifest.get("source_fingerprint", "")[:16]
            rows.append(ref_row)
            pruning = bundle.manifest.get("pruning") or {}
            if pruning.get("search"):
                search[name] = pruning["search"]
            bar.advance(task)
            for target, precision in bundle.variants:
                bar.update(task, description=f"{name}: {target} {precision}")
                if (targets is not None and target not in targets) or target not in available:
                    bar.advance(task)
                    continue
                with bundle.load(target, precision, **opts) as rt:
                    row, out = _measure(rt, inputs, labels, metric_fn, runs, warmup, batch_size)
                row.variant, row.target, row.precision = name, target, precision
                row.source = ref_row.source
                complexity = bundle.manifest.get("complexity") or {}
                if complexity:
                    row.params, row.macs = complexity["params"], complexity["macs"]
                    row.prune_ratio = pruning.get("ratio", 0.0)
                    row.macs_ratio = pruning.get("macs_ratio", 1.0)
                row.size_mb = bundle.size_bytes(bundle.artifact(target, precision)) / 1e6
                row.agreement_pct = 100.0 * top1_agreement(out, ref_out) if out.ndim == 2 else None
                if row.accuracy_pct is not None and ref_row.accuracy_pct is not None:
                    row.drop_pts = ref_row.accuracy_pct - row.accuracy_pct
                rows.append(row)
                bar.advance(task)
    settings = {"runs": runs, "warmup": warmup, "batch_size": batch_size, "threads": threads,
                "samples": int(len(x)), "reference": "torch eager" if reference is not None else "onnxruntime fp32"}
    report = Report(rows=rows, metric=metric_name, settings=settings, environment=environment(threads),
                    pruning_search=search)
    report.link_pruned_variants()
    return report


def _reference_runtime(bundle: Bundle, reference: Any, threads: int | None):
    if reference is not None:
        from ..targets.torch import TorchRuntime

        return TorchRuntime(reference, bundle.spec, threads=threads), "torch"
    from ..targets.onnxruntime import ONNXRuntimeRuntime

    bundle.verify({"files": bundle.manifest["source"]["files"]})
    return ONNXRuntimeRuntime(bundle.source_onnx, bundle.spec, "fp32", threads=threads), "onnxruntime-cpu"


def _predict(rt, inputs: np.ndarray, batch: int) -> np.ndarray:
    """First output over all inputs, in batches (a fixed batch dim is honoured)."""
    fixed = rt.inputs[0].shape[0]
    step = fixed if fixed is not None else batch
    outs = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start : start + step]
        if fixed is not None and len(chunk) < fixed:  # pad the last chunk of a fixed-batch model
            pad = np.repeat(chunk[-1:], fixed - len(chunk), axis=0)
            outs.append(next(iter(rt.run(np.concatenate([chunk, pad])).values()))[: len(chunk)])
        else:
            outs.append(next(iter(rt.run(chunk).values())))
    return np.concatenate(outs)


def _measure(rt, inputs, labels, metric_fn, runs, warmup, batch_size) -> tuple[Row, np.ndarray]:
    out = _predict(rt, inputs, batch=64)
    accuracy = 100.0 * metric_fn(out, labels) if labels is not None else None
    sample = np.ascontiguousarray(inputs[:batch_size])
    if len(sample) < batch_size:
        raise ConfigError(f"batch_size {batch_size} is larger than the {len(inputs)} inputs given")
    stats = measure_latency(lambda: rt.run(sample), runs=runs, warmup=warmup, batch=batch_size)
    row = Row(variant="", target="", precision="", accuracy_pct=accuracy, drop_pts=None, agreement_pct=None,
              p50_ms=stats.p50_ms, p90_ms=stats.p90_ms, p99_ms=stats.p99_ms, throughput=stats.throughput,
              size_mb=None, batch=batch_size, runs=runs)
    return row, out


def environment(threads: int | None = None) -> dict[str, Any]:
    """Where the numbers were measured: CPU, cores, Python, backend versions, threads."""
    from .. import __version__
    from ..targets import list_targets

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "edgeship": __version__,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": threads,
        "backends": list_targets(available_only=True),
    }
