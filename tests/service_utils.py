"""Helpers for tests that talk to real aggregators."""

from __future__ import annotations

import time

from twinmpc.services.twin.local_cluster import LocalCluster
from tests.loop_thread import LoopThread

WINDOW = 60


def past_window(offset_windows: int = 2) -> int:
    """Start of a closed window a little in the past (reports stay within skew)."""
    now = int(time.time())
    return now - now % WINDOW - offset_windows * WINDOW


def provision(loop_thread: LoopThread, cluster: LocalCluster, measurement: dict, **extra):
    doc = {"measurement": measurement, "window_seconds": WINDOW, "min_batch_size": 1, "max_skew_seconds": 3600, **extra}
    return loop_thread.run(cluster.provision(doc))


def upload(loop_thread: LoopThread, cluster: LocalCluster, task, reports, identity: str = "edge-1"):
    async def go():
        async with cluster.upload_client(identity) as client:
            return await client.upload_batch(task.task_id, reports)

    return loop_thread.run(go())


def collect(loop_thread: LoopThread, cluster: LocalCluster, task, window: int, index: int = 0):
    async def go():
        async with cluster.collector() as c:
            return await c.collect(task, window, index)

    return loop_thread.run(go())
