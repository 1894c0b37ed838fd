"""DP at collection through the real services: noise, budget refusal, audit trail."""

from __future__ import annotations

import grpc
import pytest

from twinmpc.crypto.audit_verify import verify_log
from twinmpc.crypto.signing import VerifyKey
from twinmpc.mpc.client import shard_report
from twinmpc.mpc.modes import noise_plan
from tests.service_utils import collect, past_window, provision, upload


def test_noised_result_within_stated_error(loop_thread, cluster2):
    task = provision(loop_thread, cluster2, {"type": "histogram", "buckets": 4},
                     dp={"algo": "discrete-gaussian", "epsilon": 1, "delta": 1e-9})
    window = past_window(40)
    values = [0] * 30 + [3] * 10
    upload(loop_thread, cluster2, task, [shard_report(task, v, time=window) for v in values])
    result = collect(loop_thread, cluster2, task, window)
    plan = noise_plan(task)
    bound = plan.error_bound(1e-9, all_coordinates=True)
    truth = [30, 0, 0, 10]
    assert result.dp["distribution"] == "discrete-gaussian"
    assert result.dp["num_aggregators"] == 2
    assert all(isinstance(v, int) for v in result.result)
    assert all(abs(r - t) <= bound for r, t in zip(result.result, truth))
    assert result.result != truth or plan.total_stddev < 1  # noise was really added (sigma ~ 5 here)


def test_budget_exhausted_is_refused_and_audited(loop_thread, cluster2):
    task = provision(loop_thread, cluster2, {"type": "count"}, max_collections_per_window=5,
                     dp={"algo": "discrete-laplace", "epsilon": 1, "budget": {"epsilon": 2, "delta": 0}})
    window = past_window(41)
    upload(loop_thread, cluster2, task, [shard_report(task, 1, time=window) for _ in range(5)])
    first = collect(loop_thread, cluster2, task, window, 0)
    collect(loop_thread, cluster2, task, window, 1)
    assert collect(loop_thread, cluster2, task, window, 0) == first  # a repeat charges nothing
    with pytest.raises(grpc.aio.AioRpcError) as info:
        collect(loop_thread, cluster2, task, window, 2)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    leader = cluster2.nodes[0].core
    from twinmpc.services.aggregator.privacy import budget_report

    spent = budget_report(leader.store, task)
    assert spent["collections"] == 2 and spent["epsilon_spent"] == pytest.approx(2.0)
    log_path = leader.config.data_dir / "audit.log"
    entries = log_path.read_text().splitlines()
    assert any('"kind":"refusal"' in e and task.task_id_b64 in e for e in entries)
    result = verify_log(log_path, VerifyKey.load(leader.config.data_dir / "audit_signing.pub"))
    assert result.ok, result


def test_invalid_dp_block_rejected_at_provisioning(loop_thread, cluster2):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        provision(loop_thread, cluster2, {"type": "count"}, dp={"algo": "laplace-float", "epsilon": 1})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dp.algo" in info.value.details()


def test_recollection_beyond_policy_refused_and_audited(loop_thread, cluster2):
    task = provision(loop_thread, cluster2, {"type": "count"}, dp={"algo": "discrete-laplace", "epsilon": 1})
    assert task.max_collections_per_window == 1
    window = past_window(42)
    upload(loop_thread, cluster2, task, [shard_report(task, 1, time=window) for _ in range(3)])
    first = collect(loop_thread, cluster2, task, window)
    assert collect(loop_thread, cluster2, task, window) == first  # the same collection again: same noisy result
    with pytest.raises(grpc.aio.AioRpcError) as info:
        collect(loop_thread, cluster2, task, window, 1)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "outside the task's terms" in info.value.details()
    log = (cluster2.nodes[0].core.config.data_dir / "audit.log").read_text()
    assert "outside the task's terms" in log


def test_output_policy_clamps_and_rounds(loop_thread, cluster2):
    task = provision(loop_thread, cluster2, {"type": "histogram", "buckets": 3}, output={"clamp": True, "round_to": 5},
                     dp={"algo": "discrete-laplace", "epsilon": 1})
    window = past_window(43)
    upload(loop_thread, cluster2, task, [shard_report(task, 0, time=window) for _ in range(12)])
    result = collect(loop_thread, cluster2, task, window)
    assert all(v % 5 == 0 and 0 <= v <= 12 + 2 for v in result.result)  # rounded multiples of 5, clamped to [0, n]
