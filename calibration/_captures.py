"""Hard-example captures as data: the capture format, read from a folder or a packed archive.

A device's monitor (``edgeship.device.captures``) writes each capture as ``<name>.png`` (the raw frame) with a
``<name>.json`` sidecar (why it was kept, scores, the bundle's version and manifest hash, when, and ``"label":
null`` for a person to fill in). ``edgeship captures pack`` puts a folder in a ``.tar.gz`` whose ``index.json``
holds the SHA-256 of every member (``index.sig`` beside it when signed). This module owns that format for
reading: a capture folder or pack is a calibration source (:func:`from_captures`) and labelled captures are
validation data (:func:`captures_validation`). Every image is checked against its recorded hash, and a pack's
members are read by the names its index lists (regular files, no paths), so a tampered or hostile pack is
refused, not half-read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .._defaults import CALIBRATION_SIZE
from ..errors import BundleIntegrityError, ConfigError
from ._draw import _draw, _Pool
from ._images import _decode_image, _image_sample, _needs_preprocess, _pillow, _relative_name
from ._select import Embed
from ._set import CalibrationSet

if TYPE_CHECKING:
    from ..spec import InputSpec

__all__ = ["CAPTURE_SCHEMA", "INDEX_FILE", "INDEX_SIGNATURE", "PACK_SCHEMA", "Capture", "captures_validation",
           "decode_png", "from_captures", "is_captures", "read_captures"]

CAPTURE_SCHEMA = "edgeship-capture/1"
PACK_SCHEMA = "edgeship-captures-pack/1"
INDEX_FILE = "index.json"
INDEX_SIGNATURE = "index.sig"
# A capture's name: what CaptureStore writes (sortable UTC time, then a sequence number); nothing else is read.
NAME = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9]{6}$")
# Members of a pack are at most this large (a sidecar is a few kB; a 4k RGB PNG is under 50 MB).
MAX_MEMBER_BYTES = 64 << 20
MAX_SIDECAR_BYTES = 1 << 20


@dataclass(frozen=True)
class Capture:
    """One capture: its name, the sidecar (what the device recorded) and the PNG's bytes (hash-checked)."""

    name: str
    sidecar: dict[str, Any]
    png: bytes

    @property
    def label(self) -> Any:
        """What a person wrote in the sidecar's ``label`` (None until then)."""
        return self.sidecar.get("label")

    @property
    def reasons(self) -> list[str]:
        return list(self.sidecar.get("reasons") or [])

    def image(self, channels: int = 3) -> np.ndarray:
        """The raw frame (H, W, channels) uint8."""
        return decode_png(self.png, channels, self.name)


def is_captures(path: str | os.PathLike) -> bool:
    """True for a capture folder (holds ``<name>.json`` sidecars) or a captures pack (a ``.tar.gz`` opening with
    ``index.json``; a bundle archive is not one)."""
    p = Path(path)
    if p.is_dir():
        return any(NAME.match(f.stem) for f in p.glob("*.json"))
    if not (p.is_file() and p.name.lower().endswith((".tar.gz", ".tgz"))):
        return False
    try:  # a pack's index is its first member (a bundle archive's is not)
        with tarfile.open(p, "r:gz") as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError):
        return True  # a damaged pack: reading it says what is wrong
    return first is not None and first.name == INDEX_FILE


def read_captures(source: str | os.PathLike, *, reasons: Sequence[str] | None = None,
                  labelled: bool = False) -> Iterator[Capture]:
    """Every capture of a folder or pack, oldest first, each PNG checked against its recorded SHA-256.

    Args:
        reasons: keep only captures kept for one of these reasons (e.g. ``["disagreement"]``).
        labelled: keep only captures a person labelled.
    Raises:
        ConfigError: ``source`` is neither a capture folder nor a pack.
        BundleIntegrityError: a file does not match its recorded hash, or the pack is malformed or hostile.
    """
    p = Path(source)
    if p.is_dir():
        items = _read_folder(p)
    elif p.is_file() and p.name.lower().endswith((".tar.gz", ".tgz")):
        items = _read_pack(p)
    else:
        raise ConfigError(f"{source}: expected a capture folder (written by `edgeship serve/stream --capture`) "
                          "or a captures pack (.tar.gz from `edgeship captures pack`)")
    wanted = set(reasons or ())
    for capture in items:
        if wanted and not wanted & set(capture.reasons):
            continue
        if labelled and capture.label is None:
            continue
        yield capture


