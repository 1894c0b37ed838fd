"""The closed loop through real aggregators over mTLS, in every task mode: plans from private aggregates, logged and verifiable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twinmpc.services.twin.decision_log import DecisionLog, verify_decisions
from twinmpc.services.twin.loop import TwinConfig, TwinLoop


def _run(loop_thread, cluster, tmp_path, **kw) -> TwinLoop:
    config = TwinConfig(intersections=24, districts=2, windows=2, window_seconds=1, period_seconds=60, epsilons=(4.0,), **kw)
    decisions = DecisionLog.open(tmp_path / "twin")
    loop = TwinLoop(config, cluster, tmp_path, decisions)

    async def go():
        await loop.start()
        try:
            await loop.run()
        finally:
            await loop.close()

    loop_thread.run(go())
    decisions.close()
    return loop


@pytest.mark.parametrize("mode", ["prio3", "twinring64", "paillier"])
def test_loop_plans_from_private_aggregates(loop_thread, cluster2, tmp_path, mode) -> None:
    loop = _run(loop_thread, cluster2, tmp_path, mode=mode)
    ours = loop.private[0]
    assert loop.last_error == "" and ours.failures == 0 and ours.collections == 2 * 2  # 2 windows x 2 district tasks
    # the released totals are the true district totals plus noise within the stated 95 % bound (allowing rare misses)
    misses = np.abs(ours.last_totals - loop.truth) > ours.last_bounds[:, None]
    assert np.all(ours.last_bounds > 0) and misses.sum() <= 1
    assert len(ours.tasks) == 2 and all(t.mode == ("paillier" if mode == "paillier" else "shares") for t in ours.tasks)
    assert all(t.measurement.length == 2 for t in ours.tasks)
    assert len(ours.latencies) == 2 and all(0 < t < 30 for t in ours.latencies)
    assert ours.plan is not loop.fixed_plan  # the controller re-planned from what it collected
    verdict = verify_decisions(tmp_path / "twin" / "decisions.log", loop.decisions.public_key)
    assert verdict.ok and verdict.plans == 4, verdict.describe()  # ours + oracle, each window
    rows = {r["controller"]: r for r in loop.rows()}
    assert set(rows) == {"fixed-time", "ours eps=4", "oracle"} and rows["oracle"]["share_of_oracle_gain_pct"] in (100.0, None)
    budget = loop.budget()[0]
    assert budget["collections"] == 4 and 0 < budget["spent_epsilon"] <= budget["budget_epsilon"]
    _decisions_cite_each_districts_release(loop, cluster2)


def _decisions_cite_each_districts_release(loop: TwinLoop, cluster) -> None:
    """Every private decision names, per district, that district's task and a collection of it in each aggregator's audit log."""
    released = []  # (task, window_start, collection_id) per aggregator log
    for log, _ in cluster.audit_logs():
        entries = [json.loads(line) for line in log.read_bytes().splitlines()]
        released.append({(e["fields"]["task"], e["fields"]["collection_id"]) for e in entries if e["kind"] == "collection"})
    ours = loop.private[0]
    entries = [json.loads(line) for line in loop.decisions.path.read_bytes().splitlines()]
    decisions = [e["fields"] for e in entries if e["kind"] == "config_changed"]
    mine = [f for f in decisions if f["controller"] == ours.name]
    assert len(mine) == 2
    for fields in mine:
        cited = [(d["task_id"], d["collection_id"]) for d in fields["districts"]]
        assert [t for t, _ in cited] == [t.task_id_b64 for t in ours.tasks]
        assert len({c for _, c in cited}) == len(cited)
        for per_aggregator in released[: ours.tasks[0].num_aggregators]:
            assert set(cited) <= per_aggregator
        assert all(d["bound"] > 0 for d in fields["districts"])
