"""The bundle: a folder with ``manifest.json``, the FP32 ONNX source and one artifact per (target, precision).

Layout::

    model.edgeship/
      manifest.json
      model.onnx                        FP32 reference graph
      openvino-cpu/int8/model.xml|bin
      onnxruntime-cpu/int8/model.onnx
      selftest/inputs.npy               golden inputs; reference_<i>.npy: the FP32 graph's outputs on them

Loading verifies before it trusts: the schema version is known, every path stays inside the bundle
and the SHA-256 of every file of the chosen artifact matches the manifest. Writing is atomic: files
go to a temporary folder beside the destination, which is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ..errors import BundleIntegrityError, ConfigError, UnknownTargetError
from ..spec import InputSpec
from .manifest import MANIFEST, MAX_MANIFEST_BYTES, Manifest, parse_manifest

SOURCE_ONNX = "model.onnx"
CURRENT = "current"  # in an install root, the link to the version that serves


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Bundle:
    """A compiled model on disk. Open with :func:`edgeship.open_bundle` or get one from ``compress``."""

    def __init__(self, path: str | os.PathLike, manifest: Manifest) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.spec = InputSpec.from_dict(manifest.input_spec)

    #: fingerprint of the key whose signature was verified when the bundle was opened; None if none was checked
    signed_by: str | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, public_key: Any = None) -> "Bundle":
        """Read and check the manifest (file hashes are checked when an artifact is loaded).

        ``path`` may also be an install root (see :mod:`edgeship.device.deploy`): its ``current`` version is opened.
        With ``public_key`` (a PEM path, PEM bytes or a key) the manifest's Ed25519 signature is verified
        before anything in it is trusted. ``$EDGESHIP_PUBLIC_KEY`` is consulted by :func:`load`, not here,
        so build-time steps (compress, benchmark) open unsigned bundles on a machine that sets it.
        """
        root = resolve_install_root(Path(path))
        if not root.is_dir():
            raise BundleIntegrityError(f"no bundle at {root}: expected a folder holding {MANIFEST}")
        try:
            with open(root / MANIFEST, "rb") as fh:  # at most one byte past the cap: parse_manifest refuses it
                data = fh.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            raise BundleIntegrityError(f"{root} has no {MANIFEST}; it is not an edgeship bundle") from None
        signed_by = None
        if public_key is not None and public_key is not False:  # verify the very bytes that are parsed below
            from .signing import SIGNATURE_FILE, verify_manifest

            sig_path = root / SIGNATURE_FILE
            signed_by = verify_manifest(data, sig_path.read_bytes() if sig_path.is_file() else None, public_key,
                                        where=f"bundle {root}")
        manifest = parse_manifest(data, root / MANIFEST)
        try:
            bundle = cls(root, manifest)
        except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise BundleIntegrityError(f"{root / MANIFEST} holds an invalid input spec: "
                                       f"{type(exc).__name__}: {exc}") from None
        bundle.signed_by = signed_by
        return bundle

    # -- what is inside -------------------------------------------------------------------
    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return list(self.manifest.artifacts)

    @property
    def variants(self) -> list[tuple[str, str]]:
        """(target, precision) pairs, in the order they were compiled."""
        return [(a["target"], a["precision"]) for a in self.manifest.artifacts]

    @property
    def source_onnx(self) -> Path:
        return self.path / self.manifest.source_file

    def artifact(self, target: str | None = None, precision: str | None = None) -> dict[str, Any]:
        """The manifest entry for (target, precision); None picks the best available here / the first compiled."""
        from ..targets import PREFERENCE, get_target_class

        entries = self.manifest.artifacts
        if target is None:
            present = [a["target"] for a in entries]
            order = [t for t in PREFERENCE if t in present] + [t for t in dict.fromkeys(present) if t not in PREFERENCE]
            reasons = {}
            for name in order:  # the first available in preference order; later backends are not imported
                try:
                    ok, info = get_target_class(name).availability()
                except UnknownTargetError:
                    ok, info = False, "not registered in this edgeship"
                if ok:
                    target = name
                    break
                reasons[name] = info
            else:
                raise UnknownTargetError(f"none of this bundle's targets is available here: {reasons}")
        matches = [a for a in entries if a["target"] == target and (precision is None or a["precision"] == precision)]
        if not matches:
            raise UnknownTargetError(f"bundle {self.path} has no artifact for target={target!r} precision={precision!r}; "
                                     f"it has {self.variants}")
        return matches[0]

    def verify(self, entry: dict[str, Any] | None = None) -> None:
        """Check the SHA-256 of every file of ``entry`` (default: every file in the bundle)."""
        entries = [entry] if entry is not None else self.manifest.artifacts
        files = dict(self.manifest.source_files) if entry is None else {}
        for e in entries:
            files.update(e["files"])
        for rel, expected in files.items():
            self._check_digest(rel, sha256_file(self._listed_file(rel)), expected)

    def read_verified(self, entry: dict[str, Any]) -> dict[str, bytes]:
        """The bytes of every file of artifact ``entry`` (bundle-relative name -> bytes), each checked against
        its manifest SHA-256: what was hashed is what the backend gets, with no second read by path."""
        contents = {}
        for rel, expected in entry["files"].items():
            data = self._listed_file(rel).read_bytes()
            self._check_digest(rel, hashlib.sha256(data).hexdigest(), expected)
            contents[rel] = data
        return contents

    def _listed_file(self, rel: str) -> Path:
        """The plain file a manifest lists, inside the bundle and present, else BundleIntegrityError."""
        _check_inside(self.path, rel)
        path = self.path / rel
        if not path.is_file():
            raise BundleIntegrityError(f"bundle {self.path} is missing {rel}, listed in its manifest")
        return path

    def _check_digest(self, rel: str, actual: str, expected: str) -> None:
        if actual != expected:
            raise BundleIntegrityError(
                f"{rel} in bundle {self.path} was modified: SHA-256 {actual[:16]}…, manifest says {expected[:16]}…; "
                "refusing to load it"
            )

    def load(self, target: str | None = None, precision: str | None = None, **options: Any):
        """Verify and load one artifact into a Runtime (options go to the target, e.g. ``threads``): the
        backend is given the bytes that were hashed."""
        entry = self.artifact(target, precision)
        return load_entry(self.path, entry, self.spec, contents=self.read_verified(entry), **options)

    def verify_outputs(self, target: str | None = None, precision: str | None = None, threads: int | None = None):
        """Run the bundle's self-test here: every artifact (of ``target`` / ``precision``) whose target is
        available runs the golden inputs and is held to the tolerance recorded at build; the p50 latency is
        measured too. Artifacts that cannot run here, and bundles without a self-test, come back skipped.

        Returns:
            list[edgeship.bundle.selftest.SelfTestResult], one per artifact (``.passed``, ``.status``, ``.reason``).
        """
        from .selftest import verify_bundle  # back-edge: the self-test reads bundles; this method only hands off to it

        return verify_bundle(self, target, precision, **({"threads": threads} if threads else {}))

    def size_bytes(self, entry: dict[str, Any]) -> int:
        return sum((self.path / f).stat().st_size for f in entry["files"])

    def __repr__(self) -> str:
        return f"<Bundle {self.path} {self.variants}>"


def load_entry(root: Path, entry: dict[str, Any], spec: InputSpec, contents: dict[str, bytes] | None = None,
               **options: Any):
    """Load the artifact of manifest ``entry`` whose bundle folder is ``root`` (hashes are the caller's to check:
    ``contents``, bundle-relative name -> bytes, from :meth:`Bundle.read_verified`, is what the backend loads)."""
    from ..targets import Artifact, get_target

    backend = get_target(entry["target"])
    relative = {f: str(PurePosixPath(f).relative_to(entry["dir"])) for f in entry["files"]}
    artifact = Artifact(
        target=entry["target"],
        precision=entry["precision"],
        files=list(relative.values()),
        backend_versions=entry.get("backend_versions", {}),
        options=entry.get("options", {}),
        contents={relative[f]: data for f, data in (contents or {}).items()},
    )
    return backend.load(Path(root) / entry["dir"], artifact, spec, **options)


def resolve_install_root(path: Path) -> Path:
    """An install root (a folder with a ``current`` link and no manifest) -> the real folder of its current version."""
    current = path / CURRENT
    if not (path / MANIFEST).exists() and current.is_symlink():
        target = Path(os.path.realpath(current))
        if not target.is_dir():
            raise BundleIntegrityError(f"install root {path}: '{CURRENT}' points to {os.readlink(current)}, "
                                       "which is not a bundle folder")
        return target
    return path


def _check_inside(root: Path, rel: str) -> None:
    """``root / rel`` is a plain file reached without symlinks and resolving inside ``root``: a link in a
    bundle folder would make the hash check read one file and the backend another, or leave the bundle."""
    path = root
    for part in PurePosixPath(rel).parts:
        path = path / part
        if path.is_symlink():
            raise BundleIntegrityError(f"bundle {root}: {rel} goes through the symlink {path.relative_to(root)}; "
                                       "bundles hold plain files only")
    if path.exists() and not path.resolve().is_relative_to(root.resolve()):
        raise BundleIntegrityError(f"bundle {root}: {rel} resolves outside the bundle")


@contextlib.contextmanager
def atomic_folder(output: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``output``; rename it to ``output`` only if the block succeeds.

    An existing bundle at ``output`` is replaced; any other existing path is refused.
    """
    output = Path(output)
    if output.exists() and not (output / MANIFEST).is_file():
        raise ConfigError(f"{output} exists and is not an edgeship bundle; refusing to overwrite it")
    created = [p for p in [output.parent, *output.parent.parents] if not p.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    ok = False
    try:
        yield tmp
        if output.exists():
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.replace(output, old)
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
        ok = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:  # leave no folder behind that this write created
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()



def open_bundle(path: str | os.PathLike, public_key: Any = None) -> Bundle:
    """Open a bundle folder (or an install root's current version) and check its manifest."""
    return Bundle.open(path, public_key=public_key)
