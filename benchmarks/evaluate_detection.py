"""``benchmark_detection``: detection bundles measured like classifiers — mAP against ground truth, box
agreement with the FP32 graph, model-only and end-to-end latency — into the same Report."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .._fleet import cpu_flags
from .._progress import progress
from ..bundle.folder import MANIFEST, Bundle, sha256_file
from ..errors import ConfigError
from ..measure.latency import measure_latency
from ..tasks.metrics import box_agreement, detection_map
from .evaluate import environment
from .report import Report, Row


def benchmark_detection(
    bundles: Sequence[str | os.PathLike | Bundle] | str | os.PathLike | Bundle,
    images: Sequence[np.ndarray],
    ground_truth: Sequence[dict[str, np.ndarray]] | None = None,
    *,
    targets: Sequence[str] | None = None,
    runs: int = 30,
    warmup: int = 3,
    threads: int | None = None,
    show_progress: bool = True,
) -> Report:
    """Every artifact of each detection bundle on ``images`` (raw, any size), against the bundle's FP32 graph.

    Rows: accuracy = COCO mAP@[.5:.95] in percent when ``ground_truth`` (per image {"boxes", "labels"},
    x1y1x2y2 in the image's pixels) is given; agreement = boxes matched with the FP32 graph's (same
    label, IoU >= 0.5; 2·matched / all boxes); p50/p90/p99 = the model alone on the first image;
    e2e = resize + normalise + inference + decode + NMS + boxes mapped back, on the first image.
    """
    from ..bundle.detector import Detector
    from ..targets import list_targets
    from ..targets.onnxruntime import ONNXRuntimeRuntime

    if isinstance(bundles, (str, os.PathLike, Bundle)):
        bundles = [bundles]
    if not len(images):
        raise ConfigError("benchmark_detection needs at least one image")
    if ground_truth is not None and len(ground_truth) != len(images):
        raise ConfigError(f"{len(images)} images but {len(ground_truth)} ground-truth entries")
    available = list_targets(available_only=True)
    opts = {} if threads is None else {"threads": threads}
    opened = [Bundle.open(b.path if isinstance(b, Bundle) else b) for b in bundles]
    rows: list[Row] = []
    with progress(show_progress) as bar:
        task = bar.add_task("benchmark detection", total=sum(1 + len(b.variants) for b in opened))
        for bundle in opened:
            if bundle.manifest.task != "detection":
                raise ConfigError(f"{bundle.path} is not a detection bundle; use edgeship.benchmark for classifiers")
            name = bundle.path.name.removesuffix(".edgeship")
            manifest_sha = sha256_file(bundle.path / MANIFEST)
            bundle.verify({"files": bundle.manifest.source_files})
            reference_rt = ONNXRuntimeRuntime(bundle.source_onnx, bundle.spec, "fp32", threads=threads)
            with Detector(bundle, runtime=reference_rt) as reference:
                measured, ref_dets = _measure(reference, images, ground_truth, None, runs, warmup)
            where = {"bundle": str(bundle.path.resolve()), "manifest_sha256": manifest_sha}
            ref_row = Row(variant=name, target="onnxruntime-cpu", precision="fp32", is_reference=True, drop_pts=None,
                          size_mb=bundle.source_onnx.stat().st_size / 1e6, **where, **measured)
            rows.append(ref_row)
            bar.advance(task)
            for target, precision in bundle.variants:
                bar.update(task, description=f"{name}: {target} {precision}")
                if (targets is None or target in targets) and target in available:
                    with Detector(bundle, target, precision, **opts) as detector:
                        measured, _ = _measure(detector, images, ground_truth, ref_dets, runs, warmup)
                    entry = bundle.artifact(target, precision)
                    drop = (ref_row.accuracy_pct - measured["accuracy_pct"]
                            if measured["accuracy_pct"] is not None and ref_row.accuracy_pct is not None else None)
                    row = Row(variant=name, target=target, precision=precision, drop_pts=drop,
                              size_mb=bundle.size_bytes(entry) / 1e6,
                              int8_flavour=entry.get("options", {}).get("int8_flavour"), **where, **measured)
                    rows.append(row)
                bar.advance(task)
    settings = {"runs": runs, "warmup": warmup, "threads": threads, "samples": len(images),
                "reference": "the bundle's FP32 graph in onnxruntime + edgeship postprocessing",
                "agreement": "boxes matched at IoU 0.5, same label: 2 * matched / (boxes + reference boxes)",
                "end_to_end": "resize + normalise + inference + decode + NMS + boxes to image pixels (first image)"}
    env = environment(threads)
    env["bundles"] = {str(b.path.resolve()): sha256_file(b.path / MANIFEST) for b in opened}
    return Report(rows=rows, metric="mAP@[.5:.95]" if ground_truth is not None else "box agreement",
                  settings=settings, environment=env)


def _measure(detector: Any, images: Sequence[np.ndarray], ground_truth: Any, reference: Any, runs: int,
             warmup: int) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """The measured fields of one detector's Row (mAP or box agreement, model and end-to-end latency) and its
    detections."""
    detections = detector(list(images))
    accuracy = 100.0 * detection_map(detections, ground_truth)["map"] if ground_truth is not None else None
    agreement = 100.0 * box_agreement(detections, reference) if reference is not None else None
    x = detector.spec.apply_preprocess(images[0])
    model = measure_latency(lambda: detector.runtime.run(x), runs=runs, warmup=warmup)
    e2e = measure_latency(lambda: detector([images[0]]), runs=runs, warmup=warmup)
    fields = dict(accuracy_pct=accuracy, agreement_pct=agreement, p50_ms=model.p50_ms, p90_ms=model.p90_ms,
                  p99_ms=model.p99_ms, throughput=model.throughput, runs=runs, samples=len(images),
                  e2e_p50_ms=e2e.p50_ms, e2e_p99_ms=e2e.p99_ms, cpu_flags=cpu_flags())
    return fields, detections
