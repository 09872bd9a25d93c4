"""Detector benchmark: where a detector's time goes, and what INT8 buys, dense vs postprocessing in the graph.

    python -m edgeship.benchmarks.suites.detectors [--runs 30] [--threads 2] [--models ssdlite320_mobilenet_v3_large,...]

For each torchvision detector (random init, batch 1, fixed input size) it measures on openvino-cpu and
onnxruntime-cpu through edgeship: the exported graph FP32 and INT8 (heads in FP), edgeship's numpy
postprocessing alone, model + postprocessing from a model-sized input, and end to end (a 640x480 raw
image: resize + normalise, inference, decode + NMS, boxes mapped back); plus the compress time. A
detector that cannot go through is listed with the error. For ssdlite320 it also measures the whole
torchvision graph with postprocessing inside it (TorchScript exporter, opset 17) on OpenVINO FP32 and
INT8. Random heads pass almost every (anchor, class) through the 0.001 score threshold, which makes NMS
far busier than a trained model's — the table says how long postprocessing took so that this is visible
(``python -m edgeship.benchmarks.suites.trained_detector`` measures a trained one).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import require
from ...measure.latency import measure_latency
from ...targets.openvino import shared_core

# name -> the fixed input size (H, W) it is measured at: the ResNet-50 ones at 512 to keep the run short
DETECTORS = {
    "ssdlite320_mobilenet_v3_large": (320, 320),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (320, 320),
    "fasterrcnn_mobilenet_v3_large_fpn": (512, 512),
    "retinanet_resnet50_fpn": (512, 512),
    "fcos_resnet50_fpn": (512, 512),
    "fasterrcnn_resnet50_fpn": (512, 512),
}


def _raw_scene(seed: int = 0) -> np.ndarray:
    """A 480 x 640 RGB frame of colour blocks: structure for the backbone, not white noise."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 255, (24, 32, 3)), np.ones((20, 20, 1))).astype(np.uint8)


def _inputs(size: tuple[int, int]) -> tuple[Any, np.ndarray, np.ndarray]:
    """(the InputSpec at ``size`` — stretch resize, [-1, 1] normalisation —, the raw 640x480 frame, 16
    calibration samples: the frame shifted sideways)."""
    import edgeship

    spec = edgeship.InputSpec(shape=(1, 3, *size), preprocess=edgeship.Preprocess(
        scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="stretch"))
    raw = _raw_scene()
    return spec, raw, np.concatenate([spec.apply_preprocess(np.roll(raw, 40 * i, axis=1)) for i in range(16)])


