"""The core benchmark suite: edgeship's runtimes vs the same backends called directly, and vs torch eager.

    python -m edgeship.benchmarks.suites.core [--runs 200] [--threads 2] [--models resnet18,mobilenet_v3_small]
    edgeship bench --suite core

For torchvision resnet18 and mobilenet_v3_small (random init: only speed is measured) at batch 1 it
compiles FP32 and INT8 bundles for openvino-cpu and onnxruntime-cpu, then measures in one process:
torch eager FP32; every artifact through ``edgeship.load(...).run``; and the same artifact files
loaded with OpenVINO / ONNX Runtime directly. Edgeship and direct calls are measured in interleaved
rounds so that drift of the machine hits both alike. Prints a table with the ratios
edgeship/direct (overhead; goal <= 1.03) and torch FP32 / variant (speed-up).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..._lazy import require
from ...measure.latency import measure_latency

MODELS = ("resnet18", "mobilenet_v3_small")
VARIANTS = (("openvino-cpu", "fp32"), ("openvino-cpu", "int8"), ("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "int8"))


def _direct_runner(bundle: Any, target: str, precision: str, threads: int) -> Callable[[np.ndarray], Any]:
    """The artifact's own files loaded with the backend's API, as a user would without edgeship."""
    entry = bundle.artifact(target, precision)
    path = bundle.path / next(f for f in entry["files"] if f.endswith((".xml", ".onnx")))
    if target == "openvino-cpu":
        require("openvino")
        from ...targets.openvino import shared_core

        compiled = shared_core().compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x})
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _interleaved(fns: dict[str, Callable[[], Any]], runs: int, rounds: int = 15) -> dict[str, float]:
    """Median over ``rounds`` of each function's p50 (ms), the functions taking turns every round."""
    p50s: dict[str, list[float]] = {k: [] for k in fns}
    per_round = max(runs // rounds, 20)
    for _ in range(rounds):
        for key, fn in fns.items():
            p50s[key].append(measure_latency(fn, runs=per_round, warmup=3).p50_ms)
    return {k: float(np.median(v)) for k, v in p50s.items()}


def run_core_suite(runs: int = 200, threads: int = 2, models: tuple[str, ...] = MODELS,
                   out: str | os.PathLike | None = None, show_progress: bool = True) -> list[dict[str, Any]]:
    """Run the suite; print the table; return its rows (and save them as JSON/Markdown under ``out``)."""
    import edgeship

    torch = require("torch", "the core benchmark suite")
    torchvision = require("torchvision", "the core benchmark suite")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    calib = rng.standard_normal((64, 3, 224, 224)).astype(np.float32)
    spec = edgeship.InputSpec(shape=(None, 3, 224, 224), preprocess=edgeship.Preprocess.imagenet())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgeship-core-") as tmp:
        for model_name in models:
            torch.manual_seed(0)
            model = getattr(torchvision.models, model_name)().eval()
            x_torch = torch.from_numpy(x)

            def torch_eager() -> Any:
                with torch.inference_mode():
                    return model(x_torch)

            # torch first: after NNCF / OpenVINO have run in this process, torch eager was seen to slow down
            torch_ms = measure_latency(torch_eager, runs=runs, warmup=10).p50_ms
            bundle = edgeship.compress(model, input_spec=spec, calibration=calib, precision=["fp32", "int8"],
                                       targets=[t for t in dict.fromkeys(t for t, _ in VARIANTS)],
                                       output=Path(tmp) / f"{model_name}.edgeship", show_progress=show_progress)
            rows.append({"model": model_name, "variant": "torch eager", "precision": "fp32", "edgeship_ms": None,
                         "direct_ms": torch_ms, "overhead": None, "speedup_vs_torch": 1.0})
            for target, precision in VARIANTS:
                direct = _direct_runner(bundle, target, precision, threads)
                with bundle.load(target, precision, threads=threads) as rt:
                    p50 = _interleaved({"edgeship": lambda: rt.run(x), "direct": lambda: direct(x)}, runs)
                rows.append({"model": model_name, "variant": target, "precision": precision,
                             "edgeship_ms": p50["edgeship"], "direct_ms": p50["direct"],
                             "overhead": p50["edgeship"] / p50["direct"],
                             "speedup_vs_torch": torch_ms / p50["edgeship"]})
    _print(rows, threads)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        env = edgeship.benchmarks.environment(threads)
        (folder / "core.json").write_text(json.dumps({"environment": env, "runs": runs, "rows": rows}, indent=2) + "\n")
        (folder / "core.md").write_text(_markdown(rows, env))
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _table_cells(row: dict[str, Any]) -> list[str]:
    return [row["model"], row["variant"], row["precision"], _fmt(row["edgeship_ms"], ".2f"), _fmt(row["direct_ms"], ".2f"),
            _fmt(row["overhead"], ".3f"), _fmt(row["speedup_vs_torch"], ".2f") + "x"]


_HEADERS = ["model", "runtime", "precision", "edgeship p50 ms", "direct p50 ms", "edgeship/direct", "vs torch FP32"]


def _print(rows: list[dict[str, Any]], threads: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"edgeship core suite — batch 1, {threads} threads")
    for h in _HEADERS:
        table.add_column(h, justify="left" if h in ("model", "runtime", "precision") else "right")
    for row in rows:
        table.add_row(*_table_cells(row))
    Console(width=120).print(table)


def _markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(_HEADERS) + " |", "|" + "---|" * len(_HEADERS)]
    lines += ["| " + " | ".join(_table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + f"\n\nEnvironment: {env}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=None, help="folder for core.json and core.md")
    args = parser.parse_args()
    run_core_suite(runs=args.runs, threads=args.threads, models=tuple(args.models.split(",")), out=args.out)


if __name__ == "__main__":
    main()
