"""The verb ``compress``: export -> quantize -> compile for each target -> bundle."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from ._progress import progress
from .bundle import SCHEMA_VERSION, SOURCE_ONNX, Bundle, atomic_folder, sha256_file, write_manifest
from .errors import ConfigError
from .export import export_onnx
from .recipe import Recipe
from .spec import InputSpec

DEFAULT_TARGETS = ("openvino-cpu", "onnxruntime-cpu")


def compress(
    model: Any,
    *,
    input_spec: InputSpec,
    output: str | os.PathLike,
    calibration: Any = None,
    targets: Sequence[str] = DEFAULT_TARGETS,
    precision: str | Sequence[str] = "int8",
    recipe: Recipe | None = None,
    preprocess_calibration: bool = False,
    show_progress: bool = True,
) -> Bundle:
    """Compile ``model`` for every target and precision into one verified bundle at ``output``.

    Args:
        model: a ``torch.nn.Module`` in eval mode, or a path to an ``.onnx`` file.
        input_spec: the model input (dynamic dims as None) and its preprocessing.
        output: the bundle folder to write (atomically; an existing bundle there is replaced).
        calibration: samples for INT8 — an array (N, ...), a torch Dataset/DataLoader, or an
            iterable of arrays; required when ``precision`` includes "int8".
        targets: registered target names (see ``edgeship.list_targets()``).
        precision: "fp32", "fp16", "int8", or several of them.
        recipe: calibration subset size and seed (defaults: 300, 0).
        preprocess_calibration: the calibration data are raw images; apply the spec's preprocessing.
    Returns:
        The written :class:`Bundle`.
    """
    from .calibration import collect
    from .targets import get_target

    recipe = recipe or Recipe()
    precisions = [precision] if isinstance(precision, str) else list(precision)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not precisions or not targets:
        raise ConfigError("compress needs at least one target and one precision")
    if not isinstance(input_spec, InputSpec):
        raise ConfigError(f"input_spec must be an edgeship.InputSpec, got {type(input_spec).__name__}")
    backends = {name: get_target(name) for name in targets}  # unknown / missing backends fail before any work
    for name, backend in backends.items():
        for p in precisions:
            if p not in backend.precisions:
                raise ConfigError(f"target '{name}' supports precisions {backend.precisions}, got '{p}'")
    calib = None
    if "int8" in precisions:
        if calibration is None:
            raise ConfigError("precision 'int8' needs calibration data (an array, a torch Dataset/DataLoader or an iterable)")
        calib = collect(calibration, input_spec, size=recipe.calibration_size, seed=recipe.seed,
                        preprocess=preprocess_calibration)

    output = Path(output)
    steps = 1 + len(targets) * len(precisions)
    with atomic_folder(output) as tmp, progress(show_progress) as bar:
        task = bar.add_task(f"export {type(model).__name__ if not isinstance(model, (str, Path)) else Path(model).name}",
                            total=steps)
        spec = export_onnx(model, input_spec, tmp / SOURCE_ONNX)
        bar.advance(task)
        entries = []
        for name, backend in backends.items():
            for p in precisions:
                bar.update(task, description=f"compile {name} {p}")
                rel_dir = Path(name) / p
                artifact = backend.compile(tmp / SOURCE_ONNX, tmp / rel_dir, spec, p, calib)
                files = {(rel_dir / f).as_posix(): sha256_file(tmp / rel_dir / f) for f in artifact.files}
                entries.append({
                    "target": name,
                    "precision": p,
                    "dir": rel_dir.as_posix(),
                    "files": files,
                    "backend_versions": artifact.backend_versions,
                    "options": artifact.options,
                })
                bar.advance(task)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgeship_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "build_host": {"machine": platform.machine(), "python": platform.python_version()},
            "model": type(model).__name__ if not isinstance(model, (str, Path)) else str(model),
            "input_spec": spec.to_dict(),
            "source": {"file": SOURCE_ONNX, "files": {SOURCE_ONNX: sha256_file(tmp / SOURCE_ONNX)}},
            "recipe": recipe.to_dict(),
            "calibration": calib.summary() if calib is not None else None,
            "artifacts": entries,
        }
        write_manifest(tmp, manifest)
    return Bundle.open(output)
