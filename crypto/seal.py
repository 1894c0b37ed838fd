"""HPKE sealing of shares to the one party allowed to open them (RFC 9180).

Uses `cryptography`'s HPKE (base mode).  The suite is a task setting:

====  =======================================  ==========================
id    name                                      KEM
====  =======================================  ==========================
1     x25519-hkdf-sha256-aes128gcm             DHKEM(X25519, HKDF-SHA256)
2     x25519-hkdf-sha256-chacha20poly1305      DHKEM(X25519, HKDF-SHA256)
3     mlkem768x25519-hkdf-sha256-aes128gcm     ML-KEM-768 + X25519 hybrid
====  =======================================  ==========================

Suite 3 is post-quantum: data recorded today stays sealed against a future
quantum adversary who breaks X25519.  Everything a ciphertext must not be
moved away from (task, report, aggregator index, ...) goes into HPKE's
``info``, built with `binding()` from a label and length-prefixed parts, so
opening under any other context fails.

Not for: long-term storage encryption or signatures.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from twinmpc.crypto.errors import DecodeError, SealError

_VERSION = b"twinmpc/v1/hpke"


@dataclass(frozen=True)
class HpkeSuite:
    suite_id: int
    name: str
    kem: object
    kdf: object
    aead: object

    def instance(self) -> hpke.Suite:
        return hpke.Suite(self.kem, self.kdf, self.aead)


SUITES: dict[str, HpkeSuite] = {
    s.name: s
    for s in (
        HpkeSuite(1, "x25519-hkdf-sha256-aes128gcm", hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM),
        HpkeSuite(2, "x25519-hkdf-sha256-chacha20poly1305", hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
        HpkeSuite(3, "mlkem768x25519-hkdf-sha256-aes128gcm", hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM),
    )
}
_SUITES_BY_ID = {s.suite_id: s for s in SUITES.values()}
DEFAULT_SUITE = "x25519-hkdf-sha256-aes128gcm"
_MLKEM_PUB = 1184
_MLKEM_SEED = 64
_X25519 = 32


def suite_by_name(name: str) -> HpkeSuite:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown HPKE suite {name!r}; known: {sorted(SUITES)}") from None


def _is_hybrid(suite: HpkeSuite) -> bool:
    return suite.kem is hpke.KEM.MLKEM768_X25519


def _load_public(suite: HpkeSuite, raw: bytes):
    if _is_hybrid(suite):
        if len(raw) != _MLKEM_PUB + _X25519:
            raise DecodeError(f"hybrid HPKE public key must be {_MLKEM_PUB + _X25519} bytes")
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUB]),
            x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM_PUB:]),
        )
    if len(raw) != _X25519:
        raise DecodeError("X25519 HPKE public key must be 32 bytes")
    return x25519.X25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class HpkeConfig:
    """A receiver's public sealing configuration: key id, suite and public key.

    Encoding: ``config_id (u8) | suite_id (u8) | len (u16) | public_key``.
    """

    config_id: int
    suite: HpkeSuite
    public_key: bytes
    _loaded: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.config_id <= 255:
            raise ValueError("HPKE config id must fit in one byte")
        object.__setattr__(self, "_loaded", _load_public(self.suite, self.public_key))

    def encode(self) -> bytes:
        return struct.pack(">BBH", self.config_id, self.suite.suite_id, len(self.public_key)) + self.public_key

    @classmethod
    def decode(cls, data: bytes) -> HpkeConfig:
        if len(data) < 4:
            raise DecodeError("HPKE config too short")
        config_id, suite_id, length = struct.unpack(">BBH", data[:4])
        if len(data) != 4 + length:
            raise DecodeError("HPKE config length mismatch (truncated or trailing bytes)")
        suite = _SUITES_BY_ID.get(suite_id)
        if suite is None:
            raise DecodeError(f"unknown HPKE suite id {suite_id}")
        return cls(config_id, suite, bytes(data[4:]))


class HpkeKeypair:
    """A receiver's private key with its public config.  Redacts itself in repr."""

    __slots__ = ("config", "_private", "_raw")

    def __init__(self, config: HpkeConfig, private_key, raw: bytes) -> None:
        self.config = config
        self._private = private_key
        self._raw = raw

    def __repr__(self) -> str:
        return f"HpkeKeypair(config_id={self.config.config_id}, suite={self.config.suite.name!r}, private=<redacted>)"

    @classmethod
    def generate(cls, config_id: int = 0, suite: str = DEFAULT_SUITE) -> HpkeKeypair:
        s = suite_by_name(suite)
        if _is_hybrid(s):
            return cls.from_private_bytes(config_id, suite, _random_hybrid_private())
        return cls.from_private_bytes(config_id, suite, x25519.X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_private_bytes(cls, config_id: int, suite: str, raw: bytes) -> HpkeKeypair:
        s = suite_by_name(suite)
        if _is_hybrid(s):
            if len(raw) != _MLKEM_SEED + _X25519:
                raise DecodeError("hybrid HPKE private key must be 96 bytes (ML-KEM seed + X25519)")
            mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM_SEED])
            xk = x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM_SEED:])
            private = hpke.MLKEM768X25519PrivateKey(mk, xk)
            public = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
        else:
            if len(raw) != _X25519:
                raise DecodeError("X25519 HPKE private key must be 32 bytes")
            private = x25519.X25519PrivateKey.from_private_bytes(raw)
            public = private.public_key().public_bytes_raw()
        return cls(HpkeConfig(config_id, s, public), private, bytes(raw))

    def private_bytes(self) -> bytes:
        """Raw private key material: store it encrypted or with 0600 permissions."""
        return self._raw


def _random_hybrid_private() -> bytes:
    return os.urandom(_MLKEM_SEED) + x25519.X25519PrivateKey.generate().private_bytes_raw()


def binding(label: str, *parts: bytes) -> bytes:
    """HPKE ``info``: version, label and length-prefixed parts (unambiguous)."""
    out = [_VERSION, b"/", label.encode(), b"\x00"]
    for p in parts:
        out.append(struct.pack(">I", len(p)))
        out.append(p)
    return b"".join(out)


def seal(config: HpkeConfig, plaintext: bytes, info: bytes) -> bytes:
    """Encrypt to the holder of `config`'s private key, bound to `info`.

    Output: ``config_id (u8) | HPKE enc || ciphertext``.
    """
    return bytes([config.config_id]) + config.suite.instance().encrypt(plaintext, config._loaded, info=info)


def open_sealed(keypair: HpkeKeypair, sealed: bytes, info: bytes) -> bytes:
    """Decrypt a `seal()` output; any mismatch raises `SealError`."""
    if not sealed or sealed[0] != keypair.config.config_id:
        raise SealError("sealed share names an unknown HPKE config id")
    try:
        return keypair.config.suite.instance().decrypt(sealed[1:], keypair._private, info=info)
    except Exception as exc:  # cryptography raises InvalidTag/ValueError; collapse into one public error
        raise SealError("sealed share does not open under this key and binding") from exc


def digest(data: bytes) -> bytes:
    """SHA-256, used to bind large public data into `info` cheaply."""
    return hashlib.sha256(data).digest()
