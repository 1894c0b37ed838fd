"""Retention through real aggregator servers (mTLS on loopback) on an accelerated clock.

Windows are uploaded and collected one after another while the garbage
collector runs every few milliseconds in small batches; uploads run
concurrently with it. Every collected result is exact, the stores hold only the
windows inside the retention horizon, and an expired report cannot come back.
"""

from __future__ import annotations

import asyncio
import sqlite3

from twinmpc.mpc.client import shard_report
from twinmpc.services.aggregator.config import load_aggregator_config
from twinmpc.services.aggregator.server import start_aggregator
from twinmpc.services.twin.local_cluster import LocalCluster

WINDOW = 60
EXPIRY = 120
RETENTION = 180
BASE = 1_800_000_000 - 1_800_000_000 % WINDOW


class Clock:
    """The aggregators' clock, moved by the test (a simulated day passes in seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _start(cluster: LocalCluster, clock: Clock) -> None:
    for node in cluster.nodes:
        node.server, node.port, node.core = await start_aggregator(load_aggregator_config(node.config_path), clock=clock)


def _rows(cluster: LocalCluster, index: int, table: str) -> int:
    with sqlite3.connect(cluster.workdir / f"agg{index}-data" / "aggregator.sqlite3") as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_gc_under_concurrent_uploads_keeps_results_exact_and_the_store_bounded(loop_thread, tmp_path):
    cluster = LocalCluster(tmp_path, k=2, limits={"gc_interval_seconds": 0.02, "gc_batch_rows": 7})
    clock = Clock(BASE)
    loop_thread.run(_start(cluster, clock))
    try:
        task = loop_thread.run(cluster.provision({
            "measurement": {"type": "sum", "bits": 8}, "window_seconds": WINDOW, "min_batch_size": 1,
            "report_expiry_seconds": EXPIRY, "retention_seconds": RETENTION,
        }))
        per_window, windows = 40, 10
        first_reports = []

        async def run_windows() -> list[tuple[int, int, int]]:
            results = []
            async with cluster.upload_client(batch_size=8) as up, cluster.collector() as coll:
                for i in range(windows):
                    start = BASE + i * WINDOW
                    clock.now = start + 1
                    reports = [shard_report(task, v % 200, time=start + 1) for v in range(i, i + per_window)]
                    first_reports.extend(reports[:3] if i == 0 else [])
                    halves = reports[: per_window // 2], reports[per_window // 2 :]
                    # two edge streams at once while the collector deletes older windows
                    outcomes = await asyncio.gather(*(up.upload_batch(task.task_id, h) for h in halves))
                    assert all(o.accepted for batch in outcomes for o in batch)
                    clock.now = start + WINDOW + 1
                    result = await coll.collect(task, start)
                    results.append((result.report_count, result.result, sum(v % 200 for v in range(i, i + per_window))))
                    await asyncio.sleep(0.05)  # a few collector passes with the clock in this window
            return results

        results = loop_thread.run(run_windows())
        assert all(count == per_window and got == expected for count, got, expected in results)
        loop_thread.run(asyncio.sleep(0.3))  # the last passes settle
        horizon = task.expired_before(clock.now)  # windows starting before it ended more than RETENTION ago
        kept_windows = sum(1 for i in range(windows) if BASE + i * WINDOW >= horizon)
        assert 1 <= kept_windows < windows
        assert _rows(cluster, 0, "reports") == kept_windows * per_window
        assert _rows(cluster, 1, "helper_reports") == kept_windows * per_window
        for i in (0, 1):
            assert _rows(cluster, i, "windows") == kept_windows and _rows(cluster, i, "collections") == kept_windows
        # a finished job goes with its last report: every job left still holds one
        assert 0 < _rows(cluster, 0, "jobs") <= _rows(cluster, 0, "reports")
        assert 0 < _rows(cluster, 1, "jobs") <= _rows(cluster, 1, "helper_reports")
        with sqlite3.connect(cluster.workdir / "agg1-data" / "aggregator.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM blobs WHERE name LIKE 'helper-job-rejected/%'").fetchone()[0] <= _rows(cluster, 1, "jobs")

        async def replay_first() -> set[str]:
            async with cluster.upload_client() as up:
                return {o.status for o in await up.upload_batch(task.task_id, first_reports)}

        assert loop_thread.run(replay_first()) == {"STALE"}  # forgotten ids are refused by time
        assert cluster.nodes[0].core.metrics.get("gc_rows_deleted_total", kind="reports") >= (windows - kept_windows) * per_window
    finally:
        loop_thread.run(cluster.stop())
