"""Opening HPKE-sealed input shares on every core.

An HPKE open costs tens of microseconds of CPU that holds the GIL, and a batched
upload or an aggregation job opens thousands: on the event loop (or any one
thread) that work would use one core of the machine. `ShareOpener` opens large
batches in a pool of worker processes (spawned, one per core by default) and
small ones inline, where a round trip to a worker would cost more than the open.

A worker holds this aggregator's HPKE private keys (sent once, at its start, over
the pool's pipe; never logged) and runs exactly `mpc.aggregator.open_input_share`.
A worker that dies mid-batch breaks the pool: the opener starts a new pool and
opens the batch again, so a batch is opened completely or not at all (opening is
pure: retrying it cannot count anything twice).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.errors import DecodeError, InvalidReport, SealError
from twinmpc.mpc.report import Report
from twinmpc.mpc.task import Task

log = logging.getLogger("twinmpc.aggregator")

# Below this many reports a batch is opened inline (a worker round trip costs ~1 ms).
INLINE_BELOW = 64

_ERRORS: dict[str, type[InvalidReport]] = {"SealError": SealError, "DecodeError": DecodeError}

# --- worker process side ------------------------------------------------------------------
_keys: dict[int, HpkeKeypair] = {}
_tasks: dict[str, Task] = {}


def _init_worker(keys: list[tuple[int, str, bytes]]) -> None:
    for config_id, suite, raw in keys:
        _keys[config_id] = HpkeKeypair.from_private_bytes(config_id, suite, raw)


def _open_chunk(task_json: str, agg_index: int, reports: list[Report]) -> list[bytes | tuple[str, str]]:
    task = _tasks.get(task_json)
    if task is None:
        task = _tasks[task_json] = Task.from_json(task_json)
    return [_open_one(task, agg_index, r) for r in reports]


def _open_one(task: Task, agg_index: int, report: Report) -> bytes | tuple[str, str]:
    sealed = report.sealed_shares[agg_index] if len(report.sealed_shares) > agg_index else b""
    key = _keys.get(sealed[0]) if sealed else None
    if key is None:
        return ("SealError", "sealed share names an unknown HPKE config id")
    try:
        return agg.open_input_share(task, key, agg_index, report)
    except InvalidReport as exc:
        return (type(exc).__name__ if type(exc).__name__ in _ERRORS else "DecodeError", str(exc))


# --- aggregator side ------------------------------------------------------------------------
class ShareOpener:
    def __init__(self, keys: list[HpkeKeypair], workers: int | None = None) -> None:
        self._keys = {k.config.config_id: k for k in keys}
        self._workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.pool_restarts = 0

    def __repr__(self) -> str:
        return f"ShareOpener(workers={self._workers}, keys=<redacted>)"

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                secrets_for_workers = [(cid, k.config.suite.name, k._raw) for cid, k in self._keys.items()]
                self._pool = ProcessPoolExecutor(
                    self._workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker, initargs=(secrets_for_workers,),
                )
            return self._pool

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
                self.pool_restarts += 1
        broken.shutdown(wait=False, cancel_futures=True)

    def open_many(self, task: Task, agg_index: int, reports: list[Report]) -> list[bytes | InvalidReport]:
        """This aggregator's input share of each report, or why it does not open; blocking (call off the loop)."""
        if len(reports) < INLINE_BELOW or self._workers == 1:
            return [self._inline(task, agg_index, r) for r in reports]
        task_json = task.to_json()
        size = -(-len(reports) // self._workers)
        chunks = [reports[i : i + size] for i in range(0, len(reports), size)]
        for attempt in (1, 2):
            pool = self._executor()
            try:
                futures = [pool.submit(_open_chunk, task_json, agg_index, chunk) for chunk in chunks]
                raw = [item for f in futures for item in f.result()]
                break
            except BrokenProcessPool:
                log.warning("share-opening worker died; restarting the pool and opening the batch again")
                self._restart(pool)
                if attempt == 2:
                    raise
        return [_ERRORS[item[0]](item[1]) if isinstance(item, tuple) else item for item in raw]

    def _inline(self, task: Task, agg_index: int, report: Report) -> bytes | InvalidReport:
        sealed = report.sealed_shares[agg_index] if len(report.sealed_shares) > agg_index else b""
        key = self._keys.get(sealed[0]) if sealed else None
        if key is None:
            return SealError("sealed share names an unknown HPKE config id")
        try:
            return agg.open_input_share(task, key, agg_index, report)
        except InvalidReport as exc:
            return exc

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
