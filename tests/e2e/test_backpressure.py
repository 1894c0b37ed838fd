"""Backpressure through real aggregator processes and edge outboxes: overload, then recovery.

The helper is SIGKILLed, so the leader's backlog of unaggregated reports grows
past its bound; further uploads get RESOURCE_EXHAUSTED with a retry-after-ms
trailer, which the edge outbox honours (it keeps the report and comes back then,
not at its own backoff). Once the helper is back the backlog drains, uploads are
admitted again, and the window's result counts every report exactly once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from twinmpc.mpc.client import shard_report
from twinmpc.services.edge.outbox import Outbox, drain_once
from twinmpc.services.twin.local_cluster import LocalCluster
from tests.service_utils import collect, past_window, provision

BOUND = 30


@pytest.fixture()
def cluster(loop_thread, tmp_path):
    c = LocalCluster(tmp_path, k=2, processes=True, limits={"max_pending_reports": BOUND})
    loop_thread.run(c.start())
    yield c
    loop_thread.run(c.stop())


def test_overload_then_recovery_nothing_acknowledged_is_lost(loop_thread, cluster, tmp_path):
    task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
    window = past_window()
    values = {}
    outboxes = []
    for node in range(BOUND + 20):
        box = Outbox(tmp_path / f"edge-{node}", max_reports=4)
        report = shard_report(task, node % 100, time=window + 1, report_id=box.report_id(task.task_id, window))
        box.put(task.task_id, window, report, stream="flow", readings=1)
        values[report.report_id] = node % 100
        outboxes.append(box)

    async def drain(boxes):
        async with cluster.upload_client(batch_size=10) as up:
            return [await drain_once(b, up, now=time.time(), batch_size=10, retry_initial=0.01, retry_max=0.05) for b in boxes]

    cluster.kill(1)  # aggregation stalls: every acknowledged report stays in the leader's backlog
    first, rest = outboxes[: BOUND + 5], outboxes[BOUND + 5 :]
    accepted = sum(r.accepted for r in loop_thread.run(drain(first)))
    # the admission looks at the backlog every 250 ms: it refuses from the first look past the bound on
    assert BOUND <= accepted <= BOUND + 5
    loop_thread.run(asyncio.sleep(0.6))  # the admission's next look at the backlog
    refused_at = time.time()
    assert sum(r.retried for r in loop_thread.run(drain(rest))) == len(rest)
    for box in rest:  # kept, and scheduled by the leader's hint (>= 100 ms), not the 10-50 ms backoff
        (entry,) = box.entries()
        assert entry.attempts == 1 and entry.next_attempt_at - refused_at >= 0.1
    log = (cluster.workdir / "agg0.log").read_text()
    assert "RESOURCE_EXHAUSTED" in log and "retry after" in log

    loop_thread.run(cluster.restart(1))
    deadline = time.time() + 90  # liveness, not speed: a loaded 2-core machine restarts and drains slowly
    while any(b.pending() for b in outboxes):  # the outboxes come back when told to, until admitted
        assert time.time() < deadline, "uploads were not admitted again after the backlog drained"
        loop_thread.run(asyncio.sleep(0.2))
        loop_thread.run(drain([b for b in outboxes if b.pending()]))
    result = collect(loop_thread, cluster, task, window)
    assert result.report_count == len(outboxes)
    assert result.result == sum(values.values())
    for box in outboxes:
        box.close()
