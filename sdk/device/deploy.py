"""Install bundle archives on a device: versions side by side, one atomic ``current`` switch, rollback.

An install root looks like::

    /opt/models/line3/
      current -> versions/line3-v1.4-3f2a9c0d1e2b    the version that serves (a relative symlink)
      versions/line3-v1.4-3f2a9c0d1e2b/               one verified bundle per version
      versions/line3-v1.3-9b1c44e0aa71/
      history.json                                    activation order, last = current; versions installed degraded
      choice.json                                     per version, the variant this device runs and why (a cache)

``install`` extracts and verifies the archive into a temporary folder under ``versions/`` (signature
when a key is given, every SHA-256, no unlisted files), renames it into place, then switches
``current`` by creating a new symlink under a temporary name and renaming it over the old one. Until
that rename the old version serves; a failed or killed install leaves only a ``.incoming-*`` folder,
cleared by the next install. Before anything moves, the extracted bundle runs its self-test here
(:mod:`edgeship.bundle.selftest`) and the fastest artifact that passes is chosen and cached in ``choice.json``;
when none passes the version is refused (``allow_degraded=True`` installs it anyway and records it in
``history.json``). ``edgeship.load(root)`` follows ``current`` and runs the cached choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from .._files import fsync_dir, write_atomic
from ..bundle.archive import ArchiveLimits, extracted
from ..bundle.folder import CURRENT, Bundle
from ..bundle.manifest import MANIFEST, manifest_bytes, release_of
from ..bundle.signing import SIGNATURE_FILE, configured_public_key, sign_manifest
from ..errors import BundleIntegrityError, ConfigError, SelfTestError
from ..tasks.postprocess import Postprocess

__all__ = ["Installed", "current", "degraded", "history", "install", "rollback", "set_postprocess"]

VERSIONS = "versions"
HISTORY = "history.json"
_LOCK = ".lock"
_ARCHIVE_SUFFIXES = (".edgeship.tar.gz", ".edgeship.tar.zst", ".edgeship.tar", ".tar.gz", ".tar.zst", ".tgz", ".tar")


@dataclass(frozen=True)
class Installed:
    """One installed version: its id (``<name>-<manifest SHA-256 prefix>``), folder, and the key that
    signed it when the signature was checked by this call (``install``), else None; from ``install`` also
    the variant chosen on this device (an :class:`edgeship.bundle.selftest.Choice`) and, when it was installed
    with ``allow_degraded``, why its self-test failed."""

    version: str
    path: Path
    manifest_sha256: str
    signed_by: str | None = field(default=None, compare=False)
    choice: Any = field(default=None, compare=False)
    degraded: str | None = field(default=None, compare=False)


def _version_name(archive: Path, name: str | None) -> str:
    if name is None:
        name = archive.name
        for suffix in _ARCHIVE_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    if not cleaned:
        raise ConfigError(f"cannot make a version name from {name!r}; pass name= with letters, digits, '.', '_' or '-'")
    return cleaned[:64]


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise installs and rollbacks on one root (an advisory lock on ``root/.lock``)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / _LOCK, "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: a byte-range lock on the same file (blocking, retried by msvcrt)
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_history(root: Path) -> list[str]:
    path = root / HISTORY
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["history"]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ValueError("history must be a list of version names")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleIntegrityError(f"{path} is corrupt ({exc}); expected {{\"history\": [version, ...]}}") from None
    return entries


def _read_degraded(root: Path) -> dict[str, str]:
    """{version: why its self-test failed} for versions installed with ``allow_degraded`` (history.json)."""
    try:
        marks = json.loads((root / HISTORY).read_text(encoding="utf-8")).get("degraded", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in marks.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(marks, dict) else {}


def _write_history(root: Path, entries: Sequence[str], degraded: dict[str, str] | None = None) -> None:
    """Write the activation order; the degraded marks (default: the ones recorded) are kept for listed versions."""
    marks = _read_degraded(root) if degraded is None else degraded
    doc: dict[str, Any] = {"history": list(entries)}
    marks = {v: why for v, why in marks.items() if v in entries}
    if marks:
        doc["degraded"] = marks
    write_atomic(root / HISTORY, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def _current_version(root: Path) -> str | None:
    link = root / CURRENT
    if not link.is_symlink():
        if link.exists():
            raise ConfigError(f"{link} exists and is not a symlink; {root} is not an edgeship install root")
        return None
    return Path(os.readlink(link)).name


def _switch(root: Path, version: str) -> None:
    """Point ``current`` at ``versions/<version>`` atomically: new link under a temp name, renamed over."""
    tmp = root / f".{CURRENT}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(f"{VERSIONS}/{version}", tmp)
    os.replace(tmp, root / CURRENT)
    fsync_dir(root)


def _describe(root: Path, version: str) -> Installed:
    path = root / VERSIONS / version
    return Installed(version=version, path=path,
                     manifest_sha256=hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest(),
                     signed_by=None)


def install(archive: str | os.PathLike, into: str | os.PathLike, *, public_key: Any = None, keep: int = 2,
            name: str | None = None, limits: ArchiveLimits = ArchiveLimits(), allow_degraded: bool = False,
            allow_downgrade: bool = False) -> Installed:
    """Install ``archive`` under ``into`` and make it current; keep ``keep`` previous versions.

    The extracted bundle runs its self-test here first; the fastest artifact that passes is the one this
    device runs (cached in ``choice.json``).

    Args:
        public_key: Ed25519 public key (PEM path or bytes) the archive must be signed with; default
            ``$EDGESHIP_PUBLIC_KEY``; None and no variable set: no signature check.
        keep: how many previous versions stay installed for rollback.
        name: the version's name; default the archive's file name without its suffixes.
        allow_degraded: activate the version even when no artifact passes its self-test here; the reason
            is recorded in ``history.json`` (``degraded``) and serving it is allowed.
        allow_downgrade: install a lower release number (``set_release``) of a model than one installed
            here; by default that is refused (``rollback`` is the way back).
    Raises:
        BundleIntegrityError: unsafe, unsigned (when a key is configured), tampered or corrupt archive;
            the version that was current stays current.
        SelfTestError: no artifact reproduces its golden outputs here (and not ``allow_degraded``); the
            version that was current stays current and nothing of the new one is left.
    """
    if keep < 0:
        raise ConfigError(f"keep must be >= 0, got {keep}")
    archive, root = Path(archive), Path(into)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"install root {root} exists and is not a folder")
    if root.is_dir() and (root / MANIFEST).exists():
        raise ConfigError(f"{root} is a bundle folder; install into a separate folder (it will hold versions/ and current)")
    label = _version_name(archive, name)
    key = configured_public_key(public_key)
    with _locked(root):
        versions = root / VERSIONS
        versions.mkdir(exist_ok=True)
        for stale in versions.glob(".incoming-*"):  # left by an install that was killed
            shutil.rmtree(stale, ignore_errors=True)
        with extracted(archive, versions, public_key=key, limits=limits) as bundle:
            digest = hashlib.sha256((bundle.path / MANIFEST).read_bytes()).hexdigest()
            version = f"{label}-{digest[:12]}"
            signed_by = bundle.signed_by
            if not allow_downgrade:
                _check_not_a_downgrade(bundle, versions, version)
            choice, degraded_reason = _selftest(bundle, version, root, allow_degraded)
            final = versions / version
            existed = final.exists()
            if final.exists():  # the same bundle again: keep the installed copy if it is intact
                try:
                    from ..bundle.archive import verify_folder

                    verify_folder(final, key)
                except BundleIntegrityError:
                    aside = versions / f".old-{version}-{os.getpid()}"
                    os.replace(final, aside)
                    os.replace(bundle.path, final)
                    shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(bundle.path, final)
        fsync_dir(versions)
        before = _read_history(root)
        marks_before = _read_degraded(root)
        entries = [v for v in before if v != version]
        old = _current_version(root)
        if old is not None and old != version and old not in entries:
            entries.append(old)  # an install root from before history.json, or a history lost
        entries.append(version)
        kept = entries[-(keep + 1):]
        marks = dict(marks_before)
        marks.pop(version, None)
        if degraded_reason is not None:
            marks[version] = degraded_reason
        try:  # the history first, then the switch: a failure of either leaves the old version current
            _write_history(root, kept, marks)
            _switch(root, version)
        except BaseException:
            with contextlib.suppress(OSError):
                if (root / HISTORY).exists() or before:
                    _write_history(root, before, marks_before)
            if not existed:
                shutil.rmtree(final, ignore_errors=True)
            for tmp in root.glob(f".{HISTORY}.tmp-*"):
                with contextlib.suppress(OSError):
                    tmp.unlink()
            raise
        from .choice import store_choice  # back-edge: install records the choice it measured

        try:
            store_choice(root, choice, keep=kept)
        except OSError as exc:  # a cache: the next load measures again
            import warnings

            warnings.warn(f"could not cache the device's choice in {root}: {exc}", stacklevel=2)
        for folder in versions.iterdir():
            if folder.name not in kept:
                shutil.rmtree(folder, ignore_errors=True)
    return Installed(version=version, path=final, manifest_sha256=digest, signed_by=signed_by, choice=choice,
                     degraded=degraded_reason)


def _check_not_a_downgrade(bundle: Bundle, versions: Path, version: str) -> None:
    """Refuse a release number lower than one of the same model already installed under ``versions``."""
    incoming = bundle.manifest.release
    if incoming is None:
        return
    model, number = incoming
    for folder in versions.iterdir():
        if folder.name.startswith(".") or folder.name == version or not (folder / MANIFEST).is_file():
            continue
        try:
            installed = release_of(json.loads((folder / MANIFEST).read_text(encoding="utf-8")))
        except (ValueError, BundleIntegrityError):
            continue
        if installed is not None and installed[0] == model and installed[1] > number:
            raise BundleIntegrityError(
                f"{model} release {number} is older than release {installed[1]}, installed as {folder.name}; "
                "refusing a downgrade (edgeship rollback returns to a kept version, install --allow-downgrade "
                "forces it)")


def _selftest(bundle: Bundle, version: str, root: Path, allow_degraded: bool) -> tuple[Any, str | None]:
    """(the variant this device runs, why it is degraded or None) for the extracted ``bundle``; SelfTestError
    when no artifact passes its self-test here, unless ``allow_degraded``."""
    from .choice import choice_key, choose

    choice = choose(bundle, key=choice_key(bundle, version=version))
    if choice.status != "failed":
        return choice, None
    if not allow_degraded:
        old = _current_version(root)
        raise SelfTestError(f"refusing to activate {version}: {choice.reason}. "
                            f"{'The current version stays ' + old if old else 'Nothing was activated'}; "
                            "install with allow_degraded=True (--allow-degraded) to activate it anyway")
    return choice, choice.reason


def rollback(into: str | os.PathLike) -> Installed:
    """Make the version installed before the current one current again; the current one leaves the history."""
    root = Path(into)
    if not (root / CURRENT).is_symlink():
        raise ConfigError(f"{root} has no '{CURRENT}' version; nothing to roll back (install one first)")
    with _locked(root):
        now = _current_version(root)
        entries = [v for v in _read_history(root) if v != now and (root / VERSIONS / v / MANIFEST).is_file()]
        if not entries:
            raise ConfigError(f"{root} keeps no version before {now}; nothing to roll back to "
                              "(install with --keep N to keep previous versions)")
        previous = entries[-1]
        Bundle.open(root / VERSIONS / previous).verify()
        _switch(root, previous)
        _write_history(root, entries)
    return _describe(root, previous)


def current(into: str | os.PathLike) -> Installed | None:
    """The version ``current`` points to under ``into``; None when nothing is installed."""
    root = Path(into)
    version = _current_version(root)
    return None if version is None else _describe(root, version)


def history(into: str | os.PathLike) -> list[str]:
    """Installed versions in activation order; the last one is current."""
    return _read_history(Path(into))


def degraded(into: str | os.PathLike) -> dict[str, str]:
    """{version: why its self-test failed here} for the installed versions activated with ``allow_degraded``."""
    return _read_degraded(Path(into))


def set_postprocess(bundle: str | os.PathLike, *, labels: Sequence[str] | None = None,
                    postprocess: Postprocess | None = None, sign_key: Any = None) -> Bundle:
    """Record labels and/or postprocessing in a bundle's manifest (rewritten atomically).

    The files' hashes do not change, but the manifest does, so an existing ``manifest.sig`` no longer
    matches: it is replaced with a new one when ``sign_key`` is given and removed otherwise (sign at
    ``edgeship pack --sign``).
    """
    b = Bundle.open(bundle)
    manifest = b.manifest.to_dict()
    if labels is not None:
        labels = [str(x) for x in labels]
        if not labels:
            raise ConfigError("labels must not be empty")
        manifest["labels"] = labels
    if postprocess is not None:
        manifest["postprocess"] = postprocess.to_dict()
    return _rewrite_manifest(b, manifest, sign_key)


def set_release(bundle: str | os.PathLike, number: int, *, name: str | None = None, sign_key: Any = None) -> Bundle:
    """Record the release ``number`` of model ``name`` (default: the manifest's model) in the manifest, so
    that ``install`` refuses a lower release of the same model over a newer one (``allow_downgrade``).
    The manifest is rewritten and re-signed with ``sign_key`` (else its old signature is removed)."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ConfigError(f"a release number is an integer >= 0, got {number!r}")
    b = Bundle.open(bundle)
    manifest = b.manifest.to_dict()
    model = name or str(manifest.get("model") or b.path.name.removesuffix(".edgeship"))
    if not model.strip():
        raise ConfigError("a release needs a model name")
    manifest["release"] = {"model": model, "number": number}
    return _rewrite_manifest(b, manifest, sign_key)


def _rewrite_manifest(b: Bundle, manifest: dict[str, Any], sign_key: Any) -> Bundle:
    data = manifest_bytes(manifest)
    signature = sign_manifest(data, sign_key) if sign_key is not None else None
    if signature is None:  # unsigned before the manifest changes: never a stale signature beside it
        with contextlib.suppress(FileNotFoundError):
            (b.path / SIGNATURE_FILE).unlink()
    write_atomic(b.path / MANIFEST, data)
    if signature is not None:
        write_atomic(b.path / SIGNATURE_FILE, signature)
    return Bundle.open(b.path)
