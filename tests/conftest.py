"""Shared, session-scoped fixtures: one event loop thread and running clusters."""

from __future__ import annotations

import pytest

from twinmpc.services.twin.local_cluster import LocalCluster
from tests.loop_thread import LoopThread

pytest_plugins = ["tests.fixtures.mosquitto"]


@pytest.fixture(scope="session")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.close()


def _cluster(loop_thread: LoopThread, tmp_path_factory, k: int, **kwargs) -> LocalCluster:
    cluster = LocalCluster(tmp_path_factory.mktemp(f"cluster{k}"), k=k, **kwargs)
    loop_thread.run(cluster.start())
    return cluster


@pytest.fixture(scope="session")
def cluster2(loop_thread, tmp_path_factory):
    """Two in-process aggregators (leader + helper) over mTLS on loopback."""
    cluster = _cluster(loop_thread, tmp_path_factory, 2, limits={"max_message_bytes": 4 * 1024 * 1024}, metrics=True)
    yield cluster
    loop_thread.run(cluster.stop())


@pytest.fixture(scope="session")
def cluster3(loop_thread, tmp_path_factory):
    """Three in-process aggregators (leader + two helpers)."""
    cluster = _cluster(loop_thread, tmp_path_factory, 3)
    yield cluster
    loop_thread.run(cluster.stop())
