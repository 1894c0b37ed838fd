"""Aggregator state machine: tasks, uploads, the leader's aggregation jobs, collection.

Transport-free: the servicers in `services.aggregator.servicers` decode
protobuf, call these methods and map domain errors to gRPC status codes.
The leader (aggregator index 0 of a task) stores uploaded reports durably,
drives aggregation jobs as reports arrive (not on a timer), and answers
collections; helpers (`services.aggregator.helper_role`) verify their
shares, de-duplicate report ids and accumulate.  Job steps are idempotent, so any process can be killed and
restarted at any point without losing or double-counting a report:

    leader                       helper(s)
    acquire reports -> job J     .
    InitJob(J) ---------------->  record report ids (replay check), open, verify_init
    <----------------------------  verifier shares
    verifier messages, persist J as 'continuing'
    ContinueJob(J) ------------>  verify_next, accumulate, mark J done (once)
    <----------------------------  accepted count, rejected ids
    accumulate own shares, mark reports accepted, J done (one transaction)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable

import grpc

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc import he_mode
from twinmpc.mpc.errors import (
    CollectionRefused,
    DecodeError,
    InvalidReport,
    InvalidTask,
    ReplayedReport,
    StaleReport,
    UnknownTask,
)
from twinmpc.mpc.report import REPORT_ID_SIZE, Report
from twinmpc.mpc.task import Task
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.aggregator.config import AggregatorConfig
from twinmpc.services.aggregator.helper_role import HelperRole
from twinmpc.services.aggregator.metrics import Metrics
from twinmpc.services.aggregator.privacy import CollectionGuard, noise_plan
from twinmpc.services.aggregator.release import WindowRelease
from twinmpc.services.aggregator.roles import LoadedTask, NotThisRole, PeerFailure, merge_accumulators
from twinmpc.services import pki
from twinmpc.services.keyfiles import load_or_create_datastore_key, load_or_create_hpke
from twinmpc.services.storage import Datastore, NotFound, PendingReport, SqliteDatastore, TaskRecord

log = logging.getLogger("twinmpc.aggregator")


def open_datastore(config: AggregatorConfig) -> Datastore:
    """The aggregator's store: PostgreSQL when `database_url` is set, else SQLite in data_dir.

    Replicas sharing one database must share `datastore.key` (it seals the secret columns).
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_datastore_key(config.data_dir / "datastore.key")
    if config.database_url:
        from twinmpc.services.storage.postgres import PostgresDatastore  # optional dependency: pip install '.[postgres]'

        return PostgresDatastore(config.database_url, key, password=config.database_password())
    return SqliteDatastore(config.data_dir / "aggregator.sqlite3", key)


