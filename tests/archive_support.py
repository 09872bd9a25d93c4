"""Helpers for tests that craft tar archives by hand: what a hostile or broken archive looks like."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def folder_members(root: Path) -> list[tuple[str, bytes]]:
    """(relative POSIX path, bytes) of every file under ``root``, manifest first."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    members = [(p.relative_to(root).as_posix(), p.read_bytes()) for p in files]
    return sorted(members, key=lambda m: (m[0] != "manifest.json", m[0]))


def write_tar(path: Path, members: list, mode: str = "w") -> Path:
    """Write a tar with ``members``: (name, bytes) regular files or ready TarInfo objects (links, devices...)."""
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    """A tar entry of type ``kind`` (tarfile.SYMTYPE, LNKTYPE, CHRTYPE, BLKTYPE, FIFOTYPE)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def read_tar(path: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of the regular files of an archive we made ourselves (trusted)."""
    out = []
    with tarfile.open(path, "r:*") as tar:
        for member in tar.getmembers():
            if member.isreg():
                out.append((member.name, tar.extractfile(member).read()))
    return out


def entries(root: Path) -> list[str]:
    """Everything under ``root``, hidden entries included, as sorted relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
