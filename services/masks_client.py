"""An edge node's side of masks mode over gRPC: one window's round, with retries and attempts.

`MasksRoundClient.run(task, window, measurement)` drives `mpc.masks.client.MasksClient`
through the aggregator's `SecureAggregation` service: each call waits until
its round closes (the timeout is the round deadline plus slack).  A call that
fails with UNAVAILABLE or DEADLINE_EXCEEDED (the aggregator restarting) is
repeated with the same bytes, which the aggregator treats as a retry.

If a round aborts before this node sent its masked input, the node joins the
next attempt with fresh keys and noise.  Once it has sent a masked input for a
window it never sends another for that window (`ParticipationLog`): two
differently noised inputs for one window would let a server average the noise.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from twinmpc.mpc.masks import mode
from twinmpc.mpc.masks.client import MasksClient
from twinmpc.mpc.masks.directory import ClientKeys, PeerDirectory
from twinmpc.mpc.masks.errors import MasksError
from twinmpc.mpc.masks.server import Phase
from twinmpc.mpc.task import Task, b64encode
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc

log = logging.getLogger("twinmpc.edge.masks")

_RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)]


@dataclass(frozen=True)
class RoundOutcome:
    """How one node's part of a window ended: 'summed', 'aborted' or 'dropped' (it stopped itself)."""

    status: str
    attempt: int
    detail: str = ""


class ParticipationLog:
    """Windows for which this node already sent a masked input (marker files, fsynced before sending)."""

    def __init__(self, directory: Path | None) -> None:
        self._dir = None if directory is None else Path(directory) / "masks-participation"
        self._seen: set[tuple[bytes, int]] = set()

    def _path(self, task_id: bytes, window_start: int) -> Path | None:
        return None if self._dir is None else self._dir / f"{b64encode(task_id)}-{window_start}"

    def sent(self, task_id: bytes, window_start: int) -> bool:
        path = self._path(task_id, window_start)
        return (task_id, window_start) in self._seen or (path is not None and path.exists())

    def record(self, task_id: bytes, window_start: int) -> None:
        self._seen.add((task_id, window_start))
        path = self._path(task_id, window_start)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class MasksRoundClient:
    """One edge node's connection to a masks-mode aggregator."""

    def __init__(
        self,
        endpoint: str,
        credentials: grpc.ChannelCredentials,
        keys: ClientKeys,
        directory: PeerDirectory,
        *,
        state_dir: Path | None = None,
        slack_seconds: float = 10.0,
        give_up_seconds: float | None = None,
    ) -> None:
        self._channel = grpc.aio.secure_channel(endpoint, credentials, options=_OPTIONS)
        self._stub = pb_grpc.SecureAggregationStub(self._channel)
        self.keys = keys
        self._directory = directory
        self._pairs: dict[tuple[str, bytes], bytes] = {}  # pair secrets, reused across windows
        self._log = ParticipationLog(state_dir)
        self._slack = slack_seconds
        self._give_up = give_up_seconds

    def __repr__(self) -> str:
        return f"MasksRoundClient({self.keys.identity!r})"

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> MasksRoundClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, task: Task, window_start: int, measurement: Any, *, drop_before: Phase | None = None,
                  max_attempts: int = 3) -> RoundOutcome:
        """Take part in the window's round; `drop_before` stops before that round's message (a simulated dropout)."""
        value = mode.client_value(task, measurement)
        for attempt in range(max_attempts):
            if self._log.sent(task.task_id, window_start):
                return RoundOutcome("aborted", attempt, "a masked input was already sent for this window; not sending another")
            client = MasksClient(mode.round_config(task, window_start, attempt), self.keys, self._directory, value,
                                 pair_secrets=self._pairs)
            try:
                return await self._attempt(task, window_start, attempt, client, drop_before)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ABORTED or self._log.sent(task.task_id, window_start):
                    return RoundOutcome("aborted", attempt, f"{exc.code().name}: {exc.details()}")
                log.warning("masks round of window %d aborted before our input (%s); trying attempt %d",
                            window_start, exc.details(), attempt + 1)
            except MasksError as exc:  # this node refused the server's message: it stops here
                return RoundOutcome("aborted", attempt, f"{type(exc).__name__}: {exc}")
        return RoundOutcome("aborted", max_attempts, "no attempt completed")

    async def _attempt(self, task: Task, window_start: int, attempt: int, client: MasksClient, drop_before: Phase | None) -> RoundOutcome:
        calls = (
            (Phase.ADVERTISE, self._stub.Advertise, lambda _: client.advertise()),
            (Phase.SHARE_KEYS, self._stub.ShareKeys, client.share_keys),
            (Phase.MASKED_INPUT, self._stub.MaskedInput, client.masked_input),
            (Phase.CONFIRM, self._stub.ConfirmSurvivors, client.confirm),
            (Phase.UNMASK, self._stub.Unmask, client.unmask),
        )
        reply = b""
        for phase, rpc, step in calls:
            if drop_before is not None and phase >= drop_before:
                return RoundOutcome("dropped", attempt, f"stopped before {phase.name}")
            message = step(reply)
            if phase == Phase.MASKED_INPUT:
                self._log.record(task.task_id, window_start)
            request = pb.MasksRoundRequest(task_id=task.task_id, window_start=window_start, attempt=attempt, message=message)
            reply = await self._call(rpc, request, task.masks.round_seconds)
            if not reply and phase < Phase.UNMASK:  # the round ended while this node retried, its input summed
                return RoundOutcome("summed", attempt, f"the round ended while this node retried {phase.name}")
        return RoundOutcome("summed", attempt)

    async def _call(self, rpc, request: pb.MasksRoundRequest, round_seconds: int) -> bytes:
        """One round's call; repeated with the same bytes while the aggregator is unreachable."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (self._give_up if self._give_up is not None else 4 * round_seconds + 3 * self._slack)
        delay = 0.1
        while True:
            try:
                response = await rpc(request, timeout=round_seconds + self._slack, wait_for_ready=True)
                return response.message
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRY or loop.time() + delay > give_up:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


__all__ = ["MasksRoundClient", "ParticipationLog", "RoundOutcome"]
