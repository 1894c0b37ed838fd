"""Which aggregation scheme (VDAF) a task runs, built from its parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.ring_vdaf import TwinRing64

if TYPE_CHECKING:
    from twinmpc.mpc.task import Task
    from twinmpc.mpc.vdaf import Vdaf


def scheme_for_task(task: Task) -> Vdaf:
    """TwinRing64 for 'twinring64'; the matching Prio3 instance for 'prio3'."""
    if task.vdaf == "twinring64":
        if getattr(task.measurement, "l2_bound", None) is not None:
            raise InvalidTask("'l2_bound' is enforced only by a validity proof: use vdaf 'prio3'")
        return TwinRing64(task.measurement, task.num_aggregators)
    if task.vdaf == "prio3":
        from twinmpc.mpc.prio3_binding import prio3_for_measurement

        return prio3_for_measurement(task.measurement, task.num_aggregators)
    raise InvalidTask(f"unknown scheme {task.vdaf!r}")
