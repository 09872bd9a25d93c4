""".npy / .npz reading that checks before it allocates: the one place edgeship reads array files, given or its own.

``np.load`` trusts a file's header: a 100-byte .npy declaring 10^12 elements asks for terabytes, and a
corrupt .npz raises zipfile's own errors. Here the header's declared size is compared with the bytes
that are really there (and with a cap) before anything is allocated, object arrays are refused (no
pickle), and every failure is a ConfigError naming the file, what was expected and what came. It is also
where edgeship reads its own .npz files (state dicts, caches): ``load_npz``, ``load_npz_cache``.

Ground floor: imports nothing of edgeship's but the errors.
"""

from __future__ import annotations

import io
import math
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import ConfigError

__all__ = ["MAX_ARRAY_BYTES", "load_array_file", "load_npz", "load_npz_cache", "load_xy", "read_npy"]

MAX_ARRAY_BYTES = 8 << 30  # one array of calibration, validation or request data: 8 GiB at most


def read_npy(data: bytes, what: str, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """One .npy held in ``data``, checked: a numeric dtype and a declared size the bytes really hold."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError, SyntaxError) as exc:
        raise ConfigError(f"{what} is not a valid .npy array: {exc}") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ConfigError(f"{what} holds dtype {dtype}; expected a numeric array (bool, int, uint or float): "
                          "object arrays are refused (they would need unpickling)")
    declared = math.prod(shape) * dtype.itemsize
    present = len(data) - f.tell()
    if declared > max_bytes:
        raise ConfigError(f"{what} declares shape {shape} ({declared} bytes); at most {max_bytes} bytes are accepted")
    if declared != present:
        raise ConfigError(f"{what} declares shape {shape} {dtype} ({declared} bytes) but holds {present} bytes of data")
    f.seek(0)
    try:
        return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise ConfigError(f"{what} is not a valid .npy array: {exc}") from None


def load_array_file(path: str | os.PathLike, what: str,
                    max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray | dict[str, np.ndarray]:
    """A .npy file as one array, or a .npz as {name: array}; checked as ``read_npy`` checks, never unpickled."""
    p = Path(path)
    head = _head(p, what)
    if head.startswith(b"\x93NUMPY"):
        if p.stat().st_size > max_bytes + (1 << 20):
            raise ConfigError(f"{what} file {p} is {p.stat().st_size} bytes; at most {max_bytes} are accepted")
        return read_npy(p.read_bytes(), f"{what} file {p}", max_bytes)
    if not head.startswith(b"PK"):
        raise ConfigError(f"{what} file {p} is neither .npy nor .npz (it starts with {head!r})")
    return load_npz(p, what, max_bytes)


def load_npz(path: str | os.PathLike, what: str, max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """An .npz file (``np.savez``'s, e.g. a state dict) as {name: array}, in the archive's order; every array
    checked as ``read_npy`` checks, never unpickled. A missing, truncated or corrupt file is a ConfigError
    naming it."""
    p = Path(path)
    head = _head(p, what)
    if not head.startswith(b"PK"):
        raise ConfigError(f"{what} file {p} is not an .npz archive of .npy arrays (it starts with {head!r})")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(p) as archive:
            members = archive.infolist()
            total = sum(m.file_size for m in members)
            if total > max_bytes:
                raise ConfigError(f"{what} file {p} declares {total} bytes unpacked; at most {max_bytes} are accepted")
            for member in members:
                if not member.filename.endswith(".npy"):
                    raise ConfigError(f"{what} file {p} holds {member.filename!r}; an .npz holds only .npy arrays")
                name = member.filename[: -len(".npy")]
                arrays[name] = read_npy(archive.read(member), f"array {name!r} of {what} file {p}", max_bytes)
    except ConfigError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
            NotImplementedError) as exc:
        raise ConfigError(f"{what} file {p} is not a readable .npz: {exc}") from None
    if not arrays:
        raise ConfigError(f"{what} file {p} holds no arrays")
    return arrays


def load_npz_cache(path: str | os.PathLike, what: str) -> dict[str, np.ndarray] | None:
    """A cache's .npz as ``load_npz`` reads it, or None where it is missing or unreadable: then the caller
    rebuilds it (and overwrites the file); an unreadable one is warned about."""
    if not Path(path).is_file():
        return None
    try:
        return load_npz(path, what)
    except ConfigError as exc:
        warnings.warn(f"the cached {what} file is unreadable and is being rebuilt: {exc}", RuntimeWarning, stacklevel=3)
        return None


def _head(p: Path, what: str) -> bytes:
    """The first bytes of ``p``, which must be a file."""
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    try:
        with open(p, "rb") as fh:
            return fh.read(6)
    except OSError as exc:
        raise ConfigError(f"{what} file {p} cannot be read: {exc}") from None


def load_xy(path: str | os.PathLike, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """.npy -> (inputs, None); .npz -> (x, y) from arrays named 'x' and optionally 'y' (the CLI's data files)."""
    loaded = load_array_file(path, what)
    if isinstance(loaded, np.ndarray):
        return loaded, None
    if "x" not in loaded:
        raise ConfigError(f"{what} file {path} must hold an array named 'x' (and 'y' for labels); it has {sorted(loaded)}")
    return loaded["x"], loaded.get("y")
