"""Which aggregation scheme (VDAF) a task runs, built from its parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.ring_vdaf import TwinRing64

if TYPE_CHECKING:
    from twinmpc.mpc.task import Task
    from twinmpc.mpc.vdaf import Vdaf


def scheme_for_task(task: Task) -> Vdaf:
    """TwinRing64 for 'twinring64'; the matching Prio3 instance for 'prio3'; Field64 multiproof
    SumVec for 'prio3-multiproof'."""
    if task.vdaf == "twinring64":
        if getattr(task.measurement, "l2_bound", None) is not None:
            raise InvalidTask("'l2_bound' is enforced only by a validity proof: use vdaf 'prio3'")
        return TwinRing64(task.measurement, task.num_aggregators)
    if task.vdaf == "prio3":
        from twinmpc.mpc.prio3_binding import prio3_for_measurement

        return prio3_for_measurement(task.measurement, task.num_aggregators)
    if task.vdaf == "prio3-multiproof":
        return _multiproof_scheme(task)
    raise InvalidTask(f"unknown scheme {task.vdaf!r}")


def _multiproof_scheme(task: Task) -> Vdaf:
    """Prio3SumVecWithMultiproof on Field64 with 3 proofs (what DAP deployments run for vectors):
    half the bytes of Field128 per element, for sumvec measurements."""
    import math

    from twinmpc.mpc.measurements import SumVec
    from twinmpc.mpc.prio3 import Prio3SumVecWithMultiproof
    from twinmpc.mpc.prio3_binding import Prio3Scheme

    m = task.measurement
    if not isinstance(m, SumVec):
        raise InvalidTask(f"vdaf 'prio3-multiproof' takes sumvec measurements, not {m.NAME!r}")
    chunk = max(1, math.isqrt(m.vector_length * m.bits))  # near sqrt(measurement bits), as for 'prio3'
    prio3 = Prio3SumVecWithMultiproof(task.num_aggregators, m.vector_length, (1 << m.bits) - 1, chunk)
    return Prio3Scheme(prio3, m)  # type: ignore[return-value]
