"""The bundle: a compiled model on disk and everything that travels with it.

``folder`` (Bundle: the manifest, hashed files, loading an artifact into a Runtime), ``signing`` (Ed25519 over
the manifest), ``archive`` (pack / unpack with limits), ``selftest`` (golden inputs recorded at build and
checked on the device). Above targets, calibration and tasks; below build, which writes bundles, and the
device side, which installs and serves them.
"""

from __future__ import annotations

from .folder import CURRENT, SOURCE_ONNX, Bundle, load_entry, open_bundle, sha256_file
from .manifest import MANIFEST, SCHEMA_VERSION, Manifest, write_manifest

__all__ = ["CURRENT", "MANIFEST", "SCHEMA_VERSION", "SOURCE_ONNX", "Bundle", "Manifest", "load_entry", "open_bundle",
           "sha256_file", "write_manifest"]
