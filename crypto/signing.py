"""Ed25519 signing keys (RFC 8032) with key ids, domain separation and safe files.

* key id: first 8 bytes of SHA-256 over the raw 32-byte public key, as 16 hex
  characters; it names a key in logs and audit entries without revealing it.
* every signature covers ``dst || 0x00 || message`` where ``dst`` is a
  domain-separation tag such as ``b"twinmpc/v1/audit-entry"`` (NUL-free), so a
  signature made for one purpose never verifies for another.
* private keys are written as PKCS#8 PEM, encrypted with the passphrase when one
  is given (``BestAvailableEncryption``), created with mode 0600 atomically
  (temp file + rename); loading refuses files readable by group or others.
* ``repr`` of a signing key shows only its key id.

Not for: TLS identities (`services.pki` issues those) or sealing (HPKE, `crypto.seal`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twinmpc.crypto.errors import CryptoError

__all__ = ["BadSignature", "SigningKey", "VerifyKey", "key_id_of", "KEY_ID_SIZE", "SIGNATURE_SIZE"]

KEY_ID_SIZE = 8
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32
_MAX_DST = 255


class BadSignature(CryptoError):
    """A signature does not verify under the given key and domain-separation tag."""


def key_id_of(raw_public_key: bytes) -> str:
    """Key id: SHA-256(raw public key) truncated to 8 bytes, lowercase hex."""
    if len(raw_public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(raw_public_key)}")
    return hashlib.sha256(raw_public_key).digest()[:KEY_ID_SIZE].hex()


def _signed_bytes(dst: bytes, message: bytes) -> bytes:
    if not isinstance(dst, bytes) or not 0 < len(dst) <= _MAX_DST or b"\x00" in dst:
        raise ValueError("dst must be 1..255 NUL-free bytes")
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise TypeError("message must be bytes")
    return dst + b"\x00" + bytes(message)


class VerifyKey:
    """An Ed25519 public key with its key id."""

    __slots__ = ("_key", "_raw", "key_id")

    def __init__(self, key: Ed25519PublicKey) -> None:
        if not isinstance(key, Ed25519PublicKey):
            raise TypeError("expected an Ed25519 public key")
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = key_id_of(self._raw)

    @classmethod
    def from_raw(cls, data: bytes) -> VerifyKey:
        if len(data) != PUBLIC_KEY_SIZE:
            raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(data)}")
        return cls(Ed25519PublicKey.from_public_bytes(bytes(data)))

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyKey:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("PEM public key is not Ed25519")
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VerifyKey:
        """Read a public key file: PEM, 32 raw bytes, or 64 hex characters."""
        data = Path(path).read_bytes()
        if data.lstrip().startswith(b"-----BEGIN"):
            return cls.from_pem(data)
        if len(data) == PUBLIC_KEY_SIZE:
            return cls.from_raw(data)
        text = data.strip()
        if len(text) == 2 * PUBLIC_KEY_SIZE:
            try:
                return cls.from_raw(bytes.fromhex(text.decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                pass
        raise ValueError(f"{path}: not an Ed25519 public key (PEM, 32 raw bytes or 64 hex characters)")

    @property
    def raw(self) -> bytes:
        return self._raw

    def to_pem(self) -> bytes:
        return self._key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the public key as PEM (mode 0644: it is public)."""
        _atomic_write(Path(path), self.to_pem(), 0o644, overwrite=True)

    def verify(self, signature: bytes, message: bytes, *, dst: bytes) -> None:
        """Raise BadSignature unless `signature` is this key's signature of (dst, message)."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            raise BadSignature(f"signature must be {SIGNATURE_SIZE} bytes")
        try:
            self._key.verify(signature, _signed_bytes(dst, message))
        except InvalidSignature:
            raise BadSignature(f"signature does not verify under key {self.key_id}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey(key_id={self.key_id})"


class SigningKey:
    """An Ed25519 private key; never printed, never logged."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError("expected an Ed25519 private key")
        self._key = key
        self.public_key = VerifyKey(key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the OS CSPRNG (inside `cryptography`)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """The key with this 32-byte RFC 8032 seed (known-answer tests, HSM exports)."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    def sign(self, message: bytes, *, dst: bytes) -> bytes:
        """Signature over ``dst || 0x00 || message`` (deterministic, RFC 8032)."""
        return self._key.sign(_signed_bytes(dst, message))

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with the passphrase if one is given."""
        if passphrase is not None and (not isinstance(passphrase, bytes) or not passphrase):
            raise ValueError("passphrase must be non-empty bytes")
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError as exc:  # encrypted without passphrase, or passphrase for a plain key
            raise ValueError(f"key file passphrase mismatch: {exc}") from None
        except ValueError:
            raise ValueError("cannot read private key: wrong passphrase or not a PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("PEM private key is not Ed25519")
        return cls(key)

    def save(self, path: str | os.PathLike[str], passphrase: bytes | None = None, *, overwrite: bool = False) -> None:
        """Write the private key with mode 0600 (created that way, never chmod-ed after)."""
        _atomic_write(Path(path), self.to_pem(passphrase), 0o600, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: bytes | None = None) -> SigningKey:
        """Read a private key file, refusing one that group or others may read."""
        p = Path(path)
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"{p}: private key file has mode {mode:04o}; it must not be group/other accessible")
        return cls.from_pem(p.read_bytes(), passphrase)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id}, private=<redacted>)"


def _atomic_write(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # created 0600 by mkstemp
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
