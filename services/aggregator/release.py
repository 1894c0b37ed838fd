"""Releasing a window: the checks and records every aggregator applies on its own.

Leader and helpers both refuse an open or misaligned window and a batch below
`min_batch_size`, charge their own privacy ledger, add their own full DP
noise and audit the release or the refusal (`services.aggregator.privacy`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.dp import NoisePlan
from twinmpc.mpc.errors import BatchNotClosed, BatchTooSmall, InvalidTask
from twinmpc.mpc.task import Task
from twinmpc.services.aggregator.privacy import CollectionGuard, noise_plan
from twinmpc.services.storage import Datastore

T = TypeVar("T")


class WindowRelease:
    def __init__(self, store: Datastore, guard: CollectionGuard, clock: Callable[[], float]) -> None:
        self.store = store
        self.guard = guard
        self.clock = clock

    def check_closed(self, task: Task, window_start: int, actor: str) -> None:
        """Aligned and closed by this aggregator's clock; a refusal is audited."""
        try:
            if window_start % task.window_seconds:
                raise InvalidTask(f"window_start {window_start} is not aligned to the task's {task.window_seconds}s windows")
            if self.clock() < window_start + task.window_seconds:
                raise BatchNotClosed(f"window {window_start} closes at {window_start + task.window_seconds}")
        except (InvalidTask, BatchNotClosed) as exc:
            self.refuse(exc, task, window_start, actor)
            raise

    def check_batch_size(self, task: Task, count: int, window_start: int, actor: str) -> None:
        if count < task.min_batch_size:
            exc = BatchTooSmall(f"window holds {count} reports, min_batch_size is {task.min_batch_size}")
            self.refuse(exc, task, window_start, actor)
            raise exc

    def accumulator(self, task: Task, window_start: int) -> agg.Accumulator:
        record = self.store.get_window(task.task_id, window_start)
        if record is None or record.accumulator is None:
            return agg.Accumulator(task)
        return agg.Accumulator.decode(task, record.accumulator)

    def release(
        self, task: Task, window_start: int, count: int, collection_id: str, actor: str, add_noise: Callable[[NoisePlan], T]
    ) -> tuple[T, dict]:
        """Charge the ledger, add this aggregator's noise (via `add_noise`), audit the release."""
        plan = noise_plan(task)
        self.guard.charge(task, plan, collection_id, actor, window_start)
        released = add_noise(plan)
        applied = plan.describe()
        self.guard.record("collection", actor, task=task.task_id_b64, window_start=window_start, report_count=count,
                          collection_id=collection_id, noise=applied)
        return released, applied

    def refuse(self, exc: Exception, task: Task, window_start: int, actor: str) -> None:
        self.guard.record("refusal", actor, task=task.task_id_b64, window_start=window_start, reason=f"{type(exc).__name__}: {exc}")
