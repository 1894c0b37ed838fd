"""Secret keys at rest: passphrase-sealed files (scrypt + AES-256-GCM), mode 0600.

Used by `crypto.paillier` and `crypto.ckks` to keep the collector's decryption
key on disk.  The passphrase is stretched with scrypt (RFC 7914) and the key
material is sealed with AES-256-GCM; the key *kind* and *key id* are bound as
associated data, so a file cannot be replayed as another key or another kind.
Files are created with ``O_CREAT | O_EXCL`` and permissions 0600 on top of the
encryption (defence in depth for a stolen backup of a world-readable dir).

File format (JSON, one object, canonical key order)::

    {"v": 1, "kind": "paillier-sk", "key_id": "<16 hex>",
     "kdf": {"alg": "scrypt", "log2_n": 17, "r": 8, "p": 1, "salt": "<hex 16 B>"},
     "aead": "AES-256-GCM", "nonce": "<hex 12 B>", "ct": "<hex>"}

Not for: sealing data to another party (use HPKE in `crypto.hpke`), or secrets
that must survive a forgotten passphrase.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from twinmpc.crypto.errors import CryptoError

FORMAT_VERSION = 1
DST_KEY_FILE = b"twinmpc/v1/key-file/AES-256-GCM/"
# scrypt cost: 2^17 follows the OWASP password-storage recommendation (N=2^17, r=8, p=1).
DEFAULT_LOG2_N = 17
# Files written with a cheaper cost are still read (tests use 2^14), but nothing below.
MIN_LOG2_N = 14
MAX_LOG2_N = 20
SALT_SIZE = 16
NONCE_SIZE = 12
_ALLOWED_FIELDS = {"v", "kind", "key_id", "kdf", "aead", "nonce", "ct"}


class KeyFileError(CryptoError, ValueError):
    """A key file is malformed, for another key/kind, or the passphrase is wrong."""


def _derive(passphrase: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(passphrase)


def _aad(kind: str, key_id: str) -> bytes:
    return DST_KEY_FILE + kind.encode() + b"/" + key_id.encode()


def seal_secret(
    secret: bytes,
    passphrase: bytes,
    *,
    kind: str,
    key_id: str,
    log2_n: int = DEFAULT_LOG2_N,
    rand: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encrypt ``secret`` under a passphrase; returns the JSON file body."""
    if not isinstance(passphrase, bytes) or len(passphrase) == 0:
        raise ValueError("passphrase must be non-empty bytes")
    if not MIN_LOG2_N <= log2_n <= MAX_LOG2_N:
        raise ValueError(f"scrypt log2_n must be in [{MIN_LOG2_N}, {MAX_LOG2_N}]")
    salt = rand(SALT_SIZE)
    nonce = rand(NONCE_SIZE)
    key = _derive(passphrase, salt, log2_n, 8, 1)
    ct = AESGCM(key).encrypt(nonce, secret, _aad(kind, key_id))
    doc = {
        "v": FORMAT_VERSION,
        "kind": kind,
        "key_id": key_id,
        "kdf": {"alg": "scrypt", "log2_n": log2_n, "r": 8, "p": 1, "salt": salt.hex()},
        "aead": "AES-256-GCM",
        "nonce": nonce.hex(),
        "ct": ct.hex(),
    }
    return json.dumps(doc, sort_keys=True).encode()


def open_secret(sealed: bytes, passphrase: bytes, *, kind: str) -> tuple[str, bytes]:
    """Decrypt a sealed key file body; returns ``(key_id, secret)``.

    Raises `KeyFileError` on any malformed field, a kind mismatch or a failed
    AEAD check (wrong passphrase or tampering: deliberately one message).
    """
    try:
        doc = json.loads(sealed)
        if not isinstance(doc, dict) or set(doc) != _ALLOWED_FIELDS:
            raise KeyFileError("key file: unexpected or missing fields")
        if doc["v"] != FORMAT_VERSION or doc["aead"] != "AES-256-GCM":
            raise KeyFileError("key file: unsupported version or AEAD")
        if doc["kind"] != kind:
            raise KeyFileError(f"key file holds a {doc['kind']!r} key, expected {kind!r}")
        kdf = doc["kdf"]
        if set(kdf) != {"alg", "log2_n", "r", "p", "salt"} or kdf["alg"] != "scrypt":
            raise KeyFileError("key file: unsupported KDF")
        log2_n, r, p = kdf["log2_n"], kdf["r"], kdf["p"]
        if not (isinstance(log2_n, int) and MIN_LOG2_N <= log2_n <= MAX_LOG2_N and r == 8 and p == 1):
            raise KeyFileError("key file: scrypt parameters out of the accepted range")
        salt = bytes.fromhex(kdf["salt"])
        nonce = bytes.fromhex(doc["nonce"])
        ct = bytes.fromhex(doc["ct"])
        key_id = doc["key_id"]
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, KeyFileError):
            raise
        raise KeyFileError("key file: malformed") from exc
    if len(salt) != SALT_SIZE or len(nonce) != NONCE_SIZE or not isinstance(key_id, str):
        raise KeyFileError("key file: bad salt, nonce or key id")
    key = _derive(passphrase, salt, log2_n, r, p)
    try:
        secret = AESGCM(key).decrypt(nonce, ct, _aad(kind, key_id))
    except InvalidTag as exc:
        raise KeyFileError("key file: wrong passphrase or tampered file") from exc
    return key_id, secret


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Create ``path`` with mode 0600 (fails if it exists: keys are never overwritten)."""
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_private_file(path: str | os.PathLike[str]) -> bytes:
    """Read a key file, refusing one that group or others may read or write."""
    p = Path(path)
    mode = p.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {p} is accessible by group/others (mode {oct(mode & 0o777)})")
    return p.read_bytes()
