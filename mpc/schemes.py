"""Which aggregation scheme (VDAF) a task runs, built from its parameters."""

from __future__ import annotations

import math

from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.measurements import MeasurementType, SumVec
from twinmpc.mpc.ring_vdaf import TwinRing64
from twinmpc.mpc.vdaf import Vdaf


def scheme_for(vdaf: str, measurement: MeasurementType, num_aggregators: int) -> Vdaf:
    """TwinRing64 for 'twinring64'; the matching Prio3 instance for 'prio3'; Field64 multiproof
    SumVec for 'prio3-multiproof'. Takes a task's parts, not the task, so `mpc.task` can build
    its scheme without the two modules importing each other."""
    if vdaf == "twinring64":
        if getattr(measurement, "l2_bound", None) is not None:
            raise InvalidTask("'l2_bound' is enforced only by a validity proof: use vdaf 'prio3'")
        return TwinRing64(measurement, num_aggregators)
    if vdaf == "prio3":
        from twinmpc.mpc.prio3_binding import prio3_for_measurement  # Prio3 loads only for tasks that use it

        return prio3_for_measurement(measurement, num_aggregators)
    if vdaf == "prio3-multiproof":
        return _multiproof_scheme(measurement, num_aggregators)
    raise InvalidTask(f"unknown scheme {vdaf!r}")


def _multiproof_scheme(m: MeasurementType, num_aggregators: int) -> Vdaf:
    """Prio3SumVecWithMultiproof on Field64 with 3 proofs (what DAP deployments run for vectors):
    half the bytes of Field128 per element, for sumvec measurements."""
    from twinmpc.mpc.prio3 import Prio3SumVecWithMultiproof
    from twinmpc.mpc.prio3_binding import Prio3Scheme

    if not isinstance(m, SumVec):
        raise InvalidTask(f"vdaf 'prio3-multiproof' takes sumvec measurements, not {m.NAME!r}")
    chunk = max(1, math.isqrt(m.vector_length * m.bits))  # near sqrt(measurement bits), as for 'prio3'
    prio3 = Prio3SumVecWithMultiproof(num_aggregators, m.vector_length, (1 << m.bits) - 1, chunk)
    return Prio3Scheme(prio3, m)  # type: ignore[return-value]
