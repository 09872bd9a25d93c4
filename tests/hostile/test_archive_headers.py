"""Hostile tar headers in bundle archives: refused with a BundleIntegrityError before anything is allocated
or written, and nothing is left behind.

- a PAX extended header declaring megabytes (tarfile would read it whole: a header bomb)
- a GNU long-name header declaring megabytes
- a member name with a NUL byte, or a newline
"""

from __future__ import annotations

import io
import tarfile

import pytest
from archive_support import folder_members
from edgeship.bundle.archive import unpack
from edgeship.errors import BundleIntegrityError


def _tar_with(path, member: tarfile.TarInfo, data: bytes, fmt: int, bundle) -> None:
    with tarfile.open(path, "w:gz", format=fmt) as tar:
        for name, content in folder_members(bundle)[:1]:  # the manifest first, as edgeship writes it
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))


def test_a_pax_header_bomb_is_refused(digits_bundle, tmp_path):
    member = tarfile.TarInfo("model.onnx")
    member.pax_headers = {"comment": "x" * (4 << 20)}  # 4 MiB of header, a few KB once gzipped
    archive = tmp_path / "bomb.tar.gz"
    _tar_with(archive, member, b"", tarfile.PAX_FORMAT, digits_bundle.path)
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(BundleIntegrityError, match="extended header declares"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".incoming-*"))


def test_a_gnu_long_name_bomb_is_refused(digits_bundle, tmp_path):
    member = tarfile.TarInfo("a" * (2 << 20))
    archive = tmp_path / "long.tar.gz"
    _tar_with(archive, member, b"", tarfile.GNU_FORMAT, digits_bundle.path)
    with pytest.raises(BundleIntegrityError, match="extended header declares"):
        unpack(archive, tmp_path / "out")


@pytest.mark.parametrize("name", ["model\x00.onnx", "model\n.onnx"], ids=["nul", "newline"])
def test_control_characters_in_names_are_refused(digits_bundle, tmp_path, name):
    archive = tmp_path / "names.tar.gz"
    member = tarfile.TarInfo("model.onnx")
    member.pax_headers = {"path": name}  # a PAX path record keeps what a ustar name field would cut at NUL
    _tar_with(archive, member, b"data", tarfile.PAX_FORMAT, digits_bundle.path)
    with pytest.raises(BundleIntegrityError, match="control character"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
