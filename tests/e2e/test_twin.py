"""The closed loop through real aggregators over mTLS, in every task mode: plans from private aggregates, logged and verifiable."""

from __future__ import annotations

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
    assert loop.last_error == "" and ours.failures == 0 and ours.collections == 2
    # the released totals are the true district totals plus noise within the stated 95 % bound (allowing rare misses)
    misses = np.abs(ours.last_totals - loop.truth) > ours.last_bound
    assert ours.last_bound > 0 and misses.sum() <= 1
    assert ours.task.mode == ("paillier" if mode == "paillier" else "shares")
    assert len(ours.latencies) == 2 and all(0 < t < 30 for t in ours.latencies)
    assert ours.plan is not loop.fixed_plan  # the controller re-planned from what it collected
    verdict = verify_decisions(tmp_path / "twin" / "decisions.log", loop.decisions.public_key)
    assert verdict.ok and verdict.plans == 4, verdict.describe()  # ours + oracle, each window
    rows = {r["controller"]: r for r in loop.rows()}
    assert set(rows) == {"fixed-time", "ours eps=4", "oracle"} and rows["oracle"]["share_of_oracle_gain_pct"] in (100.0, None)
    budget = loop.budget()[0]
    assert budget["collections"] == 2 and 0 < budget["spent_epsilon"] <= budget["budget_epsilon"]
