"""The helper's batched InitJob and its restart path in ContinueJob (verify states lost
between the two calls are recomputed from the stored sealed shares, in one batch)."""

from __future__ import annotations

import os

from twinmpc.mpc import aggregator as agg
from twinmpc.mpc.client import shard_report
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.mpc.modes import batch_of
from twinmpc.services.aggregator.helper import HelperRole
from tests.service_utils import past_window, provision


def test_helper_continue_after_losing_its_states_recomputes_them(loop_thread, cluster2) -> None:
    leader, helper = cluster2.nodes[0].core, cluster2.nodes[1].core
    task = provision(loop_thread, cluster2, {"type": "sum", "bits": 16}, vdaf="prio3")
    window = past_window()
    values = [5, 65535, 0, 1234, 77]
    reports = [shard_report(task, v, time=window + 1) for v in values]
    shares = [pb.ReportShare(report_id=r.report_id, time=r.time, public_share=r.public_share, sealed_share=r.sealed_shares[1])
              for r in reports]
    shares[3].sealed_share = shares[3].sealed_share[:-1]  # a seal that does not open: refused alone
    job_id = os.urandom(16)

    async def run():  # on the servers' loop: the cores' storage belongs to it
        results = helper.helper.init_job(task.task_id, job_id, shares)
        loaded = leader.tasks.load(task.task_id)
        opened = [agg.open_input_share(task, leader.hpke, 0, r) for r in reports]
        inits = agg.verify_init_many(task, loaded.verify_key, 0, [r.report_id for r in reports],
                                     [r.public_share for r in reports], opened)
        verdicts = []
        for r, res, init in zip(reports, results, inits, strict=True):
            message = agg.verifier_message(task, [init[1], res.verifier_share]) if res.ok else None
            verdicts.append(pb.ReportVerdict(report_id=r.report_id, accept=message is not None, verifier_message=message or b""))
        restarted = HelperRole(helper.state, helper.tasks)  # a fresh role holds no verify states, as after a restart
        return results, restarted.continue_job(task.task_id, job_id, verdicts)

    results, (accepted, rejected) = loop_thread.run(run())
    assert [r.ok for r in results] == [True, True, True, False, True]
    assert results[3].error  # the SealError text, as before batching
    assert accepted == 4 and rejected == []
    assert batch_of(task, helper.store.get_window(task.task_id, window).accumulator).count == 4


def test_cached_verify_states_are_bounded(monkeypatch):
    """The helper's in-memory states never exceed the cap; the oldest are dropped first."""
    from twinmpc.services.aggregator import helper

    monkeypatch.setattr(helper, "MAX_CACHED_STATES", 3)
    role = helper.HelperRole(state=None, tasks=None)
    for i in range(5):
        role._remember(b"job", bytes([i]), object())
    assert list(role._states) == [(b"job", bytes([i])) for i in (2, 3, 4)]
