"""Calibration benchmark: INT8 accuracy against the calibration set's size and selection.

    python -m edgeship.benchmarks.suites.calibration [--sizes 8,32,128,512] [--seeds 0,1,2]

On the trained digits CNN (edgeship.demo), for each size and selection ("random", "diverse") and a
few seeds, it compresses INT8 for openvino-cpu and onnxruntime-cpu and measures top-1 on the held-out
digits against FP32 (torch eager). It prints mean and worst drop over the seeds: small random sets are
a lottery, and the worst case is what a production line gets when it is unlucky.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from ..._lazy import require


def run_calibration_suite(sizes=(8, 32, 128, 512), seeds=(0, 1, 2), selections=("random", "diverse")) -> list[dict]:
    import edgeship

    from ... import calibration
    from ...demo.digits import DIGITS_SPEC, digits_data, train_digits_cnn

    torch = require("torch", "the calibration benchmark")
    x_train, y_train, x_test, y_test = digits_data()
    model = train_digits_cnn(show_progress=False)
    with torch.no_grad():
        fp32 = 100.0 * float((model(torch.from_numpy(DIGITS_SPEC.apply_preprocess(x_test))).argmax(1).numpy() == y_test).mean())
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeship-calib-bench-") as tmp:
        for size in sizes:
            for select in selections:
                drops: dict[str, list[float]] = {"openvino-cpu": [], "onnxruntime-cpu": []}
                for seed in seeds:
                    calib = calibration.from_arrays(x_train, DIGITS_SPEC, size=size, select=select, seed=seed,
                                                    preprocess=True)
                    bundle = edgeship.compress(model, input_spec=DIGITS_SPEC, calibration=calib, precision="int8",
                                               output=Path(tmp) / f"c{size}-{select}-{seed}.edgeship",
                                               recipe=edgeship.Recipe(calibration_size=size, seed=seed),
                                               show_progress=False)
                    for target in drops:
                        with bundle.load(target) as rt:
                            top1 = 100.0 * float((rt.run(x_test, preprocess=True)["output"].argmax(1) == y_test).mean())
                        drops[target].append(fp32 - top1)
                for target, values in drops.items():
                    rows.append({"size": size, "select": select, "target": target, "mean_drop": float(np.mean(values)),
                                 "worst_drop": float(np.max(values)), "seeds": len(values)})
    _print(rows, fp32)
    return rows


def _print(rows: list[dict], fp32: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"digits CNN INT8 top-1 drop vs calibration (FP32 {fp32:.2f}%, held-out digits)")
    for h in ("size", "selection", "target", "mean drop pts", "worst drop pts", "seeds"):
        table.add_column(h, justify="right" if h not in ("selection", "target") else "left")
    for r in rows:
        table.add_row(str(r["size"]), r["select"], r["target"], f"{r['mean_drop']:+.2f}", f"{r['worst_drop']:+.2f}",
                      str(r["seeds"]))
    Console(width=120).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,32,128,512")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    run_calibration_suite(tuple(int(s) for s in args.sizes.split(",")), tuple(int(s) for s in args.seeds.split(",")))


if __name__ == "__main__":
    main()
