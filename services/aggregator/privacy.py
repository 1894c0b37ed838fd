"""Collection guards of one aggregator: DP noise, privacy ledger, audit trail.

Each aggregator enforces privacy on its own (it must not trust the leader):
it calibrates the task's noise (`mpc.dp`), adds the *full* noise to its own
aggregate share, charges its durable privacy ledger once per collection id
(refusing with `BudgetExhausted` beyond the task's budget), and records the
collection or refusal in its signed, hash-chained audit log.  The audit
entries hold parameters and counts only: never a reading or a share.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from twinmpc.crypto.audit_log import AuditLog
from twinmpc.crypto.signing import SigningKey
from twinmpc.mpc import dp
from twinmpc.mpc.errors import BudgetExhausted
from twinmpc.mpc.privacy_ledger import PrivacyLedger
from twinmpc.mpc.task import Task
from twinmpc.services.storage import Datastore

LEDGER_BLOB = "privacy-ledger"


def noise_plan(task: Task) -> dp.NoisePlan:
    """The noise each aggregator adds for one collection of this task."""
    l1, l2_squared = task.measurement.sensitivity()
    return dp.calibrate(
        dp.DpParams.from_dict(task.dp),
        l1_sensitivity=l1,
        l2_sensitivity=math.isqrt(l2_squared - 1) + 1,  # ceil(sqrt): never under-estimate
        dimension=task.measurement.length,
        num_aggregators=task.num_aggregators,
    )


def add_noise_to_share(task: Task, agg_share: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Add signed integer noise in the scheme's ring or field."""
    field = getattr(task.scheme, "field", None)
    if field is None:
        return dp.add_noise(agg_share, noise)
    noised = dp.add_noise(np.array(field.to_ints(agg_share), dtype=object), noise, field.MODULUS)
    return field.from_ints([int(v) for v in noised])


class CollectionGuard:
    def __init__(self, data_dir: Path, store: Datastore, identity: str) -> None:
        key_path = data_dir / "audit_signing.key"
        if key_path.exists():
            self.signing_key = SigningKey.load(key_path)
        else:
            self.signing_key = SigningKey.generate()
            self.signing_key.save(key_path)
            self.signing_key.public_key.save(data_dir / "audit_signing.pub")
        self.audit = AuditLog.open(data_dir / "audit.log", self.signing_key)
        self.store = store
        self.identity = identity

    def close(self) -> None:
        close = getattr(self.audit, "close", None)
        if close is not None:
            close()

    def record(self, kind: str, actor: str, **fields) -> str:
        return self.audit.append(kind, actor, **fields)

    def charge(self, task: Task, plan: dp.NoisePlan, collection_id: str, actor: str, window_start: int) -> None:
        """Charge the ledger once per collection id; refuse (and audit) beyond the budget."""
        params = dp.DpParams.from_dict(task.dp)
        if params.budget is None or plan.distribution == dp.NONE:
            return
        charge = plan.charge(collection_id, task.task_id_b64)

        def charged(raw: bytes | None) -> bytes:
            ledger = PrivacyLedger.from_bytes(raw) if raw else PrivacyLedger()
            if ledger.has_charged(collection_id):
                return ledger.to_bytes()
            if task.task_id_b64 not in ledger.budgets:
                ledger = ledger.with_task(task.task_id_b64, params.budget)
            return ledger.charge(charge).to_bytes()  # raises BudgetExhausted: nothing is written

        try:
            self.store.update_blob(LEDGER_BLOB, charged)  # atomic across replicas sharing a database
        except BudgetExhausted as exc:
            self.record("refusal", actor, task=task.task_id_b64, window_start=window_start, reason=str(exc))
            raise

    def noised_share(self, task: Task, agg_share: np.ndarray, plan: dp.NoisePlan) -> np.ndarray:
        if plan.distribution == dp.NONE:
            return agg_share
        return add_noise_to_share(task, agg_share, plan.sample(task.measurement.length))


def budget_report(store: Datastore, task: Task) -> dict | None:
    """What this aggregator's ledger says the task has spent (None: no budget charged yet)."""
    raw = store.get_blob(LEDGER_BLOB)
    ledger = PrivacyLedger.from_bytes(raw) if raw else PrivacyLedger()
    return ledger.report(task.task_id_b64) if task.task_id_b64 in ledger.budgets else None
