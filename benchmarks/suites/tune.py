"""Tune benchmark: what measuring every variant buys, and what running the sweep on Ray costs.

    python -m edgeship.benchmarks.suites.tune [--max-drop 1] [--latency-ms 5] [--runs 100] [--no-ray]

A 12-trial sweep of the trained digits CNN (``edgeship.demo``): unpruned and 25 % pruned (recovered by
label-free distillation) x FP32, INT8 and INT8 with accuracy-aware FP fallback x openvino-cpu and
onnxruntime-cpu. It runs the sweep with the local executor and again on a local Ray cluster that tune
starts (one CPU: one trial at a time, as the local executor), each into a fresh cache, and prints:

- the chosen variant against plain INT8 and FP32 (unpruned, same target): accuracy, drop, p50 latency;
- wall time local vs Ray, the cluster's start-up time, and the overhead Ray adds per trial: the time
  from when a trial's task could have started (submitted, and the previous task finished) to when its body
  ran, plus from the body's end to the driver holding the result — scheduling, shipping the model,
  data and bundle bytes, unpacking and packing the bundle.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SPACE_RATIOS = (0.0, 0.25)
PRECISIONS = ("fp32", "int8", "int8+fallback")
TARGETS = ("openvino-cpu", "onnxruntime-cpu")


def _sweep(executor: str, cache: Path, max_drop: float, latency_ms: float | None, runs: int) -> tuple[Any, float]:
    import edgeship

    from ... import demo

    x_train, _, x_test, y_test = demo.digits_data()
    model = demo.train_digits_cnn(show_progress=False)
    space = edgeship.SearchSpace(prune_ratios=SPACE_RATIOS, precisions=PRECISIONS,
                                 prune=edgeship.Prune(ratio=0.25, recover="distill", distill_epochs=8))
    start = time.perf_counter()
    result = edgeship.tune(model, calibration=x_train, validation=(x_test, y_test), input_spec=demo.DIGITS_SPEC,
                           preprocess_calibration=True, targets=list(TARGETS),
                           budget=edgeship.Budget(max_drop=max_drop, latency_ms=latency_ms), space=space,
                           cache_dir=cache, show_progress=False, measure=edgeship.Measurement(runs=runs),
                           executor=executor)
    return result, time.perf_counter() - start


def ray_overhead_s(result: Any) -> list[float]:
    """Per trial: (task start - max(submit, the previous task's end)) + (receipt - task end); the one-machine
    cluster runs one task at a time, so a task can start once the one before it has ended."""
    info = [t for t in result.report.settings["trials"] if "task_started_at" in t]
    last_end = 0.0
    out = []
    for t in sorted(info, key=lambda t: t["task_started_at"]):
        ready = max(t["submitted_at"], last_end)
        out.append(max(0.0, t["task_started_at"] - ready) + (t["received_at"] - t["task_finished_at"]))
        last_end = t["task_finished_at"]
    return out


def _pick(result: Any, target: str, precision: str) -> Any:
    return next(t for t in result.trials if t.candidate.target == target and t.candidate.precision == precision
                and t.candidate.prune_ratio == 0)


def run_tune_benchmark(max_drop: float = 1.0, latency_ms: float | None = 5.0, runs: int = 100,
                       with_ray: bool = True) -> dict[str, Any]:
    """Run the sweeps; returns the numbers the table prints."""
    numbers: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="edgeship-tune-bench-") as tmp:
        local, numbers["local_wall_s"] = _sweep("local", Path(tmp) / "local", max_drop, latency_ms, runs)
        numbers["local"] = local
        if with_ray:
            remote, numbers["ray_wall_s"] = _sweep("ray", Path(tmp) / "ray", max_drop, latency_ms, runs)
            numbers["ray"] = remote
            numbers["ray_startup_s"] = remote.report.settings.get("ray_startup_s")
            numbers["ray_overhead_s"] = ray_overhead_s(remote)
    numbers["load_after"] = os.getloadavg()
    return numbers


def format_table(numbers: dict[str, Any]) -> str:
    """The measurement as Markdown tables."""
    local = numbers["local"]
    best = local.best
    target = best.candidate.target
    rows = [("chosen: " + best.label, best), ("plain INT8: " + _pick(local, target, "int8").label, _pick(local, target, "int8")),
            ("FP32: " + _pick(local, target, "fp32").label, _pick(local, target, "fp32"))]
    ref = local.report.rows[0]
    lines = [f"12-trial sweep of the digits CNN (budget: {local.budget.describe()}; FP32 reference "
             f"{ref.accuracy_pct:.2f}% top-1 on {ref.samples} held-out digits; local executor)", "",
             "| variant | top-1 % | drop pts | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for name, t in rows:
        lines.append(f"| {name} | {t.accuracy_pct:.2f} | {t.drop_pts:+.2f} | {t.p50_ms:.3f} | {t.row.p99_ms:.3f} |")
    lines += ["", "| every trial (local) | top-1 % | drop pts | p50 ms | notes |", "|---|---|---|---|---|"]
    for t in local.trials:
        lines.append(f"| {t.label} | {t.accuracy_pct if t.ok else float('nan'):.2f} | "
                     f"{t.drop_pts if t.ok else float('nan'):+.2f} | {t.p50_ms if t.ok else float('nan'):.3f} | "
                     f"{'; '.join(t.notes)} |")
    lines += ["", "| sweep | wall s | trials | compiled | chosen |", "|---|---|---|---|---|",
              f"| local | {numbers['local_wall_s']:.1f} | {local.stats['trials']} | {local.stats['compiled']} | {best.label} |"]
    if "ray" in numbers:
        remote = numbers["ray"]
        over = numbers["ray_overhead_s"]
        lines.append(f"| Ray (one-machine cluster, one trial at a time; incl. start-up) | {numbers['ray_wall_s']:.1f} | "
                     f"{remote.stats['trials']} | {remote.stats['compiled']} | {remote.best.label} |")
        lines += ["", f"Ray cluster start-up: {numbers['ray_startup_s']:.1f} s; overhead per trial (scheduling, "
                      f"transfer, bundle pack/unpack): mean {1e3 * statistics.mean(over):.0f} ms, median "
                      f"{1e3 * statistics.median(over):.0f} ms, max {1e3 * max(over):.0f} ms over {len(over)} trials"]
    lines += ["", f"load average before/after: {numbers['load_before'][0]:.2f} / {numbers['load_after'][0]:.2f} "
                  f"on {os.cpu_count()} cores"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edgeship.benchmarks.suites.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--no-ray", action="store_true", help="only the local executor")
    args = parser.parse_args(argv)
    numbers = run_tune_benchmark(args.max_drop, args.latency_ms, args.runs, with_ray=not args.no_ray)
    print(format_table(numbers))


if __name__ == "__main__":
    main()
