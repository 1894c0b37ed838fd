"""The leader's aggregation-job driver: claim stored reports, verify them with the helpers, accumulate.

Jobs run as reports arrive (not on a timer). Every step is idempotent, so any
process can be killed and restarted at any point without losing or
double-counting a report::

    leader                       helper(s)
    acquire reports -> job J     .
    InitJob(J) ---------------->  record report ids (replay check), open, verify_init
    <----------------------------  verifier shares
    verifier messages, persist J as 'continuing'
    ContinueJob(J) ------------>  verify_next, accumulate, mark J done (once)
    <----------------------------  rejected ids
    accumulate own shares, mark reports accepted, J done (one transaction)

Modes without helpers (homomorphic) sum a job's reports alone (`TaskMode.aggregate_alone`).

The event loop only routes: every datastore call and the proof work of a job run
on worker threads (SQLite and numpy release the GIL in their heavy parts), so
uploads keep being acknowledged while a job commits or verifies. After a wakeup
the driver waits `job_delay_ms` for more reports, so one upload call per edge node
still makes jobs of many reports.

Up to `concurrent_jobs` jobs run at once: one job's steps alternate between the
leader's work and a round trip to the helpers, so a single job at a time leaves
both sides idle half the time. Jobs claim disjoint reports in the store and
merge into window accumulators in their own transactions, as jobs of replicas
sharing a database already do; a job this process is running is never resumed a
second time beside itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.errors import InvalidReport
from twinmpc.mpc.modes import mode_of
from twinmpc.mpc.report import ReportShare
from twinmpc.mpc.task import Task
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.services.aggregator.errors import PeerFailure
from twinmpc.services.aggregator.peers import HelperPeers
from twinmpc.services.aggregator.state import AggregatorState
from twinmpc.services.aggregator.tasks import LoadedTask, TaskRegistry
from twinmpc.services.storage import JobRecord, PendingReport

log = logging.getLogger("twinmpc.aggregator")

INGEST_QUIET_SECONDS = 0.1  # no upload call running for this long: extra job slots may start
MIN_SPLIT_JOB_SIZE = 100  # below this, a job's fixed costs (two peer round trips, commits) dominate


class LeaderJobs:
    def __init__(self, state: AggregatorState, tasks: TaskRegistry, peers: HelperPeers) -> None:
        self.state = state
        self.tasks = tasks
        self.peers = peers
        self._wakeup = asyncio.Event()
        self._flushing = asyncio.Lock()  # one window flush at a time
        self._slots = asyncio.Semaphore(state.config.limits.concurrent_jobs)
        self._running: set[bytes] = set()  # job ids this process is running now
        self._jobs: set[asyncio.Task] = set()
        self._retry_at = 0.0  # loop time before which no job starts (after a peer failure)
        self._backoff = 0.05
        self._uploads_in_flight = 0
        self._last_upload = -INGEST_QUIET_SECONDS  # time.monotonic() when the last upload call ended
        self._unclaimed = 0  # reports this process stored and no job of it claimed yet (sizes the next jobs)
        self._driver: asyncio.Task | None = None
        self._stopping = False

    def upload_started(self) -> None:
        self._uploads_in_flight += 1

    def upload_ended(self, stored: int) -> None:
        """An upload call ended having stored `stored` reports durably: run a job soon."""
        self._uploads_in_flight -= 1
        self._last_upload = time.monotonic()
        if stored:
            self._unclaimed += stored
            self._wakeup.set()

    def start(self) -> None:
        """Start the driver; it first resumes jobs a previous process left unfinished."""
        if self._driver is None:
            self._driver = asyncio.get_running_loop().create_task(self._drive_forever(), name="aggregation-driver")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        tasks = [t for t in (self._driver, *self._jobs) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drive_forever(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.state.config.limits.job_delay_ms / 1000
        while not self._stopping:
            await self._slots.acquire()
            try:
                if delay:
                    await asyncio.sleep(delay)  # gather the reports of many upload calls into one job
                await asyncio.sleep(max(0.0, self._retry_at - loop.time()))
                await self._wait_while_ingesting()
                job = await self._claim()
            except BaseException:
                self._slots.release()
                raise
            if job is None:
                self._slots.release()
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=0.5)
                except asyncio.TimeoutError:
                    pass
                continue
            runner = loop.create_task(self._run_claimed(*job), name=f"aggregation-job-{job[1].hex()[:8]}")
            self._jobs.add(runner)
            runner.add_done_callback(self._jobs.discard)

    def _ingesting(self) -> bool:
        return self._uploads_in_flight > 0 or time.monotonic() - self._last_upload < INGEST_QUIET_SECONDS

    async def _wait_while_ingesting(self) -> None:
        """Start a second concurrent job only once uploads have paused.

        While upload calls stream in, this process's event loop is what acknowledges
        them: one job at a time keeps ingest at its full rate (a second job would take
        the same cores, not add any). Once they pause, every slot drains the backlog.
        """
        while self._jobs and self._ingesting():
            await asyncio.wait(set(self._jobs), timeout=INGEST_QUIET_SECONDS)

    async def _claim(self) -> tuple[LoadedTask, bytes, list[PendingReport], list | None] | None:
        """The next job to run, marked running: one a previous process (or a failed attempt) left
        unfinished first, else a new one over pending reports; None when there is nothing to do."""
        for job in await asyncio.to_thread(self.state.store.get_unfinished_jobs):
            if (reserved := await self._reserve(job)) is not None:
                return reserved
        job_id = os.urandom(16)
        self._running.add(job_id)
        try:
            claimed = await asyncio.to_thread(self.state.store.acquire_pending_reports, job_id, self._next_job_size())
        except BaseException:
            self._running.discard(job_id)
            raise
        if claimed is None:
            self._running.discard(job_id)
            self._unclaimed = 0
            return None
        task_id, reports = claimed
        self._unclaimed = max(0, self._unclaimed - len(reports))
        return self.tasks.load(task_id), job_id, reports, None

    def _next_job_size(self) -> int:
        """Split a small backlog over the free job slots (one while uploads stream in); a large (or unknown)
        one goes in `job_size` jobs."""
        if self._unclaimed <= 0:
            return self.state.config.limits.job_size  # reports stored by another process or before a restart
        slots = 1 if self._ingesting() else self.state.config.limits.concurrent_jobs - len(self._jobs)
        return self._split(self._unclaimed, slots)

    def _split(self, backlog: int, slots: int) -> int:
        """The size of each of `slots` jobs over `backlog` reports, within [MIN_SPLIT_JOB_SIZE, job_size].

        Near a window's close the backlog is the last few upload calls: one job over all
        of them would leave the other slots idle and delay the collection by its whole
        run, while jobs of a few hundred reports cost little more per report.
        """
        limit = self.state.config.limits.job_size
        return max(min(MIN_SPLIT_JOB_SIZE, limit), min(limit, -(-backlog // max(1, slots))))

    async def _reserve(self, job: JobRecord) -> tuple[LoadedTask, bytes, list[PendingReport], list | None] | None:
        """A listed unfinished job, marked running and ready to run; None (and not marked) if this
        process is running it or it finished since it was listed.

        The list is a snapshot: a job of this process may finish (and leave `_running`)
        while it is read. Run again from 'init', the helpers would refuse the finished job.
        """
        if job.job_id in self._running:
            return None
        self._running.add(job.job_id)
        try:
            if await asyncio.to_thread(self.state.store.get_job_state, job.job_id) != "done":
                reports = await asyncio.to_thread(self.state.store.get_job_reports, job.job_id)
                verdicts = list(pb.AggregationJobContinue.FromString(job.verdicts).verdicts) if job.state == "continuing" else None
                return self.tasks.load(job.task_id), job.job_id, reports, verdicts
        except BaseException:
            self._running.discard(job.job_id)
            raise
        self._running.discard(job.job_id)
        return None

    async def _run_claimed(self, loaded: LoadedTask, job_id: bytes, reports: list[PendingReport], verdicts) -> None:
        """Run one claimed job in its slot; a failure leaves it unfinished in the store, resumed later."""
        try:
            await self._run_job(loaded, job_id, reports, verdicts)
            self._backoff = 0.05
        except PeerFailure as exc:
            log.warning("aggregation job postponed: %s", exc)
            self._postpone()
        except Exception:
            log.exception("aggregation job failed; it stays unfinished and is retried")
            self._postpone()
        finally:
            self._running.discard(job_id)
            self._slots.release()
            self._wakeup.set()

    def _postpone(self) -> None:
        self._retry_at = asyncio.get_running_loop().time() + self._backoff
        self._backoff = min(self._backoff * 2, 2.0)

    async def _resume_unfinished(self) -> None:
        """Run here every unfinished job of ours that no job task of this process is running."""
        for job in await asyncio.to_thread(self.state.store.get_unfinished_jobs):
            if (reserved := await self._reserve(job)) is None:
                continue
            try:
                await self._run_job(*reserved)
            finally:
                self._running.discard(job.job_id)

    async def flush_window(self, loaded: LoadedTask, window_start: int) -> None:
        """Aggregate every stored report of a window now (before a collection).

        Loops until no report of the window is pending or in a job: another replica
        sharing the database may have claimed some after our first look; its jobs
        are left to it while it holds their lease, and taken over here once the
        lease expires (every job step is idempotent).
        """
        task_id = loaded.task.task_id
        store = self.state.store
        if await asyncio.to_thread(store.count_pending, task_id, window_start) == 0:
            return  # the driver already aggregated it: concurrent collections need not queue behind its jobs
        deadline = time.monotonic() + self.state.config.limits.peer_timeout_seconds
        async with self._flushing:
            while True:
                await self._resume_unfinished()
                in_window = await asyncio.to_thread(store.count_pending, task_id, window_start)
                if in_window == 0:
                    return
                await self._run_window_jobs(loaded, window_start, self._split(in_window, self.state.config.limits.concurrent_jobs))
                if await asyncio.to_thread(store.count_pending, task_id, window_start) == 0:
                    return
                if time.monotonic() > deadline:
                    raise PeerFailure(f"window {window_start} still has reports in flight; retry the collection")
                await asyncio.sleep(0.02)

    async def _run_window_jobs(self, loaded: LoadedTask, window_start: int, size: int) -> None:
        """Claim the window's pending reports into up to `concurrent_jobs` jobs of `size` and run them at once.

        A job that fails stays unfinished in the store (the others are cancelled the same
        way) and is resumed by the next flush or by the driver.
        """
        job_ids: list[bytes] = []  # marked running before the claim commits: a concurrent resume must skip them
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.state.config.limits.concurrent_jobs):
                    job_ids.append(job_id := os.urandom(16))
                    self._running.add(job_id)
                    reports = await asyncio.to_thread(self.state.store.acquire_window_reports, job_id, loaded.task.task_id,
                                                      window_start, size)
                    if not reports:
                        break
                    group.create_task(self._run_job(loaded, job_id, reports, None))
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None  # the first failure speaks for the flush (a PeerFailure as a rule)
        finally:
            self._running.difference_update(job_ids)

    def _run_alone(self, task: Task, job_id: bytes, reports: list[PendingReport]) -> None:
        """A mode without helpers sums the job's reports itself; one transaction commits the job."""
        shares = [ReportShare(r.report_id, r.time, r.public_share, r.leader_share) for r in reports]
        done = mode_of(task).aggregate_alone(task, shares)
        self.state.store.finish_leader_job(job_id, task.task_id, done.deltas, mode_of(task).merge(task), done.accepted, done.rejected)
        self.state.metrics.inc("reports_aggregated_total", len(done.accepted))

    async def _run_job(self, loaded: LoadedTask, job_id: bytes, reports: list[PendingReport], verdicts) -> None:
        started = time.perf_counter()
        task = loaded.task
        if not mode_of(task).verifies_with_helpers:
            await asyncio.to_thread(self._run_alone, task, job_id, reports)
            return
        states: dict[bytes, object] = {}
        leader_vshares: dict[bytes, bytes] = {}
        inits = await asyncio.to_thread(
            agg.verify_init_many, task, loaded.verify_key, 0, [r.report_id for r in reports], [r.public_share for r in reports],
            [r.leader_share for r in reports],
        )
        for r, init in zip(reports, inits, strict=True):
            if not isinstance(init, InvalidReport):
                states[r.report_id], leader_vshares[r.report_id] = init
        if verdicts is None:
            responses = await self.peers.init_job(task, job_id, reports)
            verdicts = await asyncio.to_thread(self._verdicts, task, reports, leader_vshares, responses)
            await asyncio.to_thread(
                self.state.store.update_job_verdicts,
                job_id, pb.AggregationJobContinue(task_id=task.task_id, job_id=job_id, verdicts=verdicts).SerializeToString(),
            )
        if not await asyncio.to_thread(self.state.store.renew_job_lease, job_id):
            log.warning("aggregation job lease lost (another replica took the job over); leaving it")
            return
        rejected_by_helpers = await self.peers.continue_job(task, job_id, verdicts)
        await asyncio.to_thread(self._finish_job, task, job_id, reports, verdicts, states, rejected_by_helpers)
        self.state.metrics.observe("aggregate_job", time.perf_counter() - started)

    def _finish_job(self, task: Task, job_id: bytes, reports: list[PendingReport], verdicts, states: dict[bytes, object],
                    rejected_by_helpers: set[bytes]) -> None:
        """Finish verification, accumulate per window and commit the job (one transaction); on a worker thread."""
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
        self.state.store.finish_leader_job(
            job_id, task.task_id, {w: a.encode() for w, a in deltas.items()}, mode_of(task).merge(task), accepted_ids, rejected_ids
        )
        metrics = self.state.metrics
        metrics.inc("reports_aggregated_total", len(accepted_ids))
        if rejected_ids:
            metrics.inc("reports_invalid_total", len(rejected_ids))
            self.state.guard.record("report_rejected", "leader", task=task.task_id_b64, count=len(rejected_ids), reason="verification failed")
            log.warning("aggregation job rejected %d report(s) as invalid", len(rejected_ids))

    @staticmethod
    def _verdicts(task: Task, reports: list[PendingReport], leader_vshares: dict[bytes, bytes],
                  responses: list[pb.AggregationJobInitResponse]) -> list[pb.ReportVerdict]:
        """Combine every aggregator's verifier shares; a report some aggregator could not initialise is rejected."""
        complete: list[int] = []
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
