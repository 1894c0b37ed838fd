"""Masks mode through the normal task and collection paths: provisioned by TaskAdmin, released by
Collect under the same state machine as every mode (once, ledger, audit, min_batch_size)."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest

from tests.e2e.test_masks import _clients, _window
from twinmpc.crypto.audit_verify import verify_log
from twinmpc.crypto.signing import VerifyKey
from twinmpc.services.aggregator.config import load_aggregator_config
from twinmpc.services.aggregator.privacy import budget_report
from twinmpc.services.aggregator.state import open_datastore
from twinmpc.services.twin.local_cluster import LocalCluster

DP = {"algo": "discrete-gaussian", "epsilon": 4, "delta": "1/1000000000", "budget": {"epsilon": 100, "delta": "1/100000"}}


@pytest.fixture()
def cluster(loop_thread, tmp_path):
    c = LocalCluster(tmp_path, k=1, processes=True)
    loop_thread.run(c.start())
    yield c
    loop_thread.run(c.stop())


def _provision(loop_thread, cluster: LocalCluster, n: int, **extra):
    doc = {
        "measurement": {"type": "sumvec", "length": 4, "bits": 16},
        "mode": "masks",
        "masks": {"dropout": "3/10", "max_clients": n, "round_seconds": 2},
        "window_seconds": 60,
        "min_batch_size": 1,
        **extra,
    }
    return loop_thread.run(cluster.provision(doc))


def _round(loop_thread, cluster, task, window, values):
    async def go():
        clients = _clients(cluster, len(values))
        try:
            return await asyncio.gather(*(c.run(task, window, v.tolist()) for c, v in zip(clients, values, strict=True)))
        finally:
            for c in clients:
                await c.close()

    return loop_thread.run(go(), timeout=90)


def _collect(loop_thread, cluster, task, window, index=0):
    async def go():
        async with cluster.collector() as c:
            return await c.collect(task, window, index)

    return loop_thread.run(go())


def test_masks_window_released_once_through_collect(loop_thread, cluster) -> None:
    n = 8
    task = _provision(loop_thread, cluster, n)
    window = _window()
    values = np.random.default_rng(5).integers(0, 1 << 16, size=(n, 4))
    assert {o.status for o in _round(loop_thread, cluster, task, window, values)} == {"summed"}
    result = _collect(loop_thread, cluster, task, window)
    assert result.report_count == n and result.result == values.sum(axis=0).tolist()
    assert _collect(loop_thread, cluster, task, window) == result
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _collect(loop_thread, cluster, task, window, 1)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    log, pub = cluster.audit_logs()[0]
    assert verify_log(log, VerifyKey.load(pub)).ok
    kinds = [json.loads(line)["kind"] for line in log.read_text().splitlines() if task.task_id_b64 in line]
    assert kinds.count("collection") == 1


def test_masks_release_is_charged_to_the_ledger_once(loop_thread, cluster) -> None:
    n = 8
    task = _provision(loop_thread, cluster, n, dp=DP)
    window = _window()
    values = np.random.default_rng(6).integers(0, 1 << 10, size=(n, 4))
    _round(loop_thread, cluster, task, window, values)
    first = _collect(loop_thread, cluster, task, window)
    assert _collect(loop_thread, cluster, task, window) == first  # the same noisy sum again
    assert first.dp["distribution"] == "discrete-gaussian"
    store = open_datastore(load_aggregator_config(cluster.nodes[0].config_path))
    try:
        spent = budget_report(store, task)
    finally:
        store.close()
    assert spent["collections"] == 1


def test_masks_window_without_a_round_is_below_min_batch_size(loop_thread, cluster) -> None:
    task = _provision(loop_thread, cluster, 4)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _collect(loop_thread, cluster, task, _window())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "min_batch_size" in info.value.details()
