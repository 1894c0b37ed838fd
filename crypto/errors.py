"""Errors of the primitives, and the root every twinmpc error grows from.

`crypto/` is the bottom layer and imports nothing above it, so the classes that
the layers above catch when a primitive refuses something live here, the way
pyca's recipes build on the exceptions of its hazmat layer. `mpc.errors`
re-exports them and hangs the protocol's own errors beside them::

    TwinMpcError                     root of every domain error in twinmpc
    ├── InvalidInput                 untrusted bytes failed a check (mpc.errors.InvalidReport)
    ├── InvalidValue (ValueError)    a caller's value cannot be encoded (mpc.errors.InvalidMeasurement)
    └── CryptoError                  raised by a primitive in crypto/
        ├── DecodeError   (+ InvalidInput)  wrong length, trailing bytes, non-canonical encoding
        ├── SealError     (+ InvalidInput)  HPKE open failed: tampered, wrong key or wrong binding
        ├── WrongKey      (+ InvalidInput)  a ciphertext names a key other than the one held
        ├── NonFiniteValue (+ InvalidValue) NaN or infinity given to fixed-point encoding
        ├── KeyFileError  (+ ValueError)    crypto.key_storage: malformed file, wrong passphrase
        ├── BadSignature                    crypto.signing: a signature does not verify
        └── AuditLogCorrupt                 crypto.audit_log: the log's chain or signatures broke

`InvalidInput` and `InvalidValue` sit beside `CryptoError`, not under it: the
protocol rejects reports for reasons no primitive knows (a replay, a failed
proof) with subclasses of them, and those are no crypto errors. A decode or seal
failure is both, so one `except InvalidReport` upstairs catches it together
with the protocol's own rejections.
"""

from __future__ import annotations

__all__ = [
    "TwinMpcError",
    "InvalidInput",
    "InvalidValue",
    "CryptoError",
    "DecodeError",
    "SealError",
    "WrongKey",
    "NonFiniteValue",
]


class TwinMpcError(Exception):
    """Base class of every domain error in twinmpc."""


class InvalidInput(TwinMpcError):
    """Untrusted bytes were rejected; the message says which check failed."""


class InvalidValue(TwinMpcError, ValueError):
    """A caller passed a value that cannot be encoded (a caller mistake, hence also ValueError)."""


class CryptoError(TwinMpcError):
    """Base class of every error a primitive in crypto/ raises."""


class DecodeError(CryptoError, InvalidInput):
    """Bytes do not decode: wrong length, trailing data or non-canonical encoding."""


class SealError(CryptoError, InvalidInput):
    """An HPKE-sealed share could not be opened with this key and binding."""


class WrongKey(CryptoError, InvalidInput):
    """A well-formed ciphertext was made under another key than the one this party holds."""


class NonFiniteValue(CryptoError, InvalidValue):
    """NaN or infinity cannot be encoded as a fixed-point ring element."""
