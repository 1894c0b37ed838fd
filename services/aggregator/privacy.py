"""The privacy ledger and audit trail of one aggregator.

Each aggregator enforces privacy on its own (it must not trust the leader):
its ledger, one row per task, is charged once per collection in the same
transaction that stores the released share (`Datastore.release_collection`),
so a refused or failed collection spends nothing and a retried one spends
once; every release and refusal goes into its signed, hash-chained audit log.
The audit entries hold parameters and counts only: never a reading or a share.
"""

from __future__ import annotations

import json
from pathlib import Path

from twinmpc.crypto.audit_log import AuditLog
from twinmpc.crypto.signing import SigningKey
from twinmpc.mpc import dp
from twinmpc.mpc.privacy_ledger import PrivacyLedger
from twinmpc.mpc.task import Task
from twinmpc.services.storage import Datastore
from twinmpc.services.storage.base import BlobUpdate

LEDGER_PREFIX = "privacy-ledger/"


def ledger_name(task: Task) -> str:
    """The ledger row of one task (no global row: replicas charging different tasks do not contend)."""
    return LEDGER_PREFIX + task.task_id_b64


def charge_id(task: Task, window_start: int, index: int) -> str:
    """The ledger key of one collection: the same on every aggregator and on every retry."""
    return f"{task.task_id_b64}/{window_start}/{index}"


class CollectionGuard:
    """Ledger charges and audit entries of one aggregator."""

    def __init__(self, data_dir: Path, store: Datastore, *, shared: bool = False) -> None:
        """`shared`: the aggregator's worker processes append to one audit log."""
        key_path = data_dir / "audit_signing.key"
        if key_path.exists():
            self.signing_key = SigningKey.load(key_path)
        else:
            self.signing_key = SigningKey.generate()
            self.signing_key.save(key_path)
            self.signing_key.public_key.save(data_dir / "audit_signing.pub")
        self.audit = AuditLog.open(data_dir / "audit.log", self.signing_key, shared=shared)
        self.store = store

    def close(self) -> None:
        self.audit.close()

    def record(self, kind: str, actor: str, **fields) -> str:
        return self.audit.append(kind, actor, **fields)

    def ledger_update(self, task: Task, plan: dp.NoisePlan, key: str) -> BlobUpdate | None:
        """The ledger change one collection makes (None: the task has no budget or no noise).

        The returned callback raises `BudgetExhausted` beyond the task's budget, which
        rolls back the release it runs in.
        """
        params = dp.DpParams.from_dict(task.dp)
        if params.budget is None or plan.distribution == dp.NONE:
            return None
        charge = plan.charge(key, task.task_id_b64)

        def charged(raw: bytes | None) -> bytes:
            ledger = PrivacyLedger.from_bytes(raw) if raw else PrivacyLedger()
            if ledger.has_charged(key):
                return ledger.to_bytes()
            if task.task_id_b64 not in ledger.budgets:
                ledger = ledger.with_task(task.task_id_b64, params.budget)
            return ledger.charge(charge).to_bytes()

        return charged

    def check_budget(self, task: Task, plan: dp.NoisePlan, key: str) -> None:
        """Raise `BudgetExhausted` now if this collection would not fit (nothing is written)."""
        update = self.ledger_update(task, plan, key)
        if update is not None:
            update(self.store.get_blob(ledger_name(task)))

    def has_collection_entry(self, collection_id: str) -> bool:
        """Whether the audit log already records the release of `collection_id` (crash recovery)."""
        needle = json.dumps(collection_id)
        with open(self.audit.path, "rb") as f:
            for line in f:
                if needle.encode() in line and b'"kind":"collection"' in line:
                    return True
        return False


def budget_report(store: Datastore, task: Task) -> dict | None:
    """What this aggregator's ledger says the task has spent (None: no budget charged yet)."""
    raw = store.get_blob(ledger_name(task))
    ledger = PrivacyLedger.from_bytes(raw) if raw else PrivacyLedger()
    return ledger.report(task.task_id_b64) if task.task_id_b64 in ledger.budgets else None
