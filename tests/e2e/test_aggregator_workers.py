"""An aggregator served by several worker processes on one port (`workers = 2`).

Through real processes: uploads spread over both workers' connections are each
counted once, a collection is released once and the shared audit log verifies;
a worker killed mid-traffic is restarted without losing an acknowledged report;
the primary's death takes its workers with it (the port is free again); masks
tasks, whose rounds live in one process's memory, are refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import grpc
import pytest

from twinmpc.crypto.audit_verify import verify_log
from twinmpc.crypto.signing import VerifyKey
from twinmpc.mpc.client import shard_report
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.client import report_to_proto
from twinmpc.services.twin.local_cluster import LocalCluster
from tests.service_utils import collect, past_window, provision, upload

CHANNELS = 16  # independent TLS connections: the kernel spreads connections, not calls, over the workers


@pytest.fixture()
def cluster(loop_thread, tmp_path):
    cluster = LocalCluster(tmp_path, k=2, processes=True, metrics=True, workers={0: 2})
    loop_thread.run(cluster.start())
    yield cluster
    loop_thread.run(cluster.stop())


def _worker_pid(cluster: LocalCluster) -> int:
    path = cluster.workdir / "agg0-data" / "worker-1.pid"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.1)
    raise AssertionError("worker 1 never wrote its pid file")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not serving
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _upload_per_call(loop_thread, cluster: LocalCluster, task, reports) -> list[bool]:
    """One UploadReport per report over CHANNELS connections; True where acknowledged."""
    creds = cluster.credentials("edge", "edge-1")

    async def go():
        channels = [grpc.aio.secure_channel(cluster.endpoints[0], creds, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(CHANNELS)]
        stubs = [pb_grpc.UploadStub(c) for c in channels]

        async def one(i, report):
            try:
                await stubs[i % CHANNELS].UploadReport(pb.UploadReportRequest(task_id=task.task_id, report=report_to_proto(report)),
                                                        timeout=30)
                return True
            except grpc.aio.AioRpcError:
                return False

        try:
            return await asyncio.gather(*(one(i, r) for i, r in enumerate(reports)))
        finally:
            for c in channels:
                await c.close()

    return loop_thread.run(go())


def _uploaded_by_each_process(cluster: LocalCluster) -> list[float]:
    """reports_uploaded_total scraped from the primary's metrics port and worker 1's (port + 1)."""
    import urllib.request

    host, port = cluster.metrics_endpoints[0].rsplit(":", 1)
    counts = []
    for p in (int(port), int(port) + 1):
        text = urllib.request.urlopen(f"http://{host}:{p}/metrics", timeout=10).read().decode()
        counts.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith("twinmpc_reports_uploaded_total{")))
    return counts


def test_two_workers_share_the_port_and_count_each_report_once(loop_thread, cluster):
    task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
    window = past_window()
    values = [i % 200 for i in range(600)]
    reports = [shard_report(task, v, time=window + 1) for v in values]
    acked = _upload_per_call(loop_thread, cluster, task, reports)
    assert all(acked)
    primary, worker = _uploaded_by_each_process(cluster)
    assert primary + worker == len(reports) and primary > 0 and worker > 0  # both processes served uploads
    again = _upload_per_call(loop_thread, cluster, task, reports[:100])  # retries land on either worker: replays
    assert not any(again)

    first = collect(loop_thread, cluster, task, window)
    assert first.report_count == len(values) and first.result == sum(values)
    assert collect(loop_thread, cluster, task, window).result == first.result  # released once, the same answer again
    log, pub = cluster.audit_logs()[0]
    verdict = verify_log(log, VerifyKey.load(pub))
    assert verdict.ok, verdict.describe()


def test_a_killed_worker_is_restarted_and_loses_no_acknowledged_report(loop_thread, cluster):
    task = provision(loop_thread, cluster, {"type": "sum", "bits": 8})
    window = past_window()
    reports = [shard_report(task, 1, time=window + 1) for _ in range(400)]
    old = _worker_pid(cluster)
    acked = _upload_per_call(loop_thread, cluster, task, reports[:200])
    os.kill(old, signal.SIGKILL)
    acked += _upload_per_call(loop_thread, cluster, task, reports[200:])  # some calls may fail while it is down
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = _worker_pid(cluster)
        if new != old and _alive(new):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the primary did not restart its worker")
    retried = [r for r, ok in zip(reports, acked, strict=True) if not ok]
    assert all(_upload_per_call(loop_thread, cluster, task, retried))
    result = collect(loop_thread, cluster, task, window)
    assert result.report_count == len(reports) and result.result == len(reports)


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def test_the_primarys_death_stops_its_workers_and_children_and_frees_the_port(loop_thread, cluster):
    """SIGKILL leaves no orphan: not the worker (it holds the port), not the share-opening pool (it holds keys)."""
    task = provision(loop_thread, cluster, {"type": "count"})
    reports = [shard_report(task, 1, time=past_window() + 1) for _ in range(300)]
    upload(loop_thread, cluster, task, reports)  # a streamed batch: the primary opens it in its worker pool
    primary = cluster.nodes[0].process.pid
    worker = _worker_pid(cluster)
    children = _children(primary)
    assert worker in children and len(children) >= 2  # the worker, and at least one opener process
    port = int(cluster.endpoints[0].rsplit(":", 1)[1])
    cluster.kill(0)
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)]
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # nobody listens there any more


def test_masks_tasks_are_refused_while_several_processes_serve(loop_thread, cluster):
    doc = {"measurement": {"type": "sumvec", "length": 3, "bits": 8}, "mode": "masks", "window_seconds": 60, "min_batch_size": 3}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        loop_thread.run(cluster.provision(doc, aggregators=1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "workers = 2" in info.value.details()
