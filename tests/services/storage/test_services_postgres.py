"""End to end with the leader on a real PostgreSQL: one leader, then two leader replicas on one database.

The helper keeps its embedded SQLite store; the leader's database password reaches
it only through the environment variable its config names.
"""

from __future__ import annotations

import asyncio
import os
import shutil

import numpy as np
import pytest

from twinmpc.mpc.client import shard_report
from twinmpc.services.aggregator.config import AggregatorConfig, TlsConfig
from twinmpc.services.aggregator.server import start_aggregator, stop_aggregator
from twinmpc.services.client import UploadClient
from twinmpc.services.twin.local_cluster import LocalCluster
from twinmpc.services.storage import SqliteDatastore
from tests.service_utils import collect, past_window, provision, upload

pytest_plugins = ["tests.fixtures.postgres"]

PASSWORD_ENV = "TWINMPC_TEST_DB_PASSWORD"


@pytest.fixture(scope="module")
def pg_cluster(loop_thread, postgres_server, tmp_path_factory):
    """Leader (index 0) on PostgreSQL, helper on SQLite; small jobs so rounds span several."""
    from twinmpc.services.storage.postgres import PostgresDatastore

    url = postgres_server.create_database()
    os.environ[PASSWORD_ENV] = postgres_server.password
    cluster = LocalCluster(tmp_path_factory.mktemp("pg-cluster"), k=2, limits={"job_size": 40},
                           database_urls={0: url}, database_password_env=PASSWORD_ENV)
    loop_thread.run(cluster.start())
    assert isinstance(cluster.nodes[0].core.store, PostgresDatastore)
    assert isinstance(cluster.nodes[1].core.store, SqliteDatastore)
    yield cluster
    loop_thread.run(cluster.stop())
    os.environ.pop(PASSWORD_ENV, None)


def test_round_on_postgres_is_exact(loop_thread, pg_cluster):
    task = provision(loop_thread, pg_cluster, {"type": "sumvec", "length": 3, "bits": 8})
    window = past_window()
    values = np.random.default_rng(7).integers(0, 256, size=(230, 3))
    reports = [shard_report(task, v.tolist(), time=window + i % 50) for i, v in enumerate(values)]
    assert all(o.accepted for o in upload(loop_thread, pg_cluster, task, reports))
    assert [o.status for o in upload(loop_thread, pg_cluster, task, reports[:2])] == ["REPLAYED", "REPLAYED"]
    result = collect(loop_thread, pg_cluster, task, window)
    assert result.report_count == 230
    assert result.result == values.sum(axis=0).tolist()
    late = upload(loop_thread, pg_cluster, task, [shard_report(task, [1, 1, 1], time=window + 5)])
    assert [o.status for o in late] == ["STALE"]


def test_two_leader_replicas_on_one_database(loop_thread, pg_cluster, tmp_path):
    """A second leader replica (same keys, same database) takes half the uploads; both
    drive aggregation jobs concurrently; the collection through the first is exact."""
    leader_dir = pg_cluster.workdir / "agg0-data"
    replica_dir = tmp_path / "replica-data"
    replica_dir.mkdir()
    for name in ("hpke_key.json", "datastore.key"):  # replicas share the leader's secrets (0600 kept)
        shutil.copy2(leader_dir / name, replica_dir / name)
    pki = pg_cluster.pki_dir
    config = AggregatorConfig(
        data_dir=replica_dir, identity="agg0", tls=TlsConfig(cert=pki / "agg0.crt", key=pki / "agg0.key", ca=pki / "ca.crt"),
        database_url=pg_cluster.database_urls[0], database_password_env=PASSWORD_ENV, limits={"job_size": 40},
    )
    server, port, core = loop_thread.run(start_aggregator(config))
    try:
        task = provision(loop_thread, pg_cluster, {"type": "sum", "bits": 16})
        window = past_window()
        values = [(i * 7919) % 65536 for i in range(400)]
        reports = [shard_report(task, v, time=window + i % 50) for i, v in enumerate(values)]

        async def upload_both():
            creds = pg_cluster.credentials("edge", "edge-1")
            async with UploadClient(pg_cluster.endpoints[0], creds, batch_size=25) as a, \
                    UploadClient(f"127.0.0.1:{port}", creds, batch_size=25) as b:
                return await asyncio.gather(a.upload_batch(task.task_id, reports[0::2]), b.upload_batch(task.task_id, reports[1::2]))

        outcomes = loop_thread.run(upload_both())
        assert all(o.accepted for half in outcomes for o in half)
        result = collect(loop_thread, pg_cluster, task, window)
        assert result.report_count == 400
        assert result.result == sum(values)
        assert core.metrics.get("reports_uploaded_total", task=task.task_id_b64[:8]) == 200  # the replica took its half
    finally:
        loop_thread.run(stop_aggregator(server, core))


def test_missing_password_variable_is_refused(pg_cluster, tmp_path, monkeypatch):
    from twinmpc.services.aggregator.config import ConfigError
    from twinmpc.services.aggregator.core import AggregatorCore

    monkeypatch.delenv("TWINMPC_UNSET_PASSWORD_VAR", raising=False)
    pki = pg_cluster.pki_dir
    config = AggregatorConfig(
        data_dir=tmp_path, tls=TlsConfig(cert=pki / "agg0.crt", key=pki / "agg0.key", ca=pki / "ca.crt"),
        database_url=pg_cluster.database_urls[0], database_password_env="TWINMPC_UNSET_PASSWORD_VAR",
    )
    with pytest.raises(ConfigError, match="TWINMPC_UNSET_PASSWORD_VAR"):
        AggregatorCore(config)


def test_config_refuses_a_password_in_the_url(tmp_path):
    from twinmpc.services.aggregator.config import ConfigError, load_aggregator_config

    for url, message in (("postgresql://u:secret@db/x", "password"), ("postgresql://u@db/x?password=secret", "password"),
                         ("mysql://u@db/x", "postgresql://")):
        path = tmp_path / "agg.toml"
        path.write_text(f'data_dir = "d"\ndatabase_url = "{url}"\n[tls]\ncert = "c"\nkey = "k"\nca = "a"\n')
        with pytest.raises(ConfigError, match=message) as info:
            load_aggregator_config(path)
        assert "secret" not in str(info.value)


def test_sigkill_postgres_leader_mid_window(loop_thread, postgres_server, tmp_path, monkeypatch):
    """Leader as a real process on PostgreSQL, SIGKILLed with jobs in flight and restarted:
    every acknowledged report counted once; a client's retry is answered REPLAYED."""
    monkeypatch.setenv(PASSWORD_ENV, postgres_server.password)  # inherited by the aggregator processes
    cluster = LocalCluster(tmp_path, k=2, processes=True, limits={"job_size": 30},
                           database_urls={0: postgres_server.create_database()}, database_password_env=PASSWORD_ENV)
    loop_thread.run(cluster.start())
    try:
        task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
        window = past_window()
        first = [shard_report(task, v, time=window + 1) for v in range(200)]
        assert all(o.accepted for o in upload(loop_thread, cluster, task, first))
        cluster.kill(0)
        loop_thread.run(cluster.restart(0))
        assert {o.status for o in upload(loop_thread, cluster, task, first[:50])} == {"REPLAYED"}
        assert all(o.accepted for o in upload(loop_thread, cluster, task, [shard_report(task, 9, time=window + 2) for _ in range(100)]))
        result = collect(loop_thread, cluster, task, window)
        assert result.report_count == 300
        assert result.result == sum(range(200)) + 900
    finally:
        loop_thread.run(cluster.stop())
