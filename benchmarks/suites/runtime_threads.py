"""One OpenVINO runtime shared by threads: a pool of infer requests vs one request under a lock.

    python -m edgeship.benchmarks.suites.runtime_threads [--seconds 0.6] [--rounds 5]

Compiles a small CNN (the digits CNN, random init: only speed is measured) for openvino-cpu FP32,
loads it once per variant and hint, and has 1 and 4 threads call ``run`` on one batch-1 input in a
loop. The variants take turns every round, so drift of a shared machine hits both alike. Prints
variant, hint, threads, runs/s (median over rounds, all threads together), p50 ms per call and the
ratios against the lock variant measured in the same process; then what each guard costs alone, one
thread, no inference (the part of a single-threaded run that differs). Takes about 30 s.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...targets.openvino import OpenVINORuntime

THREADS = (1, 4)
HINTS = ("LATENCY", "THROUGHPUT")


class LockedOpenVINORuntime(OpenVINORuntime):
    """The alternative: one infer request, one caller at a time."""

    def _load(self) -> None:
        super()._load()
        self._one = self._take_request()
        self._one_lock = threading.Lock()

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._one_lock:
            result = self._one.infer(feed, share_inputs=True, share_outputs=False)
        return {info.name: result[port] for info, port in zip(self._outputs, self._output_ports)}


VARIANTS = {"lock": LockedOpenVINORuntime, "pool": OpenVINORuntime}


def _bundle(folder: Path) -> Any:
    import edgeship

    from ... import demo

    model = demo.build_digits_cnn().eval()
    return edgeship.compress(model, input_spec=demo.DIGITS_SPEC, targets=["openvino-cpu"], precision="fp32",
                             output=folder / "digits.edgeship", show_progress=False)


def _load(bundle: Any, cls: type, hint: str) -> OpenVINORuntime:
    """The bundle's openvino-cpu FP32 artifact as a ``cls`` runtime (what ``bundle.load`` does for the pool)."""
    from ...targets.base import Artifact

    entry = bundle.artifact("openvino-cpu", "fp32")
    folder = bundle.path / entry["dir"]
    files = [str(Path(f).relative_to(entry["dir"])) for f in entry["files"]]
    artifact = Artifact(target="openvino-cpu", precision="fp32", files=files, options=entry.get("options", {}))
    return cls(folder / files[0], bundle.spec, artifact, performance_hint=hint)


def _hammer(rt: OpenVINORuntime, x: np.ndarray, threads: int, seconds: float) -> tuple[float, list[float]]:
    """(runs per second of all threads together, per-call latencies in ms) over ``seconds``."""
    stop = threading.Event()
    start = threading.Barrier(threads + 1)
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def worker(out: list[float]) -> None:
        start.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            rt.run(x)
            out.append((time.perf_counter() - t0) * 1e3)

    pool = [threading.Thread(target=worker, args=(out,)) for out in latencies]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = [ms for out in latencies for ms in out]
    return len(flat) / elapsed, flat


def measure(seconds: float = 0.6, rounds: int = 5) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """(one row per variant, hint and thread count; each guard's cost alone in microseconds per call)."""
    rows = []
    guards: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edgeship-threads-") as tmp:
        bundle = _bundle(Path(tmp))
        x = np.random.default_rng(0).standard_normal(bundle.spec.example_shape(1)).astype(bundle.spec.dtype)
        for hint in HINTS:
            runtimes = {name: _load(bundle, cls, hint) for name, cls in VARIANTS.items()}
            try:
                for rt in runtimes.values():  # warm-up, and the pool grows to its size
                    _hammer(rt, x, max(THREADS), 0.2)
                for threads in THREADS:
                    rates: dict[str, list[float]] = {k: [] for k in runtimes}
                    calls: dict[str, list[float]] = {k: [] for k in runtimes}
                    for _ in range(rounds):
                        for name, rt in runtimes.items():
                            rate, ms = _hammer(rt, x, threads, seconds)
                            rates[name].append(rate)
                            calls[name] += ms
                    for name in runtimes:
                        rows.append({"variant": name, "hint": hint, "threads": threads,
                                     "runs_per_s": float(np.median(rates[name])),
                                     "p50_ms": float(np.percentile(calls[name], 50))})
                if not guards:
                    guards = guard_cost_us(runtimes["pool"])
            finally:
                for rt in runtimes.values():
                    rt.close()
    lock = {(r["hint"], r["threads"]): r for r in rows if r["variant"] == "lock"}
    for r in rows:
        base = lock[(r["hint"], r["threads"])]
        r["rate_vs_lock"] = r["runs_per_s"] / base["runs_per_s"]
        r["p50_vs_lock"] = r["p50_ms"] / base["p50_ms"]
    return rows, guards


def guard_cost_us(rt: OpenVINORuntime, calls: int = 200_000) -> dict[str, float]:
    """Microseconds per call of each variant's guard alone: take + return a pooled request, or lock + unlock."""
    lock = threading.Lock()
    t0 = time.perf_counter()
    for _ in range(calls):
        with lock:
            pass
    t1 = time.perf_counter()
    for _ in range(calls):
        rt._free.put(rt._take_request())
    t2 = time.perf_counter()
    return {"lock": (t1 - t0) / calls * 1e6, "pool": (t2 - t1) / calls * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.6, help="per variant, thread count and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows, guards = measure(args.seconds, args.rounds)
    print(f"{'variant':8} {'hint':10} {'threads':>7} {'runs/s':>9} {'p50 ms':>8} {'runs/s vs lock':>15} {'p50 vs lock':>12}")
    for r in rows:
        print(f"{r['variant']:8} {r['hint']:10} {r['threads']:>7} {r['runs_per_s']:>9.0f} {r['p50_ms']:>8.3f} "
              f"{r['rate_vs_lock']:>15.2f} {r['p50_vs_lock']:>12.2f}")
    print(f"guard alone, 1 thread: lock {guards['lock']:.3f} us/call, pool {guards['pool']:.3f} us/call")


if __name__ == "__main__":
    main()
