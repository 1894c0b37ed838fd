"""FedAvg through the real services: rounds are windows of a FixedPointVec task (services.twin.fedavg_runner)."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import fixedpoint, ring
from twinmpc.mpc import dp
from twinmpc.mpc.errors import InvalidMeasurement, InvalidTask
from twinmpc.mpc.fedavg import FedAvgConfig, encode_update
from twinmpc.mpc.modes import noise_plan
from twinmpc.services.twin.city import generate_city
from twinmpc.services.twin.fedavg_runner import (
    ACCURACY_MARGIN,
    FedAvgRoundError,
    ServiceSecureSum,
    fedavg_main,
    plain_sum,
    provision_fedavg_task,
    reencode_aggregate,
    run_fedavg_on_cluster,
    update_measurement,
)
from twinmpc.services.twin.fedavg_training import run_fedavg
from twinmpc.services.twin.local_cluster import LocalCluster
from tests.service_utils import provision

SEED = 3
CONFIG = FedAvgConfig(seed=SEED)


@pytest.fixture(scope="module")
def city():
    return generate_city(SEED)


@pytest.fixture(scope="module")
def fl_task(loop_thread, cluster2, city):
    return loop_thread.run(provision_fedavg_task(cluster2, CONFIG, city.num_features, clients_per_round=3))


def _updates(city, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    d = city.num_features + 1
    out = []
    for _ in range(n):
        delta = rng.normal(size=d)
        delta *= min(1.0, CONFIG.clip_norm / np.linalg.norm(delta))
        out.append(encode_update(delta, float(rng.uniform(0.1, 1.0)), CONFIG))
    return out


# ---------------------------------------------------------------- whole runs
def test_service_run_is_bit_identical_to_plain_sum_and_near_centralised(loop_thread, cluster2, city):
    run = loop_thread.run(run_fedavg_on_cluster(cluster2, city, rounds=5, clients_per_round=6, config=CONFIG))
    plain = run_fedavg(city, 5, 6, plain_sum, config=CONFIG)
    assert np.array_equal(run.history.weights, plain.weights)
    assert [r.accuracy for r in run.history.rounds] == [r.accuracy for r in plain.rounds]
    assert run.history.final_accuracy >= run.history.centralised_accuracy - ACCURACY_MARGIN
    # one closed window per round, consecutive, each holding exactly that round's reports
    windows = [c.window_start for c in run.costs]
    assert windows == [windows[0] + r * run.task.window_seconds for r in range(5)]
    assert [c.reports for c in run.costs] == [6] * 5
    assert all(c.upload_bytes > 6 * 8 * run.task.measurement.length for c in run.costs)
    assert run.task.min_batch_size == 6 and run.task.vdaf == "twinring64"
    assert run.task.measurement == CONFIG.measurement(city.num_features)


def test_server_side_dp_noise_reaches_the_model(loop_thread, cluster2, city):
    run = loop_thread.run(run_fedavg_on_cluster(cluster2, city, rounds=2, clients_per_round=6, config=CONFIG, epsilon=1.0))
    plain = run_fedavg(city, 2, 6, plain_sum, config=CONFIG)
    assert run.task.dp == {"algo": "discrete-gaussian", "epsilon": 1.0, "delta": 1e-9}
    assert run.dp_applied  # the leader reports the noise it applied
    assert not np.array_equal(run.history.weights, plain.weights)
    # noise is calibrated to the FixedPointVec box bound ceil(clip 2^f) sqrt(d), not to sqrt(clip_norm^2 + 1)
    l1, l2_squared = run.task.measurement.sensitivity()
    top = int(np.ceil(CONFIG.entry_clip * 2**CONFIG.frac_bits))
    d = city.num_features + 2
    assert (l1, l2_squared) == (top * d, top * top * d)
    expected = dp.calibrate(dp.DpParams.from_dict(run.task.dp), l1_sensitivity=l1, l2_sensitivity=top * 3, dimension=d, num_aggregators=2)
    assert d == 9 and noise_plan(run.task) == expected


# ---------------------------------------------------------------- one round, rejections
def test_round_sums_exactly_and_malformed_update_is_refused_before_upload(loop_thread, cluster2, city, fl_task):
    secure = ServiceSecureSum(cluster2, fl_task, loop_thread.loop, windows=2)
    try:
        good = _updates(city, 3)
        with pytest.raises(InvalidMeasurement, match="expected 9 entries"):
            secure(good[:2] + [good[2][:-1]])  # wrong length
        assert secure.costs == []
        total = secure(good)  # the refused call used no window and sent nothing
        assert np.array_equal(total, plain_sum(good))
        assert secure.costs[0].window_start == secure.first_window and secure.costs[0].reports == 3
    finally:
        loop_thread.run(secure.aclose())


def test_update_beyond_clip_or_of_wrong_dtype_is_refused(fl_task, city):
    update = _updates(city, 1)[0]
    assert np.array_equal(fl_task.measurement.encode(update_measurement(fl_task, update)), update)
    too_big = update.copy()
    too_big[0] = ring.from_ints([int((CONFIG.entry_clip + 1) * 2**CONFIG.frac_bits)])[0]
    with pytest.raises(InvalidMeasurement, match="re-encode"):
        update_measurement(fl_task, too_big)
    with pytest.raises(InvalidMeasurement, match="uint64"):
        update_measurement(fl_task, fixedpoint.decode(update, CONFIG.frac_bits))


def test_secure_sum_refuses_its_own_event_loop(loop_thread, cluster2, fl_task, city):
    secure = ServiceSecureSum(cluster2, fl_task, loop_thread.loop, windows=1)

    async def call_on_loop():
        return secure(_updates(city, 3))

    with pytest.raises(RuntimeError, match="worker thread"):
        loop_thread.run(call_on_loop())


def test_windows_must_fit_the_skew_and_task_must_be_fixedpointvec(loop_thread, cluster2, fl_task):
    with pytest.raises(InvalidTask, match="max_skew_seconds"):
        ServiceSecureSum(cluster2, fl_task, loop_thread.loop, windows=fl_task.max_skew_seconds)
    with pytest.raises(ValueError, match="windows"):
        ServiceSecureSum(cluster2, fl_task, loop_thread.loop, windows=0)
    sum_task = provision(loop_thread, cluster2, {"type": "sum", "bits": 8})
    with pytest.raises(InvalidTask, match="fixedpointvec"):
        ServiceSecureSum(cluster2, sum_task, loop_thread.loop, windows=1)


# ---------------------------------------------------------------- exact re-encoding
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**53) + 1, 2**53 - 1), min_size=1, max_size=12), st.integers(1, fixedpoint.MAX_FRAC_BITS))
def test_reencode_inverts_the_collectors_decode(ints, frac_bits):
    encoded = ring.from_ints(ints)
    floats = fixedpoint.decode(encoded, frac_bits).tolist()  # what FixedPointVec.decode hands the collector
    assert np.array_equal(reencode_aggregate(floats, frac_bits), encoded)


@pytest.mark.parametrize(
    "values",
    [[2.0**53 / 2**24], [-(2.0**53) / 2**24], [1.0, 0.5 / 2**24], [float("nan")], [float("inf")], [[1.0, 2.0]]],
    ids=["too-big", "too-small", "not-on-grid", "nan", "inf", "matrix"],
)
def test_reencode_refuses_inexact_sums(values):
    with pytest.raises(FedAvgRoundError):
        reencode_aggregate(values, 24)


# ---------------------------------------------------------------- command line (real processes)
def test_fedavg_main_reports_a_missed_margin(capsys):
    assert fedavg_main(["--rounds", "2", "--clients-per-round", "4", "--seed", "0", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["processes"] and out["aggregators"] == 2
    assert out["identical_to_plain_sum"] is True
    assert not out["within_margin"] and len(out["accuracy_per_round"]) == 2
    assert out["cost_per_round"]["bytes_per_report"] == out["rounds_detail"][0]["upload_bytes"] / 4


@pytest.mark.parametrize("argv", [["--aggregators", "1"], ["--rounds", "0"], ["--clients-per-round", "0"]])
def test_fedavg_main_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as exc:
        fedavg_main(argv)
    assert exc.value.code == 2


def test_round_below_min_batch_size_is_refused_without_disclosing_its_count(loop_thread, cluster2, city, fl_task):
    secure = ServiceSecureSum(cluster2, fl_task, loop_thread.loop, windows=2)
    try:
        updates = _updates(city, 3)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            secure(updates[:2])  # min_batch_size is the clients per round (3)
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "fewer reports than the task's min_batch_size" in exc.value.details()
        assert "2" not in exc.value.details().split("min_batch_size")[0].split("holds")[1]  # the count is not disclosed
        assert np.array_equal(secure(updates), plain_sum(updates))
        assert secure.costs[0].window_start == secure.first_window + fl_task.window_seconds
    finally:
        loop_thread.run(secure.aclose())


def test_collections_wait_out_the_leaders_rate_limit(loop_thread, tmp_path, city):
    cluster = LocalCluster(tmp_path, k=2, limits={"collect_rate_per_second": 2, "collect_burst": 1})
    loop_thread.run(cluster.start())
    try:
        run = loop_thread.run(run_fedavg_on_cluster(cluster, city, rounds=3, clients_per_round=3, config=CONFIG))
    finally:
        loop_thread.run(cluster.stop())
    assert sum(c.collect_retries for c in run.costs) >= 1
    assert np.array_equal(run.history.weights, run_fedavg(city, 3, 3, plain_sum, config=CONFIG).weights)


def test_fedavg_main_refuses_more_clients_than_edge_nodes(capsys, tmp_path):
    assert fedavg_main(["--clients-per-round", "25", "--workdir", str(tmp_path)]) == 2
    assert "clients_per_round <= 24 edge nodes" in capsys.readouterr().err
    assert not (tmp_path / "pki").exists()  # refused before any aggregator started
