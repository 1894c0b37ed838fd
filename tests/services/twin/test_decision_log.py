"""The decision log verifies offline: signatures, chain, and every plan recomputed from its logged inputs."""

from __future__ import annotations

import json

import numpy as np

from twinmpc.crypto.audit_log import AuditLog
from twinmpc.crypto.signing import SigningKey
from twinmpc.services.twin.controller import RULE, webster_plan
from twinmpc.services.twin.decision_log import DecisionLog, DistrictInput, verify_decisions


def _record(log: DecisionLog, flows: np.ndarray, window: int = 0) -> str:
    plan = webster_plan(flows)
    inputs = [DistrictInput(f[0] * 30000, f[1] * 30000, 2900.5, f[0], f[1], task_id=f"t{d}", collection_id=f"{window}{d}" * 8)
              for d, f in enumerate(flows)]
    return log.record_plan(window=window, controller="ours eps=1", inputs=inputs, plan=plan, rule=RULE, beta=0.05)


def test_plans_and_throttles_verify_offline(tmp_path) -> None:
    log = DecisionLog.open(tmp_path)
    first = _record(log, np.array([[0.2, 0.05], [0.1, 0.1]]))
    _record(log, np.array([[0.15, 0.08], [0.12, 0.09]]), window=1)
    log.record_throttle(identity="controller-x", reason="sweep", queries=48, distinct_cells=48)
    log.close()
    verdict = verify_decisions(tmp_path / "decisions.log", SigningKey.load(tmp_path / "twin_signing.key").public_key)
    assert verdict.ok and (verdict.plans, verdict.throttles, verdict.entries) == (2, 1, 3), verdict.describe()
    entry = json.loads((tmp_path / "decisions.log").read_bytes().splitlines()[0])
    d0 = entry["fields"]["districts"][0]
    assert entry["kind"] == "config_changed" and entry["fields"]["rule"] == RULE and d0["bound"] == 2900.5
    assert set(d0) == {"district", "total_ns", "total_ew", "bound", "flow_ns", "flow_ew", "task_id", "collection_id",
                       "cycle", "green_ns", "green_ew"}
    assert [d["collection_id"] for d in entry["fields"]["districts"]] == ["00" * 8, "01" * 8]  # each district cites its own release
    assert len(first) == 64
    reopened = DecisionLog.open(tmp_path)  # the chain continues across restarts with the same key
    _record(reopened, np.array([[0.2, 0.2]]))
    reopened.close()
    assert verify_decisions(tmp_path / "decisions.log", reopened.public_key).plans == 3


def test_altered_line_breaks_the_chain(tmp_path) -> None:
    log = DecisionLog.open(tmp_path)
    _record(log, np.array([[0.2, 0.05]]))
    log.close()
    path = tmp_path / "decisions.log"
    path.write_bytes(path.read_bytes().replace(b'"green_ns":', b'"green_ns":1', 1))
    verdict = verify_decisions(path, log.public_key)
    assert not verdict.ok and "line 1" in verdict.problem


def test_signed_plan_that_does_not_follow_its_inputs_is_caught(tmp_path) -> None:
    """Even an entry signed with the twin's key fails if the plan is not what the rule gives for the inputs."""
    key = SigningKey.generate()
    audit = AuditLog.open(tmp_path / "decisions.log", key)
    flows = np.array([[0.2, 0.05]])
    good = webster_plan(flows).describe(0)
    audit.append("config_changed", "twin-controller", change="signal_plan", window=0, controller="ours", rule=RULE, beta=0.05,
                 districts=[{"district": 0, "total_ns": 1.0, "total_ew": 1.0, "bound": 0.0,
                                                           "flow_ns": 0.2, "flow_ew": 0.05, **good, "green_ns": 5.0}])
    audit.close()
    verdict = verify_decisions(tmp_path / "decisions.log", key.public_key)
    assert not verdict.ok and "does not follow" in verdict.problem


def test_district_kept_without_a_release_is_logged_with_null_totals(tmp_path) -> None:
    """A district whose window was not released keeps its plan: no totals, no bound, no collection, flows logged again."""
    log = DecisionLog.open(tmp_path)
    flows = np.array([[0.2, 0.05], [0.1, 0.1]])
    inputs = [DistrictInput(6000.0, 1500.0, 700.0, 0.2, 0.05, task_id="t0", collection_id="a" * 16),
              DistrictInput(None, None, None, 0.1, 0.1, task_id="t1")]
    log.record_plan(window=0, controller="ours eps=1", inputs=inputs, plan=webster_plan(flows), rule=RULE, beta=0.05)
    log.close()
    assert verify_decisions(tmp_path / "decisions.log", log.public_key).ok
    d1 = json.loads((tmp_path / "decisions.log").read_bytes().splitlines()[0])["fields"]["districts"][1]
    assert (d1["total_ns"], d1["bound"], d1["collection_id"]) == (None, None, "")


def test_two_districts_citing_one_collection_fail(tmp_path) -> None:
    key = SigningKey.generate()
    audit = AuditLog.open(tmp_path / "decisions.log", key)
    flows = np.array([[0.2, 0.05], [0.1, 0.1]])
    plan = webster_plan(flows)
    districts = [{"district": d, "total_ns": 1.0, "total_ew": 1.0, "bound": 1.0, "flow_ns": f[0], "flow_ew": f[1], "task_id": f"t{d}",
                  "collection_id": "same", **plan.describe(d)} for d, f in enumerate(flows.tolist())]
    audit.append("config_changed", "twin-controller", change="signal_plan", window=0, controller="ours", rule=RULE, beta=0.05,
                 districts=districts)
    audit.close()
    verdict = verify_decisions(tmp_path / "decisions.log", key.public_key)
    assert not verdict.ok and "same collection" in verdict.problem
