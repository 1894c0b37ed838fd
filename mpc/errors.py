"""Errors raised by the protocol layer (`mpc/`) and the primitives it wraps.

Every failure on untrusted input collapses into one narrow public type, so the
service layer can map it to exactly one gRPC status in exactly one place::

    TwinMpcError
    ├── InvalidMeasurement      client-side: value out of range / wrong shape (caller mistake)
    ├── InvalidTask             task document rejected (unknown key, bad parameter)
    ├── UnknownTask             task id not configured here
    ├── InvalidReport           untrusted report bytes rejected
    │   ├── DecodeError         wrong length, trailing bytes, non-canonical field element
    │   ├── SealError           HPKE open failed (tampered, wrong key, wrong binding)
    │   ├── VerifyError         validity proof / joint randomness check failed
    │   ├── ReplayedReport      report id seen before
    │   └── StaleReport         timestamp outside the accepted window / skew
    └── CollectionRefused       a collection request that must not be answered
        ├── BatchNotClosed      window still open
        ├── BatchTooSmall       fewer than min_batch_size reports
        └── BudgetExhausted     privacy budget would be exceeded
"""

from __future__ import annotations


class TwinMpcError(Exception):
    """Base class of every domain error in twinmpc."""


class InvalidMeasurement(TwinMpcError, ValueError):
    """A client tried to shard a measurement its type does not allow."""


class InvalidTask(TwinMpcError, ValueError):
    """A task document failed validation."""


class UnknownTask(TwinMpcError):
    """The task id is not known to this party."""


class InvalidReport(TwinMpcError):
    """Untrusted report material was rejected; the message says which check failed."""


class DecodeError(InvalidReport):
    """Bytes do not decode: wrong length, trailing data or non-canonical encoding."""


class SealError(InvalidReport):
    """An HPKE-sealed share could not be opened with this key and binding."""


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
