"""Every bad input gets a precise gRPC status through the real server and changes no state."""

from __future__ import annotations

import dataclasses
import os

import grpc
import pytest

from twinmpc.mpc.client import shard_report
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.client import report_to_proto
from tests.service_utils import collect, past_window, provision, upload


@pytest.fixture(scope="module")
def sum_task(loop_thread, cluster2):
    return provision(loop_thread, cluster2, {"type": "sum", "bits": 8}, min_batch_size=3)


def _unary(loop_thread, cluster, request, role="edge", identity=None):
    async def go():
        async with grpc.aio.secure_channel(cluster.endpoints[0], cluster.credentials(role, identity)) as ch:
            return await pb_grpc.UploadStub(ch).UploadReport(request, timeout=10)

    return loop_thread.run(go())


def _status(loop_thread, fn):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def _stored(cluster, task, window):
    return cluster.nodes[0].core.store.count_pending(task.task_id, window)


def _flip(data: bytes, pos: int = -1) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1
    return bytes(b)


def test_unknown_task_is_not_found(loop_thread, cluster2, sum_task):
    report = shard_report(sum_task, 1, time=past_window())
    code, details = _status(loop_thread, lambda: _unary(loop_thread, cluster2, pb.UploadReportRequest(task_id=os.urandom(32), report=report_to_proto(report))))
    assert code == grpc.StatusCode.NOT_FOUND and "unknown task" in details


def test_replay_is_already_exists_and_not_stored_twice(loop_thread, cluster2, sum_task):
    window = past_window(5)
    report = shard_report(sum_task, 1, time=window)
    req = pb.UploadReportRequest(task_id=sum_task.task_id, report=report_to_proto(report))
    _unary(loop_thread, cluster2, req)
    before = _stored(cluster2, sum_task, window)
    code, details = _status(loop_thread, lambda: _unary(loop_thread, cluster2, req))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "already" in details
    batch = upload(loop_thread, cluster2, sum_task, [report])
    assert batch[0].status == "REPLAYED"
    assert _stored(cluster2, sum_task, window) <= before


def test_duplicate_id_inside_one_batch(loop_thread, cluster2, sum_task):
    window = past_window(6)
    report = shard_report(sum_task, 1, time=window)
    outcomes = upload(loop_thread, cluster2, sum_task, [report, report])
    assert [o.status for o in outcomes] == ["ACCEPTED", "REPLAYED"]


@pytest.mark.parametrize(
    "mutate,expected_code,needle",
    [
        (lambda r: dataclasses.replace(r, sealed_shares=(_flip(r.sealed_shares[0]),) + r.sealed_shares[1:]), grpc.StatusCode.INVALID_ARGUMENT, "does not open"),
        (lambda r: dataclasses.replace(r, sealed_shares=r.sealed_shares[:1]), grpc.StatusCode.INVALID_ARGUMENT, "sealed shares"),
        (lambda r: dataclasses.replace(r, time=r.time + 10_000_000), grpc.StatusCode.FAILED_PRECONDITION, "ahead of the aggregator clock"),
        (lambda r: dataclasses.replace(r, time=r.time - 10_000_000), grpc.StatusCode.FAILED_PRECONDITION, "report expiry"),
        (lambda r: dataclasses.replace(r, public_share=b"x"), grpc.StatusCode.INVALID_ARGUMENT, "does not open"),
    ],
    ids=["tampered-seal", "wrong-share-count", "future-timestamp", "expired-timestamp", "moved-public-share"],
)
def test_bad_report_rejected_with_precise_status(loop_thread, cluster2, sum_task, mutate, expected_code, needle):
    window = past_window(7)
    report = mutate(shard_report(sum_task, 1, time=window))
    before = _stored(cluster2, sum_task, window)
    code, details = _status(loop_thread, lambda: _unary(loop_thread, cluster2, pb.UploadReportRequest(task_id=sum_task.task_id, report=report_to_proto(report))))
    assert code == expected_code and needle in details
    assert _stored(cluster2, sum_task, window) == before


