"""The task registry of one aggregator: create (immutable), amend (only tighter), load, list."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

from twinmpc.mpc.errors import InvalidTask, UnknownTask
from twinmpc.mpc.modes import mode_of, noise_plan
from twinmpc.mpc.task import Task
from twinmpc.mpc.task_amendment import amend
from twinmpc.services.aggregator.state import AggregatorState
from twinmpc.services.storage import AlreadyExists, NotFound, TaskRecord

log = logging.getLogger("twinmpc.aggregator")

# Replicas share one database: an amendment made through one is seen by the others within this time.
CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class LoadedTask:
    """A task with this aggregator's position in it and the task's verify key."""

    task: Task
    agg_index: int
    verify_key: bytes

    def __repr__(self) -> str:
        return f"LoadedTask({self.task.task_id_b64}, agg_index={self.agg_index})"


def _digests(value):
    """An amendment as the audit log records it: keys (long strings) by their SHA-256 prefix."""
    if isinstance(value, dict):
        return {k: _digests(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_digests(v) for v in value]
    if isinstance(value, str) and len(value) > 64:
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]
    return value


class TaskRegistry:
    def __init__(self, state: AggregatorState) -> None:
        self.state = state
        self._cache: dict[bytes, tuple[float, LoadedTask]] = {}

    def put(self, task_json: str, agg_index: int, verify_key: bytes, actor: str = "local") -> Task:
        """Create a task; the identical document again is a no-op, a different one is refused."""
        task = Task.from_json(task_json)
        record = TaskRecord(task.to_json(), agg_index, verify_key)
        try:
            return self._existing(task, record)  # an id in use: the same document or a refusal, before any other check
        except NotFound:
            pass
        noise_plan(task)  # the DP block must calibrate for this measurement
        if not 0 <= agg_index < task.num_aggregators:
            raise InvalidTask(f"aggregator_index {agg_index} outside 0..{task.num_aggregators - 1}")
        mode = mode_of(task)
        if mode.needs_one_process and self.state.config.workers > 1:
            raise InvalidTask(f"mode {task.mode!r} keeps its rounds in one process's memory; this aggregator serves "
                              f"with workers = {self.state.config.workers}")
        own_config = mode.own_hpke_config(task, agg_index)
        if own_config is not None:
            self.state.keys.check_own(own_config, f"aggregators[{agg_index}].hpke_config")  # any non-retired key
        mode.check_hosting(task, agg_index, verify_key)
        try:
            self.state.store.put_task(task.task_id, record)
        except AlreadyExists:  # another replica stored it meanwhile
            return self._existing(task, record)
        self._remember(LoadedTask(task, agg_index, verify_key))
        self.state.guard.record(
            "task_created", actor, task=task.task_id_b64, agg_index=agg_index, measurement=task.measurement.params(),
            vdaf=task.vdaf, mode=task.mode, dp=task.dp, window_seconds=task.window_seconds, min_batch_size=task.min_batch_size,
        )
        log.info("task stored", extra={"task": task.task_id_b64, "agg_index": agg_index})
        return task

    def _existing(self, task: Task, record: TaskRecord) -> Task:
        """The stored task if `record` is the same document; AlreadyExists if it differs; NotFound if none."""
        existing = self.state.store.get_task(task.task_id)
        same = (existing.task_json == record.task_json and existing.agg_index == record.agg_index
                and hmac.compare_digest(existing.verify_key, record.verify_key))
        if not same:
            raise AlreadyExists(
                f"task {task.task_id_b64} already exists with a different document; tasks are immutable "
                "(amend it to tighten privacy, or create a new task)"
            )
        return Task.from_json(existing.task_json)

    def amend(self, task_id: bytes, amendment_json: str, actor: str = "local") -> Task:
        """Apply an amendment that only tightens privacy (`mpc.task_amendment`); audited."""
        loaded = self.load(task_id)
        try:
            changes = json.loads(amendment_json)
        except json.JSONDecodeError as exc:
            raise InvalidTask(f"amendment is not valid JSON: {exc}") from None
        task = amend(loaded.task, changes)
        if "aggregator_hpke_config" in changes and changes["aggregator_hpke_config"]["index"] == loaded.agg_index:
            # this aggregator's own entry: only a key it holds; another aggregator's entry is recorded as given
            self.state.keys.check_own(task.aggregators[loaded.agg_index].hpke_config, f"aggregators[{loaded.agg_index}].hpke_config")
        mode_of(task).check_keys(task)  # a rotated key must load, carry no secret, and hold the window's largest sum
        self.state.store.update_task(task_id, TaskRecord(task.to_json(), loaded.agg_index, loaded.verify_key))
        self._remember(LoadedTask(task, loaded.agg_index, loaded.verify_key))
        self.state.guard.record("task_changed", actor, task=task.task_id_b64, changes=json.dumps(_digests(changes), sort_keys=True))
        log.info("task amended", extra={"task": task.task_id_b64})
        return task

    def _remember(self, loaded: LoadedTask) -> None:
        self._cache[loaded.task.task_id] = (time.monotonic() + CACHE_SECONDS, loaded)

    def load(self, task_id: bytes) -> LoadedTask:
        cached = self._cache.get(task_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            record = self.state.store.get_task(task_id)
        except NotFound:
            raise UnknownTask("unknown task id") from None
        if cached is not None and cached[1].task.to_json() == record.task_json:
            loaded = cached[1]  # unchanged: keep the built scheme
        else:
            loaded = LoadedTask(Task.from_json(record.task_json), record.agg_index, record.verify_key)
        self._remember(loaded)
        return loaded

    def list(self) -> list[Task]:
        return [Task.from_json(r.task_json) for r in self.state.store.list_tasks()]
