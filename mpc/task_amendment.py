"""Changing a task in place: only explicit amendments that cannot weaken privacy.

A task is immutable once created: re-sending the same document is a no-op and
a different document under the same id is refused. What may change in place,
audited by every aggregator, are amendments that only tighten the task's terms:

* ``min_batch_size``: raised (never lowered);
* ``max_collections_per_window``: lowered (never raised);
* ``dp``: the same algorithm with epsilon and delta no larger, and a total
  budget no larger (a budget may be added, never removed);
* ``retention_seconds``: lowered (data kept less long), never below the report expiry;
* homomorphic key rotation: a new ``he_public_key`` with the previous key moved
  into ``he_retired_keys`` (reports sealed under it still add up), and retired
  keys dropped from ``he_retired_keys`` once no report needs them.

Anything else (measurement, aggregators, keys of the shares mode, window
length, turning DP off) needs a new task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twinmpc.mpc.dp import NONE, DpParams
from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.task import Task

AMENDABLE = ("min_batch_size", "max_collections_per_window", "dp", "he_public_key", "he_retired_keys", "retention_seconds")


def amend(task: Task, changes: Mapping[str, Any]) -> Task:
    """The task with `changes` applied; `InvalidTask` naming the first change that would weaken it."""
    if not isinstance(changes, Mapping) or not changes:
        raise InvalidTask(f"an amendment is a non-empty object with keys among {list(AMENDABLE)}")
    doc = task.to_dict()
    for key, value in changes.items():
        if key not in AMENDABLE:
            raise InvalidTask(f"{key!r} cannot be changed in place (amendable: {list(AMENDABLE)}); create a new task")
        if key == "min_batch_size":
            if isinstance(value, bool) or not isinstance(value, int) or value < task.min_batch_size:
                raise InvalidTask(f"min_batch_size may only be raised (now {task.min_batch_size}), got {value!r}")
        elif key == "max_collections_per_window":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= task.max_collections_per_window:
                raise InvalidTask(f"max_collections_per_window may only be lowered (now {task.max_collections_per_window}), got {value!r}")
        elif key == "retention_seconds":
            if isinstance(value, bool) or not isinstance(value, int) or value > task.retention:
                raise InvalidTask(f"retention_seconds may only be lowered (now {task.retention}), got {value!r}")
        elif key == "dp":
            _check_dp_tightens(DpParams.from_dict(task.dp), DpParams.from_dict(value))
        doc[key] = value
    if task.mode == "shares" and ("he_public_key" in changes or "he_retired_keys" in changes):
        raise InvalidTask("he_public_key / he_retired_keys belong to the homomorphic modes")
    amended = Task.from_dict(doc)
    known = set(task.he_retired_keys) | ({task.he_public_key} if task.he_public_key else set())
    if not set(amended.he_retired_keys) <= known:
        raise InvalidTask("he_retired_keys may only hold keys the task used before (retire a key, never add a foreign one)")
    if amended.he_public_key != task.he_public_key and task.he_public_key not in amended.he_retired_keys:
        raise InvalidTask("a new he_public_key must list the previous key in he_retired_keys (reports sealed under it stay countable)")
    return amended


def _check_dp_tightens(old: DpParams, new: DpParams) -> None:
    if old.algo == NONE:
        raise InvalidTask("the task has no DP block; a task with DP must be created as a new task")
    if new.algo != old.algo:
        raise InvalidTask(f"dp.algo cannot change in place ({old.algo!r} -> {new.algo!r})")
    bounds = [("epsilon", new.epsilon, old.epsilon), ("delta", new.delta, old.delta)]
    for name, new_value, old_value in bounds:
        if new_value is None or old_value is None or new_value > old_value:
            raise InvalidTask(f"dp.{name} may only be lowered (now {old_value}), got {new_value}")
    if old.budget is not None:
        if new.budget is None:
            raise InvalidTask("dp.budget cannot be removed")
        if new.budget.epsilon > old.budget.epsilon or new.budget.delta > old.budget.delta:
            raise InvalidTask("dp.budget may only be lowered")


__all__ = ["AMENDABLE", "amend"]
