"""The bundle manifest, owned here: ``manifest.json`` parsed and validated once (types included) into a
:class:`Manifest` with typed accessors, and :func:`write_manifest`, the one function that writes it.

Every reader takes a :class:`Manifest` (``Bundle.manifest``); a change to a bundle's manifest (release, labels)
is a new document written with :func:`manifest_bytes` / :func:`write_manifest`, never an edit in place.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from .._files import write_atomic
from ..errors import BundleIntegrityError

SCHEMA_VERSION = 1
MAX_MANIFEST_BYTES = 8 << 20  # manifests are a few KB to a few hundred KB (tune and accuracy records)
MANIFEST = "manifest.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Manifest(dict):
    """A validated manifest: a read-only dict (``json.dumps`` writes it as it was read) with typed accessors.

    Build one with :func:`parse_manifest` (bytes from disk) or ``Manifest(doc)`` (a document being written);
    both validate. :meth:`to_dict` gives an editable deep copy.
    """

    def __init__(self, doc: Mapping[str, Any], where: Path | str = MANIFEST) -> None:
        _check(doc, Path(where))
        super().__init__(doc)

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a Manifest is read-only: edit manifest.to_dict() and write it with write_manifest")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> tuple:  # pickled (worker processes, Ray) as the document, validated again
        return (Manifest, (dict(self),))

    def __deepcopy__(self, memo: dict) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def to_dict(self) -> dict[str, Any]:
        """An editable deep copy of the document."""
        return copy.deepcopy(dict(self))

    # -- typed accessors ------------------------------------------------------------------------
    @property
    def input_spec(self) -> dict[str, Any]:
        return self["input_spec"]

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """One entry per (target, precision): ``target``, ``precision``, ``dir``, ``files`` (path -> SHA-256),
        ``backend_versions``, ``options``; in the order they were compiled."""
        return list(self["artifacts"])

    @property
    def source_file(self) -> str:
        return self["source"]["file"]

    @property
    def source_files(self) -> dict[str, str]:
        """Hashed files beside the artifacts (the FP32 ONNX, anchors, self-test data): path -> SHA-256."""
        return dict(self["source"]["files"])

    @property
    def task(self) -> str:
        return self.get("task") or "classification"

    @property
    def detection(self) -> dict[str, Any] | None:
        return self.get("detection")

    @property
    def selftest(self) -> dict[str, Any] | None:
        return self.get("selftest")

    @property
    def labels(self) -> list[str] | None:
        return self.get("labels")

    @property
    def postprocess(self) -> dict[str, Any] | None:
        return self.get("postprocess")

    @property
    def model(self) -> str | None:
        return self.get("model")

    @property
    def source_fingerprint(self) -> str:
        """SHA-256 of the unpruned source model (weights or ONNX): variants of one model share it; "" if unknown."""
        return self.get("source_fingerprint") or ""

    @property
    def pruning(self) -> dict[str, Any]:
        """How the model was pruned (``ratio``, ``macs_ratio``, ``search``, ...); {} when it was not."""
        return dict(self.get("pruning") or {})

    @property
    def qat(self) -> dict[str, Any]:
        """Quantization-aware training (config, fake-quant error, per target whether INT8 came from it); {} if none."""
        return dict(self.get("qat") or {})

    @property
    def complexity(self) -> dict[str, Any]:
        """``params`` and ``macs`` of the exported model; {} when they were not counted."""
        return dict(self.get("complexity") or {})

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The calibration set's summary (count, source, selection, seed, ``sha256``); None without INT8."""
        return self.get("calibration")

    @property
    def calibration_profile(self) -> dict[str, Any] | None:
        """What the device's monitor compares with: ``{"input": per-channel statistics, "output": a classifier's
        confidence histogram and class mix, or None}`` of the calibration set; None in bundles without one."""
        calibration = self.get("calibration") or {}
        return calibration.get("profile")

    @property
    def release(self) -> tuple[str, int] | None:
        """(model name, release number) set by ``pack --release``; None when unnumbered (:func:`release_of`)."""
        return release_of(self)


def release_of(doc: Mapping[str, Any]) -> tuple[str, int] | None:
    """(model name, release number) recorded by ``set_release`` in a manifest document, None when it has none;
    BundleIntegrityError for a release of the wrong shape."""
    release = doc.get("release")
    if not isinstance(release, dict):
        return None
    model, number = release.get("model"), release.get("number")
    if not isinstance(model, str) or isinstance(number, bool) or not isinstance(number, int):
        raise BundleIntegrityError(f"the manifest's release must be {{model: name, number: int}}, got {release!r:.100}")
    return model, number


