"""What watching a served bundle costs: the monitor and shadow mode per frame, as a fraction of the model's p50.

    python -m edgeship.benchmarks.suites.monitor [--frames 600] [--train-seconds 720] [--threads 2]

For the digits CNN (trained, as the demo) and ssdlite320 (trained on synthetic scenes as
``edgeship.benchmarks.suites.ssdlite_goal`` does, weights cached; ``--train-seconds`` sets the budget), INT8 on
onnxruntime-cpu and openvino-cpu: a Predictor answers ``--frames`` held-out frames one by one, and a Monitor
(stream's, inline) looks at each answer. Per configuration, in one process: the model's p50 (``Predictor.infer``,
preprocessing included: what serve and stream call per frame), the monitor's own time per frame and the shadow's
(both as the monitor measures them, amortised over all frames), and their ratio to that p50. Configurations: drift
and output statistics on every frame (cost budget 1.0), the default 3 % budget, and shadow mode at rates 0.01, 0.1
and 1.0 (shadow budget 1.0, so the rate alone decides), and captures with every answer a hard example (top-1
confidence under 1.0, detections within 0.5 of the score threshold: a PNG + sidecar written per frame, unthrottled) —
the worst case, where the default rate limit (60 a minute) would drop most of them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import require
from ...measure.latency import measure_latency

CONFIGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("monitor, every frame", {"cost_budget": 1.0}),
    ("monitor, 3 % budget (default)", {}),
    ("+ shadow 0.01", {"cost_budget": 1.0, "shadow_rate": 0.01, "shadow_budget": 1.0}),
    ("+ shadow 0.1", {"cost_budget": 1.0, "shadow_rate": 0.1, "shadow_budget": 1.0}),
    ("+ shadow 1.0", {"cost_budget": 1.0, "shadow_rate": 1.0, "shadow_budget": 1.0}),
    ("+ captures, every answer", {"cost_budget": 1.0, "low_confidence": 1.0, "near_threshold": 0.5}),
)
CAPTURES = "captures"  # a configuration with this word also saves its hard examples (a PNG + sidecar each)
TARGETS = ("onnxruntime-cpu", "openvino-cpu")


def measure_bundle(name: str, bundle: Any, frames: list[np.ndarray], threads: int) -> list[dict[str, Any]]:
    """One row per (target, configuration) of ``bundle``'s INT8 artifacts over ``frames``."""
    from ...bundle.predictor import Predictor
    from ...device.captures import CaptureStore
    from ...device.monitor import Monitor, MonitorConfig

    rows = []
    tmp = tempfile.mkdtemp(prefix="edgeship-captures-")
    for target in TARGETS:
        with bundle.load(target, "int8", threads=threads) as rt:
            predictor = Predictor(bundle, rt)
            image = frames[0]
            p50 = measure_latency(lambda: predictor.infer([image]), runs=100, warmup=10).p50_ms
            for label, options in CONFIGS:
                store = CaptureStore(Path(tmp) / label, max_per_minute=1e9) if CAPTURES in label else None
                monitor = Monitor(bundle, MonitorConfig(**options), target=target, precision="int8", threads=threads,
                                  capture=store)
                start = time.perf_counter()
                for frame in frames:
                    monitor.observe(predictor.infer([frame]), [frame])
                wall_ms = (time.perf_counter() - start) * 1000 / len(frames)
                snap = monitor.snapshot()
                monitor.close()
                cost = snap["cost"]
                rows.append({"model": name, "target": target, "config": label, "p50_ms": p50,
                             "monitor_ms": cost["monitor_ms_per_frame"], "shadow_ms": cost["shadow_ms_per_frame"],
                             "observed": snap["observed"], "frames": snap["frames"], "wall_ms": wall_ms,
                             "shadow_runs": snap["shadow"]["runs"],
                             "saved": store.stats()["saved"] if store is not None else 0})
                if store is not None:
                    shutil.rmtree(store.root)
    return rows


def _digits(tmp: Path) -> tuple[Any, list[np.ndarray]]:
    import edgeship
    from edgeship import demo

    x_train, _, x_test, _ = demo.digits_data()
    model = demo.train_digits_cnn(show_progress=False)
    bundle = edgeship.compress(model, input_spec=demo.DIGITS_SPEC, calibration=x_train, preprocess_calibration=True,
                               targets=list(TARGETS), precision=["fp32", "int8"], output=tmp / "digits.edgeship",
                               show_progress=False)
    return bundle, list(x_test)


def _ssdlite(tmp: Path, train_seconds: float, frames: int) -> tuple[Any, list[np.ndarray], dict[str, Any]]:
    import edgeship

    from ...demo.synthetic import make_scenes
    from .ssdlite_goal import SCENE_SIZE, _scene, train_ssdlite

    model, info = train_ssdlite(train_seconds)
    scene = _scene()
    val, _ = make_scenes(min(frames, 200), "val", 0, scene)
    calib, _ = make_scenes(300, "train", 1, scene)
    spec = edgeship.InputSpec(shape=(1, 3, *SCENE_SIZE), preprocess=edgeship.Preprocess(
        scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="stretch"))
    bundle = edgeship.compress(model, input_spec=spec, calibration=calib, preprocess_calibration=True,
                               targets=list(TARGETS), precision=["fp32", "int8"], output=tmp / "ssd.edgeship",
                               show_progress=False)
    return bundle, list(val), info


def _print(rows: list[dict[str, Any]], header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=header)
    for column in ("model", "target", "configuration", "model p50 ms", "monitor ms/frame", "monitor / p50",
                   "shadow ms/frame", "shadow / p50", "frames looked at", "shadow runs", "captures"):
        table.add_column(column, justify="left" if column in ("model", "target", "configuration") else "right")
    for r in rows:
        table.add_row(r["model"], r["target"], r["config"], f"{r['p50_ms']:.3f}", f"{r['monitor_ms']:.4f}",
                      f"{r['monitor_ms'] / r['p50_ms']:.1%}", f"{r['shadow_ms']:.4f}",
                      f"{r['shadow_ms'] / r['p50_ms']:.1%}", f"{r['observed']}/{r['frames']}", str(r["shadow_runs"]),
                      str(r["saved"]))
    Console(width=200).print(table)


def main() -> None:
    from ..._fleet import cpu_flags

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=600, help="frames per configuration (ssdlite: at most 200)")
    parser.add_argument("--train-seconds", type=float, default=720, help="ssdlite training budget (cached)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-ssdlite", action="store_true")
    args = parser.parse_args()
    torch = require("torch", "the monitor benchmark")
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    note = ""
    with tempfile.TemporaryDirectory(prefix="edgeship-monitor-") as tmp:
        bundle, frames = _digits(Path(tmp))
        rows += measure_bundle("digits CNN", bundle, frames[: args.frames], args.threads)
        if not args.skip_ssdlite:
            bundle, frames, info = _ssdlite(Path(tmp), args.train_seconds, args.frames)
            note = f"; ssdlite320 trained {info['train_s']:.0f} s ({info['steps']} steps{', cached' if info['cached'] else ''})"
            frames = (frames * (-(-args.frames // len(frames))))[: args.frames]
            rows += measure_bundle("ssdlite320", bundle, frames, args.threads)
    flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in cpu_flags())
    _print(rows, f"monitor cost per frame, INT8, batch 1, {args.threads} threads; CPU flags: {flags}{note}")


if __name__ == "__main__":
    main()
