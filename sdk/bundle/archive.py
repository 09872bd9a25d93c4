"""Bundle archives: one tar file (plain, gzip or zstd) that carries a bundle folder to a device.

``pack`` writes the manifest, an optional Ed25519 signature (``manifest.sig``) and exactly the files
the manifest lists, in a fixed order with zeroed owners and times, so the same bundle packs to the
same bytes. ``unpack`` trusts nothing in an archive: it refuses absolute paths, ``..``, links,
device files and FIFOs, duplicate names, and archives past a member count or total size (tar bombs);
it extracts into a temporary folder, checks the signature (when a key is given), every file's SHA-256
and that no unlisted file came along, and only then renames the folder into place.

Compression: ``.tar`` (none), ``.tar.gz`` / ``.tgz`` (gzip, standard library), ``.tar.zst`` (zstd,
needs the ``zstandard`` package: ``pip install "edgeship[zstd]"``; Python 3.11's tarfile has no zstd).
Extraction detects the compression from the bytes, not the name, and reads the archive as a stream,
so a pipe or FIFO works too.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterator

from .._files import atomic_write
from .._lazy import require
from ..errors import BundleIntegrityError, ConfigError
from .folder import MANIFEST, Bundle
from .signing import SIGNATURE_FILE, sign_manifest

__all__ = ["ArchiveLimits", "extracted", "pack", "unpack", "verify_folder"]

_SUFFIXES = {".tar": None, ".tar.gz": "gz", ".tgz": "gz", ".tar.zst": "zst", ".tar.zstd": "zst"}
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may hold before extraction stops: a guard against tar bombs."""

    max_bytes: int = 4 << 30  # sum of the members' sizes, after decompression
    max_members: int = 10_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_members < 1:
            raise ConfigError(f"archive limits must be positive, got max_bytes={self.max_bytes}, "
                              f"max_members={self.max_members}")