def pack_index(source: str | os.PathLike) -> tuple[bytes, bytes | None]:
    """(index.json bytes, index.sig bytes or None) of a captures pack, for signature checks."""
    p = Path(source)
    try:
        with tarfile.open(p, "r:gz") as tar:
            index = _member_bytes(tar, INDEX_FILE, MAX_SIDECAR_BYTES * 16)
            try:
                signature = _member_bytes(tar, INDEX_SIGNATURE, 1 << 16)
            except KeyError:
                signature = None
    except KeyError:
        raise BundleIntegrityError(f"{p}: not a captures pack (no {INDEX_FILE})") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleIntegrityError(f"{p}: not a readable .tar.gz captures pack ({exc})") from None
    return index, signature


def decode_png(data: bytes, channels: int, what: str) -> np.ndarray:
    """PNG bytes -> (H, W, channels) uint8, as calibration decodes its image files (decompression bombs refused)."""
    image = _pillow()
    try:
        return _decode_image(image, io.BytesIO(data), channels, what=f"capture {what}")
    except (OSError, SyntaxError, ValueError, EOFError, image.DecompressionBombError) as exc:
        raise BundleIntegrityError(f"capture {what}: the PNG does not decode ({type(exc).__name__}: {exc})") from None


def from_captures(
    source: str | os.PathLike,
    spec: "InputSpec",
    size: int = CALIBRATION_SIZE,
    select: str | None = "random",
    seed: int = 0,
    *,
    reasons: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    embed: Embed | None = None,
) -> CalibrationSet:
    """A capture folder or pack -> a calibration set of the frames the line struggled with.

    The raw frames are preprocessed with ``spec.preprocess`` as the device did. When every capture kept carries a
    label (class index, or a name from ``classes``), the set is labelled, so ``select="stratified"`` works.
    """
    _needs_preprocess(spec, "from_captures")
    pool = _CapturePool(Path(source), list(read_captures(source, reasons=reasons)), spec, classes)
    return _draw(pool, spec, size, select, seed, embed, 0.0, preprocessed=True)


