"""QAT benchmark: post-training INT8 against quantization-aware training, accuracy and speed, on both CPU targets.

    python -m edgeship.benchmarks.suites.qat [--scales 1,10,30,100] [--epochs 5] [--lr 1e-3] [--runs 300]

The model is the pinned digits CNN (``edgeship.demo``), as shipped (scale 1) and with one outlier channel per
block (``outlier_channels``: channel 0 of each batch norm times ``scale``, the next layer's weights for it divided
by it — the same function in FP32, but every per-tensor activation range ``scale`` times wider than the other
channels need, the classic reason post-training INT8 loses points). Each is compressed FP32 + post-training INT8
and QAT INT8 (``Recipe(qat=QAT(...))``, label-free) for openvino-cpu and onnxruntime-cpu and measured on the 539
held-out digits: top-1 with a Wilson 95 % interval, the drop against FP32, p50 at batch 1 (median of ``--runs``)
and the QAT / post-training p50 ratio measured in the same process (ONNX Runtime's QAT flavour is U8U8, its
post-training one 7-bit U8S8 on the default fleet).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import require
from ...measure.latency import measure_latency
from ...measure.stats import wilson_interval

TARGETS = ("openvino-cpu", "onnxruntime-cpu")


def outlier_channels(model: Any, scale: float) -> Any:
    """The digits CNN with channel 0 of every block ``scale`` times larger, compensated downstream (same function)."""
    torch = require("torch", "the QAT benchmark")
    model = copy.deepcopy(model)
    with torch.no_grad():
        for bn, consumer in ((1, 4), (5, 8), (9, 13)):
            model[bn].weight[0] *= scale
            model[bn].bias[0] *= scale
            model[consumer].weight[:, 0] /= scale
    return model.eval()


def run(scales: tuple[float, ...] = (1.0, 10.0, 30.0, 100.0), epochs: int = 5, lr: float = 1e-3, runs: int = 300,
        threads: int = 2) -> list[dict[str, Any]]:
    import edgeship
    from edgeship import demo

    torch = require("torch", "the QAT benchmark")
    torch.set_num_threads(threads)
    base = demo.train_digits_cnn(show_progress=False)
    x_train, _, x_test, y_test = demo.digits_data()
    x = demo.DIGITS_SPEC.apply_preprocess(x_test)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeship-qat-") as tmp:
        for scale in scales:
            model = outlier_channels(base, scale)
            common = dict(input_spec=demo.DIGITS_SPEC, calibration=x_train, preprocess_calibration=True,
                          show_progress=False)
            start = time.perf_counter()
            ptq = edgeship.compress(model, precision=["fp32", "int8"], output=Path(tmp) / f"ptq-{scale:g}", **common)
            ptq_s = time.perf_counter() - start
            start = time.perf_counter()
            qat = edgeship.compress(model, precision=["int8"], output=Path(tmp) / f"qat-{scale:g}",
                                    recipe=edgeship.Recipe(qat=edgeship.QAT(epochs=epochs, lr=lr)), **common)
            qat_s = time.perf_counter() - start
            for target in TARGETS:
                measured = {}
                for variant, bundle, precision in (("fp32", ptq, "fp32"), ("post-training int8", ptq, "int8"),
                                                   ("qat int8", qat, "int8")):
                    with edgeship.load(bundle.path, target=target, precision=precision, threads=threads) as rt:
                        out = np.concatenate([next(iter(rt.run(x[i : i + 128]).values()))
                                              for i in range(0, len(x), 128)])
                        one = x[:1]
                        p50 = measure_latency(lambda: rt.run(one), runs=runs, warmup=20).p50_ms
                    right = int((out.argmax(1) == y_test).sum())
                    measured[variant] = {"top1": 100 * right / len(x),
                                         "ci": tuple(100 * v for v in wilson_interval(right, len(x))), "p50": p50,
                                         "flavour": bundle.artifact(target, precision)["options"].get("int8_flavour")}
                fp32 = measured["fp32"]["top1"]
                for variant, m in measured.items():
                    rows.append({"scale": scale, "target": target, "variant": variant, **m, "drop": fp32 - m["top1"],
                                 "vs_ptq": m["p50"] / measured["post-training int8"]["p50"],
                                 "compress_s": qat_s if variant.startswith("qat") else ptq_s,
                                 "epoch_kept": qat.manifest["qat"].get("epoch_kept") if variant.startswith("qat")
                                 else None})
            print(f"scale {scale:g} done", flush=True)
    return rows


def _print(rows: list[dict[str, Any]], header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=header)
    for col in ("outlier scale", "target", "variant", "flavour", "top-1 % (95 %)", "drop pts", "p50 ms",
                "p50 / post-training", "compress s", "QAT epoch kept"):
        table.add_column(col, justify="left" if col in ("target", "variant", "flavour") else "right")
    for r in rows:
        table.add_row(f"{r['scale']:g}", r["target"], r["variant"], str(r["flavour"] or "—"),
                      f"{r['top1']:.2f} ({r['ci'][0]:.1f}-{r['ci'][1]:.1f})", f"{r['drop']:.2f}", f"{r['p50']:.3f}",
                      f"{r['vs_ptq']:.2f}", f"{r['compress_s']:.1f}",
                      "—" if r["epoch_kept"] is None else str(r["epoch_kept"]))
    Console(width=200).print(table)


def main() -> None:
    from ..._fleet import cpu_flags

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10,30,100", help="outlier scales (1 = the digits CNN as shipped)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--runs", type=int, default=300, help="timed runs per variant")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = run(tuple(float(s) for s in args.scales.split(",")), args.epochs, args.lr, args.runs, args.threads)
    flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in cpu_flags())
    _print(rows, f"digits CNN with outlier channels: post-training INT8 vs QAT (label-free, {args.epochs} epochs, lr "
                 f"{args.lr:g}); 539 held-out digits; batch 1, {args.threads} threads; CPU flags: {flags}")


if __name__ == "__main__":
    main()
