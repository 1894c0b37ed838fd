"""Group commit: concurrent uploads coalesce into one durable transaction on a writer thread.

One upload call per edge node is the shape a city has, and an fsync'd commit per
call would cap ingest near the disk's commit rate and block the event loop. Here a
call hands its checked rows to the committer and awaits its future; the writer
thread commits everything that arrived meanwhile (or within `max_delay`) in one
`Datastore.put_reports_many` transaction and only then resolves the futures, so an
upload is still acknowledged only once it is durable. A crash before the commit
loses only unacknowledged uploads, which their clients retry.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from twinmpc.services.storage import Datastore, PendingReport, PutOutcome

log = logging.getLogger("twinmpc.aggregator")

Rows = list[tuple[int, PendingReport]]


class GroupCommitter:
    def __init__(self, store: Datastore, *, max_delay: float = 0.002, max_reports: int = 4000) -> None:
        self.store = store
        self.max_delay = max_delay
        self.max_reports = max_reports
        self._queue: list[tuple[bytes, Rows, asyncio.Future]] = []
        self._queued = 0
        self._work = asyncio.Event()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="twinmpc-commit")
        self._task: asyncio.Task | None = None
        self.commits = 0  # transactions so far (reports / commits = the coalescing achieved)

    async def put(self, task_id: bytes, rows: Rows) -> list[PutOutcome]:
        """Store `rows` durably with whatever else is in flight; their outcomes once committed."""
        if not rows:
            return []
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((task_id, rows, future))
        self._queued += len(rows)
        self._work.set()
        return await asyncio.shield(future)  # a cancelled call must not cancel its neighbours' commit

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            if self._queued < self.max_reports and self.max_delay > 0:
                await asyncio.sleep(self.max_delay)  # let concurrent calls join this transaction
            batch, self._queue, self._queued = self._queue, [], 0
            self._work.clear()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._writer, self.store.put_reports_many, [(t, rows) for t, rows, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting call gets the storage error
                log.error("group commit of %d upload(s) failed: %s", len(batch), exc)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.commits += 1
            for (_, _, future), outcome in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(outcome)

    async def stop(self) -> None:
        """Commit what is queued, then stop the writer."""
        if self._task is not None:
            while self._queue:
                self._work.set()
                await asyncio.sleep(0.001)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._writer.shutdown(wait=True)
