"""The TensorRT device check: engines from a bundle, parity with ONNX Runtime, FP16 vs INT8 p50 — one table.

    python -m edgeship.benchmarks.suites.tensorrt_check [--bundle PATH] [--target tensorrt-gpu] [--runs 200]

Without ``--bundle`` it compresses the shipped digits CNN for the target (fp32, fp16, int8). CPU side, on any
machine: the INT8 graph must meet TensorRT's Q/DQ rules (``tensorrt_int8_problems``), and ONNX Runtime's CPU
provider running each precision graph must keep the test set's top-1 (digits) within 1 point of FP32. Device
side, where TensorRT, Polygraphy, cuda-python and a GPU are: every precision's engine is built on this device
(``rebuild=True``), run on the same inputs as ONNX Runtime's FP32 graph — top-1 agreement and max abs error — and
timed (p50 at batch 1); the table ends with INT8's p50 over FP16's. Where TensorRT is absent it says so and exits 0
after the CPU-side checks (exit 1 when a check fails). Takes under a minute on the CPU side; the engine builds of
the digits CNN take seconds on a GPU, so the whole check stays well under 8 minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")


def _digits_bundle(target: str, out: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """The shipped digits CNN compressed for ``target``, with the held-out digits (model-ready) and labels."""
    import edgeship

    from ... import demo

    x_train, _, x_test, y_test = demo.digits_data()
    bundle = edgeship.compress(demo.train_digits_cnn(show_progress=False), input_spec=demo.DIGITS_SPEC,
                               calibration=x_train, preprocess_calibration=True, targets=[target],
                               precision=list(PRECISIONS), output=out / "digits.edgeship", show_progress=False)
    return bundle, demo.DIGITS_SPEC.apply_preprocess(x_test), np.asarray(y_test)


def _cpu_outputs(graph: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _graph(bundle: Any, target: str, precision: str) -> Path:
    return bundle.path / bundle.artifact(target, precision)["dir"] / "model.onnx"


def _top1_and_agreement(out: np.ndarray, y: np.ndarray | None, reference: np.ndarray) -> tuple[float | None, float]:
    """Top-1 against the labels (None without them) and top-1 agreement with the FP32 reference's outputs."""
    top1 = float((out.argmax(1) == y).mean()) if y is not None else None
    return top1, float((out.argmax(1) == reference.argmax(1)).mean())


def cpu_checks(bundle: Any, target: str, x: np.ndarray, y: np.ndarray | None,
               reference: np.ndarray) -> tuple[list[list[str]], list[str]]:
    """(table rows, failures) of the checks that need no GPU: the INT8 graph's Q/DQ placement, each graph's top-1.
    ``reference``: the FP32 graph's outputs on ``x`` (ONNX Runtime, CPU)."""
    from ...targets._onnx_graphs import tensorrt_int8_problems

    rows, failures = [], []
    ref_top1 = float((reference.argmax(1) == y).mean()) if y is not None else None
    for precision in [p for t, p in bundle.variants if t == target]:
        graph = _graph(bundle, target, precision)
        out = reference if precision == "fp32" else _cpu_outputs(graph, x)
        top1, agree = _top1_and_agreement(out, y, reference)
        problems = tensorrt_int8_problems(graph) if precision == "int8" else []
        rows.append([precision, "onnxruntime cpu", _pct(top1), _pct(agree),
                     "ok" if not problems else f"{len(problems)} problems", "", ""])
        failures += [f"{precision} graph: {p}" for p in problems]
        if top1 is not None and ref_top1 - top1 > 0.01:
            failures.append(f"{precision} graph on the CPU: top-1 {top1:.2%} is more than 1 point below FP32's "
                            f"{ref_top1:.2%}")
    return rows, failures


def device_checks(bundle: Any, target: str, x: np.ndarray, y: np.ndarray | None, reference: np.ndarray,
                  runs: int) -> list[list[str]]:
    """Rows for each precision's engine built here: top-1, agreement and max abs error against ONNX Runtime FP32
    (``reference``), p50 at batch 1."""
    import edgeship

    from ...measure.latency import measure_latency

    rows = []
    for t, precision in bundle.variants:
        if t != target:
            continue
        with edgeship.load(bundle.path, target=target, precision=precision, rebuild=True) as rt:
            batch = rt.inputs[0].shape[0] or 64
            out = np.concatenate([next(iter(rt.run(x[i:i + batch]).values())) for i in range(0, len(x), batch)])
            one = x[:1] if rt.inputs[0].shape[0] in (None, 1) else x[:batch]
            p50 = measure_latency(lambda: rt.run(one), runs=runs, warmup=20).p50_ms
        top1, agree = _top1_and_agreement(out, y, reference)
        rows.append([precision, f"{target} engine", _pct(top1), _pct(agree),
                     "", f"{float(np.abs(out - reference).max()):.4g}", f"{p50:.3f}"])
    return rows


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="a bundle with fp32 (and fp16 / int8) artifacts for --target "
                                                        "(default: compress the digits CNN)")
    parser.add_argument("--target", default="tensorrt-gpu", choices=("tensorrt-gpu", "tensorrt-jetson"))
    parser.add_argument("--runs", type=int, default=200, help="timed calls per engine")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    import edgeship

    from ..._fleet import cpu_flags
    from ...targets import get_target_class

    console = Console(width=max(120, Console().width))
    with tempfile.TemporaryDirectory(prefix="edgeship-trt-check-") as tmp:
        if args.bundle:
            bundle, y = edgeship.open_bundle(args.bundle), None  # no labels: agreement and error only
            x = np.random.default_rng(0).standard_normal(bundle.spec.example_shape(64)).astype(bundle.spec.dtype)
        else:
            bundle, x, y = _digits_bundle(args.target, Path(tmp))
        reference = _cpu_outputs(_graph(bundle, args.target, "fp32"), x)
        rows, failures = cpu_checks(bundle, args.target, x, y, reference)
        available, why = get_target_class(args.target).availability()
        if available:
            rows += device_checks(bundle, args.target, x, y, reference, args.runs)
    table = Table(title=f"{args.target}: {bundle.path.name} — CPU flags {' '.join(cpu_flags()) or 'unknown'}")
    for header in ("precision", "runs on", "top-1 %", "agreement vs fp32 %", "TensorRT Q/DQ rules",
                   "max abs err", "p50 ms"):
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    p50 = {r[0]: float(r[6]) for r in rows if r[6]}
    if "int8" in p50 and "fp16" in p50:
        console.print(f"INT8 p50 / FP16 p50 on this device: {p50['int8'] / p50['fp16']:.2f}")
    if not available:
        console.print(escape(f"TensorRT is not usable here ({why}): only the CPU-side checks ran; no engine was built"))
    for failure in failures:
        console.print(f"[red]FAILED[/red] {escape(failure)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