def measure_detector(name: str, size: tuple[int, int], runs: int, threads: int, tmp: Path) -> tuple[list[dict[str, Any]], Any]:
    """Rows for one torchvision detector (or one row with the error that stopped it) and the torch model."""
    import edgeship

    from ...bundle.detector import Detector
    from ...tasks.detection import postprocess

    torch = require("torch", "the detector benchmark")
    D = require("torchvision.models.detection", "the detector benchmark")
    torch.manual_seed(0)
    model = getattr(D, name)(weights=None, weights_backbone=None).eval()
    spec, raw, calib = _inputs(size)
    x = spec.apply_preprocess(raw)
    rows: list[dict[str, Any]] = []
    base = {"model": name, "size": f"{size[0]}x{size[1]}"}
    bundles: dict[tuple[str, str], tuple[Any, float]] = {}  # (target, precision) -> (bundle, compress seconds)
    for target in ("openvino-cpu", "onnxruntime-cpu"):  # one bundle per variant: one that fails leaves the rest
        for precision in ("fp32", "int8"):
            start = time.perf_counter()
            try:
                bundle = edgeship.compress(model, input_spec=spec, calibration=calib, targets=[target],
                                           precision=[precision], output=tmp / f"{name}-{target}-{precision}.edgeship",
                                           show_progress=False)
            except Exception as exc:  # the reason is the result: which op or step stopped this variant
                rows.append({**base, "graph": "—", "target": target, "precision": precision,
                             "note": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            bundles[target, precision] = (bundle, time.perf_counter() - start)
    for (target, precision), (bundle, compress_s) in bundles.items():
        family = bundle.manifest.detection["head"]["family"]
        graph = "whole graph (NMS inside)" if family == "graph" else "dense + edgeship postprocessing"
        try:
            with Detector(bundle, target, precision, threads=threads) as det:
                names = det.head.outputs
                model_ms = measure_latency(lambda: det.runtime.run(x), runs=runs, warmup=3).p50_ms
                outs = det.runtime.run(x)
                post_ms = measure_latency(lambda: postprocess([outs[n] for n in names], det.head),
                                          runs=runs, warmup=2).p50_ms
                e2e_ms = measure_latency(lambda: det([raw]), runs=runs, warmup=2).p50_ms
                candidates = len(postprocess([outs[n] for n in names], det.head)[0]["boxes"])
        except Exception as exc:
            rows.append({**base, "graph": graph, "target": target, "precision": precision,
                         "note": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        rows.append({**base, "graph": graph, "target": target, "precision": precision, "model_ms": model_ms,
                     "postprocess_ms": post_ms, "model_post_ms": model_ms + post_ms, "end_to_end_ms": e2e_ms,
                     "boxes": candidates, "compress_s": compress_s})
    return rows, model


def run_detector_suite(runs: int = 30, threads: int = 2, models: list[str] | None = None) -> list[dict[str, Any]]:
    torch = require("torch", "the detector benchmark")
    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgeship-det-") as tmp:
        for name in models or list(DETECTORS):
            found, model = measure_detector(name, DETECTORS.get(name, (320, 320)), runs, threads, Path(tmp))
            rows += found
            if name == "ssdlite320_mobilenet_v3_large":
                rows += _whole_graph_rows(model, runs, threads, Path(tmp))
    _print(rows, threads)
    return rows


def _whole_graph_rows(model: Any, runs: int, threads: int, tmp: Path) -> list[dict[str, Any]]:
    """ssdlite320 with torchvision's own postprocessing inside the graph, on OpenVINO FP32 and (NNCF) INT8."""
    from ...tasks.detection import _wrappers

    torch = require("torch")
    require("openvino")
    nncf = require("nncf")
    _, raw, calib = _inputs((320, 320))
    whole = _wrappers()[1](model, (320, 320)).eval()
    whole.model.transform.image_mean, whole.model.transform.image_std = [0.5] * 3, [0.5] * 3
    onnx_path = tmp / "whole.onnx"
    raw_input = torch.from_numpy(np.ascontiguousarray(raw[:320, :320].transpose(2, 0, 1)[None] / 255.0, np.float32))
    torch.onnx.export(whole, (raw_input,), str(onnx_path), input_names=["input"],
                      output_names=["boxes", "scores", "labels"], opset_version=17, dynamo=False)
    core = shared_core()
    ov_model = core.read_model(str(onnx_path))
    int8_error = None
    try:
        q_model = nncf.quantize(core.read_model(str(onnx_path)),
                                nncf.Dataset([np.ascontiguousarray(c[None] * 0.5 + 0.5) for c in calib]),
                                subset_size=16)
    except Exception as exc:  # NNCF's graph builder fails on the If/Loop ops of the whole graph
        q_model, int8_error = None, f"{type(exc).__name__}: {exc}"
    x01 = raw_input.numpy()
    rows = []
    base = {"model": "ssdlite320_mobilenet_v3_large", "size": "320x320", "graph": "whole torchvision graph (NMS inside)",
            "target": "openvino-cpu"}
    for precision, m in (("fp32", ov_model), ("int8", q_model)):
        if m is None:
            rows.append({**base, "precision": precision, "note": f"NNCF could not quantize it: {int8_error[:160]}"})
            continue
        compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        ms = measure_latency(lambda: request.infer({0: x01}), runs=runs, warmup=3).p50_ms
        rows.append({**base, "precision": precision, "model_ms": ms, "model_post_ms": ms})
    return rows


def _print(rows: list[dict[str, Any]], threads: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"torchvision detectors, random init, batch 1, {threads} threads (compress s: one target, one precision)")
    heads = ("model", "size", "graph", "target", "precision", "model p50 ms", "postprocess p50 ms",
             "model + post ms", "end-to-end p50 ms (640x480 raw)", "boxes", "compress s")
    keys = (None, None, None, None, None, "model_ms", "postprocess_ms", "model_post_ms", "end_to_end_ms", "boxes",
            "compress_s")
    for h in heads:
        table.add_column(h, justify="left" if h in heads[:5] else "right")
    fmt = lambda v: "—" if v is None else (str(v) if isinstance(v, int) else f"{v:.2f}")  # noqa: E731
    for r in rows:
        table.add_row(*(str(r.get(h, "")) for h in ("model", "size", "graph", "target", "precision")),
                      *(fmt(r.get(k)) for k in keys[5:]))
    console = Console(width=200)
    console.print(table)
    for r in rows:
        if r.get("note"):
            console.print(f"{r['model']} {r['graph']} {r['target']} {r['precision']}: {r['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(DETECTORS), help="comma-separated torchvision detector names")
    args = parser.parse_args()
    run_detector_suite(args.runs, args.threads, args.models.split(","))


if __name__ == "__main__":
    main()
