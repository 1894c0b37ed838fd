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
  keys dropped from ``he_retired_keys`` once no report needs them;
* HPKE key rotation: ``{"aggregator_hpke_config": {"index": j, "hpke_config": "<b64>"}}``
  pins aggregator j's new config (aggregator j itself accepts only one of its own
  non-retired keys, `services.aggregator.tasks`; the others record it), and
  ``{"collector_hpke_config": "<b64>"}`` replaces the collector's key (releases
  made after it are sealed to the new key; a release already stored keeps its
  bytes). A replacement keeps post-quantum protection if the old key had it.

Anything else (measurement, aggregators, window length, turning DP off) needs a
new task. Input shares and aggregate shares are bound to the task id, not to the
task document, so reports sealed before an amendment still open after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twinmpc.crypto.seal import HpkeConfig
from twinmpc.mpc.dp import NONE, DpParams
from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.task import Task, _hpke

AMENDABLE = ("min_batch_size", "max_collections_per_window", "dp", "he_public_key", "he_retired_keys", "retention_seconds",
             "aggregator_hpke_config", "collector_hpke_config")


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
        elif key == "aggregator_hpke_config":
            index, config = _aggregator_config(task, value)
            doc["aggregators"][index]["hpke_config"] = config
            continue
        elif key == "collector_hpke_config":
            _collector_config(task, value)
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


def _post_quantum(config: HpkeConfig) -> bool:
    return config.suite.name.startswith("mlkem")  # the ML-KEM + X25519 hybrid suites (crypto.seal)


def _replacement(old: HpkeConfig | None, text: Any, what: str) -> HpkeConfig:
    """A new HPKE config for `what`: it decodes, and drops no post-quantum protection the old one had."""
    new = _hpke(text, what)
    if old is not None and _post_quantum(old) and not _post_quantum(new):
        raise InvalidTask(f"{what}: a key of suite {old.suite.name!r} cannot be replaced by a non-post-quantum "
                          f"{new.suite.name!r} key (that would weaken the task)")
    return new


def _aggregator_config(task: Task, value: Any) -> tuple[int, str]:
    if task.mode != "shares":
        raise InvalidTask(f"aggregator_hpke_config belongs to mode 'shares'; this task is {task.mode!r}")
    if not isinstance(value, Mapping) or set(value) != {"index", "hpke_config"}:
        raise InvalidTask('aggregator_hpke_config must be {"index": <aggregator>, "hpke_config": "<base64url config>"}')
    index = value["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < task.num_aggregators:
        raise InvalidTask(f"aggregator_hpke_config.index must be an aggregator of the task (0..{task.num_aggregators - 1}), got {index!r}")
    _replacement(task.aggregators[index].hpke_config, value["hpke_config"], f"aggregators[{index}].hpke_config")
    return index, value["hpke_config"]


def _collector_config(task: Task, value: Any) -> None:
    if task.mode not in ("shares", "masks"):
        raise InvalidTask(f"collector_hpke_config belongs to modes 'shares' and 'masks'; this task is {task.mode!r} "
                          "(rotate its he_public_key instead)")
    _replacement(task.collector_hpke_config, value, "collector_hpke_config")


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
