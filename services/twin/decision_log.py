"""The twin's decision log: every signal plan with its aggregate inputs, their DP error bounds and the rule.

It is a signed, hash-chained `crypto.audit_log.AuditLog` of its own (the twin
controller is a party of its own, with its own Ed25519 key), chained to the
aggregators' audit logs by citation: each district of a decision names the
task and the collection id of the aggregate it used (every district is its
own task), and every aggregator records that collection id in its own signed
``collection`` entry.  Entries hold aggregates, bounds and parameters only.

Kinds used (the audit log's fixed vocabulary):

* ``config_changed`` with ``change = "signal_plan"``: a new plan for every
  district (the signal controllers' configuration changed);
* ``refusal`` with ``change = "prediction_throttled"``: the query monitor
  flagged a client of the prediction API and throttled it.

`verify_decisions` checks a log offline: the signature chain (`verify_log`),
then that every plan follows from its logged inputs by the logged rule
(Webster recomputed from the logged flow estimates) and that no two
districts cite the same collection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twinmpc.crypto.audit_log import AuditLog
from twinmpc.crypto.audit_verify import verify_log
from twinmpc.crypto.signing import SigningKey, VerifyKey
from twinmpc.services.twin.controller import webster_plan
from twinmpc.services.twin.traffic import SignalPlan

ACTOR = "twin-controller"
PLAN = "signal_plan"
THROTTLED = "prediction_throttled"
MAX_DISTRICTS = 16  # one entry lists every district; the audit log allows 16 items per list
_TOLERANCE = 0.05  # seconds: logged timings are rounded to 0.1 s


@dataclass(frozen=True)
class DistrictInput:
    """What one district's plan was computed from.

    Totals and bound are None when the district's window was not collected
    (its plan stays in force, computed from the flows logged again here).
    """

    total_ns: float | None  # released aggregate (vehicles in the window)
    total_ew: float | None
    bound: float | None  # |noise| <= bound per coordinate with probability 1 - beta
    flow_ns: float  # filtered flow estimate fed to the rule (veh/s at an average intersection)
    flow_ew: float
    task_id: str = ""  # the district's task (empty for the oracle's exact counts)
    collection_id: str = ""  # the collection that released the totals (in each aggregator's audit log)


class DecisionLog:
    """Appender for the twin's signed decision log (one writer process)."""

    def __init__(self, audit: AuditLog, public_key: VerifyKey) -> None:
        self.audit = audit
        self.public_key = public_key

    @classmethod
    def open(cls, directory: Path) -> DecisionLog:
        """Open ``decisions.log`` in `directory`, creating the twin's signing key on first use."""
        directory.mkdir(parents=True, exist_ok=True)
        key_path = directory / "twin_signing.key"
        if key_path.exists():
            key = SigningKey.load(key_path)
        else:
            key = SigningKey.generate()
            key.save(key_path)
            key.public_key.save(directory / "twin_signing.pub")
        return cls(AuditLog.open(directory / "decisions.log", key), key.public_key)

    @property
    def path(self) -> Path:
        return self.audit.path

    def record_plan(
        self,
        *,
        window: int,
        controller: str,
        inputs: list[DistrictInput],
        plan: SignalPlan,
        rule: str,
        beta: float,
    ) -> str:
        """Sign and fsync one decision before it is applied; returns its entry id."""
        if len(inputs) > MAX_DISTRICTS:
            raise ValueError(f"a decision covers at most {MAX_DISTRICTS} districts")
        districts = [
            {"district": d, "total_ns": _rounded(x.total_ns), "total_ew": _rounded(x.total_ew), "bound": _rounded(x.bound),
             "flow_ns": float(x.flow_ns), "flow_ew": float(x.flow_ew), "task_id": x.task_id, "collection_id": x.collection_id,
             **plan.describe(d)}
            for d, x in enumerate(inputs)
        ]
        return self.audit.append(
            "config_changed", ACTOR, change=PLAN, window=window, controller=controller, rule=rule, beta=beta, districts=districts,
        )

    def record_throttle(self, *, identity: str, reason: str, queries: int, distinct_cells: int) -> str:
        """Audit a prediction client flagged by the query monitor."""
        return self.audit.append(
            "refusal", ACTOR, change=THROTTLED, identity=identity, reason=reason, queries=queries, distinct_cells=distinct_cells,
        )

    def close(self) -> None:
        self.audit.close()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


@dataclass(frozen=True)
class DecisionAudit:
    """Offline check of a decision log: chain, signatures and rule consistency."""

    ok: bool
    entries: int
    plans: int
    throttles: int
    problem: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"{self.entries} entries verified: {self.plans} signal plans follow from their inputs, {self.throttles} throttles"
        return self.problem


def _check_plan(fields: dict[str, Any]) -> str | None:
    districts = fields.get("districts")
    if not isinstance(districts, list) or not districts:
        return "decision without districts"
    try:
        flows = np.array([[d["flow_ns"], d["flow_ew"]] for d in districts], dtype=np.float64)
        expected = webster_plan(flows)
        logged = [{k: float(d[k]) for k in ("cycle", "green_ns", "green_ew")} for d in districts]
    except (KeyError, TypeError, ValueError) as exc:
        return f"malformed decision ({type(exc).__name__}: {exc})"
    cited = [d.get("collection_id") for d in districts if d.get("collection_id")]
    if len(cited) != len(set(cited)):
        return "two districts cite the same collection (each district is released by its own task)"
    for i, d in enumerate(logged):
        want = expected.describe(i)
        if any(abs(d[k] - want[k]) > _TOLERANCE for k in want):
            return f"district {i}: logged plan {[d[k] for k in want]} does not follow from its flows by the rule ({list(want.values())})"
    return None


def verify_decisions(path: Path, public_key: VerifyKey) -> DecisionAudit:
    """Verify the chain and signatures, then recompute every plan from its logged inputs."""
    chain = verify_log(path, public_key)
    if not chain.ok:
        return DecisionAudit(False, chain.entries, 0, 0, chain.describe())
    plans = throttles = 0
    for n, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        entry = json.loads(line)
        change = entry["fields"].get("change")
        if entry["kind"] == "config_changed" and change == PLAN:
            problem = _check_plan(entry["fields"])
            if problem is not None:
                return DecisionAudit(False, chain.entries, plans, throttles, f"line {n}: {problem}")
            plans += 1
        elif entry["kind"] == "refusal" and change == THROTTLED:
            throttles += 1
    return DecisionAudit(True, chain.entries, plans, throttles)
