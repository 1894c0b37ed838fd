"""The garbage collector: deletes what a task's retention no longer needs, in small transactions.

Every `gc_interval_seconds` it walks the tasks and, per task, deletes the data of
windows that ended more than the task's `retention` ago (`Task.expired_before`):

=====================  =====================================================
what                   kept while
=====================  =====================================================
leader reports         pending or in a job (a job settles them first)
helper replay records  never past retention: an expired report is refused by
                       its time at upload (leader) and at InitJob (helper)
finished jobs          any of their reports remain
windows, collections   any collection of the window is not yet released
=====================  =====================================================

Each delete is one transaction of at most `gc_batch_rows` rows (one big DELETE
would hold its locks, and SQLite's single writer, long enough to stall
uploads), repeated until a call deletes fewer rows than that. Retention cannot
undercut replay protection: `Task` refuses a retention shorter than its report
expiry, so every forgotten report id belongs to a report that the upload check
already refuses as too old. The collector runs on a worker thread, with the
aggregator's clock (a soak test accelerates it).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from twinmpc.services.aggregator.helper import REJECTED_BLOB_PREFIX
from twinmpc.services.aggregator.state import AggregatorState
from twinmpc.services.aggregator.tasks import TaskRegistry
from twinmpc.services.aggregator.periodic import Periodic

log = logging.getLogger("twinmpc.aggregator")


@dataclass
class CollectedGarbage:
    """Rows one pass deleted, per kind."""

    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


class GarbageCollector:
    def __init__(self, state: AggregatorState, tasks: TaskRegistry) -> None:
        self.state = state
        self.tasks = tasks
        # a pass that fails (a database hiccup) is tried again at the next interval; uploads are unaffected
        self._periodic = Periodic("garbage-collector", state.config.limits.gc_interval_seconds,
                                  lambda: asyncio.to_thread(self.collect_once))

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    def collect_once(self) -> CollectedGarbage:
        """One pass over every task; blocking (call it on a worker thread)."""
        store = self.state.store
        limit = self.state.config.limits.gc_batch_rows
        now = self.state.clock()
        result = CollectedGarbage()
        for task in self.tasks.list():
            before = task.expired_before(now)
            steps = (  # reports before jobs: a job goes once none of its reports remain
                ("reports", lambda: store.delete_expired_reports(task.task_id, before, limit)),
                ("helper_reports", lambda: store.delete_expired_helper_reports(task.task_id, before, limit)),
                ("jobs", lambda: store.delete_finished_jobs(task.task_id, limit, REJECTED_BLOB_PREFIX)),
                ("windows", lambda: store.delete_expired_windows(task.task_id, before, limit)),
            )
            for kind, delete in steps:
                while True:
                    n = delete()
                    if n:
                        result.deleted[kind] = result.deleted.get(kind, 0) + n
                        self.state.metrics.inc("gc_rows_deleted_total", n, kind=kind)
                    if n < limit:
                        break
        if result.total:
            log.info("garbage collection deleted %s", ", ".join(f"{n} {k}" for k, n in sorted(result.deleted.items())))
        return result
