"""Two leader replicas (real processes) on one real PostgreSQL: job leases.

Replica A claims an aggregation job and is stuck in it (its helper is down).
Replica B starts on the same database, A is SIGKILLed, and B leaves the job
alone while A's lease is valid, takes it over once the lease expired, and
the window's result through B counts every acknowledged report exactly once.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import psycopg

from twinmpc.bench.bench_scaling import start_leader_replica
from twinmpc.mpc.client import shard_report
from twinmpc.services.client import Collector
from twinmpc.services.twin.local_cluster import LocalCluster
from tests.service_utils import past_window, provision, upload

pytest_plugins = ["tests.fixtures.postgres"]

PASSWORD_ENV = "TWINMPC_TEST_DB_PASSWORD"
LEASE = 3


def test_second_replica_takes_over_a_sigkilled_replicas_job_after_its_lease(loop_thread, postgres_server, tmp_path, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, postgres_server.password)  # inherited by the aggregator processes
    url = postgres_server.create_database()
    cluster = LocalCluster(tmp_path, k=2, processes=True, database_urls={0: url}, database_password_env=PASSWORD_ENV,
                           limits={"job_lease_seconds": LEASE, "peer_timeout_seconds": 20})
    loop_thread.run(cluster.start())
    replica = None
    try:
        owner_a = bytes.fromhex((tmp_path / "agg0-data" / "replica.id").read_text())
        task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
        window = past_window()
        cluster.kill(1)  # the helper is down: A's job waits in InitJob
        reports = [shard_report(task, v, time=window + 1) for v in range(120)]
        assert all(o.accepted for o in upload(loop_thread, cluster, task, reports))

        def job() -> tuple[bytes, str, datetime] | None:
            with psycopg.connect(url, password=postgres_server.password, autocommit=True) as conn:
                row = conn.execute("SELECT lease_owner, state, lease_expires FROM jobs WHERE role='leader'").fetchone()
            return None if row is None else (bytes(row[0]), row[1], row[2])

        deadline = time.monotonic() + 10
        while job() is None:
            assert time.monotonic() < deadline, "replica A claimed no job"
            time.sleep(0.05)
        assert job()[0] == owner_a
        # B starts once A holds the job (started earlier, B's own poll could claim the reports first)
        replica, replica_port = start_leader_replica(cluster, "agg0b")
        owner_b = bytes.fromhex((tmp_path / "agg0b-data" / "replica.id").read_text())
        cluster.kill(0)  # A dies holding the lease
        loop_thread.run(cluster.restart(1))
        seen = []
        deadline = time.monotonic() + LEASE + 20
        while (state := job())[1] != "done":
            seen.append(state)
            assert time.monotonic() < deadline, f"the job was not taken over: {state}"
            time.sleep(0.05)
        assert state[0] == owner_b  # B finished it
        leases_a = {expires for owner, _, expires in seen if owner == owner_a}
        assert len(leases_a) == 1  # A's lease, never renewed after A died, and never moved by B
        # B took the job over (its lease runs LEASE seconds from the takeover) only once A's lease had expired
        assert state[2] - timedelta(seconds=LEASE) >= leases_a.pop()

        async def collect_via_b():
            async with Collector(f"127.0.0.1:{replica_port}", cluster.credentials("controller"), cluster.collector_key) as c:
                return await c.collect(task, window)

        result = loop_thread.run(collect_via_b())
        assert result.report_count == 120 and result.result == sum(range(120))
    finally:
        if replica is not None:
            replica.kill()
            replica.wait()
        loop_thread.run(cluster.stop())
