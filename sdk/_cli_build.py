"""The build-machine commands of ``edgeship``: compress, bench, gate, sensitivity, tune, demo, targets, calib."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._cli_args import (
    _calibration_data,
    _floats,
    _load_array_file,
    _load_model,
    _metric,
    _option_product,
    _recipe,
    _runtime_options,
    _shape,
    _single_options,
    _validation_data,
)
from .errors import ConfigError
from .executor import Executor
from .measure.plan import Measurement


def _cmd_compress(args: argparse.Namespace) -> int:
    from .build.compress import compress
    from .spec import InputSpec, Preprocess

    pre = Preprocess(scale=args.scale, mean=args.mean, std=args.std, reverse_channels=args.bgr_to_rgb)
    spec = InputSpec(shape=_shape(args.shape), name=args.input_name, layout=args.layout, preprocess=pre)
    recipe = _recipe(args)
    calib = _calibration_data(args.calib, spec, recipe.calibration_size, args.raw_calib) if args.calib else None
    validation = _validation_data(args.val, spec, args.raw_calib) if args.val else None
    bundle = compress(
        _load_model(args.model),
        validation=validation,
        input_spec=spec,
        calibration=calib,
        preprocess_calibration=args.raw_calib,
        targets=args.targets.split(","),
        precision=args.precision.split(","),
        recipe=recipe,
        output=args.output,
    )
    print(f"wrote {bundle.path}: {', '.join(f'{t} {p}' for t, p in bundle.variants)}")
    return 0


def _executor(ray: str | None, retries: int, timeout_s: float | None, timeout_flag: str) -> Executor:
    """``--ray [local|auto|ADDRESS]``, ``--retries`` and the timeout flag -> an Executor."""
    if not ray:
        if timeout_s is not None:
            raise ConfigError(f"{timeout_flag} ends Ray workers; give it with --ray")
        return Executor("local", retries=retries)
    return Executor("ray", address=None if ray == "local" else ray, retries=retries, timeout_s=timeout_s)


def _bench_bundles(args: argparse.Namespace) -> int:
    """`bench` of the bundles given (a built-in suite is run by edgeship.cli)."""
    if not args.bundles or not args.data:
        raise ConfigError("bench needs bundle paths and --data (or --suite core)")
    from ._lazy import is_installed
    from .benchmarks import benchmark

    x, y, preprocess = _bench_data(args.data, args.preprocess)
    try:
        report = benchmark(
            args.bundles,
            data=(x, y) if y is not None else x,  # captures: a path, read by benchmark
            metric=_metric(args.metric),
            measure=Measurement(runs=args.runs, warmup=args.warmup, batch_size=args.batch_size, streams=args.streams,
                                ci_resamples=args.ci_resamples, threads=args.threads,
                                options=_single_options(args.option)),
            preprocess=preprocess,
            targets=args.targets.split(",") if args.targets else None,
            budget_pts=args.budget,
            agreement_threshold=args.flag_agreement,
            save_to=args.report,
            sign_key=args.sign,
            executor=_executor(args.ray, args.retries, args.task_timeout, "--task-timeout"),
        )
    except KeyboardInterrupt:
        where = f"; the rows measured so far are in {args.report}, marked incomplete" if args.report else ""
        print(f"edgeship bench: interrupted{where}", file=sys.stderr)
        return 130
    report.print()
    if args.report:
        html = is_installed("jinja2") and is_installed("matplotlib")
        print(f"report saved to {args.report}" + ("" if html else " (no report.html: pip install \"edgeship[report]\")"))
    return 0


def _bench_data(data: str, preprocess: bool) -> tuple[Any, Any, bool]:
    """``bench --data``: (x, y or None, preprocess) of arrays; captures go to ``benchmark`` as they are."""
    from .calibration import is_captures

    if is_captures(data):
        return data, None, False
    x, y = _load_array_file(data, "data")
    return x, y, preprocess


def _cmd_gate(args: argparse.Namespace) -> int:
    from .benchmarks import Gates, Report, Tolerance
    from .bundle.signing import configured_public_key

    if args.require_bundles and args.allow_missing_bundles:
        raise ConfigError("--require-bundles and --allow-missing-bundles contradict each other")
    report = Report.load(args.report, public_key=configured_public_key(args.verify))
    gates = Gates(max_drop=args.max_drop, max_relative_drop=args.max_relative_drop, max_p50_ms=args.max_p50_ms,
                  max_p99_ms=args.max_p99_ms, min_throughput=args.min_throughput, min_agreement=args.min_agreement,
                  baseline=args.baseline, require_bundles=not args.allow_missing_bundles,
                  regression_tolerance=Tolerance(accuracy_pts=args.tolerance_accuracy_pts,
                                                 latency_pct=args.tolerance_latency_pct))
    result = report.check(gates)
    print(result.summary())
    if args.html:
        try:
            print(f"gate page written to {report.write_html(args.html, result)}")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.html}: {exc}") from None
    return 0 if result.passed else 1


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    import json

    from .build.accuracy import sensitivity

    calib = _load_array_file(args.calib, "calibration")[0]
    x_val, y_val = _load_array_file(args.data, "validation")
    if y_val is None:
        raise ConfigError(f"--data {args.data} must be an .npz holding inputs 'x' and labels 'y'")
    rows = sensitivity(args.bundle, calib, (x_val, y_val), metric=args.metric, raw_images=args.raw,
                       calibration_size=args.calibration_size)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"INT8 sensitivity per layer (quantized alone, QDQ) — {args.metric}")
    for header in ("layer", "drop pts", "output error"):
        table.add_column(header, justify="left" if header == "layer" else "right")
    for row in rows:
        table.add_row(row["layer"], f"{row['drop_pts']:+.2f}", f"{row['output_error']:.4f}")
    Console(width=120).print(table)
    if args.out:
        Path(args.out).write_text(json.dumps({"metric": args.metric, "layers": rows}, indent=2) + "\n")
        print(f"saved {args.out}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    """`tune`: exit 0 with a chosen variant, 1 when none meets the budget, 130 when interrupted."""
    from .errors import TuneBudgetError
    from .spec import InputSpec, Preprocess
    from .tune.sweep import Budget, SearchSpace, tune

    pre = Preprocess(scale=args.scale, mean=args.mean, std=args.std, reverse_channels=args.bgr_to_rgb)
    spec = InputSpec(shape=_shape(args.shape), name=args.input_name, layout=args.layout, preprocess=pre)
    calib = _calibration_data(args.calib, spec, args.calibration_size, args.raw_calib)
    x_val, y_val = _validation_data(args.val, spec, args.raw_calib)
    space = SearchSpace(prune_ratios=_floats(args.prune_ratios), precisions=tuple(args.precisions.split(",")),
                        threads=tuple(None if t in ("default", "auto") else int(t) for t in args.threads.split(",")),
                        options=_option_product(_runtime_options(args.option)),
                        calibration_size=args.calibration_size)
    try:
        result = tune(_load_model(args.model), calibration=calib, validation=(x_val, y_val), input_spec=spec,
                      targets=args.targets.split(","), budget=Budget(max_drop=args.max_drop, latency_ms=args.latency_ms),
                      space=space, metric=_metric(args.metric), measure=Measurement(runs=args.runs),
                      executor=_executor(args.ray, args.retries, args.trial_timeout, "--trial-timeout"),
                      cache_dir=args.cache, output=args.out, preprocess_calibration=args.raw_calib)
    except TuneBudgetError as exc:
        print(f"edgeship tune: {exc}", file=sys.stderr)
        if exc.report is not None:
            exc.report.print()
        return 1
    except KeyboardInterrupt:
        print(f"edgeship tune: interrupted; finished trials are cached in {args.cache or 'the cache folder'} and a "
              "re-run resumes from them", file=sys.stderr)
        return 130
    result.report.print()
    print(result.summary())
    print(f"wrote {Path(args.out) / 'best.edgeship'} and {Path(args.out) / 'report'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo.digits import run_demo

    run_demo(args.out, cache_dir=args.cache, runs=args.runs, threads=args.threads)
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    from .targets import list_targets

    for name, info in list_targets().items():
        print(f"{name:20s} {info}")
    return 0


_CALIB_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def _cmd_calib(args: argparse.Namespace) -> int:
    """`calib check`: findings on stdout; exit 0 without errors, 1 with errors (2 on bad input, in main)."""
    import dataclasses
    import warnings

    from .calibration import CalibrationWarning, check, from_captures, from_folder, from_video, is_captures
    from .spec import InputSpec, Preprocess

    preset = {"imagenet": Preprocess.imagenet, "letterbox": Preprocess.letterbox, "raw": Preprocess.raw}[args.preset]()
    if args.resize:
        preset = dataclasses.replace(preset, resize=args.resize)
    spec = InputSpec(shape=_shape(args.shape), layout=args.layout, preprocess=preset)
    profile = _bundle_profile(args.against) if args.against else None
    if profile is not None:  # the bundle says how its inputs are preprocessed
        spec, profile = profile

    def open_source(path: str):
        p = Path(path)
        options = dict(size=args.size, select=args.select, seed=args.seed)
        if is_captures(p):
            return from_captures(p, spec, **options)
        if p.is_dir():
            return from_folder(p, spec, **options)
        if p.suffix.lower() in _CALIB_VIDEO_SUFFIXES:
            return from_video(p, spec, every=args.every, **options)
        raise ConfigError(f"{path}: expected a folder of images, a video file ({', '.join(_CALIB_VIDEO_SUFFIXES)}), "
                          "or captures (a capture folder or pack)")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        calib = open_source(args.source)
        against = profile if profile is not None else open_source(args.against) if args.against else None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    result = check(calib, against=against, spec=spec)
    print(result)
    return 0 if result.ok else 1


def _bundle_profile(path: str) -> tuple[Any, dict[str, Any]] | None:
    """(the bundle's InputSpec, its recorded input profile) when ``path`` is a bundle folder or install root."""
    p = Path(path)
    if not (p / "manifest.json").is_file() and not (p / "current").exists():
        return None
    from .bundle import open_bundle

    bundle = open_bundle(p)
    profile = bundle.manifest.calibration_profile
    if not profile or not profile.get("input"):
        raise ConfigError(f"{path} records no calibration profile (built before edgeship kept one); compare with "
                          "its calibration images instead: --against FOLDER")
    return bundle.spec, profile["input"]