def captures_validation(source: str | os.PathLike, spec: "InputSpec", *, reasons: Sequence[str] | None = None,
                        classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The labelled captures of a folder or pack -> (x model-ready (N, ...), y (N,)) for validation and benchmark.

    Raises:
        ConfigError: no capture has a label yet (a person adds ``"label": <class>`` to the sidecars).
    """
    _needs_preprocess(spec, "captures_validation")
    captures = list(read_captures(source, reasons=reasons, labelled=True))
    if not captures:
        raise ConfigError(f"{source}: no labelled captures; validation needs labels: set \"label\" to the class "
                          "(index, or name with classes=) in the sidecars <name>.json of the frames to use")
    channels = spec.channels or 3
    x = np.concatenate([_image_sample(c.image(channels), spec, c.name) for c in captures])
    y = np.asarray([_label(c, classes) for c in captures], dtype=np.int64)
    return x, y


# -- reading ------------------------------------------------------------------------------------------------
def _read_folder(root: Path) -> Iterator[Capture]:
    names = sorted(f.stem for f in root.glob("*.json") if NAME.match(f.stem))
    if not names:
        raise ConfigError(f"{root}: no captures (files <time>-<seq>.png with a .json sidecar)")
    for name in names:
        sidecar_path, png_path = root / f"{name}.json", root / f"{name}.png"
        if not png_path.is_file():  # an image rotated away under a sidecar being read: skip it
            continue
        sidecar = _sidecar(sidecar_path.read_bytes(), f"{root}/{name}.json")
        png = png_path.read_bytes()
        _check_hash(png, sidecar.get("image", {}).get("sha256"), f"{root}/{name}.png")
        yield Capture(name, sidecar, png)


def _read_pack(path: Path) -> Iterator[Capture]:
    try:
        with tarfile.open(path, "r:gz") as tar:
            index = _pack_entries(path, _member_bytes(tar, INDEX_FILE, MAX_SIDECAR_BYTES * 16))
            for entry in index:
                name = entry["name"]
                sidecar_bytes = _member_bytes(tar, f"{name}.json", MAX_SIDECAR_BYTES)
                _check_hash(sidecar_bytes, entry.get("json_sha256"), f"{path.name}:{name}.json")
                png = _member_bytes(tar, f"{name}.png", MAX_MEMBER_BYTES)
                _check_hash(png, entry.get("png_sha256"), f"{path.name}:{name}.png")
                yield Capture(name, _sidecar(sidecar_bytes, f"{path.name}:{name}.json"), png)
    except KeyError as exc:
        raise BundleIntegrityError(f"{path}: the pack lacks {exc.args[0]} (its index lists it); refusing it") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleIntegrityError(f"{path}: not a readable .tar.gz captures pack ({exc})") from None


def _pack_entries(path: Path, index_bytes: bytes) -> list[dict[str, Any]]:
    try:
        index = json.loads(index_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleIntegrityError(f"{path}: {INDEX_FILE} is not JSON ({exc})") from None
    if not isinstance(index, dict) or index.get("schema") != PACK_SCHEMA or not isinstance(index.get("captures"), list):
        raise BundleIntegrityError(f"{path}: {INDEX_FILE} is not a {PACK_SCHEMA} index")
    entries = index["captures"]
    for entry in entries:
        if not isinstance(entry, dict) or not NAME.match(str(entry.get("name", ""))):
            raise BundleIntegrityError(f"{path}: {INDEX_FILE} lists a capture with a bad name: {entry!r:.80}")
    return entries


def _member_bytes(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    """The bytes of a regular-file member named exactly ``name`` (KeyError when absent), bounded by ``limit``."""
    member = tar.getmember(name)
    if not member.isfile():
        raise BundleIntegrityError(f"pack member {name} is not a regular file")
    if member.size > limit:
        raise BundleIntegrityError(f"pack member {name} is {member.size} bytes (at most {limit})")
    f = tar.extractfile(member)
    assert f is not None
    return f.read()


def _sidecar(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_SIDECAR_BYTES:
        raise BundleIntegrityError(f"{what}: a sidecar of {len(data)} bytes (at most {MAX_SIDECAR_BYTES})")
    try:
        sidecar = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleIntegrityError(f"{what}: the sidecar is not JSON ({exc})") from None
    if not isinstance(sidecar, dict) or sidecar.get("schema") != CAPTURE_SCHEMA:
        raise BundleIntegrityError(f"{what}: not a {CAPTURE_SCHEMA} sidecar")
    return sidecar


def _check_hash(data: bytes, expected: Any, what: str) -> None:
    if not isinstance(expected, str) or hashlib.sha256(data).hexdigest() != expected:
        raise BundleIntegrityError(f"{what} does not match its recorded SHA-256: it was changed or truncated")


def _label(capture: Capture, classes: Sequence[str] | None) -> int:
    label = capture.label
    if isinstance(label, bool) or label is None:
        raise ConfigError(f"capture {capture.name}: label {label!r} is not a class")
    if isinstance(label, (int, np.integer)) and label >= 0:
        return int(label)
    if isinstance(label, str) and classes is not None and label in classes:
        return list(classes).index(label)
    where = f"one of {list(classes)}" if classes is not None else "a class index (or a name, with classes=)"
    raise ConfigError(f"capture {capture.name}: label {label!r} is not {where}")


class _CapturePool(_Pool):
    def __init__(self, source: Path, captures: list[Capture], spec: "InputSpec",
                 classes: Sequence[str] | None) -> None:
        super().__init__()
        if not captures:
            raise ConfigError(f"{source}: no captures match")
        self.captures, self.spec = captures, spec
        self.description = f"captures {_relative_name(source)} ({len(captures)} frames)"
        if all(c.label is not None for c in captures):
            self.labels = np.asarray([_label(c, classes) for c in captures], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.captures)

    def origin(self, i: int) -> str:
        return self.captures[i].name

    def load(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray | None, Any]]:
        for i in indices:
            self.tried.add(int(i))
            capture = self.captures[i]
            yield int(i), _image_sample(capture.image(self.spec.channels or 3), self.spec, capture.name), None