def test_wrong_report_id_length(loop_thread, cluster2, sum_task):
    msg = report_to_proto(shard_report(sum_task, 1, time=past_window()))
    msg.report_id = b"short"
    code, details = _status(loop_thread, lambda: _unary(loop_thread, cluster2, pb.UploadReportRequest(task_id=sum_task.task_id, report=msg)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "16 bytes" in details


def test_share_sealed_for_another_task_does_not_open(loop_thread, cluster2, sum_task):
    other = provision(loop_thread, cluster2, {"type": "sum", "bits": 8})
    report = shard_report(other, 1, time=past_window())
    code, details = _status(loop_thread, lambda: _unary(loop_thread, cluster2, pb.UploadReportRequest(task_id=sum_task.task_id, report=report_to_proto(report))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not open" in details


def test_malformed_protobuf_is_refused(loop_thread, cluster2):
    async def go():
        async with grpc.aio.secure_channel(cluster2.endpoints[0], cluster2.credentials("edge")) as ch:
            call = ch.unary_unary("/twinmpc.v1.Upload/UploadReport", request_serializer=None, response_deserializer=None)
            return await call(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)

    code, details = _status(loop_thread, lambda: loop_thread.run(go()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed twinmpc.v1.UploadReportRequest" in details


def test_oversize_message_is_resource_exhausted(loop_thread, cluster2, sum_task):
    msg = report_to_proto(shard_report(sum_task, 1, time=past_window()))
    msg.public_share = b"\x00" * (5 * 1024 * 1024)
    code, _ = _status(loop_thread, lambda: _unary(loop_thread, cluster2, pb.UploadReportRequest(task_id=sum_task.task_id, report=msg)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_controller_cannot_upload(loop_thread, cluster2, sum_task):
    req = pb.UploadReportRequest(task_id=sum_task.task_id, report=report_to_proto(shard_report(sum_task, 1, time=past_window())))
    code, details = _status(loop_thread, lambda: _unary(loop_thread, cluster2, req, role="controller", identity="controller-9"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "edge" in details


def test_edge_cannot_collect(loop_thread, cluster2, sum_task):
    async def go():
        async with grpc.aio.secure_channel(cluster2.endpoints[0], cluster2.credentials("edge")) as ch:
            return await pb_grpc.CollectionStub(ch).Collect(pb.CollectRequest(task_id=sum_task.task_id, window_start=past_window()), timeout=10)

    code, details = _status(loop_thread, lambda: loop_thread.run(go()))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "controller" in details


def test_edge_cannot_call_aggregation(loop_thread, cluster2, sum_task):
    async def go():
        async with grpc.aio.secure_channel(cluster2.endpoints[1], cluster2.credentials("edge")) as ch:
            return await pb_grpc.AggregationStub(ch).InitJob(pb.AggregationJobInit(task_id=sum_task.task_id, job_id=os.urandom(16)), timeout=10)

    code, _ = _status(loop_thread, lambda: loop_thread.run(go()))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_upload_to_helper_is_refused(loop_thread, cluster2, sum_task):
    async def go():
        async with grpc.aio.secure_channel(cluster2.endpoints[1], cluster2.credentials("edge")) as ch:
            req = pb.UploadReportRequest(task_id=sum_task.task_id, report=report_to_proto(shard_report(sum_task, 1, time=past_window())))
            return await pb_grpc.UploadStub(ch).UploadReport(req, timeout=10)

    code, details = _status(loop_thread, lambda: loop_thread.run(go()))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "leader" in details


def test_bad_helper_seal_is_rejected_by_all_aggregators(loop_thread, cluster2, sum_task):
    """The leader cannot open a helper's share: the helper rejects it, nobody counts it."""
    window = past_window(8)
    good = [shard_report(sum_task, 2, time=window) for _ in range(3)]
    bad = shard_report(sum_task, 100, time=window)
    bad = dataclasses.replace(bad, sealed_shares=(bad.sealed_shares[0], _flip(bad.sealed_shares[1])))
    invalid_before = cluster2.nodes[0].core.metrics.get("reports_invalid_total")
    outcomes = upload(loop_thread, cluster2, sum_task, [*good, bad])
    assert all(o.accepted for o in outcomes)  # the leader cannot tell at upload time
    result = collect(loop_thread, cluster2, sum_task, window)
    assert result.report_count == 3 and result.result == 6
    assert cluster2.nodes[0].core.metrics.get("reports_invalid_total") == invalid_before + 1


def test_collect_open_window_refused(loop_thread, cluster2, sum_task):
    import time

    now = int(time.time())
    code, details = _status(loop_thread, lambda: collect(loop_thread, cluster2, sum_task, now - now % 60))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "closes at" in details


def test_collect_misaligned_window_refused(loop_thread, cluster2, sum_task):
    code, details = _status(loop_thread, lambda: collect(loop_thread, cluster2, sum_task, past_window() + 7))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "aligned" in details


def test_batch_below_min_size_refused_spends_nothing_and_window_stays_open(loop_thread, cluster2, sum_task):
    window = past_window(9)
    upload(loop_thread, cluster2, sum_task, [shard_report(sum_task, 1, time=window) for _ in range(2)])
    code, details = _status(loop_thread, lambda: collect(loop_thread, cluster2, sum_task, window))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "min_batch_size" in details
    assert "2" not in details.replace(str(window), "")  # the count below the minimum is not disclosed
    late = upload(loop_thread, cluster2, sum_task, [shard_report(sum_task, 1, time=window)])
    assert late[0].status == "ACCEPTED"  # a refused collection froze nothing
    result = collect(loop_thread, cluster2, sum_task, window)
    assert (result.report_count, result.result) == (3, 3)
    after = upload(loop_thread, cluster2, sum_task, [shard_report(sum_task, 1, time=window)])
    assert after[0].status == "STALE" and "collected" in after[0].message  # released: the batch is frozen


def test_unknown_task_collect_not_found(loop_thread, cluster2, sum_task):
    bogus = dataclasses.replace(sum_task, task_id=os.urandom(32))
    code, _ = _status(loop_thread, lambda: collect(loop_thread, cluster2, bogus, past_window()))
    assert code == grpc.StatusCode.NOT_FOUND


def test_put_task_with_foreign_hpke_config_rejected(loop_thread, cluster2, sum_task):
    fresh = dataclasses.replace(sum_task, task_id=os.urandom(32))  # a new task id: the HPKE check, not immutability, answers

    async def go():
        async with grpc.aio.secure_channel(cluster2.endpoints[1], cluster2.credentials("admin")) as ch:
            req = pb.PutTaskRequest(task_json=fresh.to_json(), aggregator_index=0, verify_key=b"")
            return await pb_grpc.TaskAdminStub(ch).PutTask(req, timeout=10)

    code, details = _status(loop_thread, lambda: loop_thread.run(go()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "hpke_config" in details


def test_per_client_rate_limit(loop_thread, tmp_path):
    """A chatty edge node is throttled with RESOURCE_EXHAUSTED; another node is not affected."""
    from twinmpc.services.twin.local_cluster import LocalCluster

    cluster = LocalCluster(tmp_path, k=2, limits={"upload_rate_per_second": 1, "upload_burst": 2})
    loop_thread.run(cluster.start())
    try:
        task = provision(loop_thread, cluster, {"type": "count"})
        req = lambda: pb.UploadReportRequest(task_id=task.task_id, report=report_to_proto(shard_report(task, 1, time=past_window())))  # noqa: E731
        _unary(loop_thread, cluster, req(), identity="edge-chatty")
        _unary(loop_thread, cluster, req(), identity="edge-chatty")
        code, _ = _status(loop_thread, lambda: _unary(loop_thread, cluster, req(), identity="edge-chatty"))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        _unary(loop_thread, cluster, req(), identity="edge-quiet")
    finally:
        loop_thread.run(cluster.stop())


def test_helper_refuses_a_verdict_list_that_would_count_a_report_twice(loop_thread, cluster2, sum_task):
    """A malicious leader repeating a report id in ContinueJob must not double-count at the helper."""
    helper = cluster2.nodes[1].core
    window = past_window(12)
    report = shard_report(sum_task, 5, time=window)
    job_id = os.urandom(16)
    share = pb.ReportShare(report_id=report.report_id, time=report.time, public_share=report.public_share,
                           sealed_share=report.sealed_shares[1])
    (result,) = helper.helper.init_job(sum_task.task_id, job_id, [share])
    assert result.ok
    verdict = pb.ReportVerdict(report_id=report.report_id, accept=True, verifier_message=b"")

    async def go():
        async with grpc.aio.secure_channel(cluster2.endpoints[1], cluster2.credentials("aggregator", "agg0")) as ch:
            req = pb.AggregationJobContinue(task_id=sum_task.task_id, job_id=job_id, verdicts=[verdict, verdict])
            return await pb_grpc.AggregationStub(ch).ContinueJob(req, timeout=10)

    code, details = _status(loop_thread, lambda: loop_thread.run(go()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "more than once" in details
    assert helper.store.get_job_state(job_id) == "init"  # nothing was accumulated


def test_only_the_tasks_leader_may_drive_a_helper(loop_thread, cluster2, sum_task):
    """Another aggregator's certificate (right role, wrong identity) is refused by the helper."""
    assert sum_task.aggregators[0].identity == "agg0"
    report = shard_report(sum_task, 1, time=past_window())
    share = pb.ReportShare(report_id=report.report_id, time=report.time, public_share=report.public_share,
                           sealed_share=report.sealed_shares[1])

    async def go(identity):
        async with grpc.aio.secure_channel(cluster2.endpoints[1], cluster2.credentials("aggregator", identity)) as ch:
            stub = pb_grpc.AggregationStub(ch)
            return await stub.InitJob(pb.AggregationJobInit(task_id=sum_task.task_id, job_id=os.urandom(16), reports=[share]), timeout=10)

    code, details = _status(loop_thread, lambda: loop_thread.run(go("rogue-aggregator")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "agg0" in details
    code, _ = _status(loop_thread, lambda: loop_thread.run(go("agg1")))  # even another aggregator of the task
    assert code == grpc.StatusCode.PERMISSION_DENIED
