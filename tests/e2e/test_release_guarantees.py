"""Releasing a window holds under retries, outages, crashes and a colluding leader.

Everything here runs against real `twinmpc aggregator serve` processes over mTLS and
talks to them with raw gRPC calls built from our stubs, as an outside reviewer would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import grpc
import pytest

from twinmpc.crypto.audit_verify import verify_log
from twinmpc.crypto.signing import VerifyKey
from twinmpc.mpc.client import shard_report
from twinmpc.mpc.modes import batch_of
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.aggregator.config import load_aggregator_config
from twinmpc.services.aggregator.privacy import budget_report
from twinmpc.services.aggregator.state import open_datastore
from twinmpc.services.client import report_to_proto
from twinmpc.services.twin.local_cluster import LocalCluster
from tests.service_utils import collect, past_window, provision, upload

DP = {"algo": "discrete-laplace", "epsilon": 1, "budget": {"epsilon": 10, "delta": 0}}


@pytest.fixture()
def cluster(loop_thread, tmp_path):
    cluster = LocalCluster(tmp_path, k=2, processes=True, limits={"peer_timeout_seconds": 3})
    loop_thread.run(cluster.start())
    yield cluster
    loop_thread.run(cluster.stop())


def _spent(cluster: LocalCluster, index: int, task) -> float:
    """Epsilon this aggregator's ledger has charged for the task (read from its store on disk)."""
    store = open_datastore(load_aggregator_config(cluster.nodes[index].config_path))
    try:
        report = budget_report(store, task)
    finally:
        store.close()
    return 0.0 if report is None else report["epsilon_spent"]


def _audit_kinds(cluster: LocalCluster, index: int, task) -> list[str]:
    log, pub = cluster.audit_logs()[index]
    assert verify_log(log, VerifyKey.load(pub)).ok
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    return [e["kind"] for e in entries if e["fields"].get("task") == task.task_id_b64]


def _status(loop_thread, coro_fn):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        loop_thread.run(coro_fn())
    return info.value.code(), info.value.details()


def _share_request(task, window: int, result_or_count, checksum: bytes, index: int = 0, cid: str = "c") -> pb.AggregateShareRequest:
    return pb.AggregateShareRequest(task_id=task.task_id, window_start=window, report_count=result_or_count,
                                    checksum=checksum, collection_id=cid, collection_index=index)


def test_averaging_attack_repeated_share_requests_get_one_noise_draw(loop_thread, cluster):
    """A leader colluding with the collector asks the helper again and again: identical bytes or a refusal."""
    task = provision(loop_thread, cluster, {"type": "count"}, dp=DP)
    window = past_window()
    upload(loop_thread, cluster, task, [shard_report(task, 1, time=window + 1) for _ in range(5)])
    released = collect(loop_thread, cluster, task, window)  # the honest first collection
    count = released.report_count

    async def leader_asks(index: int, cid: str, checksum: bytes):
        async with grpc.aio.secure_channel(cluster.endpoints[1], cluster.credentials("aggregator", "agg0")) as ch:
            return await pb_grpc.AggregationStub(ch).GetAggregateShare(
                _share_request(task, window, count, checksum, index, cid), timeout=10)

    async def collect_raw():
        async with grpc.aio.secure_channel(cluster.endpoints[0], cluster.credentials("controller")) as ch:
            return await pb_grpc.CollectionStub(ch).Collect(pb.CollectRequest(task_id=task.task_id, window_start=window), timeout=10)

    checksum = loop_thread.run(collect_raw()).checksum
    shares = {loop_thread.run(leader_asks(0, f"attempt-{i}", checksum)).sealed_aggregate_share for i in range(6)}
    assert len(shares) == 1  # six requests, one noise draw
    assert shares == {loop_thread.run(collect_raw()).sealed_aggregate_shares[1]}
    code, details = _status(loop_thread, lambda: leader_asks(1, "another", checksum))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "outside the task's terms" in details
    assert _spent(cluster, 1, task) == pytest.approx(1.0) and _spent(cluster, 0, task) == pytest.approx(1.0)
    assert _audit_kinds(cluster, 1, task).count("collection") == 1


def test_refused_collection_spends_nothing_and_the_window_stays_open(loop_thread, cluster):
    task = provision(loop_thread, cluster, {"type": "count"}, dp=DP, min_batch_size=4)
    window = past_window()
    upload(loop_thread, cluster, task, [shard_report(task, 1, time=window + 1) for _ in range(3)])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        collect(loop_thread, cluster, task, window)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "min_batch_size" in info.value.details() and "3" not in info.value.details().replace(str(window), "")
    late = upload(loop_thread, cluster, task, [shard_report(task, 1, time=window + 2) for _ in range(2)])
    assert [o.status for o in late] == ["ACCEPTED", "ACCEPTED"]
    assert _spent(cluster, 0, task) == 0 and _spent(cluster, 1, task) == 0
    assert "collection" not in _audit_kinds(cluster, 0, task) and "refusal" in _audit_kinds(cluster, 0, task)
    result = collect(loop_thread, cluster, task, window)
    assert result.report_count == 5