# -- pack ---------------------------------------------------------------------------------------
def compression_for(path: str | os.PathLike) -> str | None:
    """The compression an archive name asks for: None (plain tar), 'gz' or 'zst'."""
    name = Path(path).name.lower()
    for suffix, kind in sorted(_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return kind
    raise ConfigError(f"archive name {Path(path).name!r} must end with one of {sorted(_SUFFIXES)}")


def _zstandard():
    return require("zstandard", "zstd archives: Python 3.11's tarfile has no zstd", hint="or use .tar / .tar.gz")


def pack(bundle: str | os.PathLike | Bundle, output: str | os.PathLike, *, sign_key: Any = None) -> Path:
    """Write ``bundle`` as one archive at ``output``; compression follows the name (.tar, .tar.gz, .tar.zst).

    The bundle is verified first (a tampered bundle is not packed). With ``sign_key`` (an Ed25519
    private key: PEM path, PEM bytes or key) the archive carries a fresh ``manifest.sig``; without it
    an existing ``manifest.sig`` in the folder travels as it is. The archive is written to a temporary
    file and renamed into place.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    output = Path(output)
    kind = compression_for(output)
    if kind == "zst":
        _zstandard()
    b.verify()
    manifest_bytes = (b.path / MANIFEST).read_bytes()
    if sign_key is not None:
        signature: bytes | None = sign_manifest(manifest_bytes, sign_key)
    else:
        sig_path = b.path / SIGNATURE_FILE
        signature = sig_path.read_bytes() if sig_path.is_file() else None
    files = sorted(set(b.manifest.source_files) | {f for e in b.manifest.artifacts for f in e["files"]})

    with atomic_write(output) as raw, _compressed_writer(raw, kind) as sink:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, MANIFEST, manifest_bytes)
            if signature is not None:
                _add_bytes(tar, SIGNATURE_FILE, signature)
            for rel in files:
                path = b.path / rel
                with open(path, "rb") as fh:
                    tar.addfile(_member(rel, path.stat().st_size), fh)
    return output


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member(name, len(data)), io.BytesIO(data))


@contextlib.contextmanager
def _compressed_writer(raw: IO[bytes], kind: str | None) -> Iterator[IO[bytes]]:
    if kind is None:
        yield raw
    elif kind == "gz":
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            yield gz  # type: ignore[misc]
    else:
        with _zstandard().ZstdCompressor(level=10).stream_writer(raw, closefd=False) as zw:
            yield zw


# -- unpack -------------------------------------------------------------------------------------
class _Prefixed(io.RawIOBase):
    """A read-only stream: ``head`` (already read to sniff the format), then the rest of ``fh``."""

    def __init__(self, head: bytes, fh: IO[bytes]) -> None:
        self._head, self._fh = head, fh

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._fh.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


MAX_HEADER_BYTES = 64 << 10  # a PAX or GNU long-name header: a path and a few records, never megabytes


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a PAX / GNU long-name header into memory whole, whatever size it declares (a 1.5 MB
    archive drove peak memory to 815 MiB): refuse oversized ones before they are read."""

    def _check_header_size(self) -> None:
        if self.size > MAX_HEADER_BYTES:
            raise tarfile.HeaderError(f"an extended header declares {self.size} bytes; at most {MAX_HEADER_BYTES} "
                                      "are accepted")

    def _proc_pax(self, tarfile):  # noqa: ANN001, ANN202 - tarfile's private hook
        self._check_header_size()
        return super()._proc_pax(tarfile)

    def _proc_gnulong(self, tarfile):  # noqa: ANN001, ANN202 - tarfile's private hook
        self._check_header_size()
        return super()._proc_gnulong(tarfile)


@contextlib.contextmanager
def _open_tar(archive: Path) -> Iterator[tarfile.TarFile]:
    try:
        fh = open(archive, "rb")
    except FileNotFoundError:
        raise ConfigError(f"archive not found: {archive}") from None
    with fh:
        head = fh.read(4)
        stream: IO[bytes] = io.BufferedReader(_Prefixed(head, fh))
        mode = "r|*"  # a stream: gzip is detected by tarfile, no seeking needed
        errors: tuple[type[BaseException], ...] = (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error)
        if head.startswith(_ZSTD_MAGIC):
            zstandard = _zstandard()
            stream = zstandard.ZstdDecompressor().stream_reader(stream)
            mode = "r|"
            errors += (zstandard.ZstdError,)
        try:
            with tarfile.open(fileobj=stream, mode=mode, tarinfo=_BoundedTarInfo) as tar:
                yield tar
        except errors as exc:
            raise BundleIntegrityError(f"{archive} is not a readable edgeship archive (tar, tar.gz or tar.zst): "
                                       f"{type(exc).__name__}: {exc}") from None


def _safe_name(name: str, archive: Path) -> PurePosixPath | None:
    """The member's path relative to the bundle root; None for the root itself ('.'); refuses escapes."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise BundleIntegrityError(f"{archive} holds a member name with a control character (NUL, newline ...): "
                                   f"{name!r}; expected plain relative paths")
    if not name or name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise BundleIntegrityError(f"{archive} holds an absolute or non-POSIX path {name!r}; "
                                   "expected paths relative to the bundle root")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise BundleIntegrityError(f"{archive} holds a path that climbs out of the bundle: {name!r}")
    return PurePosixPath(*parts) if parts else None


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    return f"an entry of tar type {member.type!r}"


def _extract_members(tar: tarfile.TarFile, root: Path, archive: Path, limits: ArchiveLimits) -> None:
    count = total = 0
    for member in tar:
        count += 1
        if count > limits.max_members:
            raise BundleIntegrityError(f"{archive} holds more than {limits.max_members} members; refusing it "
                                       "(raise the member limit if this bundle is genuine)")
        rel = _safe_name(member.name, archive)
        if member.isdir():
            if rel is not None:
                (root / rel).mkdir(parents=True, exist_ok=True)
            continue
        if not member.isreg() or member.issparse():
            raise BundleIntegrityError(f"{archive}: {member.name!r} is {_member_kind(member)}; "
                                       "a bundle archive holds only regular files and folders")
        if rel is None:
            raise BundleIntegrityError(f"{archive} holds a file without a name")
        total += member.size
        if total > limits.max_bytes:
            raise BundleIntegrityError(f"{archive} unpacks to more than {limits.max_bytes} bytes (at {member.name!r}); "
                                       "refusing it (raise the size limit if this bundle is genuine)")
        dest = root / rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise BundleIntegrityError(f"{archive} holds {member.name!r} twice; refusing it") from None
        except (NotADirectoryError, FileNotFoundError):
            raise BundleIntegrityError(f"{archive}: {member.name!r} lies under a path that is a file") from None
        src = tar.extractfile(member)
        assert src is not None  # a regular file always has content
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)


def verify_folder(root: Path, public_key: Any = None, where: str | None = None) -> Bundle:
    """Open the bundle at ``root``, check the signature (with ``public_key``), every file's SHA-256,
    and that it holds nothing its manifest does not list."""
    where = where or str(root)
    if not (root / MANIFEST).is_file():
        raise BundleIntegrityError(f"{where} holds no {MANIFEST} at its root; it is not an edgeship bundle archive")
    bundle = Bundle.open(root, public_key=public_key)
    bundle.verify()
    listed = set(bundle.manifest.source_files) | {f for e in bundle.manifest.artifacts for f in e["files"]}
    listed |= {MANIFEST, SIGNATURE_FILE}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise BundleIntegrityError(f"{where} holds {rel!r}, which is not a regular file")
        if path.is_file() and rel not in listed:
            raise BundleIntegrityError(f"{where} holds {rel!r}, which its manifest does not list; refusing it")
    return bundle


@contextlib.contextmanager
def extracted(archive: str | os.PathLike, parent: str | os.PathLike, *, public_key: Any = None,
              limits: ArchiveLimits = ArchiveLimits()) -> Iterator[Bundle]:
    """Extract and verify ``archive`` into a temporary folder under ``parent``; yield the Bundle there.

    The caller renames ``bundle.path`` to its final place inside the block; whatever is left is removed
    on exit, so a refused or interrupted extraction leaves nothing behind (a killed process leaves a
    ``.incoming-*`` folder that :func:`edgeship.device.deploy.install` clears on its next run).
    ``public_key=None`` checks no signature (``$EDGESHIP_PUBLIC_KEY`` is not consulted here; install does).
    """
    archive = Path(archive)
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=parent))
    try:
        with _open_tar(archive) as tar:
            _extract_members(tar, tmp, archive, limits)
        tmp.chmod(0o755)  # mkdtemp made it 0700; an installed bundle is readable like any other folder
        yield verify_folder(tmp, public_key, where=f"archive {archive}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def unpack(archive: str | os.PathLike, dest: str | os.PathLike, *, public_key: Any = None,
           limits: ArchiveLimits = ArchiveLimits()) -> Bundle:
    """Extract ``archive`` into the new folder ``dest``, verified (see module doc); return the Bundle."""
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise ConfigError(f"{dest} exists; unpack writes a new folder (use `edgeship install` to replace versions)")
    with extracted(archive, dest.parent, public_key=public_key, limits=limits) as bundle:
        os.replace(bundle.path, dest)
    result = Bundle.open(dest)
    result.signed_by = bundle.signed_by  # verified above, on the bytes that were extracted
    return result


def pack_bytes(bundle_dir: Path) -> tuple[bytes, str]:
    """The bundle folder as reproducible tar bytes (``archive.pack``, which verifies it first) and their SHA-256."""
    with tempfile.TemporaryDirectory(prefix="edgeship-pack-") as tmp:
        data = pack(bundle_dir, Path(tmp) / "bundle.tar").read_bytes()
    return data, hashlib.sha256(data).hexdigest()
