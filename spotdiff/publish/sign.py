"""Signed releases: an Ed25519 signature over the release's ``SHA256SUMS``, shipped as ``SHA256SUMS.sig``.

``SHA256SUMS`` lists the sha256 of every other file of a release and ``verify`` refuses any file it does
not list, so a valid signature over it vouches for every byte of the release. Without a signature, anyone
who edits a file (the dataset card's licence) and recomputes ``SHA256SUMS`` has a release that verifies;
with one, ``spotdiff verify --key PUB`` refuses it.

Keys are standard: an Ed25519 private key in PEM (PKCS#8, unencrypted) or OpenSSH format, its public
key in PEM (SubjectPublicKeyInfo) or OpenSSH (``ssh-ed25519 AAAA...``) format; ``keygen`` writes a PEM
pair. Ed25519 signatures are deterministic, so a signed release is as byte-reproducible as an unsigned
one (same inputs and key, same bytes). ``SHA256SUMS.sig`` is one line of text::

    ed25519 <key id> <base64 signature>

where the key id is the first 16 hex digits of the sha256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from spotdiff.errors import ConfigError, OutputExistsError

SIG_NAME = "SHA256SUMS.sig"
"""The signature's member name in a release (beside ``SHA256SUMS``)."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as err:  # pragma: no cover -- a dependency of the package
        raise ConfigError(f"signing needs the `cryptography` package: {err}") from None
    return serialization, ed25519, InvalidSignature


def _not_a_key() -> tuple[type[Exception], ...]:
    """What cryptography's loaders raise for bytes that are not a key of a format they read."""
    from cryptography.exceptions import UnsupportedAlgorithm

    return ValueError, binascii.Error, UnsupportedAlgorithm


def _raw_public(public) -> bytes:
    serialization, _, _ = _crypto()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public) -> str:
    """First 16 hex digits of the sha256 of the raw public key: names a key in messages and signatures."""
    return hashlib.sha256(_raw_public(public)).hexdigest()[:16]


def load_private_key(path: str | Path):
    """An Ed25519 private key from a PEM (PKCS#8) or OpenSSH file; ``ConfigError`` naming the file otherwise."""
    serialization, ed25519, _ = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"--sign {path}: cannot read the private key: {err.strerror or err}") from None
    key = None
    for load in (serialization.load_pem_private_key, serialization.load_ssh_private_key):
        try:
            key = load(data, password=None)
            break
        except TypeError as err:  # encrypted
            raise ConfigError(f"--sign {path}: the private key is encrypted; use an unencrypted key ({err})") from None
        except _not_a_key():
            continue
    if key is None:
        raise ConfigError(f"--sign {path}: not a PEM or OpenSSH private key")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"--sign {path}: a {type(key).__name__.removeprefix('_')}, not an Ed25519 private key")
    return key


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM or OpenSSH (``ssh-ed25519 ...``) file; ``ConfigError`` otherwise."""
    serialization, ed25519, _ = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"--key {path}: cannot read the public key: {err.strerror or err}") from None
    key = None
    for load in (serialization.load_pem_public_key, serialization.load_ssh_public_key):
        try:
            key = load(data)
            break
        except (*_not_a_key(), TypeError):
            continue
    if key is None:
        raise ConfigError(f"--key {path}: not a PEM or OpenSSH public key")
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"--key {path}: a {type(key).__name__.removeprefix('_')}, not an Ed25519 public key")
    return key


def sign(sums: bytes, private_key) -> bytes:
    """The ``SHA256SUMS.sig`` member for ``sums`` (the release's ``SHA256SUMS`` bytes)."""
    signature = base64.b64encode(private_key.sign(sums)).decode()
    return f"ed25519 {key_id(private_key.public_key())} {signature}\n".encode()


def check(sums: bytes, sig: bytes, public_key) -> str | None:
    """None if ``sig`` (a ``SHA256SUMS.sig`` member) is ``public_key``'s signature of ``sums``; else why not."""
    _, _, InvalidSignature = _crypto()
    want = key_id(public_key)
    try:
        scheme, kid, b64 = sig.decode("ascii").split()
        raw = base64.b64decode(b64, validate=True)
    except (UnicodeDecodeError, ValueError, binascii.Error):
        return f"{SIG_NAME}: not '<scheme> <key id> <base64 signature>'"
    if scheme != "ed25519":
        return f"{SIG_NAME}: scheme {scheme!r}, expected 'ed25519'"
    try:
        public_key.verify(raw, sums)
    except InvalidSignature:
        other = f" (it names key {kid}, yours is {want})" if kid != want else ""
        return f"{SIG_NAME}: the signature does not match SHA256SUMS under key {want}{other}: the release was " \
               "changed after it was signed, or signed with another key"
    return None


def keygen(path: str | Path) -> tuple[Path, Path, str]:
    """Write a new Ed25519 key pair: ``path`` (private, PEM PKCS#8, mode 0600) and ``path.pub`` (public,
    PEM). Refuses to replace either. Returns (private path, public path, key id)."""
    serialization, ed25519, _ = _crypto()
    private, public = Path(path), Path(f"{path}.pub")
    for p in (private, public):
        if p.exists() or p.is_symlink():
            raise OutputExistsError(f"{p} already exists: keygen never replaces a key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    with open(public, "xb") as f:
        f.write(pub)
    return private, public, key_id(key.public_key())

