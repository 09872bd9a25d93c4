"""Trained-detector benchmark: FP32 vs INT8 on a detector genuinely trained on labelled scenes.

    python -m edgeship.benchmarks.suites.trained_detector [--epochs 12] [--scenes 3000] [--val 300] [--runs 50]
                                                   [--threads 2] [--score 0.5] [--out DIR]

Trains the small FCOS of :mod:`edgeship.demo.synthetic` on "digits on a conveyor" scenes (or reloads its
cached weights), compresses it to FP32 and INT8 (heads kept FP) for openvino-cpu and onnxruntime-cpu,
and measures every artifact on held-out scenes whose digits training never saw: COCO mAP@[.5:.95] and
mAP@.5, precision / recall / F1 at an operating score, box agreement with the FP32 graph (all boxes,
and boxes above the operating score), model-only and end-to-end latency on one image. The torch
model's own result (torchvision's postprocessing) is the first row: it checks the export too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..._lazy import require
from ...tasks.detection import box_parity
from ...tasks.metrics import box_agreement, detection_map


def precision_recall(predictions: Sequence[dict[str, np.ndarray]], ground_truth: Sequence[dict[str, np.ndarray]],
                     score: float, iou: float = 0.5) -> dict[str, float]:
    """Precision, recall and F1 of the boxes scoring >= ``score``: matched one to one, greedily by score,
    to ground-truth boxes of the same label at IoU >= ``iou`` — what a deployed threshold delivers."""
    tp = n_pred = n_true = 0
    for pred, truth in zip(predictions, ground_truth):
        keep = pred["scores"] >= score
        kept = {k: pred[k][keep] for k in ("boxes", "scores", "labels")}
        n_pred, n_true = n_pred + int(keep.sum()), n_true + len(truth["boxes"])
        if keep.any() and len(truth["boxes"]):
            truth = dict(truth, scores=np.ones(len(truth["boxes"]), np.float32))
            tp += box_parity(kept, truth, iou=iou)["matched"]
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def run_trained_detector(scenes: int = 3000, epochs: int = 12, val: int = 300, runs: int = 50, threads: int = 2,
                         score: float = 0.5, seed: int = 0, cache_dir: str | None = None, out: str | None = None,
                         show_progress: bool = True) -> dict[str, Any]:
    """Train (or reload), compress, measure; prints the table and returns {"rows", "train_s", "compress_s", ...}."""
    import edgeship

    from ...bundle.detector import Detector
    from ...demo.synthetic import SceneConfig, TrainConfig, detector_spec, make_scenes, train_detector, weights_path
    from ...targets.onnxruntime import ONNXRuntimeRuntime
    from ..evaluate_detection import benchmark_detection

    torch = require("torch", "the trained-detector benchmark")
    torch.set_num_threads(threads)
    scene, train = SceneConfig(), TrainConfig(scenes=scenes, epochs=epochs)
    cached = weights_path(scene, train, seed, cache_dir).is_file()
    model = train_detector(scene, train, seed=seed, cache_dir=cache_dir, show_progress=show_progress)
    x_val, truth = make_scenes(val, "val", seed, scene)
    calibration, _ = make_scenes(300, "train", seed + 1, scene)  # training-distribution scenes, not the val set
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        eager = []
        for i in range(0, len(x_val), 50):
            x = torch.from_numpy(x_val[i : i + 50]).permute(0, 3, 1, 2).float().div(255)
            eager += [{k: v.numpy() for k, v in d.items()} for d in model(list(x))]
    rows.append({"variant": "torch eager (torchvision postprocessing)", "precision": "fp32",
                 **_accuracy(eager, truth, None, score)})
    with tempfile.TemporaryDirectory(prefix="edgeship-trained-det-") as tmp:
        start = time.perf_counter()
        bundle = edgeship.compress(model, input_spec=detector_spec(scene), calibration=calibration,
                                   preprocess_calibration=True, targets=["openvino-cpu", "onnxruntime-cpu"],
                                   precision=["fp32", "int8"], output=Path(tmp) / "synthetic_fcos.edgeship",
                                   show_progress=show_progress)
        compress_s = time.perf_counter() - start
        report = benchmark_detection(bundle, x_val, truth, runs=runs, threads=threads, show_progress=show_progress)
        reference_row = next(r for r in report.rows if r.is_reference)
        graph = ONNXRuntimeRuntime(bundle.source_onnx, bundle.spec, "fp32", threads=threads)
        with Detector(bundle, runtime=graph) as fp32:  # the reference benchmark_detection's agreement uses
            reference = fp32(list(x_val))
        for r in report.rows:
            if r.is_reference:
                continue
            with Detector(bundle, r.target, r.precision, threads=threads) as detector:
                dets = detector(list(x_val))
            rows.append({"variant": r.target, "precision": r.precision, **_accuracy(dets, truth, reference, score),
                         "agreement_all": r.agreement_pct / 100, "model_ms": r.p50_ms, "e2e_ms": r.e2e_p50_ms,
                         "size_mb": r.size_mb})
        if out is not None:
            report.save(out)
    result = {"rows": rows, "train_s": model.train_seconds, "cached": cached, "compress_s": compress_s,
              "val_scenes": val, "val_boxes": int(sum(len(t["boxes"]) for t in truth)), "score": score,
              "threads": threads, "scenes": scenes, "epochs": epochs,
              "reference_map": reference_row.accuracy_pct / 100}
    _print(result)
    return result


def _accuracy(dets: list[dict[str, np.ndarray]], truth: list[dict[str, np.ndarray]],
              reference: list[dict[str, np.ndarray]] | None, score: float) -> dict[str, float]:
    m = detection_map(dets, truth)
    prf = precision_recall(dets, truth, score)
    row = {"map": m["map"], "map50": m["map50"], "P": prf["precision"], "R": prf["recall"], "F1": prf["f1"]}
    if reference is not None:
        row["agreement_at_score"] = box_agreement(dets, reference, min_score=score)
    return row


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["score"]
    train = f"trained {result['train_s']:.0f} s" + (" (cached weights)" if result["cached"] else "")
    table = Table(title=f"synthetic FCOS, {result['scenes']} scenes x {result['epochs']} epochs, {train}; "
                        f"{result['val_scenes']} held-out scenes ({result['val_boxes']} boxes); batch 1, "
                        f"{result['threads']} threads; compress {result['compress_s']:.0f} s")
    headers = ("variant", "precision", "mAP@[.5:.95]", "mAP@.5", f"P@{s}", f"R@{s}", f"F1@{s}",
               "agree (all)", f"agree @{s}", "model p50 ms", "e2e p50 ms", "size MB")
    for h in headers:
        table.add_column(h, justify="left" if h in ("variant", "precision") else "right")
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    ms = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    for r in result["rows"]:
        table.add_row(r["variant"], r["precision"], pct(r["map"]), pct(r["map50"]), pct(r["P"]), pct(r["R"]),
                      pct(r["F1"]), pct(r.get("agreement_all")), pct(r.get("agreement_at_score")),
                      ms(r.get("model_ms")), ms(r.get("e2e_ms")), ms(r.get("size_mb")))
    console = Console(width=200)
    console.print(table)
    console.print("agree: boxes matched with the FP32 graph on onnxruntime (same label, IoU >= 0.5), 2 * matched / "
                  "all boxes. 'all' counts every box above the model's 0.05 score threshold, up to 50 an image: "
                  "mostly near-tied low-score candidates, whose order at that cap moves with the last digits even "
                  f"between FP32 runtimes; '@{s}' counts the boxes a deployment at score {s} keeps.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=3000, help="training scenes")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--val", type=int, default=300, help="held-out scenes to measure on")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per latency")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score", type=float, default=0.5, help="operating score for precision / recall / F1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None,
                        help="weights cache (default: $EDGESHIP_CACHE, else ~/.cache/edgeship)")
    parser.add_argument("--out", default=None, help="also save the benchmark_detection report (JSON, Markdown) here")
    args = parser.parse_args()
    run_trained_detector(args.scenes, args.epochs, args.val, args.runs, args.threads, args.score, args.seed,
                         args.cache_dir, args.out)


if __name__ == "__main__":
    main()
