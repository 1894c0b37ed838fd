"""Releasing a window: the checks, the freeze and the one-time release every aggregator applies on its own.

A collection of (task, window, index) moves only forward::

    (none) --checks pass, window flushed--> FROZEN --noise drawn, share stored,
                                                     ledger charged (one tx)--> RELEASED

* Refusals (window open or misaligned, index beyond ``max_collections_per_window``,
  batch below ``min_batch_size``, budget exhausted) change nothing: no freeze, no
  charge, the window stays open to late reports; they are audited as refusals.
* FROZEN fixes the report set: the window is closed to late reports and every
  later attempt of this collection works on the same batch.
* RELEASED stores the exact bytes this aggregator gave out, with the ledger charge,
  in one transaction; a repeat returns those bytes, never a second noise draw, and
  charges nothing more. The audit entry is written once (a crash between the
  transaction and the log append is repaired on the next attempt).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from twinmpc.mpc.errors import BatchNotClosed, BatchTooSmall, BudgetExhausted, CollectionRefused, InvalidTask
from twinmpc.mpc.modes import WindowBatch, mode_of
from twinmpc.mpc.task import Task
from twinmpc.services.aggregator.masks_journal import window_blob
from twinmpc.services.aggregator.privacy import charge_id, ledger_name
from twinmpc.services.aggregator.state import AggregatorState
from twinmpc.services.storage import CollectionRecord
from twinmpc.services.storage.base import RELEASED

log = logging.getLogger("twinmpc.aggregator")


class WindowRelease:
    def __init__(self, state: AggregatorState) -> None:
        self.state = state

    def check_collectable(self, task: Task, window_start: int, index: int, actor: str) -> None:
        """Aligned, closed by this aggregator's clock, index within the task's terms; refusals are audited."""
        try:
            if window_start % task.window_seconds:
                raise InvalidTask(f"window_start {window_start} is not aligned to the task's {task.window_seconds}s windows")
            if not 0 <= index < task.max_collections_per_window:
                raise CollectionRefused(
                    f"collection index {index} is outside the task's terms: it allows "
                    f"{task.max_collections_per_window} collection(s) per window (indexes 0..{task.max_collections_per_window - 1})"
                )
            if self.state.clock() < window_start + task.window_seconds:
                raise BatchNotClosed(f"window {window_start} closes at {window_start + task.window_seconds}; retry after it closes")
        except (InvalidTask, CollectionRefused) as exc:
            self.refuse(exc, task, window_start, actor)
            raise

    def window_state(self, task: Task, window_start: int) -> bytes | None:
        """The window's aggregate state (masks mode: the result its SecAgg+ round left)."""
        if mode_of(task).state_in_round_blob:
            return self.state.store.get_blob(window_blob(task.task_id, window_start))
        record = self.state.store.get_window(task.task_id, window_start)
        return None if record is None else record.accumulator

    def check_releasable(self, task: Task, window_start: int, index: int, state_bytes: bytes | None, actor: str) -> WindowBatch:
        """Batch size and budget, before anything is frozen or spent; the window's batch."""
        batch = mode_of(task).batch_of(task, state_bytes)
        try:
            if batch.count < task.min_batch_size:
                # the count itself is not disclosed: it would tell how far below the minimum a window is
                raise BatchTooSmall(f"window {window_start} holds fewer reports than the task's min_batch_size; retry later or after more uploads")
            self.state.guard.check_budget(task, mode_of(task).noise_plan(task, state_bytes), charge_id(task, window_start, index))
        except CollectionRefused as exc:
            self.refuse(exc, task, window_start, actor)
            raise
        return batch

    def freeze(self, task: Task, window_start: int, index: int, state_bytes: bytes | None, batch: WindowBatch,
               collection_id: str | None = None) -> CollectionRecord:
        """Fix the report set (raises WindowBusy if the window moved since `state_bytes` was read)."""
        in_table = None if mode_of(task).state_in_round_blob else state_bytes  # masks rounds leave their result in a blob
        return self.state.store.freeze_collection(
            task.task_id, window_start, index, collection_id or secrets.token_hex(8), in_table, batch.count, batch.checksum,
            snapshot=state_bytes,
        )

    def release(self, task: Task, record: CollectionRecord, agg_index: int, actor: str,
                wrap: Callable[[bytes, dict], bytes]) -> CollectionRecord:
        """Release once: draw this aggregator's noise, store `wrap(share, dp_applied)` with the ledger charge.

        Returns the stored record; its `response` is what every repeat of the collection answers.
        """
        if record.state == RELEASED:
            self._audit_if_pending(task, record, actor)
            return record
        mode = mode_of(task)
        plan = mode.noise_plan(task, record.accumulator)
        share = mode.release(task, record.window_start, agg_index, record.accumulator, plan)
        response = wrap(share, plan.describe())
        key = charge_id(task, record.window_start, record.index)
        try:
            stored, fresh = self.state.store.release_collection(
                task.task_id, record.window_start, record.index, response, ledger_name(task),
                self.state.guard.ledger_update(task, plan, key),
            )
        except BudgetExhausted as exc:
            self.refuse(exc, task, record.window_start, actor)
            raise
        if fresh:
            self._audit(task, stored, actor, plan.describe())
        else:
            self._audit_if_pending(task, stored, actor)
        return stored

    def _audit(self, task: Task, record: CollectionRecord, actor: str, noise: dict) -> None:
        self.state.guard.record(
            "collection", actor, task=task.task_id_b64, window_start=record.window_start, collection_index=record.index,
            report_count=record.report_count, collection_id=record.collection_id, noise=noise,
        )
        self.state.store.update_collection_audited(task.task_id, record.window_start, record.index)
        self.state.metrics.inc("collections_released_total")
        log.info("released window %d of task %s (collection %s)", record.window_start, task.task_id_b64[:8], record.collection_id)

    def _audit_if_pending(self, task: Task, record: CollectionRecord, actor: str) -> None:
        if not record.audit_pending:
            return
        if self.state.guard.has_collection_entry(record.collection_id):
            self.state.store.update_collection_audited(task.task_id, record.window_start, record.index)
            return
        self._audit(task, record, actor, mode_of(task).noise_plan(task, record.accumulator).describe())

    def refuse(self, exc: Exception, task: Task, window_start: int, actor: str) -> None:
        self.state.metrics.inc("collections_refused_total", reason=type(exc).__name__)
        self.state.guard.record("refusal", actor, task=task.task_id_b64, window_start=window_start, reason=f"{type(exc).__name__}: {exc}")
