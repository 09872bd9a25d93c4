"""Pruning benchmark: does a pruning ratio turn into latency on the target?

    python -m edgeship.benchmarks.suites.pruning [--models resnet18,mobilenet_v2] [--ratios 0,0.3,0.5] [--budget-ms 2]
    python -m edgeship.benchmarks.suites.pruning --models "" --detectors ssdlite320_mobilenet_v3_large --budget-ms 0

For each model (torchvision, random init: only speed and structure are measured) and ratio it
compresses FP32 and INT8 bundles for openvino-cpu through edgeship (timing the compress), measures
p50 latency at batch 1 with edgeship's runtime, and prints the MACs ratio beside the measured latency
ratio against the unpruned model of the same precision. Detectors (``--detectors``, torchvision
detection models at 320 x 320) are pruned in the backbone with their heads kept whole; their MACs and
latency are the exported dense model's (INT8 keeps the heads in FP, as compress does by default),
without the numpy postprocessing. Then it runs the latency-driven mode for the first classifier on
openvino-cpu INT8 with ``--budget-ms`` (0: skip) and prints every search step.
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


def run_pruning_suite(models: tuple[str, ...] = ("resnet18", "mobilenet_v2"), ratios: tuple[float, ...] = (0.0, 0.3, 0.5),
                      precisions: tuple[str, ...] = ("fp32", "int8"), target: str = "openvino-cpu",
                      budget_ms: float | None = 2.0, runs: int = 100, threads: int = 2,
                      detectors: tuple[str, ...] = ()) -> dict[str, Any]:
    import edgeship

    torch = require("torch", "the pruning benchmark")
    torchvision = require("torchvision", "the pruning benchmark")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    calib = rng.standard_normal((64, 3, 224, 224)).astype(np.float32)
    spec = edgeship.InputSpec(shape=(None, 3, 224, 224), preprocess=edgeship.Preprocess.imagenet())
    det_x = rng.standard_normal((1, 3, 320, 320)).astype(np.float32)
    det_calib = rng.standard_normal((64, 3, 320, 320)).astype(np.float32)
    det_spec = edgeship.InputSpec(shape=(None, 3, 320, 320), preprocess=edgeship.Preprocess(
        scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="stretch"))
    rows: list[dict[str, Any]] = []
    search: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgeship-prune-bench-") as tmp:
        for name in models + detectors:
            torch.manual_seed(0)
            if name in detectors:
                model = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None).eval()
                model_spec, model_x, model_calib = det_spec, det_x, det_calib
            else:
                model = getattr(torchvision.models, name)().eval()
                model_spec, model_x, model_calib = spec, x, calib
            base: dict[str, float] = {}
            for ratio in ratios:
                recipe = edgeship.Recipe(calibration_size=64, prune=edgeship.Prune(ratio=ratio) if ratio else None)
                start = time.perf_counter()
                bundle = edgeship.compress(model, input_spec=model_spec, calibration=model_calib, targets=[target],
                                           precision=list(precisions), recipe=recipe,
                                           output=Path(tmp) / f"{name}-{ratio}.edgeship", show_progress=False)
                compress_s = time.perf_counter() - start
                macs = bundle.manifest.complexity["macs"]
                for precision in precisions:
                    with bundle.load(target, precision, threads=threads) as rt:
                        p50 = measure_latency(lambda: rt.run(model_x), runs=runs, warmup=10).p50_ms
                    if ratio == 0:
                        base[precision] = p50
                        base["macs"] = macs
                    rows.append({"model": name, "ratio": ratio, "precision": precision, "macs_g": macs / 1e9,
                                 "macs_ratio": macs / base["macs"], "p50_ms": p50,
                                 "latency_ratio": p50 / base[precision], "speedup": base[precision] / p50,
                                 "compress_s": compress_s})
        if budget_ms and models:
            torch.manual_seed(0)
            model = getattr(torchvision.models, models[0])().eval()
            recipe = edgeship.Recipe(calibration_size=64, prune=edgeship.Prune(latency_ms=budget_ms))
            start = time.perf_counter()
            try:
                bundle = edgeship.compress(model, input_spec=spec, calibration=calib, targets=[target], precision="int8",
                                           recipe=recipe, output=Path(tmp) / "budget.edgeship", show_progress=False)
                search = bundle.manifest.pruning["search"]
                chosen = bundle.manifest.pruning["ratio"]
            except edgeship.LatencyBudgetError as exc:
                search, chosen = exc.steps, None
            search_s = time.perf_counter() - start
    _print(rows, search, budget_ms, target, threads, locals().get("chosen"), locals().get("search_s"))
    return {"rows": rows, "search": search}


def _print(rows, search, budget_ms, target, threads, chosen, search_s) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    table = Table(title=f"pruning on {target} — batch 1, {threads} threads")
    for h in ("model", "ratio", "precision", "GMACs", "MACs ratio", "p50 ms", "latency ratio", "speed-up", "compress s"):
        table.add_column(h, justify="left" if h in ("model", "precision") else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['ratio']:.0%}", r["precision"], f"{r['macs_g']:.3f}", f"{r['macs_ratio']:.3f}",
                      f"{r['p50_ms']:.2f}", f"{r['latency_ratio']:.3f}", f"{r['speedup']:.2f}x", f"{r['compress_s']:.1f}")
    console.print(table)
    if search:
        steps = Table(title=f"latency-driven search, budget {budget_ms} ms, int8 — chose ratio {chosen} in {search_s:.0f} s")
        for h in ("step", "ratio", "p50 ms", "meets"):
            steps.add_column(h, justify="right")
        for i, s in enumerate(search, 1):
            steps.add_row(str(i), f"{s['ratio']:.3f}", f"{s['p50_ms']:.3f}", "yes" if s["meets"] else "no")
        console.print(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--ratios", default="0,0.3,0.5")
    parser.add_argument("--detectors", default="", help="torchvision detection models, e.g. ssdlite320_mobilenet_v3_large")
    parser.add_argument("--budget-ms", type=float, default=2.0, help="0 skips the latency-driven search")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    run_pruning_suite(tuple(m for m in args.models.split(",") if m), tuple(float(r) for r in args.ratios.split(",")),
                      budget_ms=args.budget_ms, runs=args.runs, threads=args.threads,
                      detectors=tuple(m for m in args.detectors.split(",") if m))


if __name__ == "__main__":
    main()
