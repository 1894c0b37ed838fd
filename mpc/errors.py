"""Errors raised by the protocol layer (`mpc/`), built on the primitives' errors.

Every failure on untrusted input collapses into one narrow public type, so the
service layer can map it to exactly one gRPC status in exactly one place. The
root and the rejections a primitive can raise are defined in `crypto.errors`
(crypto/ may import nothing above it) and re-exported here under the
protocol's names, so `except InvalidReport` catches a failed HPKE open from
crypto/ and a replay detected upstairs alike::

    TwinMpcError                crypto.errors.TwinMpcError
    ├── InvalidMeasurement      = crypto.errors.InvalidValue: value out of range / wrong shape (caller mistake)
    ├── InvalidTask             task document rejected (unknown key, bad parameter)
    ├── UnknownTask             task id not configured here
    ├── InvalidReport           = crypto.errors.InvalidInput: untrusted report bytes rejected
    │   ├── DecodeError         (crypto.errors) wrong length, trailing bytes, non-canonical field element
    │   ├── SealError           (crypto.errors) HPKE open failed (tampered, wrong key, wrong binding)
    │   ├── WrongKey            (crypto.errors) a ciphertext under another key id
    │   ├── VerifyError         validity proof / joint randomness check failed
    │   ├── ReplayedReport      report id seen before
    │   └── StaleReport         timestamp outside the accepted window / skew
    ├── CollectionRefused       a collection request that must not be answered
    │   ├── BatchNotClosed      window still open
    │   ├── BatchTooSmall       fewer than min_batch_size reports
    │   └── BudgetExhausted     privacy budget would be exceeded
    └── CryptoError             (crypto.errors) any other refusal of a primitive
"""

from __future__ import annotations

from twinmpc.crypto.errors import (
    CryptoError,
    DecodeError,
    InvalidInput,
    InvalidValue,
    SealError,
    TwinMpcError,
    WrongKey,
)

__all__ = [
    "TwinMpcError",
    "CryptoError",
    "InvalidMeasurement",
    "InvalidTask",
    "UnknownTask",
    "InvalidReport",
    "DecodeError",
    "SealError",
    "WrongKey",
    "VerifyError",
    "ReplayedReport",
    "StaleReport",
    "CollectionRefused",
    "BatchNotClosed",
    "BatchTooSmall",
    "BudgetExhausted",
]

# The same classes as crypto's, not subclasses: an `except` on the protocol's name
# must also catch what a primitive raises.
InvalidMeasurement = InvalidValue
InvalidReport = InvalidInput


class InvalidTask(TwinMpcError, ValueError):
    """A task document failed validation."""


class UnknownTask(TwinMpcError):
    """The task id is not known to this party."""


class VerifyError(InvalidReport):
    """The joint validity check rejected the report."""


class ReplayedReport(InvalidReport):
    """The report id was already accepted or rejected once."""


class StaleReport(InvalidReport):
    """The report's timestamp lies outside the accepted clock skew."""


class CollectionRefused(TwinMpcError):
    """A collection request was refused by policy."""


class BatchNotClosed(CollectionRefused):
    """The window has not closed yet."""


class BatchTooSmall(CollectionRefused):
    """Fewer reports than the task's min_batch_size."""


class BudgetExhausted(CollectionRefused):
    """The privacy budget does not allow this collection."""
