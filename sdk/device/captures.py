"""The capture folder on the device: hard examples written safely, bounded in size and rate, packed for the build.

:class:`CaptureStore` is what the monitor saves frames to. Each capture is ``<name>.png`` (the raw frame) and
``<name>.json`` (the sidecar: why, scores, bundle version and manifest hash, when, ``"label": null``); both are
written to a temporary file and renamed, the sidecar last, so a reader never sees half a capture, and a crash
leaves only temporaries that the next start removes. The folder never exceeds ``max_bytes`` (the oldest captures
are rotated out first) and a token bucket limits captures per minute, so a broken camera cannot fill the disk.
``pack_captures`` / ``prune_captures`` / ``list_captures`` are ``edgeship captures pack|prune|list``; reading a
folder or pack back is :mod:`edgeship.calibration` 's (``from_captures``), which owns the format.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._lazy import require
from ..bundle.signing import KeySource, sign_manifest, verify_manifest
from ..calibration._captures import (
    CAPTURE_SCHEMA,
    INDEX_FILE,
    INDEX_SIGNATURE,
    NAME,
    PACK_SCHEMA,
    pack_index,
    read_captures,
)
from ..errors import ConfigError

__all__ = ["CaptureStore", "list_captures", "pack_captures", "prune_captures", "verify_pack"]

log = logging.getLogger("edgeship.captures")

DEFAULT_MAX_BYTES = 500 << 20
DEFAULT_PER_MINUTE = 60.0
_TEMP_PREFIX = ".tmp-"


class CaptureStore:
    """A capture folder with a size cap (oldest-first rotation) and a rate limit; safe to share between threads.

    Args:
        root: the folder (created if missing).
        max_bytes: the folder's captures never take more than this (PNG + sidecar bytes).
        max_per_minute: captures saved per minute at most (a token bucket; bursts up to a tenth of a minute's worth,
            at least 1); the rest are counted as ``rate_limited`` and dropped.
        clock: monotonic seconds (tests pass a fake one); ``wall``: epoch seconds for names and timestamps.
    """

    def __init__(self, root: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_per_minute: float = DEFAULT_PER_MINUTE, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
            raise ConfigError(f"capture max_bytes must be a positive integer, got {max_bytes!r}")
        if not isinstance(max_per_minute, (int, float)) or not max_per_minute > 0:
            raise ConfigError(f"captures per minute must be > 0, got {max_per_minute!r}")
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"capture folder {self.root} cannot be created: {exc}") from None
        if not os.access(self.root, os.W_OK):
            raise ConfigError(f"capture folder {self.root} is not writable")
        self.max_bytes, self.max_per_minute = int(max_bytes), float(max_per_minute)
        self._clock, self._wall = clock, wall
        self._burst = max(1.0, self.max_per_minute / 10.0)
        self._tokens, self._last = self._burst, clock()
        self._lock = threading.Lock()
        self._seq = 0
        self._counts = {"saved": 0, "rate_limited": 0, "rotated": 0, "too_large": 0, "refused": 0, "errors": 0}
        self._held: OrderedDict[str, int] = OrderedDict()  # name -> bytes, oldest first
        self._scan()

    # -- writing ------------------------------------------------------------------------------------------
    def save(self, image: np.ndarray, sidecar: dict[str, Any]) -> Path | None:
        """Keep one raw frame (H, W[, C]) uint8 with its sidecar; the PNG's path, or None when it was not kept
        (rate limited, too large for the cap, not an image, or the disk refused; each counted in ``stats``)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) \
                or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or 0 in image.shape:
            with self._lock:
                self._counts["refused"] += 1
            return None
        with self._lock:
            if not self._take_token():
                self._counts["rate_limited"] += 1
                return None
            now = self._wall()
            name = f"{_dt.datetime.fromtimestamp(now, _dt.timezone.utc):%Y%m%dT%H%M%S.%fZ}-{self._seq % 1_000_000:06d}"
            self._seq += 1
            try:
                png = _encode_png(image)
                body = dict(sidecar)
                body.update({"schema": CAPTURE_SCHEMA, "name": name,
                             "created": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(),
                             "image": {"file": f"{name}.png", "sha256": hashlib.sha256(png).hexdigest(),
                                       "shape": list(image.shape)}})
                meta = (json.dumps(body, indent=1, default=_jsonable) + "\n").encode()
            except (TypeError, ValueError) as exc:
                self._counts["errors"] += 1
                log.warning("capture not saved: %s", exc)
                return None
            size = len(png) + len(meta)
            if size > self.max_bytes:
                self._counts["too_large"] += 1
                return None
            while self._held and self.used_bytes + size > self.max_bytes:
                self._remove(next(iter(self._held)))
                self._counts["rotated"] += 1
            try:
                _write_atomic(self.root / f"{name}.png", png)
                _write_atomic(self.root / f"{name}.json", meta)  # last: a sidecar means a whole capture
            except OSError as exc:
                (self.root / f"{name}.png").unlink(missing_ok=True)
                self._counts["errors"] += 1
                log.warning("capture not saved in %s: %s", self.root, exc)
                return None
            self._held[name] = size
            self._counts["saved"] += 1
            return self.root / f"{name}.png"

    @property
    def used_bytes(self) -> int:
        return sum(self._held.values())

    def stats(self) -> dict[str, Any]:
        """Counts by outcome, and what the folder holds now."""
        with self._lock:
            return {**self._counts, "held": len(self._held), "bytes": self.used_bytes, "max_bytes": self.max_bytes,
                    "max_per_minute": self.max_per_minute, "folder": str(self.root)}

    # -- internals ----------------------------------------------------------------------------------------
    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self.max_per_minute / 60.0)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _remove(self, name: str) -> None:
        (self.root / f"{name}.json").unlink(missing_ok=True)  # the sidecar first: the capture is gone at once
        (self.root / f"{name}.png").unlink(missing_ok=True)
        self._held.pop(name, None)

    def _scan(self) -> None:
        """What a previous run left: whole captures are kept (oldest first); temporaries and halves removed."""
        for f in self.root.glob(f"{_TEMP_PREFIX}*"):
            f.unlink(missing_ok=True)
        names = sorted({f.stem for f in self.root.iterdir() if f.suffix in (".png", ".json") and NAME.match(f.stem)})
        for name in names:
            png, meta = self.root / f"{name}.png", self.root / f"{name}.json"
            if png.is_file() and meta.is_file():
                self._held[name] = png.stat().st_size + meta.stat().st_size
            else:  # an interrupted write or rotation
                png.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
        while self._held and self.used_bytes > self.max_bytes:  # a smaller cap than last time
            self._remove(next(iter(self._held)))
            self._counts["rotated"] += 1


