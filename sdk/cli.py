"""The command line: a thin layer over the Python API.

    edgeship compress model.onnx --shape ?,3,224,224 --calib calib.npy --precision int8 -o out/model.edgeship
    edgeship bench out/model.edgeship --data val.npz --metric top1 --report out/report
    edgeship bench --suite core
    edgeship demo
    edgeship targets
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, EdgeshipError


def _shape(text: str) -> tuple[int | None, ...]:
    dims = []
    for part in text.split(","):
        part = part.strip()
        dims.append(int(part) if part.isdigit() else None)  # '?', 'N', 'batch' ... = dynamic
    return tuple(dims)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _load_array_file(path: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """.npy -> (inputs, None); .npz -> (x, y) from arrays named 'x' and optionally 'y'. Never unpickles."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    try:
        loaded = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise ConfigError(f"{what} file {p} is not a numeric .npy/.npz (object arrays are refused): {exc}") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        if "x" not in loaded.files:
            raise ConfigError(f"{what} file {p} must hold an array named 'x' (and 'y' for labels); it has {loaded.files}")
        return loaded["x"], (loaded["y"] if "y" in loaded.files else None)


def _load_model(text: str):
    """'model.onnx' -> the path; 'package.module:factory' -> factory() (an nn.Module, put in eval mode)."""
    if text.lower().endswith(".onnx"):
        return text
    if ":" not in text:
        raise ConfigError(f"model must be an .onnx file or 'package.module:factory' returning an nn.Module, got {text!r}")
    import importlib

    module_name, _, attr = text.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {text!r}: {exc}") from None
    model = factory()
    if not hasattr(model, "eval"):
        raise ConfigError(f"{text} returned {type(model).__name__}, not a torch nn.Module")
    return model.eval()


def _recipe(args: argparse.Namespace):
    import dataclasses

    from . import Prune, Recipe

    recipe = Recipe.from_toml(args.recipe) if args.recipe else Recipe()
    recipe = dataclasses.replace(
        recipe,
        calibration_size=args.calibration_size if args.calibration_size is not None else recipe.calibration_size,
        seed=args.seed if args.seed is not None else recipe.seed,
    )
    if args.prune is not None or args.prune_latency_ms is not None:
        base = recipe.prune.to_dict() if recipe.prune is not None else {}
        base.update(ratio=args.prune, latency_ms=args.prune_latency_ms)
        if args.prune_importance:
            base["importance"] = args.prune_importance
        if args.prune_protect:
            base["protect"] = args.prune_protect.split(",")
        if args.distill:
            base["recover"] = "distill"
        recipe = dataclasses.replace(recipe, prune=Prune(**base))
    return recipe


