"""A poisoning edge node against the real services: every forged report is rejected
by all aggregators, honest reports in the same window are counted, the aggregate
does not move, and the rejection is counted in metrics as invalid."""

from __future__ import annotations

import os

import pytest

from twinmpc.mpc.client import seal_report, shard_report
from tests.service_utils import collect, past_window, provision, upload

HONEST = {"sum": [3, 5, 7], "histogram": [0, 5, 5]}
EXPECTED = {"sum": 15, "histogram": [1, 0, 0, 0, 0, 2]}
MEASUREMENTS = {"sum": {"type": "sum", "bits": 8}, "histogram": {"type": "histogram", "buckets": 6}}


def _flip_element(share: bytes, index: int, size: int) -> bytes:
    b = bytearray(share)
    b[index * size] ^= 1  # low byte of a little-endian element: stays canonical
    return bytes(b)


def _forge(task, attack: str, window: int):
    """Build one malicious report (sealed correctly, so only the proof can catch it)."""
    scheme = task.scheme
    prio3, ctx, field = scheme.prio3, task.ctx(), scheme.field
    rid = os.urandom(16)
    honest_value = 1
    if attack in ("out-of-range", "huge-value", "two-hot"):
        meas = prio3.flp.valid.encode(honest_value)
        if attack == "out-of-range":  # an entry that must be 0/1 set to 2
            meas[0] = field.from_ints([2])[0]
        elif attack == "huge-value":  # the 10^9 poisoning: one entry worth a billion vehicles
            meas[0] = field.from_ints([10**9])[0]
        else:  # histogram with two buckets set
            meas[0] = field.from_ints([1])[0]
        return seal_report(task, rid, window, *prio3.shard_encoded(ctx, meas, rid, os.urandom(prio3.RAND_SIZE)))
    public, shares = prio3.shard(ctx, honest_value, rid, os.urandom(prio3.RAND_SIZE))
    if attack == "tampered-proof-share":
        shares[0] = _flip_element(shares[0], prio3.flp.MEAS_LEN + 1, field.ENCODED_SIZE)
    elif attack == "tampered-measurement-share":
        shares[0] = _flip_element(shares[0], 0, field.ENCODED_SIZE)
    elif attack == "tampered-joint-rand-part":
        public = bytes([public[0] ^ 1]) + public[1:]
    elif attack == "proof-for-another-report":
        rid = os.urandom(16)  # shares were bound to the first nonce
    elif attack == "proof-reused-with-other-input":
        _, other = prio3.shard(ctx, 4, rid, os.urandom(prio3.RAND_SIZE))
        meas_bytes = prio3.flp.MEAS_LEN * field.ENCODED_SIZE
        shares[0] = other[0][:meas_bytes] + shares[0][meas_bytes:]
    else:
        raise ValueError(attack)
    return seal_report(task, rid, window, public, shares)


@pytest.fixture(scope="module")
def tasks(loop_thread, cluster2, cluster3):
    return {
        ("sum", 2): provision(loop_thread, cluster2, MEASUREMENTS["sum"], vdaf="prio3"),
        ("histogram", 2): provision(loop_thread, cluster2, MEASUREMENTS["histogram"], vdaf="prio3"),
        ("histogram", 3): provision(loop_thread, cluster3, MEASUREMENTS["histogram"], vdaf="prio3"),
    }


# Sum (Field64) has no joint randomness, so nonce- and jr-binding attacks are run on Histogram.
CASES = [
    ("sum", 2, "out-of-range"),
    ("sum", 2, "huge-value"),
    ("sum", 2, "tampered-proof-share"),
    ("sum", 2, "tampered-measurement-share"),
    ("histogram", 2, "out-of-range"),
    ("histogram", 2, "huge-value"),
    ("histogram", 2, "two-hot"),
    ("histogram", 3, "two-hot"),
    ("histogram", 2, "tampered-proof-share"),
    ("histogram", 2, "tampered-joint-rand-part"),
    ("histogram", 3, "tampered-joint-rand-part"),
    ("histogram", 2, "proof-for-another-report"),
    ("histogram", 2, "proof-reused-with-other-input"),
]


@pytest.mark.parametrize("kind,k,attack", CASES, ids=[f"{a}-{kind}-K{k}" for kind, k, a in CASES])
def test_forged_report_rejected_honest_counted(request, loop_thread, tasks, kind, k, attack):
    cluster = request.getfixturevalue(f"cluster{k}")
    task = tasks[(kind, k)]
    window = past_window(10 + CASES.index((kind, k, attack)))
    leader = cluster.nodes[0].core
    invalid_before = leader.metrics.get("reports_invalid_total")
    reports = [shard_report(task, v, time=window) for v in HONEST[kind]] + [_forge(task, attack, window)]
    outcomes = upload(loop_thread, cluster, task, reports)
    assert all(o.accepted for o in outcomes), [o.message for o in outcomes]
    result = collect(loop_thread, cluster, task, window)
    assert result.report_count == len(HONEST[kind])
    assert result.result == EXPECTED[kind]
    assert leader.metrics.get("reports_invalid_total") == invalid_before + 1


def test_client_side_validation_refuses_out_of_range(tasks):
    from twinmpc.mpc.errors import InvalidMeasurement

    with pytest.raises(InvalidMeasurement):
        shard_report(tasks[("sum", 2)], 256)
    with pytest.raises(InvalidMeasurement):
        shard_report(tasks[("histogram", 2)], 6)


def test_over_norm_model_update_rejected(loop_thread, cluster2):
    """A federated update whose L2 norm exceeds the task bound, with a lying norm claim."""
    import numpy as np

    task = provision(loop_thread, cluster2, {"type": "fixedpointvec", "length": 4, "frac_bits": 8, "clip": 1.0, "l2_bound": 1.0})
    assert task.vdaf == "prio3"
    prio3 = task.scheme.prio3
    valid = prio3.flp.valid
    window = past_window(31)
    scale = 1 << 8
    qs = [int(0.9 * scale)] * 4  # ||x||^2 = 3.24 > 1
    rid = os.urandom(16)
    meas = valid.encode_fixed(qs, claimed_norm=scale * scale // 2)  # claims a norm within the bound
    evil = seal_report(task, rid, window, *prio3.shard_encoded(task.ctx(), meas, rid, os.urandom(prio3.RAND_SIZE)))
    honest = [[0.5, 0.0, 0.0, 0.0], [0.0, -0.25, 0.0, 0.5]]
    outcomes = upload(loop_thread, cluster2, task, [*(shard_report(task, h, time=window) for h in honest), evil])
    assert all(o.accepted for o in outcomes)
    result = collect(loop_thread, cluster2, task, window)
    assert result.report_count == 2
    assert np.allclose(result.result, np.sum(honest, axis=0))
    with pytest.raises(Exception, match="norm"):
        shard_report(task, [0.9, 0.9, 0.9, 0.9])  # an honest client library refuses it up front