def _encode_png(image: np.ndarray) -> bytes:
    pil = require("PIL.Image", "saving captures as PNG")
    arr = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    out = io.BytesIO()
    pil.fromarray(np.ascontiguousarray(arr)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- the folder as a whole: list, pack, prune ---------------------------------------------------------------
def list_captures(source: str | os.PathLike) -> list[dict[str, Any]]:
    """One summary per capture of a folder or pack (name, created, reasons, label, top score), oldest first."""
    rows = []
    for c in read_captures(source):
        rows.append({"name": c.name, "created": c.sidecar.get("created"), "reasons": c.reasons, "label": c.label,
                     "scores": c.sidecar.get("scores"), "bytes": len(c.png),
                     "bundle": (c.sidecar.get("bundle") or {}).get("version")})
    return rows


def pack_captures(root: str | os.PathLike, output: str | os.PathLike, *, sign_key: KeySource | None = None,
                  reasons: Sequence[str] | None = None) -> Path:
    """A capture folder -> one ``.tar.gz`` (index.json with every member's SHA-256; index.sig when signed).

    Written to a temporary file and renamed, so an interrupted pack leaves nothing behind.
    """
    root, out = Path(root), Path(output)
    if not out.name.lower().endswith((".tar.gz", ".tgz")):
        raise ConfigError(f"a captures pack is a .tar.gz; got {out}")
    captures = list(read_captures(root, reasons=reasons))  # each PNG checked against its sidecar's hash
    if not captures:
        raise ConfigError(f"{root}: no captures to pack" + (f" for reasons {list(reasons)}" if reasons else ""))
    entries, members = [], []
    for c in captures:
        meta = (json.dumps(c.sidecar, indent=1) + "\n").encode()
        entries.append({"name": c.name, "png_sha256": hashlib.sha256(c.png).hexdigest(),
                        "json_sha256": hashlib.sha256(meta).hexdigest(), "reasons": c.reasons,
                        "labelled": c.label is not None})
        members += [(f"{c.name}.png", c.png), (f"{c.name}.json", meta)]
    index = (json.dumps({"schema": PACK_SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                         "count": len(entries), "captures": entries}, indent=1) + "\n").encode()
    members.insert(0, (INDEX_FILE, index))
    if sign_key is not None:
        members.insert(1, (INDEX_SIGNATURE, sign_manifest(index, sign_key)))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".tar.gz", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def verify_pack(source: str | os.PathLike, public_key: KeySource) -> str:
    """Check a pack's ``index.sig`` against ``public_key``; the key's fingerprint. Every member is then checked
    against the signed index when it is read (``read_captures``)."""
    index, signature = pack_index(source)
    return verify_manifest(index, signature, public_key, where=f"captures pack {Path(source).name}",
                           signature_file=INDEX_SIGNATURE)


def prune_captures(root: str | os.PathLike, *, max_bytes: int | None = None, older_than_s: float | None = None,
                   reasons: Sequence[str] | None = None) -> dict[str, int]:
    """Remove captures from a folder: older than ``older_than_s``, kept for one of ``reasons``, and/or the oldest
    until it holds at most ``max_bytes``. Returns {"removed", "held", "bytes"}."""
    if max_bytes is None and older_than_s is None and not reasons:
        raise ConfigError("prune needs --max-mb, --older-than or --reason (what to remove)")
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a capture folder")
    store = CaptureStore(root, max_bytes=1 << 62)  # adopts the folder, removing temporaries and halves
    removed = 0
    wanted = set(reasons or ())
    cutoff = time.time() - older_than_s if older_than_s is not None else None
    with store._lock:
        for name in list(store._held):
            meta = _sidecar_or_none(root / f"{name}.json")
            old = cutoff is not None and _created(meta, root / f"{name}.json") < cutoff
            matches = bool(wanted) and meta is not None and bool(wanted & set(meta.get("reasons") or ()))
            if old or matches:
                store._remove(name)
                removed += 1
        while max_bytes is not None and store._held and store.used_bytes > max_bytes:
            store._remove(next(iter(store._held)))
            removed += 1
        return {"removed": removed, "held": len(store._held), "bytes": store.used_bytes}


def _sidecar_or_none(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_bytes())
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None


def _created(meta: dict[str, Any] | None, path: Path) -> float:
    try:
        return _dt.datetime.fromisoformat(str((meta or {})["created"])).timestamp()
    except (KeyError, ValueError):
        return path.stat().st_mtime