def _cmd_compress(args: argparse.Namespace) -> int:
    from . import InputSpec, Preprocess, compress

    pre = Preprocess(scale=args.scale, mean=args.mean, std=args.std, reverse_channels=args.bgr_to_rgb)
    spec = InputSpec(shape=_shape(args.shape), name=args.input_name, layout=args.layout, preprocess=pre)
    calib = _load_array_file(args.calib, "calibration")[0] if args.calib else None
    bundle = compress(
        _load_model(args.model),
        input_spec=spec,
        calibration=calib,
        preprocess_calibration=args.raw_calib,
        targets=args.targets.split(","),
        precision=args.precision.split(","),
        recipe=_recipe(args),
        output=args.output,
    )
    print(f"wrote {bundle.path}: {', '.join(f'{t} {p}' for t, p in bundle.variants)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.suite:
        from .benchmarks.core import run_core_suite

        run_core_suite(runs=args.runs, threads=args.threads or 2, out=args.report)
        return 0
    if not args.bundles or not args.data:
        raise ConfigError("bench needs bundle paths and --data (or --suite core)")
    from .benchmarks import benchmark

    x, y = _load_array_file(args.data, "data")
    report = benchmark(
        args.bundles,
        data=(x, y) if y is not None else x,
        metric=args.metric,
        runs=args.runs,
        warmup=args.warmup,
        batch_size=args.batch_size,
        threads=args.threads,
        preprocess=args.preprocess,
        targets=args.targets.split(",") if args.targets else None,
    )
    report.print()
    if args.report:
        print(f"report saved to {report.save(args.report)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, cache_dir=args.cache, runs=args.runs, threads=args.threads)
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    from .targets import list_targets

    for name, info in list_targets().items():
        print(f"{name:20s} {info}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeship", description="Compress, compile and benchmark models for edge targets.")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="export/quantize/compile an ONNX model into a bundle")
    c.add_argument("model", help="an .onnx file, or 'package.module:factory' returning a torch nn.Module")
    c.add_argument("--shape", required=True, help="input shape, '?' for dynamic dims, e.g. ?,3,224,224")
    c.add_argument("--input-name", default="input", help="model input name (default: the ONNX model's only input)")
    c.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"])
    c.add_argument("--calib", help="calibration data: .npy (N, ...) or .npz with array 'x'")
    c.add_argument("--raw-calib", action="store_true", help="calibration data are raw uint8 images; apply preprocessing")
    c.add_argument("--scale", type=float, default=1 / 255.0, help="preprocessing scale (raw images)")
    c.add_argument("--mean", type=_floats, default=None, help="preprocessing per-channel mean, e.g. 0.485,0.456,0.406")
    c.add_argument("--std", type=_floats, default=None, help="preprocessing per-channel std")
    c.add_argument("--bgr-to-rgb", action="store_true", help="reverse the channel order of raw images")
    c.add_argument("--targets", default="openvino-cpu,onnxruntime-cpu", help="comma-separated target names")
    c.add_argument("--precision", default="int8", help="comma-separated: fp32, fp16, int8")
    c.add_argument("--calibration-size", type=int, default=None, help="calibration subset size (default 300)")
    c.add_argument("--seed", type=int, default=None, help="seed of the calibration subset (default 0)")
    c.add_argument("--recipe", help="a recipe TOML file (calibration_size, seed, [prune] ...)")
    c.add_argument("--prune", type=float, default=None, help="prune this fraction of channels (torch models)")
    c.add_argument("--prune-latency-ms", type=float, default=None,
                   help="prune the least that meets this p50 latency on the first target/precision")
    c.add_argument("--prune-importance", choices=["l1", "l2", "bn_scale", "taylor"], default=None)
    c.add_argument("--prune-protect", default=None, help="comma-separated module names never pruned")
    c.add_argument("--distill", action="store_true", help="recover the pruned model by label-free distillation")
    c.add_argument("-o", "--output", required=True, help="bundle folder to write")
    c.set_defaults(func=_cmd_compress)

    b = sub.add_parser("bench", help="measure accuracy and latency of bundles")
    b.add_argument("bundles", nargs="*", help="bundle folders")
    b.add_argument("--data", help=".npz with 'x' (inputs) and 'y' (labels), or .npy inputs")
    b.add_argument("--metric", default="top1", choices=["top1", "top5"])
    b.add_argument("--runs", type=int, default=100)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--batch-size", type=int, default=1)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--targets", default=None, help="only these targets (comma-separated)")
    b.add_argument("--preprocess", action="store_true", help="--data holds raw images; apply each bundle's preprocessing")
    b.add_argument("--report", help="folder to save report.json and report.md")
    b.add_argument("--suite", choices=["core"], help="run a built-in benchmark suite instead")
    b.set_defaults(func=_cmd_bench)

    d = sub.add_parser("demo", help="train a digits CNN, compress it for both CPU targets, benchmark")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--cache", default=None, help="cache folder for the trained weights (default ~/.cache/edgeship)")
    d.add_argument("--runs", type=int, default=200)
    d.add_argument("--threads", type=int, default=None)
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("targets", help="list registered targets and whether they are available here")
    t.set_defaults(func=_cmd_targets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeshipError as exc:
        print(f"edgeship {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