def parse_manifest(data: bytes, where: Path) -> Manifest:
    """``manifest.json`` bytes -> a validated :class:`Manifest`; BundleIntegrityError saying what is wrong."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleIntegrityError(f"{where} is over {MAX_MANIFEST_BYTES} bytes; a manifest is at most "
                                   f"{MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleIntegrityError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BundleIntegrityError(f"{where} is JSON nested too deeply to be a manifest") from None
    return Manifest(doc, where)


def manifest_bytes(doc: Mapping[str, Any]) -> bytes:
    """The bytes a manifest is written as (and signed over): validated, indented JSON, a final newline."""
    Manifest(doc)
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def write_manifest(root: Path, doc: Mapping[str, Any]) -> bytes:
    """Validate ``doc`` and write it as ``root/manifest.json`` (atomically); returns the bytes written."""
    data = manifest_bytes(doc)
    write_atomic(Path(root) / MANIFEST, data)
    return data


def _check(manifest: Any, where: Path) -> None:
    """BundleIntegrityError unless ``manifest`` has every field a bundle needs, of the right types."""
    if not isinstance(manifest, dict):
        raise BundleIntegrityError(f"{where} must hold a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleIntegrityError(
            f"{where} has schema_version {version!r}; this edgeship reads schema_version {SCHEMA_VERSION}"
        )
    for key in ("input_spec", "source", "artifacts"):
        if key not in manifest:
            raise BundleIntegrityError(f"{where} lacks '{key}'")
    entries = manifest["artifacts"]
    if not isinstance(entries, list) or not entries:
        raise BundleIntegrityError(f"{where} lists no artifacts")
    if not isinstance(manifest["input_spec"], dict):
        raise BundleIntegrityError(f"{where}: input_spec must be an object, got {manifest['input_spec']!r:.100}")
    for entry in [manifest["source"], *entries]:
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            raise BundleIntegrityError(f"{where} has a malformed entry: {entry!r:.200}")
        for rel, digest in entry["files"].items():
            check_relative(rel, where)
            if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
                raise BundleIntegrityError(f"{where}: the SHA-256 of {rel!r} must be 64 hex digits, got {digest!r:.80}")
        if "options" in entry and not isinstance(entry["options"], dict):
            raise BundleIntegrityError(f"{where}: artifact options must be an object, got {entry['options']!r:.80}")
    source = manifest["source"]
    if not isinstance(source.get("file"), str):
        raise BundleIntegrityError(f"{where}: source.file must be a file name, got {source.get('file')!r}")
    check_relative(source["file"], where)
    if source["file"] not in source["files"]:
        raise BundleIntegrityError(f"{where}: source.file {source['file']!r} is not among the hashed source.files")
    _check_selftest(manifest.get("selftest"), source["files"], where)
    for key in ("pruning", "qat", "complexity", "calibration"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise BundleIntegrityError(f"{where}: '{key}' must be an object or null, got {manifest[key]!r:.80}")
    if not isinstance(manifest.get("source_fingerprint", ""), (str, type(None))):
        raise BundleIntegrityError(f"{where}: source_fingerprint must be a string, got "
                                   f"{manifest['source_fingerprint']!r:.80}")
    complexity = manifest.get("complexity") or {}
    for key in ("params", "macs"):
        if key in complexity and not (isinstance(complexity[key], int) and not isinstance(complexity[key], bool)):
            raise BundleIntegrityError(f"{where}: complexity.{key} must be an integer, got {complexity[key]!r:.80}")
    for entry in entries:
        for key in ("target", "precision", "dir"):
            if not isinstance(entry.get(key), str):
                raise BundleIntegrityError(f"{where} has an artifact without '{key}'")
        check_relative(entry["dir"], where)
        for rel in entry["files"]:
            if not PurePosixPath(rel).is_relative_to(PurePosixPath(entry["dir"])):
                raise BundleIntegrityError(f"{where}: artifact file {rel!r} is not inside its folder {entry['dir']!r}")


def _check_selftest(section: Any, hashed: dict[str, Any], where: Path) -> None:
    """The self-test section names only files that are hashed among ``source.files`` (absent in older bundles)."""
    if section is None or (isinstance(section, dict) and set(section) == {"skipped"}):
        return
    if not isinstance(section, dict) or not isinstance(section.get("inputs"), str) \
            or not isinstance(section.get("references"), list) or not isinstance(section.get("outputs"), list):
        raise BundleIntegrityError(f"{where} has a malformed selftest entry: {section!r:.200}")
    files = [section["inputs"], *section["references"]] + ([section["counts"]] if section.get("counts") else [])
    for rel in files:
        if not isinstance(rel, str):
            raise BundleIntegrityError(f"{where}: selftest names {rel!r}, not a file name")
        check_relative(rel, where)
        if rel not in hashed:
            raise BundleIntegrityError(f"{where}: selftest file {rel!r} is not among the hashed source.files")


def check_relative(rel: str, where: Path) -> None:
    """BundleIntegrityError unless ``rel`` names a file inside the bundle (relative, no '..', POSIX)."""
    p = PurePosixPath(rel)
    if not isinstance(rel, str) or p.is_absolute() or ".." in p.parts or "\\" in rel or not rel:
        raise BundleIntegrityError(f"{where} names a file outside the bundle: {rel!r}")
