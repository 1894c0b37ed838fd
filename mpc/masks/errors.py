"""Errors of the masks protocol (single-aggregator secure aggregation).

Every failure on untrusted round material collapses into one narrow type, so
the service maps it to exactly one gRPC status in one place::

    TwinMpcError (mpc.errors)
    ├── InvalidReport
    │   └── DecodeError
    │       └── MalformedMessage      wrong length, trailing bytes, unknown version/kind
    └── MasksError
        ├── WrongSession              message bound to another task / window / attempt (a replay from elsewhere)
        ├── OutOfOrder                message for a round that is not the one collecting now
        ├── NotAParticipant           sender not in the round's cohort (dropped earlier, or never advertised)
        ├── IdentityMismatch          sender index / identity is not the authenticated caller's
        ├── ConflictingMessage        a second, different message from the same sender in the same round
        ├── ForgedMessage             AEAD / MAC check failed, or a field contradicts what the sender bound
        ├── UntrustedPeer             a peer's credential does not verify (directory refused it)
        ├── ConsistencyFailure        the server showed this client two different survivor sets
        ├── DoubleRevealRefused       asked for both secrets of one peer (the core privacy check)
        └── RoundAborted              a threshold was not met: the round ends, nothing is released
"""

from __future__ import annotations

from twinmpc.mpc.errors import DecodeError, TwinMpcError


class MalformedMessage(DecodeError):
    """Round bytes do not decode: wrong length, trailing bytes, unknown version or kind."""


class MasksError(TwinMpcError):
    """Base class of masks-protocol failures."""


class WrongSession(MasksError):
    """The message is bound to another (task, window, attempt): replayed from another round."""


class OutOfOrder(MasksError):
    """The message belongs to a round that is not the one open now."""


class NotAParticipant(MasksError):
    """The sender is not (or no longer) part of this round's cohort."""


class IdentityMismatch(MasksError):
    """The sender named in the message is not the authenticated caller."""


class ConflictingMessage(MasksError):
    """A sender already submitted a different message for this round."""


class ForgedMessage(MasksError):
    """An AEAD or MAC check failed, or a message contradicts what its sender bound."""


class UntrustedPeer(MasksError):
    """A peer's credential did not verify against the directory of enrolled clients."""


class ConsistencyFailure(MasksError):
    """The server showed this client inconsistent views of the round (Bonawitz et al. 2017, ConsistencyCheck)."""


class DoubleRevealRefused(MasksError):
    """The server asked for the self-mask share and the mask-key share of the same peer."""


class RoundAborted(MasksError):
    """A threshold was not met; the round ends without releasing anything."""


__all__ = [
    "ConflictingMessage",
    "ConsistencyFailure",
    "DoubleRevealRefused",
    "ForgedMessage",
    "IdentityMismatch",
    "MalformedMessage",
    "MasksError",
    "NotAParticipant",
    "OutOfOrder",
    "RoundAborted",
    "UntrustedPeer",
    "WrongSession",
]
