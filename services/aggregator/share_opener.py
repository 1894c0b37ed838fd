"""Opening HPKE-sealed input shares on every core.

An HPKE open costs tens of microseconds of CPU that holds the GIL, and a batched
upload or an aggregation job opens thousands: on the event loop (or any one
thread) that work would use one core of the machine. `ShareOpener` opens large
batches in a pool of worker processes (spawned, one per core by default) and
small ones inline, where a round trip to a worker would cost more than the open.

A worker holds this aggregator's HPKE private keys (sent once, at its start, over
the pool's pipe; never logged) and runs exactly `mpc.aggregator.open_report_share`.
A worker that dies mid-batch breaks the pool: the opener starts a new pool and
opens the batch again, so a batch is opened completely or not at all (opening is
pure: retrying it cannot count anything twice).

When the key set changes (`replace_keys`: a rotation or retirement, see
`key_rotator`), batches already submitted finish under the old keys and the next
batch starts workers holding the new ones. A share sealed to a retired key is
refused naming that, so the sender learns to fetch the current config.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.errors import DecodeError, InvalidReport, SealError
from twinmpc.mpc.report import Report, ReportShare
from twinmpc.mpc.task import Task
from twinmpc.services.parent_death import end_with_parent

log = logging.getLogger("twinmpc.aggregator")

# Below this many reports a batch is opened inline (a worker round trip costs ~1 ms).
INLINE_BELOW = 64

_ERRORS: dict[str, type[InvalidReport]] = {"SealError": SealError, "DecodeError": DecodeError}

# --- worker process side ------------------------------------------------------------------
_keys: dict[int, HpkeKeypair] = {}
_retired: frozenset[int] = frozenset()
_tasks: dict[str, Task] = {}


def _init_worker(keys: list[tuple[int, str, bytes]], retired: frozenset[int], parent_pid: int) -> None:
    global _retired
    end_with_parent(parent_pid, signal.SIGKILL)  # holds private keys: never outlive the aggregator
    for config_id, suite, raw in keys:
        _keys[config_id] = HpkeKeypair.from_private_bytes(config_id, suite, raw)
    _retired = retired


def _no_key(sealed: bytes, retired: frozenset[int]) -> str:
    """Why no key of this aggregator opens `sealed` (the same words inline and in a worker)."""
    if sealed and sealed[0] in retired:
        return f"sealed share names HPKE config id {sealed[0]}, a key this aggregator retired; seal to its current HPKE config"
    return "sealed share names an unknown HPKE config id"


def _open_chunk(task_json: str, agg_index: int, reports: list[ReportShare]) -> list[bytes | tuple[str, str]]:
    task = _tasks.get(task_json)
    if task is None:
        task = _tasks[task_json] = Task.from_json(task_json)
    return [_open_one(task, agg_index, r) for r in reports]


def _open_one(task: Task, agg_index: int, share: ReportShare) -> bytes | tuple[str, str]:
    sealed = share.sealed_share
    key = _keys.get(sealed[0]) if sealed else None
    if key is None:
        return ("SealError", _no_key(sealed, _retired))
    try:
        return agg.open_report_share(task, key, agg_index, share)
    except InvalidReport as exc:
        return (type(exc).__name__ if type(exc).__name__ in _ERRORS else "DecodeError", str(exc))


# --- aggregator side ------------------------------------------------------------------------
class ShareOpener:
    def __init__(self, keys: list[HpkeKeypair], workers: int | None = None, retired: frozenset[int] = frozenset()) -> None:
        self._keys = {k.config.config_id: k for k in keys}
        self._retired = frozenset(retired)
        self._workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.pool_restarts = 0

    def __repr__(self) -> str:
        return f"ShareOpener(workers={self._workers}, keys=<redacted>)"

    def replace_keys(self, keys: list[HpkeKeypair], retired: frozenset[int]) -> None:
        """Open with `keys` from now on; batches already submitted finish with the workers' old keys."""
        with self._lock:
            self._keys = {k.config.config_id: k for k in keys}
            self._retired = frozenset(retired)
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)  # its queued chunks still run; new batches start a pool with the new keys

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            return self._executor_locked()

    def _executor_locked(self) -> ProcessPoolExecutor:
        if self._pool is None:
            secrets_for_workers = [(cid, k.config.suite.name, k._raw) for cid, k in self._keys.items()]
            self._pool = ProcessPoolExecutor(
                self._workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(secrets_for_workers, self._retired, os.getpid()),
            )
        return self._pool

    def _submit(self, task_json: str, agg_index: int, chunks: list[list[ReportShare]]) -> tuple[ProcessPoolExecutor, list]:
        """Submit every chunk to one pool under the lock, so `replace_keys` cannot shut it down in between."""
        with self._lock:
            pool = self._executor_locked()
            try:
                return pool, [pool.submit(_open_chunk, task_json, agg_index, chunk) for chunk in chunks]
            except BrokenProcessPool:  # a worker died since the last batch: the caller retries on a new pool
                self._pool = None
                self.pool_restarts += 1
        pool.shutdown(wait=False, cancel_futures=True)
        raise BrokenProcessPool("share-opening pool broke before the batch was submitted")

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
                self.pool_restarts += 1
        broken.shutdown(wait=False, cancel_futures=True)

    def open_many(self, task: Task, agg_index: int, reports: list[Report] | list[ReportShare]) -> list[bytes | InvalidReport]:
        """This aggregator's input share of each report, or why it does not open; blocking (call off the loop)."""
        reports = [r if isinstance(r, ReportShare) else r.share_for(agg_index) for r in reports]
        if len(reports) < INLINE_BELOW or self._workers == 1:
            return [self._inline(task, agg_index, r) for r in reports]
        task_json = task.to_json()
        size = -(-len(reports) // self._workers)
        chunks = [reports[i : i + size] for i in range(0, len(reports), size)]
        for attempt in (1, 2):
            pool = None
            try:
                pool, futures = self._submit(task_json, agg_index, chunks)
                raw = [item for f in futures for item in f.result()]
                break
            except BrokenProcessPool:
                log.warning("share-opening worker died; restarting the pool and opening the batch again")
                if pool is not None:
                    self._restart(pool)
                if attempt == 2:
                    raise
        return [_ERRORS[item[0]](item[1]) if isinstance(item, tuple) else item for item in raw]

    def _inline(self, task: Task, agg_index: int, share: ReportShare) -> bytes | InvalidReport:
        sealed = share.sealed_share
        key = self._keys.get(sealed[0]) if sealed else None
        if key is None:
            return SealError(_no_key(sealed, self._retired))
        try:
            return agg.open_report_share(task, key, agg_index, share)
        except InvalidReport as exc:
            return exc

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