class AggregatorCore:
    """Everything one aggregator process knows and does, minus the transport."""

    def __init__(
        self,
        config: AggregatorConfig,
        *,
        peer_credentials: grpc.ChannelCredentials | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.hpke = load_or_create_hpke(config.data_dir / "hpke_key.json", config.hpke_suite)
        self.identity = pki.principal_from_certificate(config.tls.cert.read_bytes()).identity
        self.store = open_datastore(config)
        self.metrics = Metrics()
        self.metrics_server = None
        self.metrics_port = 0
        self.guard = CollectionGuard(config.data_dir, self.store, config.identity)
        self.clock = clock
        self.windows = WindowRelease(self.store, self.guard, clock)
        self.helper = HelperRole(self)
        self._peer_credentials = peer_credentials
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: dict[bytes, LoadedTask] = {}
        self._wakeup = asyncio.Event()
        self._job_lock = asyncio.Lock()
        self._driver: asyncio.Task | None = None
        self._stopping = False

    # --------------------------------------------------------------- tasks ---
    def put_task(self, task_json: str, agg_index: int, verify_key: bytes, actor: str = "local") -> Task:
        task = Task.from_json(task_json)
        noise_plan(task)  # the DP block must calibrate for this measurement
        if not 0 <= agg_index < task.num_aggregators:
            raise InvalidTask(f"aggregator_index {agg_index} outside 0..{task.num_aggregators - 1}")
        mine = task.aggregators[agg_index].hpke_config
        if task.mode == "shares" and mine != self.hpke.config:
            raise InvalidTask(f"aggregators[{agg_index}].hpke_config is not this aggregator's HPKE config")
        if task.mode == "shares" and len(verify_key) != task.scheme.VERIFY_KEY_SIZE:
            raise InvalidTask(f"verify_key must be {task.scheme.VERIFY_KEY_SIZE} bytes for {task.vdaf}")
        if task.mode != "shares":
            if agg_index != 0:
                raise InvalidTask(f"mode {task.mode!r} runs on one aggregator (index 0)")
            he_mode.public_key(task)  # must load, carry no secret, and hold the window's largest sum
        self.store.put_task(task.task_id, TaskRecord(task.to_json(), agg_index, verify_key))
        self._tasks[task.task_id] = LoadedTask(task, agg_index, verify_key)
        self.guard.record("task_created", actor, task=task.task_id_b64, agg_index=agg_index, measurement=task.measurement.params(),
                          vdaf=task.vdaf, mode=task.mode, dp=task.dp, window_seconds=task.window_seconds, min_batch_size=task.min_batch_size)
        log.info("task stored", extra={"task": task.task_id_b64, "agg_index": agg_index})
        return task

    def load_task(self, task_id: bytes) -> LoadedTask:
        loaded = self._tasks.get(task_id)
        if loaded is None:
            try:
                record = self.store.get_task(task_id)
            except NotFound:
                raise UnknownTask("unknown task id") from None
            loaded = LoadedTask(Task.from_json(record.task_json), record.agg_index, record.verify_key)
            self._tasks[task_id] = loaded
        return loaded

    def list_tasks(self) -> list[Task]:
        return [Task.from_json(r.task_json) for r in self.store.list_tasks()]

    # -------------------------------------------------------------- upload ---
    def ingest(self, task_id: bytes, reports: list[pb.Report]) -> list[pb.ReportOutcome]:
        """Leader: validate, open own share, store durably; one outcome per report."""
        started = time.perf_counter()
        loaded = self.load_task(task_id)
        if loaded.agg_index != 0:
            raise NotThisRole("uploads go to the task's leader (aggregator 0)")
        task = loaded.task
        now = self.clock()
        outcomes: list[pb.ReportOutcome | None] = []
        rows: list[tuple[int, PendingReport]] = []
        positions: list[int] = []
        seen: set[bytes] = set()
        for msg in reports:
            try:
                row = self._check_report(task, msg, now)
                if row.report_id in seen:
                    raise ReplayedReport("report id repeated within the upload")
                seen.add(row.report_id)
            except InvalidReport as exc:
                outcomes.append(_outcome(msg.report_id, exc))
                continue
            positions.append(len(outcomes))
            outcomes.append(None)
            rows.append((task.window_start(row.time), row))
        for pos, (_, row), result in zip(positions, rows, self.store.put_reports(task_id, rows), strict=True):
            if result == "ok":
                outcomes[pos] = pb.ReportOutcome(report_id=row.report_id, status=pb.ACCEPTED)
            elif result == "replay":
                outcomes[pos] = _outcome(row.report_id, ReplayedReport("report id already uploaded"))
            else:
                outcomes[pos] = _outcome(row.report_id, StaleReport("window already collected"))
        accepted = sum(1 for o in outcomes if o is not None and o.status == pb.ACCEPTED)
        self.metrics.inc("reports_uploaded_total", accepted, task=task.task_id_b64[:8])
        for o in outcomes:
            if o is not None and o.status != pb.ACCEPTED:
                self.metrics.inc("reports_refused_total", status=pb.ReportStatus.Name(o.status))
                log.warning("report refused: %s (%s)", pb.ReportStatus.Name(o.status), o.message)
        if accepted:
            self._wakeup.set()
        self.metrics.observe("upload", time.perf_counter() - started)
        return outcomes  # type: ignore[return-value]

    def _check_report(self, task: Task, msg: pb.Report, now: float) -> PendingReport:
        if len(msg.report_id) != REPORT_ID_SIZE:
            raise DecodeError(f"report_id must be {REPORT_ID_SIZE} bytes, got {len(msg.report_id)}")
        if msg.time > now + task.max_skew_seconds:
            raise StaleReport(f"report time {msg.time} is more than {task.max_skew_seconds}s ahead of the aggregator clock")
        if msg.time < now - task.report_expiry_seconds:
            raise StaleReport(f"report time {msg.time} is older than the task's {task.report_expiry_seconds}s report expiry")
        if task.mode != "shares":
            if len(msg.sealed_shares) != 1 or msg.public_share:
                raise DecodeError(f"a {task.mode} report carries exactly one ciphertext and no public share")
            he_mode.validate(task, msg.sealed_shares[0])
            return PendingReport(msg.report_id, msg.time, b"", msg.sealed_shares[0], ())
        if len(msg.sealed_shares) != task.num_aggregators:
            raise DecodeError(f"report carries {len(msg.sealed_shares)} sealed shares, task has {task.num_aggregators} aggregators")
        report = Report(msg.report_id, msg.time, msg.public_share, tuple(msg.sealed_shares))
        share = agg.open_input_share(task, self.hpke, 0, report)
        expected = task.scheme.input_share_size(0)
        if len(share) != expected:
            raise DecodeError(f"leader input share is {len(share)} bytes, expected {expected}")
        return PendingReport(report.report_id, report.time, report.public_share, share, report.sealed_shares[1:])

    # ---------------------------------------------------------- leader jobs ---
    def start(self) -> None:
        """Start the job driver; resumes jobs a previous process left unfinished."""
        if self._driver is None:
            self._driver = asyncio.get_running_loop().create_task(self._drive_forever(), name="aggregation-driver")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._driver is not None:
            self._driver.cancel()
            try:
                await self._driver
            except (asyncio.CancelledError, Exception):
                pass
        for channel in self._channels.values():
            await channel.close()
        self.guard.close()
        self.store.close()

    async def _drive_forever(self) -> None:
        backoff = 0.05
        while not self._stopping:
            try:
                async with self._job_lock:
                    worked = await self._resume_unfinished() or await self._run_next_job()
                backoff = 0.05
            except PeerFailure as exc:
                log.warning("aggregation job postponed: %s", exc)
                worked = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            if not worked:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=0.5)
                except asyncio.TimeoutError:
                    pass

    async def _resume_unfinished(self) -> bool:
        jobs = self.store.get_unfinished_jobs()
        for job in jobs:
            reports = self.store.get_job_reports(job.job_id)
            loaded = self.load_task(job.task_id)
            verdicts = None
            if job.state == "continuing":
                parsed = pb.AggregationJobContinue.FromString(job.verdicts)
                verdicts = list(parsed.verdicts)
            await self._run_job(loaded, job.job_id, reports, verdicts)
        return bool(jobs)

    async def _run_next_job(self) -> bool:
        job_id = os.urandom(16)
        claimed = self.store.acquire_pending_reports(job_id, self.config.limits.job_size)
        if claimed is None:
            return False
        task_id, reports = claimed
        await self._run_job(self.load_task(task_id), job_id, reports, None)
        return True

    async def flush_window(self, loaded: LoadedTask, window_start: int) -> None:
        """Aggregate every stored report of a window now (before a collection).

        Loops until no report of the window is pending or in a job: another replica
        sharing the database may have claimed some after our first look, and its
        jobs are driven here too (every job step is idempotent).
        """
        task_id = loaded.task.task_id
        deadline = time.monotonic() + self.config.limits.peer_timeout_seconds
        async with self._job_lock:
            while True:
                await self._resume_unfinished()
                while True:
                    job_id = os.urandom(16)
                    reports = self.store.acquire_window_reports(job_id, task_id, window_start, self.config.limits.job_size)
                    if not reports:
                        break
                    await self._run_job(loaded, job_id, reports, None)
                if self.store.count_pending(task_id, window_start) == 0:
                    return
                if time.monotonic() > deadline:
                    raise PeerFailure(f"window {window_start} still has reports in flight; retry the collection")
                await asyncio.sleep(0.02)

    def _run_he_job(self, task: Task, job_id: bytes, reports: list[PendingReport]) -> None:
        """Homomorphic modes: validate again and add ciphertexts per window; no helpers."""
        by_window: dict[int, list[bytes]] = {}
        accepted, rejected = [], []
        for r in reports:
            try:
                he_mode.validate(task, r.leader_share)
            except InvalidReport:
                rejected.append(r.report_id)
                continue
            by_window.setdefault(task.window_start(r.time), []).append(r.leader_share)
            accepted.append(r.report_id)
        deltas = {w: he_mode.accumulate(task, cts) for w, cts in by_window.items()}
        self.store.finish_leader_job(job_id, task.task_id, deltas, he_mode.merge(task), accepted, rejected)
        self.metrics.inc("reports_aggregated_total", len(accepted))

    async def _run_job(self, loaded: LoadedTask, job_id: bytes, reports: list[PendingReport], verdicts) -> None:
        started = time.perf_counter()
        task = loaded.task
        if task.mode != "shares":
            self._run_he_job(task, job_id, reports)
            return
        states: dict[bytes, object] = {}
        leader_vshares: dict[bytes, bytes] = {}
        inits = agg.verify_init_many(
            task, loaded.verify_key, 0, [r.report_id for r in reports], [r.public_share for r in reports],
            [r.leader_share for r in reports],
        )
        for r, init in zip(reports, inits, strict=True):
            if not isinstance(init, InvalidReport):
                states[r.report_id], leader_vshares[r.report_id] = init
        if verdicts is None:
            verdicts = await self._init_helpers(task, job_id, reports, leader_vshares)
            self.store.update_job_verdicts(
                job_id, pb.AggregationJobContinue(task_id=task.task_id, job_id=job_id, verdicts=verdicts).SerializeToString()
            )
        rejected_by_helpers = await self._continue_helpers(task, job_id, verdicts)
        accepted_ids: list[bytes] = []
        rejected_ids: list[bytes] = []
        deltas: dict[int, agg.Accumulator] = {}
        by_id = {r.report_id: r for r in reports}
        for v in verdicts:
            state = states.get(v.report_id)
            out = None
            if v.accept and state is not None and v.report_id not in rejected_by_helpers:
                try:
                    out = agg.verify_finish(task, state, v.verifier_message)
                except InvalidReport:
                    out = None
            if out is None:
                rejected_ids.append(v.report_id)
                continue
            window = task.window_start(by_id[v.report_id].time)
            deltas.setdefault(window, agg.Accumulator(task)).add([v.report_id], [out])
            accepted_ids.append(v.report_id)
        self.store.finish_leader_job(
            job_id, task.task_id, {w: a.encode() for w, a in deltas.items()}, merge_accumulators(task), accepted_ids, rejected_ids
        )
        self.metrics.inc("reports_aggregated_total", len(accepted_ids))
        if rejected_ids:
            self.metrics.inc("reports_invalid_total", len(rejected_ids))
            self.guard.record("report_rejected", "leader", task=task.task_id_b64, count=len(rejected_ids), reason="verification failed")
            log.warning("aggregation job rejected %d report(s) as invalid", len(rejected_ids))
        self.metrics.observe("aggregate_job", time.perf_counter() - started)

    def _stub(self, endpoint: str) -> pb_grpc.AggregationStub:
        channel = self._channels.get(endpoint)
        if channel is None:
            if self._peer_credentials is None:
                raise PeerFailure("no peer credentials configured")
            opts = [
                ("grpc.max_receive_message_length", self.config.limits.max_message_bytes),
                ("grpc.max_send_message_length", self.config.limits.max_message_bytes),
                # a restarted peer must be reachable again within a signal cycle, not minutes
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ]
            channel = grpc.aio.secure_channel(endpoint, self._peer_credentials, options=opts)
            self._channels[endpoint] = channel
        return pb_grpc.AggregationStub(channel)

    async def _call_helpers(self, task: Task, make_call):
        timeout = self.config.limits.peer_timeout_seconds
        calls = [make_call(self._stub(a.endpoint), j, timeout) for j, a in enumerate(task.aggregators) if j > 0]
        try:
            return await asyncio.gather(*calls)
        except grpc.aio.AioRpcError as exc:
            raise PeerFailure(f"helper call failed: {exc.code().name}: {exc.details()}") from exc

    async def _init_helpers(self, task: Task, job_id: bytes, reports: list[PendingReport], leader_vshares: dict[bytes, bytes]):
        def call(stub, j, timeout):
            shares = [pb.ReportShare(report_id=r.report_id, time=r.time, public_share=r.public_share, sealed_share=r.helper_shares[j - 1]) for r in reports]
            return stub.InitJob(pb.AggregationJobInit(task_id=task.task_id, job_id=job_id, reports=shares), timeout=timeout, wait_for_ready=True)

        responses = await self._call_helpers(task, call)
        complete: list[int] = []  # reports every aggregator initialised
        share_lists: list[list[bytes]] = []
        for i, r in enumerate(reports):
            vshares = [leader_vshares.get(r.report_id)]
            for resp in responses:
                result = resp.results[i] if i < len(resp.results) else None
                vshares.append(result.verifier_share if result is not None and result.ok and result.report_id == r.report_id else None)
            if all(v is not None for v in vshares):
                complete.append(i)
                share_lists.append(vshares)
        messages: list[bytes | None] = [None] * len(reports)
        for i, message in zip(complete, agg.verifier_messages(task, share_lists), strict=True):
            messages[i] = None if isinstance(message, InvalidReport) else message
        return [
            pb.ReportVerdict(report_id=r.report_id, accept=m is not None, verifier_message=m or b"")
            for r, m in zip(reports, messages, strict=True)
        ]

    async def _continue_helpers(self, task: Task, job_id: bytes, verdicts) -> set[bytes]:
        def call(stub, j, timeout):
            return stub.ContinueJob(pb.AggregationJobContinue(task_id=task.task_id, job_id=job_id, verdicts=verdicts), timeout=timeout, wait_for_ready=True)

        responses = await self._call_helpers(task, call)
        rejected: set[bytes] = set()
        for resp in responses:
            rejected.update(resp.rejected_report_ids)
        return rejected

    # ----------------------------------------------------------- collection ---
    async def collect(self, task_id: bytes, window_start: int, actor: str = "local") -> pb.CollectResponse:
        started = time.perf_counter()
        loaded = self.load_task(task_id)
        if loaded.agg_index != 0:
            raise NotThisRole("collections go to the task's leader (aggregator 0)")
        task = loaded.task
        self.windows.check_closed(task, window_start, actor)
        record = self.store.update_window_collected(task_id, window_start)  # late uploads now refused
        if record.collections > task.max_collections_per_window:
            exc = CollectionRefused(
                f"window {window_start} was already collected {record.collections - 1} time(s); "
                f"the task allows {task.max_collections_per_window}"
            )
            self.windows.refuse(exc, task, window_start, actor)
            raise exc
        await self.flush_window(loaded, window_start)
        if task.mode != "shares":
            return self._collect_he(task, window_start, actor, started)
        acc = self.windows.accumulator(task, window_start)
        self.windows.check_batch_size(task, acc.count, window_start, actor)
        collection_id = os.urandom(8).hex()
        share, dp_applied = self.windows.release(
            task, window_start, acc.count, collection_id, actor, lambda plan: self.guard.noised_share(task, acc.agg_share, plan)
        )

        def call(stub, j, timeout):
            req = pb.AggregateShareRequest(task_id=task_id, window_start=window_start, report_count=acc.count, checksum=acc.checksum, collection_id=collection_id)
            return stub.GetAggregateShare(req, timeout=timeout, wait_for_ready=True)

        helper_shares = await self._call_helpers(task, call)
        sealed = [agg.seal_aggregate_share(task, window_start, 0, acc, share)] + [h.sealed_aggregate_share for h in helper_shares]
        self.metrics.inc("collections_total")
        self.metrics.observe("collect", time.perf_counter() - started)
        return pb.CollectResponse(
            task_id=task_id,
            window_start=window_start,
            window_seconds=task.window_seconds,
            report_count=acc.count,
            checksum=acc.checksum,
            sealed_aggregate_shares=sealed,
            dp_applied_json=json.dumps(dp_applied, sort_keys=True),
            collection_id=collection_id,
        )

    def _collect_he(self, task: Task, window_start: int, actor: str, started: float) -> pb.CollectResponse:
        """Homomorphic modes: noise added under encryption by this (single) aggregator."""
        record = self.store.get_window(task.task_id, window_start)
        state = record.accumulator if record else None
        count = he_mode.count(task, state)
        self.windows.check_batch_size(task, count, window_start, actor)
        collection_id = os.urandom(8).hex()
        released, applied = self.windows.release(
            task, window_start, count, collection_id, actor,
            lambda plan: he_mode.release(task, state, None if plan.distribution == "none" else plan.sample(task.measurement.length)),
        )
        self.metrics.inc("collections_total")
        self.metrics.observe("collect", time.perf_counter() - started)
        return pb.CollectResponse(task_id=task.task_id, window_start=window_start, window_seconds=task.window_seconds,
                                  report_count=count, sealed_aggregate_shares=[released],
                                  dp_applied_json=json.dumps(applied, sort_keys=True), collection_id=collection_id)


_STATUS_BY_ERROR = (
    (ReplayedReport, pb.REPLAYED),
    (StaleReport, pb.STALE),
    (InvalidReport, pb.INVALID),
)


def _outcome(report_id: bytes, exc: InvalidReport) -> pb.ReportOutcome:
    status = next(code for cls, code in _STATUS_BY_ERROR if isinstance(exc, cls))
    return pb.ReportOutcome(report_id=report_id, status=status, message=str(exc))


__all__ = ["AggregatorCore"]
