"""The device install pulls no torch: build the real wheel, read its metadata, follow the installed
dependencies of the device extras."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
COMPRESS_ONLY = {"torch", "torchvision", "nncf", "onnx", "onnxscript", "torch-pruning", "scikit-learn"}
DEVICE_EXTRAS = ("openvino", "onnxruntime")


@pytest.fixture(scope="module")
def wheel_metadata(tmp_path_factory):
    """(METADATA headers, file names) of a wheel built from a copy of the source tree (nothing written here)."""
    src = tmp_path_factory.mktemp("wheel-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("sdk", "targets", "calibration", "benchmarks"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("wheel-dist")
    # the environment's setuptools builds it offline; without one, pip fetches it into an isolated build env
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", *isolation,
                           "--quiet", "-w", str(dist)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("edgeship-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(zf.read(meta_name).decode("utf-8"))
    return metadata, names


def requirements_for(metadata, extra: str) -> set[str]:
    """Names of what ``pip install "edgeship[extra]"`` asks for directly, following edgeship[...] self-references."""
    names: set[str] = set()
    todo, done = [extra], set()
    while todo:
        current = todo.pop()
        done.add(current)
        for line in metadata.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": current}):
                continue
            if canonicalize_name(req.name) == "edgeship":
                todo.extend(e for e in req.extras if e not in done)
            else:
                names.add(canonicalize_name(req.name))
    return names


@pytest.mark.parametrize("extra", DEVICE_EXTRAS)
def test_device_extras_pull_no_torch_or_nncf(wheel_metadata, extra):
    metadata, _ = wheel_metadata
    names = requirements_for(metadata, extra)
    assert extra in names and "cryptography" in names and "numpy" in names
    assert not names & COMPRESS_ONLY, names & COMPRESS_ONLY


def test_extras_say_what_they_install(wheel_metadata):
    metadata, _ = wheel_metadata
    assert {"torch", "nncf", "onnx"} <= requirements_for(metadata, "compress")
    assert "opencv-python-headless" in requirements_for(metadata, "video")
    assert "zstandard" in requirements_for(metadata, "zstd")
    assert {"pillow", "starlette", "uvicorn"} <= requirements_for(metadata, "serve")
    assert requirements_for(metadata, "all") >= requirements_for(metadata, "compress") | {"openvino", "onnxruntime"}


def test_wheel_carries_every_package(wheel_metadata):
    """Every module of the source tree (sdk/ is edgeship/, the other folders its subpackages) is in the wheel,
    the package data too, and nothing under the source folder names."""
    _, names = wheel_metadata
    repo = Path(__file__).resolve().parents[1]
    folders = {"sdk": "edgeship", "targets": "edgeship/targets", "calibration": "edgeship/calibration",
               "benchmarks": "edgeship/benchmarks"}
    expected = [f"{dst}/{f.relative_to(repo / src).as_posix()}" for src, dst in folders.items()
                for f in (repo / src).rglob("*.py") if not (src == "sdk" and f.relative_to(repo / src).parts[0]
                                                            in ("targets", "calibration", "benchmarks"))]
    assert len(expected) > 60
    for module in [*expected, "edgeship/data/digits_cnn.npz", "edgeship/benchmarks/report.html.j2"]:
        assert module in names, module
    assert not [n for n in names if n.startswith(("sdk/", "targets/", "tests/"))]


def installed_closure(roots: set[str]) -> set[str]:
    """Every installed distribution the ``roots`` depend on here, markers evaluated for this interpreter."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


@pytest.mark.parametrize("extra", DEVICE_EXTRAS)
def test_device_extras_dependency_closure_has_no_torch(wheel_metadata, extra):
    """The backends' own dependencies, as installed here, do not bring torch or NNCF in either."""
    closure = installed_closure(requirements_for(wheel_metadata[0], extra))
    assert extra in closure
    assert not closure & COMPRESS_ONLY, closure & COMPRESS_ONLY
