"""The Field64 multiproof SumVec variant (vdaf 'prio3-multiproof') through real aggregators:
honest vectors are summed, a report with an out-of-range entry is rejected by the proofs."""

from __future__ import annotations

import os

import numpy as np

from twinmpc.mpc.client import seal_report, shard_report
from tests.service_utils import collect, past_window, provision, upload

LENGTH, BITS = 64, 8


def test_multiproof_sumvec_through_the_services(loop_thread, cluster2) -> None:
    task = provision(loop_thread, cluster2, {"type": "sumvec", "length": LENGTH, "bits": BITS}, vdaf="prio3-multiproof")
    prio3 = task.scheme.prio3
    assert task.vdaf == "prio3-multiproof"
    assert (type(prio3).__name__, prio3.field.NAME, prio3.PROOFS) == ("Prio3SumVecWithMultiproof", "Field64", 3)
    window = past_window(41)
    rng = np.random.default_rng(17)
    honest = [[int(v) for v in rng.integers(0, 1 << BITS, size=LENGTH)] for _ in range(3)]
    meas = prio3.flp.valid.encode(honest[0])
    meas[0] = prio3.field.from_ints([2])[0]  # a "bit" set to 2: entry 0 would be worth one more than it claims
    rid = os.urandom(16)
    evil = seal_report(task, rid, window, *prio3.shard_encoded(task.ctx(), meas, rid, os.urandom(prio3.RAND_SIZE)))
    reports = [shard_report(task, h, time=window) for h in honest] + [evil]
    outcomes = upload(loop_thread, cluster2, task, reports)
    assert all(o.accepted for o in outcomes), [o.message for o in outcomes]
    result = collect(loop_thread, cluster2, task, window)
    assert result.report_count == len(honest)
    assert list(result.result) == [int(x) for x in np.sum(honest, axis=0)]
