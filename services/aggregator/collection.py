"""The leader's collection role: one durable, idempotent collection job per (task, window, index).

The state machine is `services.aggregator.release`'s; here is the leader's order
of steps, chosen so that a refusal or a failure spends nothing anywhere:

1. a collection already RELEASED answers its stored bytes (a retry, any number of times);
2. checks (window closed and aligned, index within the task's terms);
3. flush the window (aggregate every stored report), then batch size and budget
   checks, then FREEZE the report set (late uploads are refused from here on);
4. ask every helper for its share of the frozen batch (each helper runs the same
   state machine on its own: it freezes, draws its noise once, stores and charges);
5. release the leader's own share, storing the whole response with the leader's
   ledger charge in one transaction.

A helper outage in step 4 leaves the collection FROZEN with nothing spent by the
leader: the retry returns the same frozen batch.
"""

from __future__ import annotations

import asyncio
import json
import time

from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.services.aggregator.errors import NotThisRole, PeerFailure
from twinmpc.services.aggregator.leader_jobs import LeaderJobs
from twinmpc.services.aggregator.peers import HelperPeers
from twinmpc.services.aggregator.release import WindowRelease
from twinmpc.services.aggregator.state import AggregatorState
from twinmpc.mpc.modes import mode_of
from twinmpc.mpc.task import Task
from twinmpc.services.aggregator.tasks import LoadedTask, TaskRegistry
from twinmpc.services.storage import CollectionRecord, WindowBusy
from twinmpc.services.storage.base import RELEASED


class LeaderCollection:
    def __init__(self, state: AggregatorState, tasks: TaskRegistry, jobs: LeaderJobs, peers: HelperPeers) -> None:
        self.state = state
        self.tasks = tasks
        self.jobs = jobs
        self.peers = peers
        self.windows = WindowRelease(state)

    async def collect(self, task_id: bytes, window_start: int, index: int = 0, actor: str = "local") -> pb.CollectResponse:
        started = time.perf_counter()
        loaded = self.tasks.load(task_id)
        if loaded.agg_index != 0:
            raise NotThisRole("collections go to the task's leader (aggregator 0)")
        task = loaded.task
        record = await asyncio.to_thread(self.state.store.get_collection, task_id, window_start, index)
        if record is None or record.state != RELEASED:
            if record is None:
                await asyncio.to_thread(self.windows.check_collectable, task, window_start, index, actor)
                record = await self._freeze(loaded, window_start, index, actor)
            record = await self._release(loaded, record, actor)
        self.state.metrics.inc("collections_total")
        self.state.metrics.observe("collect", time.perf_counter() - started)
        return pb.CollectResponse.FromString(record.response)

    async def _freeze(self, loaded: LoadedTask, window_start: int, index: int, actor: str) -> CollectionRecord:
        """Flush, check, freeze; repeated while uploads or another replica still move the window."""
        task = loaded.task
        deadline = time.monotonic() + self.state.config.limits.peer_timeout_seconds
        while True:
            await self.jobs.flush_window(loaded, window_start)
            try:
                return await asyncio.to_thread(self._check_and_freeze, task, window_start, index, actor)
            except WindowBusy:
                if time.monotonic() > deadline:
                    raise PeerFailure(f"window {window_start} kept changing; retry the collection") from None
                await asyncio.sleep(0.01)

    def _check_and_freeze(self, task: Task, window_start: int, index: int, actor: str) -> CollectionRecord:
        """Batch size and budget on the flushed window, then freeze it (WindowBusy if it moved meanwhile)."""
        state_bytes = self.windows.window_state(task, window_start)
        batch = self.windows.check_releasable(task, window_start, index, state_bytes, actor)
        return self.windows.freeze(task, window_start, index, state_bytes, batch)

    async def _release(self, loaded: LoadedTask, record: CollectionRecord, actor: str) -> CollectionRecord:
        task = loaded.task
        helper_shares: list[pb.AggregateShareResponse] = []
        if mode_of(task).verifies_with_helpers:
            request = pb.AggregateShareRequest(
                task_id=task.task_id, window_start=record.window_start, report_count=record.report_count,
                checksum=record.checksum, collection_id=record.collection_id, collection_index=record.index,
            )
            helper_shares = await self.peers.aggregate_shares(task, request)

        def response(share: bytes, dp_applied: dict) -> bytes:
            return pb.CollectResponse(
                task_id=task.task_id, window_start=record.window_start, window_seconds=task.window_seconds,
                report_count=record.report_count, checksum=record.checksum,
                sealed_aggregate_shares=[share] + [h.sealed_aggregate_share for h in helper_shares],
                dp_applied_json=json.dumps(dp_applied, sort_keys=True), collection_id=record.collection_id,
                collection_index=record.index,
            ).SerializeToString(deterministic=True)

        return await asyncio.to_thread(self.windows.release, task, record, 0, actor, response)
