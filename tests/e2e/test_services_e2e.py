"""End-to-end rounds through real aggregators over mTLS on loopback (K = 2 and 3)."""

from __future__ import annotations

import numpy as np
import pytest

from twinmpc.mpc.client import shard_report
from tests.service_utils import collect, past_window, provision, upload

CASES = [
    ({"type": "count"}, [1, 0, 1, 1], 3),
    ({"type": "sum", "bits": 16}, [5, 65535, 0, 12], 65552),
    ({"type": "mean", "bits": 8}, [10, 20, 30], {"mean": 20.0, "sum": 60, "count": 3}),
    ({"type": "histogram", "buckets": 5}, [0, 4, 4, 2], [1, 0, 1, 0, 2]),
    ({"type": "sumvec", "length": 3, "bits": 4}, [[1, 2, 3], [15, 0, 1]], [16, 2, 4]),
    ({"type": "fixedpointvec", "length": 2, "frac_bits": 16, "clip": 1.0}, [[0.5, -0.25], [0.25, 2.0]], [0.75, 0.75]),
    ({"type": "fixedpointvec", "length": 2, "frac_bits": 16, "clip": 1.0, "l2_bound": 1.0}, [[0.5, -0.25], [0.25, 0.5]], [0.75, 0.25]),
]


# fixed-point vectors run on Prio3 only with an L2 bound (the proof enforces it), and on twinring64 only without
ROUNDS = [(v, *c) for c in CASES for v in ("prio3", "twinring64") if c[0]["type"] != "fixedpointvec" or (v == "prio3") == ("l2_bound" in c[0])]


@pytest.mark.parametrize("cluster_name", ["cluster2", "cluster3"])
@pytest.mark.parametrize("vdaf,measurement,values,expected", ROUNDS, ids=[f"{r[0]}-{r[1]['type']}{'-l2' if 'l2_bound' in r[1] else ''}" for r in ROUNDS])
def test_round_is_exact(request, loop_thread, cluster_name, measurement, values, expected, vdaf):
    cluster = request.getfixturevalue(cluster_name)
    task = provision(loop_thread, cluster, measurement, vdaf=vdaf)
    assert task.vdaf == vdaf
    window = past_window()
    reports = [shard_report(task, v, time=window + i) for i, v in enumerate(values)]
    outcomes = upload(loop_thread, cluster, task, reports)
    assert [o.status for o in outcomes] == ["ACCEPTED"] * len(values)
    result = collect(loop_thread, cluster, task, window)
    assert result.report_count == len(values)
    assert result.window_start == window
    assert result.result == expected
    assert result.collection_id


def test_reports_are_summed_per_window(loop_thread, cluster2):
    task = provision(loop_thread, cluster2, {"type": "sum", "bits": 8})
    w1, w2 = past_window(3), past_window(2)
    reports = [shard_report(task, 1, time=w1 + 1) for _ in range(5)] + [shard_report(task, 2, time=w2 + 1) for _ in range(7)]
    upload(loop_thread, cluster2, task, reports)
    assert collect(loop_thread, cluster2, task, w1).result == 5
    assert collect(loop_thread, cluster2, task, w2).result == 14


def test_many_reports_across_jobs(loop_thread, cluster3):
    """More reports than one aggregation job holds: every one counted once."""
    task = provision(loop_thread, cluster3, {"type": "sumvec", "length": 4, "bits": 8})
    window = past_window()
    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, size=(2500, 4))
    reports = [shard_report(task, v.tolist(), time=window) for v in values]
    outcomes = upload(loop_thread, cluster3, task, reports)
    assert all(o.accepted for o in outcomes)
    result = collect(loop_thread, cluster3, task, window)
    assert result.report_count == 2500
    assert result.result == values.sum(axis=0).tolist()


def test_post_quantum_suite_round(loop_thread, tmp_path):
    from twinmpc.services.twin.local_cluster import LocalCluster

    cluster = LocalCluster(tmp_path, k=2, hpke_suite="mlkem768x25519-hkdf-sha256-aes128gcm")
    loop_thread.run(cluster.start())
    try:
        task = provision(loop_thread, cluster, {"type": "histogram", "buckets": 3})
        assert task.aggregators[0].hpke_config.suite.name.startswith("mlkem768")
        window = past_window()
        upload(loop_thread, cluster, task, [shard_report(task, b, time=window) for b in (0, 2, 2)])
        assert collect(loop_thread, cluster, task, window).result == [1, 0, 2]
    finally:
        loop_thread.run(cluster.stop())


def test_prometheus_metrics_endpoint(loop_thread, cluster2):
    import urllib.request

    task = provision(loop_thread, cluster2, {"type": "count"})
    window = past_window(3)
    upload(loop_thread, cluster2, task, [shard_report(task, 1, time=window) for _ in range(4)])
    collect(loop_thread, cluster2, task, window)
    port = cluster2.nodes[0].core.metrics_port
    assert port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "twinmpc_reports_uploaded_total" in text and "twinmpc_collections_total" in text
    assert 'twinmpc_stage_seconds_bucket{le="0.5",stage="upload"}' in text  # a histogram, not lifetime quantiles
