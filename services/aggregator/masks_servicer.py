"""gRPC servicer of masks mode (`twinmpc.v1.SecureAggregation`): decode, call `MasksRounds`, map errors.

Each method carries one round's message; the status codes a client can get:

=====================  ===================  =============================================
error                  status               meaning
=====================  ===================  =============================================
MalformedMessage       INVALID_ARGUMENT     bytes do not decode, or carry another round's kind
WrongSession           INVALID_ARGUMENT     message bound to another task/window/attempt (replay)
ForgedMessage          INVALID_ARGUMENT     contradicts the round (wrong receivers, points, shares)
IdentityMismatch       PERMISSION_DENIED    message names another client than the certificate
ConflictingMessage     ALREADY_EXISTS       a different message from the same client and round
OutOfOrder             FAILED_PRECONDITION  the round is not open (too early, finished, other attempt)
NotAParticipant        FAILED_PRECONDITION  not in this round's cohort any more (or cohort full)
RoundAborted           ABORTED              a threshold was not met: nothing is released
(others)               as `servicers.status_for` (unknown task, window not closed, ...)
=====================  ===================  =============================================
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from twinmpc.mpc.masks import messages as m
from twinmpc.mpc.masks.errors import (
    ConflictingMessage,
    ForgedMessage,
    IdentityMismatch,
    MalformedMessage,
    NotAParticipant,
    OutOfOrder,
    RoundAborted,
    WrongSession,
)
from twinmpc.mpc.masks.server import Phase
from twinmpc.mpc.masks.session import Session
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.aggregator import servicers
from twinmpc.services.aggregator.masks_rounds import MasksRounds
from twinmpc.services.auth import current_principal

log = logging.getLogger("twinmpc.aggregator.masks")

STATUS_FOR_MASKS_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (RoundAborted, grpc.StatusCode.ABORTED),
    (ConflictingMessage, grpc.StatusCode.ALREADY_EXISTS),
    (IdentityMismatch, grpc.StatusCode.PERMISSION_DENIED),
    (WrongSession, grpc.StatusCode.INVALID_ARGUMENT),
    (ForgedMessage, grpc.StatusCode.INVALID_ARGUMENT),
    (MalformedMessage, grpc.StatusCode.INVALID_ARGUMENT),
    (OutOfOrder, grpc.StatusCode.FAILED_PRECONDITION),
    (NotAParticipant, grpc.StatusCode.FAILED_PRECONDITION),
)

_KIND = {
    Phase.ADVERTISE: m.Advertise,
    Phase.SHARE_KEYS: m.ShareKeys,
    Phase.MASKED_INPUT: m.MaskedInput,
    Phase.CONFIRM: m.Confirm,
    Phase.UNMASK: m.Unmask,
}


def _round(phase: Phase):
    """One RPC per round: the message must be that round's kind; errors map to one status each."""

    name = _KIND[phase].__name__

    async def method(self: SecureAggregationServicer, request: pb.MasksRoundRequest, context) -> pb.MasksRoundReply:
        try:
            if isinstance(request, servicers.MalformedMessage):
                request.check()
            data = request.message
            if len(data) < 2 or data[1] != _KIND[phase].KIND:
                raise MalformedMessage(f"a {phase.name} call carries a {name} message")
            if len(request.task_id) != 32:
                raise MalformedMessage("task_id must be 32 bytes")
            session = Session(request.task_id, request.window_start, request.attempt)
            bound = _KIND[phase].decode(data).session  # refuse garbage before it can open a round
            if bound != session:
                raise WrongSession(f"message is bound to round {bound.name}, the request names round {session.name}")
            reply = await self.rounds.submit(current_principal().identity, session, phase, data)
            return pb.MasksRoundReply(message=reply)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = next((c for cls, c in STATUS_FOR_MASKS_ERROR if isinstance(exc, cls)), None) or servicers.status_for(exc)
            if code is None:
                log.exception("internal error in masks round %s", phase.name)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            log.warning("masks %s refused: %s: %s", name, code.name, exc)
            await context.abort(code, str(exc))

    method.__name__ = {Phase.CONFIRM: "ConfirmSurvivors"}.get(phase, name)
    return method


class SecureAggregationServicer(pb_grpc.SecureAggregationServicer):
    def __init__(self, rounds: MasksRounds) -> None:
        self.rounds = rounds

    Advertise = _round(Phase.ADVERTISE)
    ShareKeys = _round(Phase.SHARE_KEYS)
    MaskedInput = _round(Phase.MASKED_INPUT)
    ConfirmSurvivors = _round(Phase.CONFIRM)
    Unmask = _round(Phase.UNMASK)


def masks_servicer(core) -> SecureAggregationServicer:
    """The servicer over an aggregator's store, task registry and clock; resumes unfinished rounds."""
    rounds = MasksRounds(core.store, lambda task_id: core.tasks.load(task_id).task, core.state.clock)
    asyncio.get_running_loop().create_task(rounds.resume(), name="masks-resume")
    return SecureAggregationServicer(rounds)


__all__ = ["STATUS_FOR_MASKS_ERROR", "SecureAggregationServicer", "masks_servicer"]
