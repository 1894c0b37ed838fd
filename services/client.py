"""Python clients for edge nodes, controllers and operators (grpc.aio over mTLS).

* `UploadClient`: edge -> leader, batched client-streaming upload with one
  outcome per report.
* `Collector`: controller -> leader; unseals the K aggregate shares with the
  collector's HPKE key and returns a `CollectionResult`.
* `TaskAdminClient`: operator -> each aggregator; `provision_task` builds the
  task document from every aggregator's HPKE config and installs it with a
  fresh verify key; `amend_task` changes it in place; `rotate_hpke_key`,
  `retire_hpke_key` and `list_hpke_keys` manage an aggregator's HPKE keys.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import grpc

from twinmpc.crypto.seal import HpkeConfig, HpkeKeypair
from twinmpc.mpc.collector import CollectionResult
from twinmpc.mpc.modes import mode_of
from twinmpc.mpc.report import Report
from twinmpc.mpc.task import Task, b64encode
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc

DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024


def _channel(endpoint: str, credentials: grpc.ChannelCredentials, max_message: int = DEFAULT_MAX_MESSAGE) -> grpc.aio.Channel:
    opts = [("grpc.max_receive_message_length", max_message), ("grpc.max_send_message_length", max_message)]
    return grpc.aio.secure_channel(endpoint, credentials, options=opts)


@dataclass(frozen=True)
class UploadOutcome:
    report_id: bytes
    accepted: bool
    permanent: bool  # a rejection that retrying cannot fix (replay, invalid, stale)
    status: str
    message: str


def report_to_proto(report: Report) -> pb.Report:
    return pb.Report(report_id=report.report_id, time=report.time, public_share=report.public_share, sealed_shares=list(report.sealed_shares))


class _LeaderChannel:
    """One long-lived mTLS channel to a task's leader, closed by `close()` or on leaving `async with`.

    Edge nodes and controllers keep it open across many calls (one TLS handshake,
    HTTP/2 multiplexing), unlike the operator's one-off `TaskAdminClient` calls.
    """

    def __init__(self, endpoint: str, credentials: grpc.ChannelCredentials, timeout: float) -> None:
        self._channel = _channel(endpoint, credentials)
        self.timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class UploadClient(_LeaderChannel):
    """Edge node's connection to a task's leader."""

    def __init__(self, endpoint: str, credentials: grpc.ChannelCredentials, *, batch_size: int = 500, timeout: float = 30.0) -> None:
        super().__init__(endpoint, credentials, timeout)
        self._stub = pb_grpc.UploadStub(self._channel)
        self.batch_size = batch_size

    async def upload(self, task_id: bytes, report: Report) -> None:
        """Upload one report; raises grpc.aio.AioRpcError with a precise status on refusal."""
        await self._stub.UploadReport(pb.UploadReportRequest(task_id=task_id, report=report_to_proto(report)), timeout=self.timeout)

    async def upload_batch(self, task_id: bytes, reports: Sequence[Report]) -> list[UploadOutcome]:
        """Stream reports in batches; one outcome per report, in order.

        A transport failure raises grpc.aio.AioRpcError: the caller retries the
        whole batch (report ids make the retry idempotent: already stored
        reports come back REPLAYED, which the caller may treat as delivered).
        """

        async def batches():
            for i in range(0, len(reports), self.batch_size):
                chunk = reports[i : i + self.batch_size]
                yield pb.UploadBatch(task_id=task_id, reports=[report_to_proto(r) for r in chunk])

        response = await self._stub.UploadReports(batches(), timeout=self.timeout)
        return [
            UploadOutcome(o.report_id, o.status == pb.ACCEPTED, o.status != pb.ACCEPTED, pb.ReportStatus.Name(o.status), o.message)
            for o in response.outcomes
        ]


class Collector(_LeaderChannel):
    """Controller API: collect a closed window's result from the task's leader."""

    def __init__(
        self,
        endpoint: str,
        credentials: grpc.ChannelCredentials,
        collector_key: HpkeKeypair | None,
        *,
        he_secret_key: Any = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(endpoint, credentials, timeout)
        self._stub = pb_grpc.CollectionStub(self._channel)
        self._key = collector_key
        self._he_key = he_secret_key

    async def collect(self, task: Task, window_start: int, index: int = 0) -> CollectionResult:
        """Collection `index` of a closed window; repeating a call returns the same released result."""
        request = pb.CollectRequest(task_id=task.task_id, window_start=window_start, collection_index=index)
        response = await self._stub.Collect(request, timeout=self.timeout)
        mode = mode_of(task)
        key = self._key if mode.collector_holds_hpke_key else self._he_key
        if key is None:
            which = "HPKE key" if mode.collector_holds_hpke_key else "homomorphic secret key"
            raise ValueError(f"mode {task.mode!r} needs the collector's {which}")
        value = mode.open_collection(
            task, key, window_start, response.report_count, response.checksum, list(response.sealed_aggregate_shares)
        )
        dp = json.loads(response.dp_applied_json) if response.dp_applied_json else {}
        released = task.output.apply(task.measurement, value, response.report_count)
        return CollectionResult(task.task_id, window_start, task.window_seconds, response.report_count, released, dp, response.collection_id)


class TaskAdminClient:
    """Operator's connection to one or more aggregators."""

    def __init__(self, credentials: grpc.ChannelCredentials, *, timeout: float = 30.0) -> None:
        self._credentials = credentials
        self.timeout = timeout

    async def _with(self, endpoint: str, fn):
        async with _channel(endpoint, self._credentials) as channel:
            return await fn(pb_grpc.TaskAdminStub(channel))

    async def hpke_config(self, endpoint: str) -> tuple[HpkeConfig, str]:
        """An aggregator's HPKE config and the identity in its certificate."""
        resp = await self._with(endpoint, lambda s: s.GetHpkeConfig(pb.GetHpkeConfigRequest(), timeout=self.timeout))
        return HpkeConfig.decode(resp.hpke_config), resp.identity

    async def list_tasks(self, endpoint: str) -> list[Task]:
        resp = await self._with(endpoint, lambda s: s.ListTasks(pb.ListTasksRequest(), timeout=self.timeout))
        return [Task.from_json(t) for t in resp.task_json]

    async def provision_task(self, endpoints: Sequence[str], document: dict[str, Any], *, verify_key: bytes | None = None) -> Task:
        """Fill in each aggregator's HPKE config, then install the task on all of them."""
        configs = await asyncio.gather(*(self.hpke_config(e) for e in endpoints))
        doc = dict(document)
        doc.setdefault("task_id", b64encode(os.urandom(32)))
        doc["aggregators"] = [
            {"endpoint": e, "hpke_config": b64encode(c.encode()), "identity": ident}
            for e, (c, ident) in zip(endpoints, configs, strict=True)
        ]
        task = Task.from_dict(doc)
        key_size = mode_of(task).verify_key_size(task)
        key = os.urandom(key_size) if verify_key is None else verify_key
        for index, endpoint in enumerate(endpoints):
            req = pb.PutTaskRequest(task_json=task.to_json(), aggregator_index=index, verify_key=key)
            await self._with(endpoint, lambda s, req=req: s.PutTask(req, timeout=self.timeout))
        return task

    async def amend_task(self, endpoints: Sequence[str], task: Task, changes: dict[str, Any]) -> Task:
        """Tighten a task on every aggregator (each one checks and audits the amendment itself)."""
        req = pb.AmendTaskRequest(task_id=task.task_id, amendment_json=json.dumps(changes))
        amended = [await self._with(e, lambda s: s.AmendTask(req, timeout=self.timeout)) for e in endpoints]
        return Task.from_json(amended[-1].task_json)

    async def rotate_hpke_key(self, endpoint: str) -> HpkeConfig:
        """Make a new HPKE key an aggregator's current one (older keys keep opening until retired)."""
        resp = await self._with(endpoint, lambda s: s.RotateHpkeKey(pb.RotateHpkeKeyRequest(), timeout=self.timeout))
        return HpkeConfig.decode(resp.hpke_config)

    async def retire_hpke_key(self, endpoint: str, config_id: int, *, force: bool = False) -> pb.HpkeKeyInfo:
        """Retire a non-current HPKE key of an aggregator: reports sealed to it are refused from now on."""
        req = pb.RetireHpkeKeyRequest(config_id=config_id, force=force)
        return (await self._with(endpoint, lambda s: s.RetireHpkeKey(req, timeout=self.timeout))).key

    async def list_hpke_keys(self, endpoint: str) -> list[pb.HpkeKeyInfo]:
        """An aggregator's HPKE keys, oldest first: config, state, current, created/retired times."""
        resp = await self._with(endpoint, lambda s: s.ListHpkeKeys(pb.ListHpkeKeysRequest(), timeout=self.timeout))
        return list(resp.keys)
