"""Thin gRPC servicers: decode, call the role, map domain errors to gRPC status codes in one place."""

from __future__ import annotations

import asyncio
import functools
import logging

import grpc

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc.errors import (
    BatchNotClosed,
    BatchTooSmall,
    BudgetExhausted,
    CollectionRefused,
    DecodeError,
    InvalidReport,
    InvalidTask,
    ReplayedReport,
    SealError,
    StaleReport,
    UnknownTask,
)
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.aggregator.core import AggregatorCore
from twinmpc.services.aggregator.errors import BatchMismatch, NotThisRole, PeerFailure, WrongPeer
from twinmpc.services.aggregator.key_rotator import KeyRefused
from twinmpc.services.auth import current_principal
from twinmpc.services.keyfiles import HpkeKeyEntry
from twinmpc.services.ratelimit import RateLimited
from twinmpc.services.storage import AlreadyExists, NotFound, WindowClosed

log = logging.getLogger("twinmpc.aggregator")

# Most specific first: the one table that turns domain errors into gRPC status codes.
STATUS_FOR_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (UnknownTask, grpc.StatusCode.NOT_FOUND),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (WindowClosed, grpc.StatusCode.FAILED_PRECONDITION),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ReplayedReport, grpc.StatusCode.ALREADY_EXISTS),
    (StaleReport, grpc.StatusCode.FAILED_PRECONDITION),
    (SealError, grpc.StatusCode.INVALID_ARGUMENT),
    (DecodeError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidReport, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidTask, grpc.StatusCode.INVALID_ARGUMENT),
    (BatchNotClosed, grpc.StatusCode.FAILED_PRECONDITION),
    (BatchTooSmall, grpc.StatusCode.FAILED_PRECONDITION),
    (BudgetExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (CollectionRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (BatchMismatch, grpc.StatusCode.ABORTED),
    (WrongPeer, grpc.StatusCode.PERMISSION_DENIED),
    (NotThisRole, grpc.StatusCode.FAILED_PRECONDITION),
    (KeyRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (PeerFailure, grpc.StatusCode.UNAVAILABLE),
)

_OUTCOME_STATUS = {
    pb.REPLAYED: grpc.StatusCode.ALREADY_EXISTS,
    pb.STALE: grpc.StatusCode.FAILED_PRECONDITION,
    pb.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
}


class MalformedMessage:
    """Stands in for a request that did not parse, so the servicer can refuse it precisely."""

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name = type_name
        self.error = error

    def check(self) -> None:
        raise DecodeError(f"malformed {self.type_name}: {self.error}")


def safe_deserializer(message_class):
    """Deserializer that never raises (gRPC would answer UNKNOWN); see `MalformedMessage`."""

    def deserialize(data: bytes):
        try:
            return message_class.FromString(data)
        except Exception as exc:  # protobuf DecodeError and friends
            return MalformedMessage(message_class.DESCRIPTOR.full_name, str(exc))

    return deserialize


def register_servicer(server, servicer, service_name: str) -> None:
    """Add a servicer with `safe_deserializer`s (the generated add_*_to_server would raise)."""
    from google.protobuf import message_factory

    service = pb.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for method in service.methods:
        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=safe_deserializer(message_factory.GetMessageClass(method.input_type)),
            response_serializer=lambda msg: msg.SerializeToString(),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def status_for(exc: Exception) -> grpc.StatusCode | None:
    return next((code for cls, code in STATUS_FOR_ERROR if isinstance(exc, cls)), None)


def mapped_errors(method):
    """Turn domain errors raised by `method` into an aborted RPC with a precise status."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            if isinstance(request, MalformedMessage):
                request.check()
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise  # already answered
            code = status_for(exc)
            if code is None:
                log.exception("internal error in %s", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            log.warning("%s refused: %s: %s", method.__name__, code.name, exc)
            trailer = (("retry-after-ms", str(-(-exc.retry_after_ns // 1_000_000))),) if isinstance(exc, RateLimited) else ()
            await context.abort(code, str(exc), trailing_metadata=trailer)

    return wrapper


class UploadServicer(pb_grpc.UploadServicer):
    def __init__(self, core: AggregatorCore) -> None:
        self.core = core

    @mapped_errors
    async def UploadReport(self, request: pb.UploadReportRequest, context) -> pb.UploadReportResponse:
        (outcome,) = await self.core.upload.ingest(request.task_id, [request.report])
        if outcome.status != pb.ACCEPTED:
            await context.abort(_OUTCOME_STATUS[outcome.status], outcome.message)
        return pb.UploadReportResponse()

    @mapped_errors
    async def UploadReports(self, request_iterator, context) -> pb.UploadBatchResponse:
        outcomes: list[pb.ReportOutcome] = []
        async for batch in request_iterator:
            if isinstance(batch, MalformedMessage):
                batch.check()
            outcomes.extend(await self.core.upload.ingest(batch.task_id, list(batch.reports)))
        return pb.UploadBatchResponse(outcomes=outcomes)


class AggregationServicer(pb_grpc.AggregationServicer):
    def __init__(self, core: AggregatorCore) -> None:
        self.core = core

    @mapped_errors
    async def InitJob(self, request: pb.AggregationJobInit, context) -> pb.AggregationJobInitResponse:
        caller = current_principal().identity  # read on the loop: the principal is a context variable
        results = await asyncio.to_thread(self.core.helper.init_job, request.task_id, request.job_id, list(request.reports), caller)
        return pb.AggregationJobInitResponse(results=results)

    @mapped_errors
    async def ContinueJob(self, request: pb.AggregationJobContinue, context) -> pb.AggregationJobContinueResponse:
        caller = current_principal().identity
        accepted, rejected = await asyncio.to_thread(self.core.helper.continue_job, request.task_id, request.job_id, list(request.verdicts), caller)
        return pb.AggregationJobContinueResponse(accepted=accepted, rejected_report_ids=rejected)

    @mapped_errors
    async def GetAggregateShare(self, request: pb.AggregateShareRequest, context) -> pb.AggregateShareResponse:
        return await asyncio.to_thread(self.core.helper.aggregate_share, request, current_principal().identity)


class CollectionServicer(pb_grpc.CollectionServicer):
    def __init__(self, core: AggregatorCore) -> None:
        self.core = core

    @mapped_errors
    async def Collect(self, request: pb.CollectRequest, context) -> pb.CollectResponse:
        return await self.core.collection.collect(
            request.task_id, request.window_start, request.collection_index, actor=current_principal().identity
        )


class TaskAdminServicer(pb_grpc.TaskAdminServicer):
    def __init__(self, core: AggregatorCore) -> None:
        self.core = core

    @mapped_errors
    async def PutTask(self, request: pb.PutTaskRequest, context) -> pb.PutTaskResponse:
        task = self.core.tasks.put(request.task_json, request.aggregator_index, request.verify_key, actor=current_principal().identity)
        return pb.PutTaskResponse(task_id=task.task_id)

    @mapped_errors
    async def AmendTask(self, request: pb.AmendTaskRequest, context) -> pb.AmendTaskResponse:
        task = self.core.tasks.amend(request.task_id, request.amendment_json, actor=current_principal().identity)
        return pb.AmendTaskResponse(task_json=task.to_json())

    @mapped_errors
    async def ListTasks(self, request, context) -> pb.ListTasksResponse:
        return pb.ListTasksResponse(task_json=[t.to_json() for t in self.core.tasks.list()])

    @mapped_errors
    async def GetHpkeConfig(self, request, context) -> pb.GetHpkeConfigResponse:
        await asyncio.to_thread(self.core.state.keys.refresh)  # a rotation through another replica counts at once
        return pb.GetHpkeConfigResponse(hpke_config=self.core.hpke.config.encode(), identity=self.core.identity)

    @mapped_errors
    async def RotateHpkeKey(self, request, context) -> pb.RotateHpkeKeyResponse:
        keypair = await asyncio.to_thread(self.core.state.keys.rotate, current_principal().identity)
        return pb.RotateHpkeKeyResponse(hpke_config=keypair.config.encode())

    @mapped_errors
    async def RetireHpkeKey(self, request: pb.RetireHpkeKeyRequest, context) -> pb.RetireHpkeKeyResponse:
        keys = self.core.state.keys
        entry = await asyncio.to_thread(keys.retire, request.config_id, current_principal().identity, force=request.force)
        return pb.RetireHpkeKeyResponse(key=_key_info(entry, keys.current))

    @mapped_errors
    async def ListHpkeKeys(self, request, context) -> pb.ListHpkeKeysResponse:
        keys = self.core.state.keys
        await asyncio.to_thread(keys.refresh)
        key_set = keys.key_set
        return pb.ListHpkeKeysResponse(keys=[_key_info(e, key_set.current) for e in key_set.entries])


def _key_info(entry: HpkeKeyEntry, current: HpkeKeypair) -> pb.HpkeKeyInfo:
    return pb.HpkeKeyInfo(hpke_config=entry.config.encode(), state=entry.state, current=entry.config == current.config,
                          created=entry.created, retired=entry.retired or 0)
