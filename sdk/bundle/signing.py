"""Ed25519 signatures over a bundle's manifest.

The manifest holds the SHA-256 of every file in the bundle, so one signature over its exact bytes
covers the whole bundle. The signature lives beside it as ``manifest.sig``, a small JSON object::

    {"algorithm": "ed25519", "public_key_sha256": "<hex>", "signature": "<base64>"}

Keys are PEM files: the private key as unencrypted PKCS#8, the public key as SubjectPublicKeyInfo.
``cryptography`` is imported only when a key is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Union

from .._lazy import require
from ..errors import BundleIntegrityError, ConfigError

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"
PUBLIC_KEY_ENV = "EDGESHIP_PUBLIC_KEY"

KeySource = Union[str, os.PathLike, bytes, Any]  # a PEM path, PEM bytes, or a loaded cryptography key

__all__ = [
    "ALGORITHM",
    "PUBLIC_KEY_ENV",
    "SIGNATURE_FILE",
    "configured_public_key",
    "fingerprint",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "sign_manifest",
    "verify_manifest",
]


def _ed25519():
    return require("cryptography.hazmat.primitives.asymmetric.ed25519", "signing and verifying bundles")


def _serialization():
    _ed25519()
    from cryptography.hazmat.primitives import serialization

    return serialization


def _pem_bytes(source: str | os.PathLike | bytes, what: str) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, f"the given {what} bytes"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} must be a PEM file, got the folder {path}") from None


def load_private_key(source: KeySource):
    """An Ed25519 private key from a PEM file or PEM bytes (unencrypted PKCS#8, as ``edgeship keygen`` writes)."""
    ed25519 = _ed25519()
    if isinstance(source, ed25519.Ed25519PrivateKey):
        return source
    data, where = _pem_bytes(source, "private key")
    try:
        key = _serialization().load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{where} holds a {type(key).__name__}; expected an Ed25519 private key")
    return key


def load_public_key(source: KeySource):
    """An Ed25519 public key from a PEM file or PEM bytes (SubjectPublicKeyInfo, as ``edgeship keygen`` writes)."""
    ed25519 = _ed25519()
    if isinstance(source, ed25519.Ed25519PublicKey):
        return source
    if isinstance(source, ed25519.Ed25519PrivateKey):
        raise ConfigError("expected an Ed25519 public key, got a private key; pass the .pub.pem file")
    data, where = _pem_bytes(source, "public key")
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{where} holds a private key; verification takes the public key (the .pub.pem file)")
    try:
        key = _serialization().load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where} is not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{where} holds a {type(key).__name__}; expected an Ed25519 public key")
    return key


def fingerprint(public_key: Any) -> str:
    """SHA-256 (hex) of the raw 32-byte public key: names a key in signatures and error messages."""
    serialization = _serialization()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keypair(private_path: str | os.PathLike, public_path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair as PEM files; the private one readable by its owner only.

    ``public_path`` defaults to the private path with ``.pub.pem`` (``key.pem`` -> ``key.pub.pem``).
    Existing files are never overwritten.
    """
    ed25519 = _ed25519()
    serialization = _serialization()
    private_path = Path(private_path)
    if public_path is None:
        stem = private_path.name[:-4] if private_path.name.endswith(".pem") else private_path.name
        public_path = private_path.with_name(stem + ".pub.pem")
    public_path = Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a key")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def sign_manifest(manifest_bytes: bytes, private_key: KeySource) -> bytes:
    """The content of ``manifest.sig`` for these exact manifest bytes."""
    key = load_private_key(private_key)
    signature = key.sign(manifest_bytes)
    doc = {
        "algorithm": ALGORITHM,
        "public_key_sha256": fingerprint(key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def verify_manifest(manifest_bytes: bytes, signature_bytes: bytes | None, public_key: KeySource,
                    where: str = "bundle", signature_file: str = SIGNATURE_FILE) -> str:
    """Check ``signature_bytes`` (a ``manifest.sig``) over ``manifest_bytes``; return the key's fingerprint.

    Raises BundleIntegrityError when the signature is absent, malformed, made by another key, or does
    not match the manifest (the manifest or a file it lists was changed after signing).
    """
    key = load_public_key(public_key)
    from cryptography.exceptions import InvalidSignature

    expected_fp = fingerprint(key)
    if signature_bytes is None:
        raise BundleIntegrityError(
            f"{where} is not signed (no {signature_file}); a public key is configured, so only files signed "
            f"by key {expected_fp[:16]}… are accepted"
        )
    try:
        doc = json.loads(signature_bytes.decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        algorithm, signer_fp = doc.get("algorithm"), doc.get("public_key_sha256")
        signature = base64.b64decode(str(doc.get("signature", "")), validate=True)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise BundleIntegrityError(f"{signature_file} of {where} is malformed: {exc}") from None
    if algorithm != ALGORITHM:
        raise BundleIntegrityError(f"{signature_file} of {where} uses algorithm {algorithm!r}; expected {ALGORITHM!r}")
    if signer_fp != expected_fp:
        raise BundleIntegrityError(
            f"{where} is signed by key {str(signer_fp)[:16]}…, not by the configured key {expected_fp[:16]}…; "
            "refusing it"
        )
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise BundleIntegrityError(
            f"the signature of {where} does not match its manifest: the manifest was changed after it was signed "
            f"by key {expected_fp[:16]}…; refusing it"
        ) from None
    return expected_fp


def configured_public_key(public_key: KeySource | None = None) -> KeySource | None:
    """``public_key`` if given, else the PEM path in ``$EDGESHIP_PUBLIC_KEY``, else None (no check).

    The device-side entry points (``load``, ``install``, ``serve``, ``stream``) call this; ``False``
    means "check no signature", whatever the environment says.
    """
    if public_key is False:
        return None
    if public_key is not None:
        return public_key
    env = os.environ.get(PUBLIC_KEY_ENV)
    return env if env else None
