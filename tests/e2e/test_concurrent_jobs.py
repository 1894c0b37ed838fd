"""The leader runs several aggregation jobs at once: every report is still counted exactly once.

Real aggregators over mTLS; the leader's jobs are read back from its SQLite store.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from twinmpc.mpc.client import shard_report
from twinmpc.services.twin.local_cluster import LocalCluster
from tests.service_utils import collect, past_window, provision, upload

SLOTS = 3


def _leader_jobs(cluster: LocalCluster) -> list[tuple[str, int]]:
    """(state, report count) of each leader job in aggregator 0's store."""
    db = sqlite3.connect(cluster.workdir / "agg0-data" / "aggregator.sqlite3")
    try:
        return db.execute(
            "SELECT j.state, (SELECT COUNT(*) FROM reports r WHERE r.job_id = j.job_id) FROM jobs j WHERE j.role='leader'"
        ).fetchall()
    finally:
        db.close()


def _wait_until_aggregated(cluster: LocalCluster, expected_reports: int, timeout: float = 30) -> list[tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = _leader_jobs(cluster)
        if sum(n for state, n in jobs if state == "done") == expected_reports:
            return jobs
        assert time.monotonic() < deadline, f"jobs never finished: {jobs}"
        time.sleep(0.05)


@pytest.fixture()
def cluster(loop_thread, tmp_path):
    cluster = LocalCluster(tmp_path, k=2, processes=True, limits={"concurrent_jobs": SLOTS, "job_size": 1000})
    loop_thread.run(cluster.start())
    yield cluster
    loop_thread.run(cluster.stop())


def test_concurrent_jobs_over_many_calls_and_windows_count_each_report_once(loop_thread, cluster):
    task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
    windows = [past_window(3), past_window(2)]
    expected = {w: [0, 0] for w in windows}
    for call in range(24):  # calls of mixed windows while jobs of earlier calls are in flight
        values = [(call * 7 + i) % 256 for i in range(40)]
        reports = [shard_report(task, v, time=windows[i % 2] + 1 + call) for i, v in enumerate(values)]
        assert all(o.accepted for o in upload(loop_thread, cluster, task, reports))
        for i, v in enumerate(values):
            expected[windows[i % 2]][0] += 1
            expected[windows[i % 2]][1] += v
    for w in windows:  # collected at once: the flush runs what the driver has not claimed yet
        result = collect(loop_thread, cluster, task, w)
        assert [result.report_count, result.result] == expected[w]
    jobs = _leader_jobs(cluster)
    assert {state for state, _ in jobs} == {"done"} and sum(n for _, n in jobs) == 24 * 40


def test_helper_killed_and_leader_killed_with_jobs_in_flight(loop_thread, cluster):
    """Several jobs wait on a dead helper, the leader dies holding them all: after restarts each report counts once."""
    task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
    window = past_window()
    cluster.kill(1)
    values = list(range(250))
    for start in range(0, len(values), 50):
        chunk = values[start : start + 50]
        assert all(o.accepted for o in upload(loop_thread, cluster, task, [shard_report(task, v, time=window + 1) for v in chunk]))
    deadline = time.monotonic() + 10
    while len(_leader_jobs(cluster)) < 2:  # jobs claimed, stuck on the helper
        assert time.monotonic() < deadline, "the leader claimed no concurrent jobs"
        time.sleep(0.05)
    cluster.kill(0)
    loop_thread.run(cluster.restart(1))
    loop_thread.run(cluster.restart(0))
    result = collect(loop_thread, cluster, task, window)
    assert (result.report_count, result.result) == (250, sum(values))
    jobs = _leader_jobs(cluster)
    assert {state for state, _ in jobs} == {"done"} and sum(n for _, n in jobs) == 250
