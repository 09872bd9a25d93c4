"""Bundle archives: pack/unpack round trips, and every unsafe archive refused with nothing left behind."""

from __future__ import annotations

import hashlib
import tarfile

import edgeship
import numpy as np
import pytest
from archive_support import entries, folder_members, read_tar, special, write_tar
from conftest import DIGIT_LABELS
from edgeship import BundleIntegrityError, ConfigError
from edgeship.bundle.archive import ArchiveLimits, pack, unpack


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good_members(labelled_bundle):
    """The labelled digits bundle as (name, bytes) members: the base of every crafted archive."""
    return folder_members(labelled_bundle)


# -- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix, magic", [(".edgeship.tar", None), (".edgeship.tar.gz", b"\x1f\x8b"),
                                           (".tgz", b"\x1f\x8b"), (".edgeship.tar.zst", b"\x28\xb5\x2f\xfd")])
def test_pack_unpack_round_trip(labelled_bundle, digits_data, tmp_path, suffix, magic):
    archive = pack(labelled_bundle, tmp_path / f"digits{suffix}")
    if magic is not None:
        assert archive.read_bytes()[: len(magic)] == magic
    else:
        assert tarfile.is_tarfile(archive)
    bundle = unpack(archive, tmp_path / "out" / "digits.edgeship")
    assert bundle.manifest == edgeship.open_bundle(labelled_bundle).manifest
    assert bundle.manifest["labels"] == DIGIT_LABELS
    # exactly the manifest and the files it lists, byte for byte
    original = {p.relative_to(labelled_bundle).as_posix(): digest(p) for p in labelled_bundle.rglob("*") if p.is_file()}
    unpacked = {p.relative_to(bundle.path).as_posix(): digest(p) for p in bundle.path.rglob("*") if p.is_file()}
    assert unpacked == original
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["digits.edgeship"]  # no temporary folder left
    raw = digits_data[2][:4]
    with edgeship.load(labelled_bundle, "onnxruntime-cpu", "int8") as a, edgeship.load(bundle.path, "onnxruntime-cpu", "int8") as b:
        np.testing.assert_array_equal(a.run(raw, preprocess=True)["output"], b.run(raw, preprocess=True)["output"])


