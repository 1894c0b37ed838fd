"""Task documents select the Prio3 variant: vdaf 'prio3-multiproof' is Field64 SumVec with 3 proofs."""

from __future__ import annotations

import pytest

from tests.helpers import make_task, run_round
from twinmpc.mpc.errors import InvalidTask


def test_multiproof_task_document_round_trips_and_sums() -> None:
    kit = make_task({"type": "sumvec", "length": 5, "bits": 4}, vdaf="prio3-multiproof")
    prio3 = kit.task.scheme.prio3
    assert (type(prio3).__name__, prio3.field.NAME, prio3.PROOFS, prio3.ID) == (
        "Prio3SumVecWithMultiproof", "Field64", 3, 0xFFFFFFFF
    )
    assert kit.task.to_dict()["vdaf"] == "prio3-multiproof"
    values = [[1, 2, 3, 4, 15], [0, 0, 1, 0, 15]]
    assert list(run_round(kit, values)) == [1, 2, 4, 4, 30]
    assert list(run_round(kit, values, batch=True)) == [1, 2, 4, 4, 30]


@pytest.mark.parametrize("measurement", [{"type": "histogram", "buckets": 4}, {"type": "count"}])
def test_multiproof_refuses_measurements_it_cannot_prove(measurement: dict) -> None:
    with pytest.raises(InvalidTask, match="prio3-multiproof"):
        make_task(measurement, vdaf="prio3-multiproof")
