"""The on-disk cache of ``tune`` trials: content-hash keys, JSON trial records, compiled bundles.

Layout::

    cache_dir/
      trials/<trial key>.json            one measured (or deterministically failed) trial, written atomically
      bundles/<compile key>.edgeship/    the compiled bundle that trials of one compile key share

A compile key hashes everything that decides the compiled bundle (model state, calibration content,
recipe, target, precision, input spec, edgeship and backend versions); a trial key adds what decides
the measurement (runtime options, validation content, metric, runs). Records are JSON, never pickle,
so a cache copied from another machine is only ever parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._files import write_json_atomic
from ..bundle.folder import MANIFEST, Bundle, sha256_file
from ..errors import BundleIntegrityError, ConfigError

CACHE_SCHEMA_VERSION = 1

# Distributions whose version can change a compiled artifact or its measurement.
_TOOLCHAIN = ("numpy", "torch", "torch-pruning", "onnx", "nncf", "openvino", "onnxruntime", "onnxruntime-gpu",
              "tensorrt")


def digest(data: Any) -> str:
    """SHA-256 of ``data`` as canonical JSON (sorted keys): the content hash behind every key."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def toolchain_versions() -> dict[str, str | None]:
    """Installed versions of edgeship and the libraries that compile and run artifacts (None: absent)."""
    from .._version import __version__

    versions: dict[str, str | None] = {"edgeship": __version__}
    for name in _TOOLCHAIN:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def callable_identity(fn: Callable[..., Any]) -> str:
    """A stable name for a user callable (a metric): module and qualified name, and a partial's arguments."""
    import functools

    if isinstance(fn, functools.partial):
        return f"partial({callable_identity(fn.func)}, {fn.args!r}, {sorted(fn.keywords.items())!r})"
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"


class TrialCache:
    """Trial records and compiled bundles under one folder; every write is atomic, so an interrupted
    sweep leaves only finished trials behind and a re-run resumes from them."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"cache_dir {self.root} exists and is not a folder")
        (self.root / "trials").mkdir(parents=True, exist_ok=True)
        (self.root / "bundles").mkdir(parents=True, exist_ok=True)

    def trial_path(self, key: str) -> Path:
        return self.root / "trials" / f"{key}.json"

    def bundle_path(self, compile_key: str) -> Path:
        return self.root / "bundles" / f"{compile_key}.edgeship"

    # -- bundles --------------------------------------------------------------------------------
    def has_bundle(self, compile_key: str) -> bool:
        """Whether a complete bundle for ``compile_key`` is on disk (its manifest parses and checks)."""
        path = self.bundle_path(compile_key)
        if not (path / MANIFEST).is_file():
            return False
        try:
            Bundle.open(path)
        except BundleIntegrityError:
            return False
        return True

    def clear_bundle(self, compile_key: str) -> None:
        """Remove an incomplete or damaged bundle folder, so that a compile can write the key afresh."""
        path = self.bundle_path(compile_key)
        if path.exists():
            shutil.rmtree(path)

    def store_bundle_archive(self, compile_key: str, data: bytes, sha256: str) -> Path:
        """Unpack a bundle archive that travelled as bytes: its SHA-256 first, then every file's (``unpack``)."""
        from ..bundle.archive import unpack

        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise BundleIntegrityError(f"the bundle archive for {compile_key[:16]} arrived with SHA-256 "
                                       f"{actual[:16]}…, the worker sent {sha256[:16]}…; refusing it")
        dest = self.bundle_path(compile_key)
        with tempfile.TemporaryDirectory(prefix=".incoming-", dir=self.root) as tmp:
            archive = Path(tmp) / "bundle.tar"
            archive.write_bytes(data)
            staged = unpack(archive, Path(tmp) / "bundle.edgeship")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staged.path, dest)
        return dest

    # -- trial records --------------------------------------------------------------------------
    def load(self, key: str) -> dict[str, Any] | None:
        """The finished trial stored under ``key``, or None when absent, unreadable or its bundle is gone."""
        path = self.trial_path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None  # a damaged record is measured again and overwritten
        if not isinstance(record, dict) or record.get("schema_version") != CACHE_SCHEMA_VERSION or record.get("key") != key:
            return None
        if record.get("status") == "ok":
            bundle = self.bundle_path(record.get("compile_key", ""))
            manifest = bundle / MANIFEST
            if not manifest.is_file() or sha256_file(manifest) != record.get("manifest_sha256"):
                return None  # the bundle it measured was removed or replaced: measure again
        return record

    def store(self, key: str, record: dict[str, Any]) -> Path:
        """Write a trial record atomically."""
        path = self.trial_path(key)
        write_json_atomic(path, {"schema_version": CACHE_SCHEMA_VERSION, "key": key, **record})
        return path
