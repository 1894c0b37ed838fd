"""Homomorphic modes (Paillier-2048, CKKS) through the real leader over mTLS."""

from __future__ import annotations

import json

import dataclasses

import grpc
import numpy as np
import pytest

from twinmpc.crypto import ckks, paillier
from twinmpc.mpc.he_mode import encrypt_he_report
from twinmpc.mpc.task import b64encode
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.client import report_to_proto
from tests.service_utils import WINDOW, past_window, upload


@pytest.fixture(scope="session")
def paillier_keys():
    return paillier.generate_keypair(2048)


@pytest.fixture(scope="session")
def ckks_context():
    return ckks.generate_context(ckks.DEFAULT_PARAMS)


def _provision(loop_thread, cluster, measurement, mode, public_bytes, **extra):
    doc = {"measurement": measurement, "mode": mode, "window_seconds": WINDOW, "min_batch_size": 2,
           "max_skew_seconds": 3600, "he_public_key": b64encode(public_bytes), "he_max_reports": 1000, **extra}
    return loop_thread.run(cluster.provision(doc, aggregators=1))


def _collect(loop_thread, cluster, task, window, key):
    async def go():
        async with cluster.collector(he_secret_key=key) as c:
            return await c.collect(task, window)

    return loop_thread.run(go())


def _pub_json(pub) -> bytes:
    data = pub.to_json()
    return data if isinstance(data, bytes) else data.encode()


@pytest.mark.parametrize("measurement,values,expected", [
    ({"type": "sum", "bits": 16}, [5, 60000, 7], 60012),
    ({"type": "histogram", "buckets": 4}, [0, 3, 3], [1, 0, 0, 2]),
    ({"type": "sumvec", "length": 3, "bits": 8}, [[1, 2, 3], [255, 0, 1]], [256, 2, 4]),
])
def test_paillier_exact(loop_thread, cluster2, paillier_keys, measurement, values, expected):
    pub, sec = paillier_keys
    task = _provision(loop_thread, cluster2, measurement, "paillier", _pub_json(pub))
    window = past_window(50)
    outcomes = upload(loop_thread, cluster2, task, [encrypt_he_report(task, v, time=window) for v in values])
    assert all(o.accepted for o in outcomes)
    result = _collect(loop_thread, cluster2, task, window, sec)
    assert result.report_count == len(values) and result.result == expected


def test_paillier_with_dp_noise_within_bound(loop_thread, cluster2, paillier_keys):
    from twinmpc.mpc.modes import noise_plan

    pub, sec = paillier_keys
    task = _provision(loop_thread, cluster2, {"type": "count"}, "paillier", _pub_json(pub), dp={"algo": "discrete-laplace", "epsilon": 1})
    window = past_window(51)
    upload(loop_thread, cluster2, task, [encrypt_he_report(task, 1, time=window) for _ in range(6)])
    result = _collect(loop_thread, cluster2, task, window, sec)
    assert abs(result.result - 6) <= noise_plan(task).error_bound(1e-9)
    assert result.dp["distribution"] == "discrete-laplace"


def test_ckks_fixed_point_vectors_bounded_error(loop_thread, cluster2, ckks_context):
    task = _provision(loop_thread, cluster2, {"type": "fixedpointvec", "length": 50, "frac_bits": 16, "clip": 1.0}, "ckks",
                      ckks_context.public.to_bytes(), vdaf="twinring64")
    rng = np.random.default_rng(3)
    vectors = rng.uniform(-1, 1, size=(8, 50))
    window = past_window(52)
    upload(loop_thread, cluster2, task, [encrypt_he_report(task, v.tolist(), time=window) for v in vectors])
    result = _collect(loop_thread, cluster2, task, window, ckks_context)
    error = np.max(np.abs(np.array(result.result) - vectors.sum(axis=0)))
    assert error <= 8 * ckks.SUM_ERROR_PER_SUMMAND


def test_bad_ciphertexts_rejected(loop_thread, cluster2, paillier_keys):
    pub, _ = paillier_keys
    other_pub, _ = paillier.generate_keypair(2048)
    task = _provision(loop_thread, cluster2, {"type": "sum", "bits": 8}, "paillier", _pub_json(pub))
    other = _provision(loop_thread, cluster2, {"type": "sum", "bits": 8}, "paillier", _pub_json(other_pub))
    window = past_window(53)
    good = encrypt_he_report(task, 3, time=window)
    cases = {
        "truncated": dataclasses.replace(good, sealed_shares=(good.sealed_shares[0][:-1],)),
        "other key": dataclasses.replace(encrypt_he_report(other, 3, time=window)),
        "two ciphertexts": dataclasses.replace(good, sealed_shares=good.sealed_shares * 2),
    }

    async def send(report):
        async with grpc.aio.secure_channel(cluster2.endpoints[0], cluster2.credentials("edge")) as ch:
            req = pb.UploadReportRequest(task_id=task.task_id, report=report_to_proto(report))
            return await pb_grpc.UploadStub(ch).UploadReport(req, timeout=10)

    for name, report in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            loop_thread.run(send(report))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name


def test_he_task_rejects_secret_bearing_or_wrong_key(loop_thread, cluster2, ckks_context, paillier_keys):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _provision(loop_thread, cluster2, {"type": "sum", "bits": 8}, "paillier", b"{not json")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_key_rotation_keeps_old_reports_in_their_window(loop_thread, cluster2, paillier_keys):
    """Reports under the retired key and the new key are summed in the same window."""
    old_pub, old_sec = paillier_keys
    new_pub, new_sec = paillier.generate_keypair(2048)
    task = _provision(loop_thread, cluster2, {"type": "sum", "bits": 8}, "paillier", _pub_json(old_pub))
    window = past_window(54)
    upload(loop_thread, cluster2, task, [encrypt_he_report(task, 10, time=window) for _ in range(2)])
    rotation = {"he_public_key": b64encode(_pub_json(new_pub)), "he_retired_keys": [b64encode(_pub_json(old_pub))]}

    async def amend():
        async with grpc.aio.secure_channel(cluster2.endpoints[0], cluster2.credentials("admin")) as ch:
            req = pb.AmendTaskRequest(task_id=task.task_id, amendment_json=json.dumps(rotation))
            return await pb_grpc.TaskAdminStub(ch).AmendTask(req, timeout=10)

    from twinmpc.mpc.task import Task

    rotated = Task.from_json(loop_thread.run(amend()).task_json)
    assert rotated.he_retired_keys == (_pub_json(old_pub),)
    upload(loop_thread, cluster2, rotated, [encrypt_he_report(rotated, 1, time=window) for _ in range(3)])
    result = _collect(loop_thread, cluster2, rotated, window, [old_sec, new_sec])
    assert result.report_count == 5 and result.result == 23
