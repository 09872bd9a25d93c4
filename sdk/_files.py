"""The one way edgeship writes a file that others read: to a temporary file beside it, flushed to disk, renamed
over it, the folder synced — a reader sees the old file or the new one, never half of one, and no temporary
file is left behind on any error (disk full, Ctrl-C). The ground floor: it imports nothing of edgeship."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file object whose contents replace ``path`` when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` (see :func:`atomic_write`)."""
    with atomic_write(path) as fh:
        fh.write(data)


def write_json_atomic(path: str | os.PathLike, doc: Any) -> None:
    """Replace ``path`` with ``doc`` as indented JSON and a final newline."""
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
