"""Detector benchmark: where a detector's time goes, and what INT8 buys, dense vs postprocessing in the graph.

    python -m edgeship.benchmarks.detectors [--runs 30] [--threads 2]

For ssdlite320_mobilenet_v3_large (random init, batch 1) it measures on openvino-cpu and
onnxruntime-cpu through edgeship: the dense graph (backbone + heads) FP32 and INT8 (heads in FP),
edgeship's numpy postprocessing alone, and end to end (a 640x480 raw image: resize + normalise,
inference, decode + NMS, boxes mapped back); and, for comparison, the whole torchvision graph with
postprocessing inside it (TorchScript exporter, opset 17) on OpenVINO FP32 and INT8. Random heads pass
almost every (anchor, class) through the 0.001 score threshold, which makes NMS far busier than a
trained model's — the table says how long postprocessing took so that this is visible.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import require
from .latency import measure_latency


def run_detector_suite(runs: int = 30, threads: int = 2) -> list[dict[str, Any]]:
    import edgeship
    from edgeship.detection import Detector, _wrappers, postprocess

    torch = require("torch", "the detector benchmark")
    D = require("torchvision.models.detection", "the detector benchmark")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = D.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    spec = edgeship.InputSpec(shape=(1, 3, 320, 320), preprocess=edgeship.Preprocess(
        scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="stretch"))
    rng = np.random.default_rng(0)
    raw = np.kron(rng.integers(0, 255, (24, 32, 3)), np.ones((20, 20, 1))).astype(np.uint8)  # 480 x 640
    calib = np.concatenate([spec.apply_preprocess(np.roll(raw, 40 * i, axis=1)) for i in range(32)])
    x = spec.apply_preprocess(raw)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgeship-det-") as tmp:
        start = time.perf_counter()
        bundle = edgeship.compress(model, input_spec=spec, calibration=calib, precision=["fp32", "int8"],
                                   output=Path(tmp) / "ssd.edgeship", show_progress=False)
        compress_s = time.perf_counter() - start
        for target in ("openvino-cpu", "onnxruntime-cpu"):
            for precision in ("fp32", "int8"):
                with Detector(bundle, target, precision, threads=threads) as det:
                    names = det.head.outputs
                    model_ms = measure_latency(lambda: det.runtime.run(x), runs=runs, warmup=5).p50_ms
                    outs = det.runtime.run(x)
                    post_ms = measure_latency(lambda: postprocess([outs[n] for n in names], det.head),
                                              runs=runs, warmup=2).p50_ms
                    e2e_ms = measure_latency(lambda: det([raw]), runs=runs, warmup=3).p50_ms
                rows.append({"graph": "dense + edgeship postprocessing", "target": target, "precision": precision,
                             "model_ms": model_ms, "postprocess_ms": post_ms, "end_to_end_ms": e2e_ms})
        # the whole torchvision graph, postprocessing inside, on OpenVINO
        ov = require("openvino")
        nncf = require("nncf")
        whole = _wrappers()[1](model, (320, 320)).eval()
        whole.model.transform.image_mean, whole.model.transform.image_std = [0.5] * 3, [0.5] * 3
        onnx_path = Path(tmp) / "whole.onnx"
        raw_input = torch.from_numpy(np.ascontiguousarray(raw[:320, :320].transpose(2, 0, 1)[None] / 255.0, np.float32))
        torch.onnx.export(whole, (raw_input,), str(onnx_path), input_names=["input"],
                          output_names=["boxes", "scores", "labels"], opset_version=17, dynamo=False)
        core = ov.Core()
        ov_model = core.read_model(str(onnx_path))
        try:
            q_model = nncf.quantize(core.read_model(str(onnx_path)),
                                    nncf.Dataset([np.ascontiguousarray(c[None] * 0.5 + 0.5) for c in calib[:16]]),
                                    subset_size=16)
        except Exception as exc:  # NNCF's graph builder fails on the If/Loop ops of the whole graph
            q_model, int8_error = None, f"{type(exc).__name__}: {exc}"
        x01 = raw_input.numpy()
        for precision, m in (("fp32", ov_model), ("int8", q_model)):
            if m is None:
                rows.append({"graph": "whole torchvision graph (NMS inside)", "target": "openvino-cpu",
                             "precision": precision, "model_ms": None, "postprocess_ms": None, "end_to_end_ms": None,
                             "note": f"NNCF could not quantize it: {int8_error[:120]}"})
                continue
            compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
            request = compiled.create_infer_request()
            ms = measure_latency(lambda: request.infer({0: x01}), runs=runs, warmup=3).p50_ms
            rows.append({"graph": "whole torchvision graph (NMS inside)", "target": "openvino-cpu", "precision": precision,
                         "model_ms": ms, "postprocess_ms": None, "end_to_end_ms": None})
    _print(rows, threads, compress_s)
    return rows


def _print(rows: list[dict[str, Any]], threads: int, compress_s: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ssdlite320_mobilenet_v3_large, batch 1, {threads} threads (compress {compress_s:.0f} s)")
    for h in ("graph", "target", "precision", "model p50 ms", "postprocess p50 ms", "end-to-end p50 ms"):
        table.add_column(h, justify="left" if h in ("graph", "target", "precision") else "right")
    fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        table.add_row(r["graph"], r["target"], r["precision"], fmt(r["model_ms"]), fmt(r["postprocess_ms"]),
                      fmt(r["end_to_end_ms"]))
    console = Console(width=140)
    console.print(table)
    for r in rows:
        if r.get("note"):
            console.print(f"{r['graph']} {r['target']} {r['precision']}: {r['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    run_detector_suite(args.runs, args.threads)


if __name__ == "__main__":
    main()
