"""Command-line text -> Python values for the ``edgeship`` commands: shapes, arrays, models, recipes, options."""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError


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
    from ._arrays import load_xy

    return load_xy(path, what)


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

    from .build.prune import Prune
    from .build.recipe import Recipe

    recipe = Recipe.from_toml(args.recipe) if args.recipe else Recipe()
    recipe = dataclasses.replace(
        recipe,
        calibration_size=args.calibration_size if args.calibration_size is not None else recipe.calibration_size,
        seed=args.seed if args.seed is not None else recipe.seed,
    )
    if getattr(args, "cpus", None):
        recipe = dataclasses.replace(recipe, cpus=tuple(c.strip() for c in args.cpus.split(",")))
    if getattr(args, "calibration_method", None):
        recipe = dataclasses.replace(recipe, calibration_method=args.calibration_method)
    if args.max_drop is not None:
        recipe = dataclasses.replace(recipe, max_drop=args.max_drop)
    if args.metric is not None:
        recipe = dataclasses.replace(recipe, metric=args.metric)
    if getattr(args, "qat", None) is not None:
        from .build.qat import QAT

        base = recipe.qat.to_dict() if recipe.qat is not None else {}
        recipe = dataclasses.replace(recipe, qat=QAT(**{**base, "epochs": args.qat}))
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


def _option_value(text: str) -> Any:
    """A runtime option value from the command line: an int, a bool, or the text itself."""
    if text.lstrip("-").isdigit():
        return int(text)
    return {"true": True, "false": False}.get(text.lower(), text)


def _runtime_options(items: Sequence[str] | None) -> dict[str, dict[str, list[Any]]]:
    """``--option TARGET:NAME=V1,V2`` (repeatable) -> {target: {name: [values]}}."""
    out: dict[str, dict[str, list[Any]]] = {}
    for item in items or ():
        target, sep, rest = item.partition(":")
        name, eq, values = rest.partition("=")
        if not (sep and eq and target and name and values):
            raise ConfigError(f"--option {item!r}: expected TARGET:NAME=VALUE[,VALUE...], "
                              "e.g. openvino-cpu:inference_precision=f32,bf16")
        out.setdefault(target, {})[name] = [_option_value(v) for v in values.split(",")]
    return out


def _metric(text: str):
    """'top1' / 'top5', or 'package.module:function' -> that callable ``f(predictions, labels) -> float``."""
    if ":" not in text:
        return text
    import importlib

    module_name, _, attr = text.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import metric {text!r}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"metric {text!r} is not callable")
    return fn


def _single_options(items: Sequence[str] | None) -> dict[str, dict[str, Any]] | None:
    """``bench``'s runtime options: one value per option."""
    parsed = _runtime_options(items)
    several = [f"{t}:{k}" for t, opts in parsed.items() for k, v in opts.items() if len(v) != 1]
    if several:
        raise ConfigError(f"bench measures one value per runtime option; {several} got several (tune sweeps them)")
    return {t: {k: v[0] for k, v in opts.items()} for t, opts in parsed.items()} or None


def _option_product(parsed: dict[str, dict[str, list[Any]]]) -> dict[str, tuple[dict[str, Any], ...]]:
    """{target: {name: values}} -> {target: every combination of the values}, for the search space."""
    import itertools

    return {target: tuple(dict(zip(opts, combo)) for combo in itertools.product(*opts.values()))
            for target, opts in parsed.items()}


def _calibration_data(path: str, spec: Any, size: int, raw: bool) -> Any:
    """``--calib``: a device's captures (folder or pack) or a folder of images — decoded and preprocessed as the
    spec says — else an .npy / .npz array."""
    from pathlib import Path

    from .calibration import from_captures, from_folder, is_captures

    if is_captures(path):
        _no_raw(raw, path)
        return from_captures(path, spec, size=size)
    if Path(path).is_dir():
        _no_raw(raw, path)
        return from_folder(path, spec, size=size)
    return _load_array_file(path, "calibration")[0]


def _validation_data(path: str, spec: Any, raw: bool, flag: str = "--val") -> tuple[np.ndarray, np.ndarray]:
    """``--val``: the labelled captures of a folder or pack (preprocessed as the spec says), else an .npz with 'x'
    and 'y'."""
    from .calibration import captures_validation, is_captures

    if is_captures(path):
        _no_raw(raw, path)
        return captures_validation(path, spec)
    x, y = _load_array_file(path, "validation")
    if y is None:
        raise ConfigError(f"{flag} {path} must be an .npz holding inputs 'x' and labels 'y' (or labelled captures)")
    return x, y


def _no_raw(raw: bool, path: str) -> None:
    if raw:
        raise ConfigError(f"{path} holds images that edgeship decodes and preprocesses itself; --raw-calib is for raw "
                          "arrays (it would preprocess them twice): drop it, and give raw arrays as .npy/.npz only")
