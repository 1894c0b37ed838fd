"""The leader's only gRPC client to its helpers: one channel per endpoint, every call to all helpers at once.

A helper that does not answer (or answers with an error) turns into `PeerFailure`,
which the job driver retries later and the collection returns as UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc

from twinmpc.mpc.task import Task
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.aggregator.config import Limits
from twinmpc.services.aggregator.errors import PeerFailure
from twinmpc.services.storage import PendingReport


class HelperPeers:
    def __init__(self, limits: Limits, credentials: grpc.ChannelCredentials | None) -> None:
        self.limits = limits
        self._credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def _stub(self, endpoint: str) -> pb_grpc.AggregationStub:
        channel = self._channels.get(endpoint)
        if channel is None:
            if self._credentials is None:
                raise PeerFailure("no peer credentials configured")
            opts = [
                ("grpc.max_receive_message_length", self.limits.max_message_bytes),
                ("grpc.max_send_message_length", self.limits.max_message_bytes),
                # a restarted peer must be reachable again within a signal cycle, not minutes
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ]
            channel = grpc.aio.secure_channel(endpoint, self._credentials, options=opts)
            self._channels[endpoint] = channel
        return pb_grpc.AggregationStub(channel)

    async def _each_helper(self, task: Task, call: Callable[[pb_grpc.AggregationStub, int, float], object]) -> list:
        timeout = self.limits.peer_timeout_seconds
        calls = [call(self._stub(a.endpoint), j, timeout) for j, a in enumerate(task.aggregators) if j > 0]
        try:
            return await asyncio.gather(*calls)
        except grpc.aio.AioRpcError as exc:
            raise PeerFailure(f"helper call failed: {exc.code().name}: {exc.details()}") from exc

    async def init_job(self, task: Task, job_id: bytes, reports: Sequence[PendingReport]) -> list[pb.AggregationJobInitResponse]:
        def call(stub, j, timeout):
            shares = [pb.ReportShare(report_id=r.report_id, time=r.time, public_share=r.public_share, sealed_share=r.helper_shares[j - 1])
                      for r in reports]
            return stub.InitJob(pb.AggregationJobInit(task_id=task.task_id, job_id=job_id, reports=shares), timeout=timeout, wait_for_ready=True)

        return await self._each_helper(task, call)

    async def continue_job(self, task: Task, job_id: bytes, verdicts: Sequence[pb.ReportVerdict]) -> set[bytes]:
        """Finish the job on every helper; the report ids some helper rejected."""
        def call(stub, j, timeout):
            req = pb.AggregationJobContinue(task_id=task.task_id, job_id=job_id, verdicts=verdicts)
            return stub.ContinueJob(req, timeout=timeout, wait_for_ready=True)

        rejected: set[bytes] = set()
        for resp in await self._each_helper(task, call):
            rejected.update(resp.rejected_report_ids)
        return rejected

    async def aggregate_shares(self, task: Task, request: pb.AggregateShareRequest) -> list[pb.AggregateShareResponse]:
        return await self._each_helper(task, lambda stub, j, timeout: stub.GetAggregateShare(request, timeout=timeout, wait_for_ready=True))
