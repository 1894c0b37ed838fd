"""HPKE key rotation through real aggregator processes and the real CLI.

An edge node keeps uploading while both aggregators rotate their keys and the
task is amended to pin the new ones: reports sealed to the old keys (before, and
ones sealed earlier that arrive after) and to the new keys all count, exactly,
in one window. Retiring the old keys ends the overlap (a report sealed to one is
refused INVALID_ARGUMENT, naming the retired key); the current key cannot be
retired; a non-admin cannot rotate. The collector's key is rotated by amendment:
the next collection opens only with the new key, a release stored before it keeps
its bytes. The audit logs hold every key event and verify. Then two leader
replicas on one PostgreSQL: a rotation and a retirement made through one are
what the other serves.
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from twinmpc.bench.bench_scaling import start_leader_replica
from twinmpc.crypto.audit_verify import verify_log
from twinmpc.crypto.signing import VerifyKey
from twinmpc.mpc.client import shard_report
from twinmpc.mpc.task import Task, b64encode
from twinmpc.services.client import Collector, TaskAdminClient, UploadClient
from twinmpc.services.keyfiles import load_hpke_key
from twinmpc.services.twin.local_cluster import LocalCluster
from tests.service_utils import past_window, provision
from tests.services.test_cli import twinmpc
from tests.services.test_cli_errors import assert_one_error

pytest_plugins = ["tests.fixtures.postgres"]

PASSWORD_ENV = "TWINMPC_TEST_DB_PASSWORD"
FIRST, SECOND = 1, 2  # config ids: the key each aggregator starts with, the one `key rotate` adds


def _cli(cluster: LocalCluster, *args: str, identity: str = "admin-1"):
    return twinmpc(*args, "--pki-dir", str(cluster.pki_dir), "--identity", identity, cwd=cluster.workdir)


def _ok(out) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def _key_ids(report) -> tuple[int, ...]:
    return tuple(sealed[0] for sealed in report.sealed_shares)


@pytest.fixture
def cluster(loop_thread, tmp_path):
    c = LocalCluster(tmp_path, k=2, processes=True)
    loop_thread.run(c.start())
    yield c
    loop_thread.run(c.stop())


def test_rotation_with_uploads_in_flight_then_retirement_and_a_new_collector_key(loop_thread, cluster):
    task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
    task_file = cluster.workdir / "task.json"
    task_file.write_text(json.dumps(task.to_dict()))
    window = past_window(3)
    sealed_early = [shard_report(task, 200 + v, time=window + 1) for v in range(20)]  # sealed now, uploaded after the rotation
    current = {"task": task}
    sent: list[tuple[int, tuple[int, ...]]] = []
    stop = asyncio.Event()

    async def edge_node() -> None:
        """One report at a time, sealed to whatever task.json the node has at that moment."""
        async with cluster.upload_client() as up:
            while not stop.is_set() or len(sent) < 10:
                value = len(sent) % 256
                report = shard_report(current["task"], value, time=window + 1)
                await up.upload(task.task_id, report)  # raises on any refusal
                sent.append((value, _key_ids(report)))
                await asyncio.sleep(0.02)

    uploading = asyncio.run_coroutine_threadsafe(edge_node(), loop_thread.loop)
    while len(sent) < 5:
        time.sleep(0.02)
    for endpoint in cluster.endpoints:  # the operators rotate while reports keep arriving
        rotated = _ok(_cli(cluster, "key", "rotate", "--endpoint", endpoint))
    amended_text = _ok(_cli(cluster, "task", "amend", "--task", "task.json", "--rotate-aggregator-key", "0", "--rotate-aggregator-key", "1"))
    amended = Task.from_json(task_file.read_text())
    assert json.loads(amended_text) == amended.to_dict()
    assert [a.hpke_config.config_id for a in amended.aggregators] == [SECOND, SECOND]
    assert b64encode(amended.aggregators[1].hpke_config.encode()) == rotated.strip()  # what `key rotate` printed
    current["task"] = amended  # the edge node gets the amended task.json
    mark = len(sent)
    while len(sent) < mark + 5:
        time.sleep(0.02)
    loop_thread.loop.call_soon_threadsafe(stop.set)
    uploading.result(60)
    assert {FIRST, SECOND} == {ids[0] for _, ids in sent}
    assert {(FIRST, FIRST), (SECOND, SECOND)} <= {ids for _, ids in sent}

    async def late_arrivals() -> list:  # sealed to the old keys before the rotation, arriving in the overlap
        async with cluster.upload_client() as up:
            return await up.upload_batch(task.task_id, sealed_early)

    assert all(o.accepted for o in loop_thread.run(late_arrivals()))

    async def collect(t: Task, start: int, key):
        async with Collector(cluster.endpoints[0], cluster.credentials("controller"), key) as c:
            return await c.collect(t, start)

    result = loop_thread.run(collect(amended, window, cluster.collector_key))
    assert result.report_count == len(sent) + len(sealed_early)  # every report once: none lost, none twice
    assert result.result == sum(v for v, _ in sent) + sum(200 + v for v in range(20))

    # --- the overlap ends: retire the old keys -------------------------------------------------
    assert_one_error(_cli(cluster, "key", "retire", "--endpoint", cluster.endpoints[0], "--config-id", str(SECOND)), 1, "current key")
    assert_one_error(_cli(cluster, "key", "retire", "--endpoint", cluster.endpoints[0], "--config-id", "7"), 1, "NOT_FOUND")
    for endpoint in cluster.endpoints:
        assert "retired at" in _ok(_cli(cluster, "key", "retire", "--endpoint", endpoint, "--config-id", str(FIRST)))
    listing = _ok(_cli(cluster, "key", "list", "--endpoint", cluster.endpoints[0])).splitlines()
    assert [line.split()[:3] for line in listing] == [[str(FIRST), "retired", "x25519-hkdf-sha256-aes128gcm"],
                                                     ["*", str(SECOND), "active"]]
    window2 = window + task.window_seconds

    async def upload_one(report) -> None:
        async with cluster.upload_client() as up:
            await up.upload(task.task_id, report)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        loop_thread.run(upload_one(shard_report(task, 1, time=window2 + 1)))  # a node that never got the amended task
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"HPKE config id {FIRST}, a key this aggregator retired" in refused.value.details()

    assert_one_error(_cli(cluster, "key", "retire", "--endpoint", cluster.endpoints[0], "--config-id", "300"), 2, "0..255")
    assert_one_error(_cli(cluster, "task", "amend", "--task", "task.json"), 2, "nothing to amend")
    assert_one_error(_cli(cluster, "task", "amend", "--task", "task.json", "--rotate-aggregator-key", "2"), 2, "0..1")

    # --- roles: only an admin manages keys -------------------------------------------------------
    cluster.credentials("controller")
    assert_one_error(_cli(cluster, "key", "rotate", "--endpoint", cluster.endpoints[0], identity="controller-1"), 1, "PERMISSION_DENIED")
    assert_one_error(_cli(cluster, "key", "retire", "--endpoint", cluster.endpoints[0], "--config-id", "1", identity="edge-1"), 1,
                     "PERMISSION_DENIED")

    # --- the collector's key -----------------------------------------------------------------------
    _ok(twinmpc("collector-key", "generate", "--out", "collector2.key", cwd=cluster.workdir))
    new_collector = load_hpke_key(cluster.workdir / "collector2.key")
    _ok(_cli(cluster, "task", "amend", "--task", "task.json", "--set-collector-key", "collector2.key"))
    rekeyed = Task.from_json(task_file.read_text())
    assert rekeyed.collector_hpke_config == new_collector.config
    assert [a.hpke_config.config_id for a in rekeyed.aggregators] == [SECOND, SECOND]
    again = loop_thread.run(collect(rekeyed, window, cluster.collector_key))  # released before: the stored bytes
    assert (again.report_count, again.result, again.collection_id) == (result.report_count, result.result, result.collection_id)
    loop_thread.run(upload_one(shard_report(rekeyed, 9, time=window2 + 1)))
    with pytest.raises(Exception, match="does not open"):
        loop_thread.run(collect(rekeyed, window2, cluster.collector_key))  # the old collector key opens nothing new
    fresh = loop_thread.run(collect(rekeyed, window2, new_collector))
    assert (fresh.report_count, fresh.result) == (1, 9)

    # --- the audit trail ------------------------------------------------------------------------------
    for index, (log, pub) in enumerate(cluster.audit_logs()):
        assert verify_log(log, VerifyKey.load(pub)).ok
        assert twinmpc("audit", "verify", str(log), "--key", str(pub), cwd=cluster.workdir).returncode == 0
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        keys = [(e["actor"], e["fields"]["action"], e["fields"]["config_id"]) for e in entries if e["kind"] == "key_event"]
        assert keys == [("local", "import", FIRST), ("admin-1", "rotate", SECOND), ("admin-1", "retire", FIRST)], index
        changes = [json.loads(e["fields"]["changes"]) for e in entries if e["kind"] == "task_changed"]
        assert [sorted(c) for c in changes] == [["aggregator_hpke_config"], ["aggregator_hpke_config"], ["collector_hpke_config"]]


def test_an_aggregator_refuses_to_pin_a_config_that_is_not_its_own(loop_thread, cluster2):
    cluster = cluster2
    task = provision(loop_thread, cluster, {"type": "count"})
    admin = TaskAdminClient(cluster.credentials("admin"))
    helper_config, _ = loop_thread.run(admin.hpke_config(cluster.endpoints[1]))
    change = {"aggregator_hpke_config": {"index": 0, "hpke_config": b64encode(helper_config.encode())}}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        loop_thread.run(admin.amend_task(cluster.endpoints[:1], task, change))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not one of this aggregator's HPKE configs" in info.value.details()
    # aggregator 1 is not the one named: it records what it is told (aggregator 0 is the one that refuses)
    assert loop_thread.run(admin.amend_task(cluster.endpoints[1:], task, change)).aggregators[0].hpke_config == helper_config



def test_replicas_on_one_database_serve_the_same_keys(loop_thread, postgres_server, tmp_path, monkeypatch):
    """A rotation through replica B is what replica A hands out and opens; a retirement through A reaches B."""
    monkeypatch.setenv(PASSWORD_ENV, postgres_server.password)  # inherited by the aggregator processes
    cluster = LocalCluster(tmp_path, k=2, processes=True, database_urls={0: postgres_server.create_database()},
                           database_password_env=PASSWORD_ENV)
    loop_thread.run(cluster.start())
    replica = None
    try:
        replica, port = start_leader_replica(cluster, "agg0b")  # its own data_dir; the database holds the key set
        a, b = cluster.endpoints[0], f"127.0.0.1:{port}"
        task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
        (cluster.workdir / "task.json").write_text(json.dumps(task.to_dict()))
        window = past_window(3)
        _ok(_cli(cluster, "key", "rotate", "--endpoint", b))
        admin = TaskAdminClient(cluster.credentials("admin"))
        assert loop_thread.run(admin.hpke_config(a))[0].config_id == SECOND  # A serves B's rotation at once
        _ok(_cli(cluster, "task", "amend", "--task", "task.json", "--rotate-aggregator-key", "0"))  # A checks it holds the key
        amended = Task.from_json((cluster.workdir / "task.json").read_text())
        assert amended.aggregators[0].hpke_config.config_id == SECOND

        async def upload(endpoint: str, report) -> str:
            async with UploadClient(endpoint, cluster.credentials("edge")) as up:
                try:
                    await up.upload(task.task_id, report)
                except grpc.aio.AioRpcError as exc:
                    return f"{exc.code().name}: {exc.details()}"
            return "OK"

        counted = [3, 4]
        assert loop_thread.run(upload(b, shard_report(amended, 3, time=window + 1))) == "OK"  # B opens the key it made
        assert loop_thread.run(upload(a, shard_report(task, 4, time=window + 1))) == "OK"  # A still opens the old key
        _ok(_cli(cluster, "key", "retire", "--endpoint", a, "--config-id", str(FIRST)))
        deadline = time.monotonic() + 10
        while (outcome := loop_thread.run(upload(b, shard_report(task, 5, time=window + 1)))) == "OK":
            counted.append(5)  # B had not re-read the set yet: accepted, and counted
            assert time.monotonic() < deadline, "replica B kept opening a key retired through A"
            time.sleep(0.1)
        assert outcome.startswith("INVALID_ARGUMENT") and "retired" in outcome

        async def collect():
            async with Collector(a, cluster.credentials("controller"), cluster.collector_key) as c:
                return await c.collect(amended, window)

        result = loop_thread.run(collect())
        assert (result.report_count, result.result) == (len(counted), sum(counted))
        audit_a, audit_b = (cluster.workdir / name / "audit.log" for name in ("agg0-data", "agg0b-data"))
        actions = {p: [json.loads(line)["fields"].get("action") for line in p.read_text().splitlines() if '"key_event"' in line]
                   for p in (audit_a, audit_b)}
        assert actions == {audit_a: ["import", "retire"], audit_b: ["rotate"]}  # each replica audits what it did
    finally:
        if replica is not None:
            replica.terminate()
            replica.wait(15)
        loop_thread.run(cluster.stop())
