"""Errors of the aggregator service (the domain errors live in `twinmpc.mpc.errors`).

::

    TwinMpcError (mpc.errors)
    ├── NotThisRole      the request needs the other role for this task (leader vs helper)
    ├── PeerFailure      a peer aggregator could not complete its step; retry later
    ├── WrongPeer        an aggregator certificate, but not the one this task names
    └── BatchMismatch    aggregators disagree on which reports a window holds

`services.aggregator.servicers.STATUS_FOR_ERROR` maps each to a gRPC status.
"""

from __future__ import annotations

from twinmpc.mpc.errors import TwinMpcError


class NotThisRole(TwinMpcError):
    """The request needs another aggregator role for this task (leader vs helper)."""


class PeerFailure(TwinMpcError):
    """A peer aggregator could not complete its step; the job or collection will be retried."""


class WrongPeer(TwinMpcError):
    """The caller holds an aggregator certificate, but not the one of this task's leader."""


class BatchMismatch(TwinMpcError):
    """Aggregators disagree on which reports a window holds."""


__all__ = ["BatchMismatch", "NotThisRole", "PeerFailure", "WrongPeer"]
