"""Ed25519 signatures over the manifest: signed archives verify, unsigned / tampered / wrong-key ones are refused."""

from __future__ import annotations

import json
import stat

import edgeship
import pytest
from archive_support import entries, read_tar, write_tar
from edgeship import BundleIntegrityError, ConfigError
from edgeship.bundle.archive import pack, unpack
from edgeship.bundle.signing import PUBLIC_KEY_ENV, SIGNATURE_FILE, fingerprint, generate_keypair, load_public_key


@pytest.fixture(scope="module")
def signed_archive(labelled_bundle, signing_keys, tmp_path_factory):
    return pack(labelled_bundle, tmp_path_factory.mktemp("signed") / "digits.edgeship.tar",
                sign_key=signing_keys["private"])


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path):
    private, public = generate_keypair(tmp_path / "release.pem")
    assert public == tmp_path / "release.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes() and b"BEGIN PUBLIC KEY" in public.read_bytes()
    with pytest.raises(ConfigError, match="exists; refusing to overwrite a key"):
        generate_keypair(tmp_path / "release.pem")


def test_signed_archive_verifies_and_names_the_signer(signed_archive, signing_keys, tmp_path):
    names = [n for n, _ in read_tar(signed_archive)]
    assert names[:2] == ["manifest.json", SIGNATURE_FILE]
    sig = json.loads(dict(read_tar(signed_archive))[SIGNATURE_FILE])
    assert sig["algorithm"] == "ed25519"
    expected = fingerprint(load_public_key(signing_keys["public"]))
    assert sig["public_key_sha256"] == expected
    bundle = unpack(signed_archive, tmp_path / "b", public_key=signing_keys["public"])
    assert bundle.signed_by == expected
    # the signature travels with the folder: load verifies it when a key is configured
    with edgeship.load(bundle.path, "onnxruntime-cpu", "fp32", public_key=signing_keys["public"]) as rt:
        assert rt.target == "onnxruntime-cpu"


def test_unsigned_archive_refused_when_a_key_is_given(labelled_bundle, signing_keys, tmp_path):
    archive = pack(labelled_bundle, tmp_path / "plain.tar")
    with pytest.raises(BundleIntegrityError, match=r"is not signed \(no manifest.sig\); a public key is configured"):
        unpack(archive, tmp_path / "dest" / "b", public_key=signing_keys["public"])
    assert entries(tmp_path / "dest") == []
    unpack(archive, tmp_path / "b")  # without a key, no signature is asked for


def test_wrong_key_refused(signed_archive, signing_keys, tmp_path):
    with pytest.raises(BundleIntegrityError, match=r"is signed by key [0-9a-f]{16}…, not by the configured key"):
        unpack(signed_archive, tmp_path / "dest" / "b", public_key=signing_keys["other_public"])
    assert entries(tmp_path / "dest") == []


def test_tampered_manifest_refused(signed_archive, signing_keys, tmp_path):
    """An attacker who edits the manifest (say, to match a swapped artifact) breaks the signature."""
    members = read_tar(signed_archive)
    manifest = json.loads(dict(members)["manifest.json"])
    manifest["labels"][0] = "not-zero"
    forged = [(n, json.dumps(manifest).encode() if n == "manifest.json" else d) for n, d in members]
    archive = write_tar(tmp_path / "forged.tar", forged)
    with pytest.raises(BundleIntegrityError, match="does not match its manifest: the manifest was changed after it was signed"):
        unpack(archive, tmp_path / "dest" / "b", public_key=signing_keys["public"])
    assert entries(tmp_path / "dest") == []


def test_tampered_file_under_a_valid_signature_refused(signed_archive, signing_keys, tmp_path):
    members = read_tar(signed_archive)
    swapped = [(n, d[::-1] if n == "onnxruntime-cpu/int8/model.onnx" else d) for n, d in members]
    archive = write_tar(tmp_path / "swapped.tar", swapped)
    with pytest.raises(BundleIntegrityError, match=r"onnxruntime-cpu/int8/model.onnx in bundle .* was modified"):
        unpack(archive, tmp_path / "dest" / "b", public_key=signing_keys["public"])


@pytest.mark.parametrize("signature, match", [
    (b"not json", "manifest.sig of .* is malformed"),
    (json.dumps({"algorithm": "rsa", "public_key_sha256": "x", "signature": ""}).encode(), "uses algorithm 'rsa'"),
    (json.dumps({"algorithm": "ed25519", "public_key_sha256": "x", "signature": "!!"}).encode(), "malformed"),
])
def test_malformed_signature_refused(signed_archive, signing_keys, tmp_path, signature, match):
    members = [(n, signature if n == SIGNATURE_FILE else d) for n, d in read_tar(signed_archive)]
    with pytest.raises(BundleIntegrityError, match=match):
        unpack(write_tar(tmp_path / "bad.tar", members), tmp_path / "b", public_key=signing_keys["public"])


def test_environment_key_guards_load(signed_archive, labelled_bundle, signing_keys, tmp_path, monkeypatch):
    signed = unpack(signed_archive, tmp_path / "signed")
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(signing_keys["public"]))
    with edgeship.load(signed.path, "openvino-cpu", "int8") as rt:
        assert rt.precision == "int8"
    assert edgeship.open_bundle(signed.path).signed_by is None  # build-time opens ignore the variable
    with pytest.raises(BundleIntegrityError, match="is not signed"):
        edgeship.load(labelled_bundle, "openvino-cpu", "int8")
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(signing_keys["other_public"]))
    with pytest.raises(BundleIntegrityError, match="not by the configured key"):
        edgeship.load(signed.path)


def test_key_files_are_checked(signing_keys, labelled_bundle, tmp_path):
    with pytest.raises(ConfigError, match="holds a private key; verification takes the public key"):
        edgeship.open_bundle(labelled_bundle, public_key=signing_keys["private"])
    with pytest.raises(ConfigError, match="public key file not found"):
        edgeship.open_bundle(labelled_bundle, public_key=tmp_path / "absent.pem")
    with pytest.raises(ConfigError, match="is not an unencrypted PEM private key"):
        pack(labelled_bundle, tmp_path / "x.tar", sign_key=signing_keys["public"])
    assert not (tmp_path / "x.tar").exists()