def test_pack_is_reproducible_and_holds_only_listed_files(labelled_bundle, tmp_path):
    first = pack(labelled_bundle, tmp_path / "a.edgeship.tar.gz")
    second = pack(labelled_bundle, tmp_path / "b.edgeship.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    names = [name for name, _ in read_tar(first)]
    manifest = edgeship.open_bundle(labelled_bundle).manifest
    listed = set(manifest["source"]["files"]) | {f for e in manifest["artifacts"] for f in e["files"]}
    assert names[0] == "manifest.json" and set(names[1:]) == listed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.edgeship.tar.gz", "b.edgeship.tar.gz"]


def test_pack_refuses_a_tampered_bundle_and_writes_nothing(bundle_copy, tmp_path):
    path = bundle_copy / "onnxruntime-cpu" / "fp32" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    out = tmp_path / "dist"
    out.mkdir()
    with pytest.raises(BundleIntegrityError, match="onnxruntime-cpu/fp32/model.onnx in bundle .* was modified"):
        pack(bundle_copy, out / "x.edgeship.tar")
    assert list(out.iterdir()) == []


def test_pack_refuses_an_unknown_suffix(labelled_bundle, tmp_path):
    with pytest.raises(ConfigError, match=r"must end with one of \['.tar', '.tar.gz', '.tar.zst', '.tar.zstd', '.tgz'\]"):
        pack(labelled_bundle, tmp_path / "x.zip")


def test_unpack_refuses_an_existing_destination(labelled_bundle, tmp_path):
    archive = pack(labelled_bundle, tmp_path / "x.edgeship.tar")
    (tmp_path / "there").mkdir()
    with pytest.raises(ConfigError, match="exists; unpack writes a new folder"):
        unpack(archive, tmp_path / "there")


# -- hostile and broken archives ------------------------------------------------------------------
def refused(archive, tmp_path, match, limits=ArchiveLimits()):
    """Unpacking ``archive`` raises BundleIntegrityError matching ``match`` and leaves nothing behind."""
    dest_parent = tmp_path / "dest"
    dest_parent.mkdir(exist_ok=True)
    with pytest.raises(BundleIntegrityError, match=match):
        unpack(archive, dest_parent / "bundle", limits=limits)
    assert entries(dest_parent) == []  # no bundle, no half-extracted temporary folder


@pytest.mark.parametrize("evil, match", [
    ("/etc/evil.txt", r"absolute or non-POSIX path '/etc/evil.txt'"),
    ("../evil.txt", r"climbs out of the bundle: '\.\./evil.txt'"),
    ("onnxruntime-cpu/../../evil.txt", r"climbs out of the bundle"),
    ("openvino-cpu\\..\\..\\evil.txt", r"non-POSIX path"),
], ids=["absolute", "dotdot", "nested-dotdot", "backslash"])
def test_path_escapes_refused(good_members, tmp_path, evil, match):
    archive = write_tar(tmp_path / "evil.tar", [*good_members, (evil, b"pwned")])
    with tarfile.open(archive) as tar:
        assert evil in tar.getnames()  # the crafted name really is in the archive
    refused(archive, tmp_path, match)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize("kind, match", [
    (tarfile.SYMTYPE, r"'model.onnx' is a symbolic link \(to '/etc/passwd'\)"),
    (tarfile.LNKTYPE, r"'model.onnx' is a hard link \(to '/etc/passwd'\)"),
    (tarfile.CHRTYPE, r"'model.onnx' is a device file"),
    (tarfile.BLKTYPE, r"'model.onnx' is a device file"),
    (tarfile.FIFOTYPE, r"'model.onnx' is a FIFO"),
], ids=["symlink", "hardlink", "char-device", "block-device", "fifo"])
def test_links_and_special_files_refused(good_members, tmp_path, kind, match):
    members = [m for m in good_members if m[0] != "model.onnx"]
    archive = write_tar(tmp_path / "special.tar", [special("model.onnx", kind, "/etc/passwd"), *members])
    refused(archive, tmp_path, match)


def test_duplicate_member_refused(good_members, tmp_path):
    archive = write_tar(tmp_path / "dup.tar", [*good_members, ("model.onnx", b"second copy")])
    refused(archive, tmp_path, r"holds 'model.onnx' twice")


def test_member_count_limit(good_members, tmp_path):
    archive = write_tar(tmp_path / "many.tar", good_members)
    refused(archive, tmp_path, r"more than 3 members", ArchiveLimits(max_members=3))
    unpack(archive, tmp_path / "ok", limits=ArchiveLimits(max_members=len(good_members)))  # the exact count passes


def test_size_limit_counts_decompressed_bytes(good_members, tmp_path):
    """A gzip of zeros is tiny on disk; the limit applies to what it unpacks to."""
    bomb = write_tar(tmp_path / "bomb.tar.gz", [*good_members, ("zeros.bin", bytes(8 << 20))], mode="w:gz")
    assert bomb.stat().st_size < 1 << 20
    refused(bomb, tmp_path, r"unpacks to more than 4194304 bytes \(at 'zeros.bin'\)", ArchiveLimits(max_bytes=4 << 20))


def test_unlisted_file_refused(good_members, tmp_path):
    archive = write_tar(tmp_path / "extra.tar", [*good_members, ("openvino-cpu/int8/extra.so", b"\x7fELF")])
    refused(archive, tmp_path, r"holds 'openvino-cpu/int8/extra.so', which its manifest does not list")


def test_tampered_file_in_archive_refused(good_members, tmp_path):
    members = [(n, d[:-1] + bytes([d[-1] ^ 1]) if n == "openvino-cpu/int8/model.bin" else d) for n, d in good_members]
    refused(write_tar(tmp_path / "t.tar", members), tmp_path, r"openvino-cpu/int8/model.bin in bundle .* was modified")


def test_archive_without_manifest_refused(good_members, tmp_path):
    members = [m for m in good_members if m[0] != "manifest.json"]
    refused(write_tar(tmp_path / "nomanifest.tar", members), tmp_path, r"holds no manifest.json at its root")


@pytest.mark.parametrize("case", ["truncated", "garbage", "truncated-gzip", "empty"])
def test_broken_archives_refused(labelled_bundle, tmp_path, case):
    if case.endswith("gzip"):
        data = pack(labelled_bundle, tmp_path / "ok.tar.gz").read_bytes()
    else:
        data = pack(labelled_bundle, tmp_path / "ok.tar").read_bytes()
    broken = tmp_path / "broken.tar"
    broken.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00\x01not a tar" * 100,
                        "truncated-gzip": data[: len(data) // 2], "empty": b""}[case])
    refused(broken, tmp_path, r"is not a readable edgeship archive|holds no manifest.json")


def test_missing_archive(tmp_path):
    with pytest.raises(ConfigError, match="archive not found"):
        unpack(tmp_path / "absent.tar", tmp_path / "out")