def test_helper_outage_spends_nothing_and_the_retry_returns_the_frozen_batch(loop_thread, cluster):
    task = provision(loop_thread, cluster, {"type": "sum", "bits": 8}, dp={"algo": "none"})
    window = past_window()
    upload(loop_thread, cluster, task, [shard_report(task, v, time=window + 1) for v in (3, 4, 5)])
    loop_thread.run(asyncio.sleep(0.5))  # let the job driver aggregate with the helper up
    cluster.kill(1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        collect(loop_thread, cluster, task, window)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "collection" not in _audit_kinds(cluster, 0, task)
    late = upload(loop_thread, cluster, task, [shard_report(task, 100, time=window + 2)])
    assert late[0].status == "STALE"  # frozen: the retry must see the same batch
    loop_thread.run(cluster.restart(1))
    first = collect(loop_thread, cluster, task, window)
    assert (first.report_count, first.result) == (3, 12)
    assert collect(loop_thread, cluster, task, window) == first
    assert _audit_kinds(cluster, 0, task).count("collection") == 1 and _audit_kinds(cluster, 1, task).count("collection") == 1


def test_leader_crash_between_freezing_and_releasing(loop_thread, cluster):
    task = provision(loop_thread, cluster, {"type": "count"}, dp=DP)
    window = past_window()
    upload(loop_thread, cluster, task, [shard_report(task, 1, time=window + 1) for _ in range(4)])
    loop_thread.run(asyncio.sleep(0.5))
    cluster.kill(1)
    with pytest.raises(grpc.aio.AioRpcError):
        collect(loop_thread, cluster, task, window)  # frozen, nothing released
    cluster.kill(0)
    loop_thread.run(cluster.restart(0))
    loop_thread.run(cluster.restart(1))
    result = collect(loop_thread, cluster, task, window)
    assert result.report_count == 4
    assert collect(loop_thread, cluster, task, window) == result
    for index in (0, 1):
        assert _spent(cluster, index, task) == pytest.approx(1.0)
        assert _audit_kinds(cluster, index, task).count("collection") == 1


def test_helper_crash_after_storing_its_share(loop_thread, cluster):
    """The helper released (and charged) before it died: after a restart it answers the same bytes."""
    task = provision(loop_thread, cluster, {"type": "count"}, dp=DP)
    window = past_window()
    upload(loop_thread, cluster, task, [shard_report(task, 1, time=window + 1) for _ in range(4)])
    loop_thread.run(asyncio.sleep(0.5))

    async def leader_asks(checksum: bytes):
        async with grpc.aio.secure_channel(cluster.endpoints[1], cluster.credentials("aggregator", "agg0")) as ch:
            return await pb_grpc.AggregationStub(ch).GetAggregateShare(_share_request(task, window, 4, checksum), timeout=10)

    code, details = _status(loop_thread, lambda: leader_asks(b"\0" * 32))
    assert code == grpc.StatusCode.ABORTED and "differs" in details  # a wrong batch claim is refused, nothing spent
    assert _spent(cluster, 1, task) == 0
    checksum = _window_batch(cluster, 1, task, window).checksum  # what an honest leader claims
    stored = loop_thread.run(leader_asks(checksum)).sealed_aggregate_share
    cluster.kill(1)
    loop_thread.run(cluster.restart(1))

    async def collect_raw():
        async with grpc.aio.secure_channel(cluster.endpoints[0], cluster.credentials("controller")) as ch:
            return await pb_grpc.CollectionStub(ch).Collect(pb.CollectRequest(task_id=task.task_id, window_start=window), timeout=10)

    response = loop_thread.run(collect_raw())
    assert response.sealed_aggregate_shares[1] == stored and response.report_count == 4
    assert _spent(cluster, 1, task) == pytest.approx(1.0) and _spent(cluster, 0, task) == pytest.approx(1.0)
    assert _audit_kinds(cluster, 1, task).count("collection") == 1


def test_upload_rate_limit_counts_reports_not_calls(loop_thread, tmp_path):
    cluster = LocalCluster(tmp_path, k=2, processes=True, limits={"upload_rate_per_second": 1, "upload_burst": 3})
    loop_thread.run(cluster.start())
    try:
        task = provision(loop_thread, cluster, {"type": "count"})
        window = past_window()
        reports = [shard_report(task, 1, time=window + 1) for _ in range(200)]

        trailers: dict[str, str] = {}

        async def stream():
            async with grpc.aio.secure_channel(cluster.endpoints[0], cluster.credentials("edge")) as ch:
                async def batches():
                    yield pb.UploadBatch(task_id=task.task_id, reports=[report_to_proto(r) for r in reports[:2]])
                    yield pb.UploadBatch(task_id=task.task_id, reports=[report_to_proto(r) for r in reports[2:]])

                call = pb_grpc.UploadStub(ch).UploadReports(batches(), timeout=10)
                try:
                    return await call
                finally:
                    trailers.update(dict(await call.trailing_metadata() or ()))

        code, details = _status(loop_thread, stream)  # one stream cannot carry 200 reports past a burst of 3
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "burst of 3" in details
        code, _ = _status(loop_thread, stream)  # the first two reports used the bucket up
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry-after-ms" in trailers
        loop_thread.run(asyncio.sleep(0.5))
        assert _stored(cluster, task, window) <= 3
    finally:
        loop_thread.run(cluster.stop())


def _window_batch(cluster: LocalCluster, index: int, task, window: int):
    store = open_datastore(load_aggregator_config(cluster.nodes[index].config_path))
    try:
        record = store.get_window(task.task_id, window)
        return batch_of(task, record.accumulator if record else None)
    finally:
        store.close()


def _stored(cluster: LocalCluster, task, window: int) -> int:
    """Reports of the window the leader holds: still pending or already aggregated."""
    store = open_datastore(load_aggregator_config(cluster.nodes[0].config_path))
    try:
        pending = store.count_pending(task.task_id, window)
    finally:
        store.close()
    return pending + _window_batch(cluster, 0, task, window).count


def test_a_task_cannot_be_silently_replaced(loop_thread, cluster):
    task = provision(loop_thread, cluster, {"type": "count"}, dp=DP, min_batch_size=10)

    async def put(doc_json: str):
        async with grpc.aio.secure_channel(cluster.endpoints[0], cluster.credentials("admin")) as ch:
            return await pb_grpc.TaskAdminStub(ch).PutTask(pb.PutTaskRequest(task_json=doc_json, aggregator_index=0), timeout=10)

    async def amend(changes: dict):
        async with grpc.aio.secure_channel(cluster.endpoints[0], cluster.credentials("admin")) as ch:
            req = pb.AmendTaskRequest(task_id=task.task_id, amendment_json=json.dumps(changes))
            return await pb_grpc.TaskAdminStub(ch).AmendTask(req, timeout=10)

    weakened = {**task.to_dict(), "min_batch_size": 1, "dp": {"algo": "none"}}
    code, details = _status(loop_thread, lambda: put(json.dumps(weakened)))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "immutable" in details
    code, details = _status(loop_thread, lambda: amend({"min_batch_size": 1}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "only be raised" in details
    code, details = _status(loop_thread, lambda: amend({"dp": {"algo": "discrete-laplace", "epsilon": 2}}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "lowered" in details
    code, _ = _status(loop_thread, lambda: amend({"vdaf": "twinring64"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    tightened = json.loads(loop_thread.run(amend({"min_batch_size": 20})).task_json)
    assert tightened["min_batch_size"] == 20
    assert _audit_kinds(cluster, 0, task).count("task_changed") == 1
    window = past_window()
    upload(loop_thread, cluster, task, [shard_report(task, 1, time=window + 1) for _ in range(12)])
    with pytest.raises(grpc.aio.AioRpcError) as info:  # 12 reports: enough before, not after the amendment
        collect(loop_thread, cluster, task, window)
    assert "min_batch_size" in info.value.details()


def test_cutting_the_audit_log_tail_is_detected_by_the_cli(loop_thread, cluster, tmp_path):
    task = provision(loop_thread, cluster, {"type": "count"}, dp=DP)
    window = past_window()
    upload(loop_thread, cluster, task, [shard_report(task, 1, time=window + 1) for _ in range(3)])
    collect(loop_thread, cluster, task, window)
    log, pub = cluster.audit_logs()[0]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "twinmpc.services.cli", "audit", *args], capture_output=True, text=True, timeout=60)

    kept = tmp_path / "kept.head"
    head = cli("head", str(log), "--key", str(pub))
    assert head.returncode == 0, head.stderr
    kept.write_text(head.stdout)
    assert cli("verify", str(log), "--key", str(pub), "--head", str(kept)).returncode == 0
    loop_thread.run(cluster.stop())
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))  # drop the release's audit entry
    cut = cli("verify", str(log), "--key", str(pub))
    assert cut.returncode == 1 and "truncated" in cut.stdout + cut.stderr
    log.write_bytes(b"")
    assert cli("verify", str(log), "--key", str(pub)).returncode == 1
