"""SIGKILL any aggregator process mid-window: no acknowledged report lost or double-counted."""

from __future__ import annotations

import asyncio

import pytest

from twinmpc.mpc.client import shard_report
from twinmpc.services.twin.local_cluster import LocalCluster
from tests.service_utils import collect, past_window, provision, upload


@pytest.fixture()
def process_cluster(loop_thread, tmp_path):
    cluster = LocalCluster(tmp_path, k=2, processes=True)
    loop_thread.run(cluster.start())
    yield cluster
    loop_thread.run(cluster.stop())


def test_sigkill_leader_and_helper_mid_window(loop_thread, process_cluster):
    cluster = process_cluster
    task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
    window = past_window()
    expected_sum, acked = 0, 0

    def send(values):
        nonlocal expected_sum, acked
        reports = [shard_report(task, v, time=window + 1) for v in values]
        outcomes = upload(loop_thread, cluster, task, reports)
        for v, o in zip(values, outcomes, strict=True):
            if o.accepted:
                expected_sum += v
                acked += 1
        return reports

    first = send(list(range(200)))
    cluster.kill(0)  # leader dies while its aggregation jobs may be in flight
    loop_thread.run(cluster.restart(0))
    replayed = upload(loop_thread, cluster, task, first[:50])  # a client retrying after the crash
    assert {o.status for o in replayed} == {"REPLAYED"}

    send([7] * 150)
    cluster.kill(1)  # helper dies: the leader keeps acknowledging, jobs wait for it
    send([3] * 100)
    loop_thread.run(asyncio.sleep(0.3))
    loop_thread.run(cluster.restart(1))
    send([1] * 50)

    result = collect(loop_thread, cluster, task, window)
    assert acked == 500
    assert result.report_count == acked
    assert result.result == expected_sum


def test_sigkill_during_streaming_upload(loop_thread, process_cluster):
    """Kill the leader while a large batch streams in: what was acknowledged is counted once."""
    cluster = process_cluster
    task = provision(loop_thread, cluster, {"type": "count"})
    window = past_window()
    reports = [shard_report(task, 1, time=window) for _ in range(3000)]

    async def upload_then_kill():
        async with cluster.upload_client(batch_size=100) as client:
            first = await client.upload_batch(task.task_id, reports[:1500])
            cluster.kill(0)
            return first

    first = loop_thread.run(upload_then_kill())
    loop_thread.run(cluster.restart(0))
    second = upload(loop_thread, cluster, task, reports)  # retry everything: old ids are replays
    accepted = {o.report_id for o in first if o.accepted} | {o.report_id for o in second if o.accepted}
    assert sum(o.status == "REPLAYED" for o in second) == sum(o.accepted for o in first)
    result = collect(loop_thread, cluster, task, window)
    assert result.report_count == len(accepted) == 3000
    assert result.result == 3000


def test_sigkill_between_coalescing_and_commit(loop_thread, tmp_path):
    """Uploads waiting in the group commit are not acknowledged: a crash loses nothing acknowledged,
    and the clients' retries are stored and counted exactly once."""
    cluster = LocalCluster(tmp_path, k=2, processes=True, limits={"commit_delay_ms": 3000})
    loop_thread.run(cluster.start())
    try:
        task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
        window = past_window()
        reports = [shard_report(task, v, time=window + 1) for v in range(1, 41)]

        async def upload_while_killed():
            async with cluster.upload_client() as client:
                calls = [asyncio.ensure_future(client.upload(task.task_id, r)) for r in reports]
                await asyncio.sleep(1.0)  # every call is coalesced, none committed yet
                cluster.kill(0)
                return await asyncio.gather(*calls, return_exceptions=True)

        outcomes = loop_thread.run(upload_while_killed())
        assert all(isinstance(o, Exception) for o in outcomes)  # nothing was acknowledged
        loop_thread.run(cluster.restart(0))
        retried = upload(loop_thread, cluster, task, reports)
        assert all(o.accepted for o in retried)  # nothing was stored before the crash either
        result = collect(loop_thread, cluster, task, window)
        assert (result.report_count, result.result) == (40, sum(range(1, 41)))
    finally:
        loop_thread.run(cluster.stop())
