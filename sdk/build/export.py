"""Step 'export': a torch model (or an ONNX file) -> a checked FP32 ONNX file."""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import is_installed, require
from ..errors import CompileError, ConfigError
from ..spec import InputSpec

OPSET = 17


def is_onnx_path(model: Any) -> bool:
    return isinstance(model, (str, Path)) and str(model).lower().endswith(".onnx")


def export_onnx(model: Any, spec: InputSpec, path: Path, opset: int = OPSET,
                output_names: list[str] | None = None, check_parity: bool = True) -> InputSpec:
    """Write ``model`` as a checked FP32 ONNX file at ``path``; return the spec it was written for.

    ``model`` is an ``nn.Module`` in eval mode (exported with dynamic dims where the spec has
    ``None``, then compared against torch on an example input) or a path to an ``.onnx`` file
    (checked and copied; its single input may be renamed into the spec's default name).
    """
    if is_onnx_path(model):
        return _copy_onnx(Path(model), spec, path)
    torch = require("torch", "exporting a torch model")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module or a path to an .onnx file, got {type(model).__name__}")
    if model.training:
        raise ConfigError("the model is in training mode (dropout/batch-norm would export wrongly); call model.eval() first")
    onnx = require("onnx", "exporting to ONNX")
    example = torch.from_numpy(np.random.default_rng(0).standard_normal(spec.example_shape(1)).astype(spec.dtype))
    try:
        with torch.no_grad():
            expected = model(example)
    except Exception as exc:
        raise ConfigError(f"{type(model).__name__} does not accept the spec's example input "
                          f"{tuple(example.shape)} {spec.dtype}: {type(exc).__name__}: {exc}") from exc
    outputs = _flatten(expected)
    if output_names is None:
        output_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    elif len(output_names) != len(outputs):
        raise ConfigError(f"{len(output_names)} output names given for {len(outputs)} outputs")
    dynamic_axes: dict[str, dict[int, str]] = {}
    in_dims = {i: ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(spec.shape) if d is None}
    if in_dims:
        dynamic_axes[spec.name] = in_dims
        if 0 in in_dims:  # a dynamic batch carries through to every output
            dynamic_axes.update({name: {0: "batch"} for name in output_names})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[spec.name],
                output_names=output_names,
                dynamic_axes=dynamic_axes or None,
                opset_version=opset,
                dynamo=False,  # the TorchScript exporter: it handles detectors the dynamo path cannot
            )
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise CompileError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    if check_parity:  # off for graphs ending in NMS, whose output order is not numerically stable
        _check_parity(path, spec, example.numpy(), [o.detach().numpy() for o in outputs])
    return spec


def _flatten(out: Any) -> list[Any]:
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flatten(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _flatten(item)]
    return [out]


def _copy_onnx(src: Path, spec: InputSpec, path: Path) -> InputSpec:
    onnx = require("onnx", "reading an ONNX model")
    if not src.is_file():
        raise ConfigError(f"ONNX file not found: {src}")
    try:
        model = onnx.load(str(src))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise CompileError(f"{src} is not a valid ONNX model: {exc}") from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in inputs]
    if spec.name not in names:
        if len(names) == 1 and spec.name == "input":
            spec = dataclasses.replace(spec, name=names[0])
        else:
            raise ConfigError(f"InputSpec.name '{spec.name}' is not an input of {src.name}; its inputs are {names}")
    shutil.copyfile(src, path)
    return spec


def _check_parity(path: Path, spec: InputSpec, example: np.ndarray, expected: list[np.ndarray]) -> None:
    """Run the exported graph in ONNX Runtime (when installed) and compare with torch."""
    if not is_installed("onnxruntime"):
        return
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {spec.name: example})
    for i, (g, e) in enumerate(zip(got, expected)):
        if g.shape != e.shape:
            raise CompileError(f"exported ONNX output {i} has shape {g.shape}; torch gave {e.shape}")
        if e.size == 0:  # nothing to compare (e.g. no detection on the example)
            continue
        scale = float(np.abs(e).max()) or 1.0
        err = float(np.abs(g - e).max()) / scale
        if err > 1e-3:
            raise CompileError(f"exported ONNX output {i} differs from torch by {err:.2e} (relative); expected <= 1e-3")
