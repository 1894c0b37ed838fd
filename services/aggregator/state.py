"""What one aggregator process holds: configuration, keys, store, metrics, ledger and audit.

Every role (upload, leader jobs, collection, helper, task registry) receives this
object explicitly; none keeps a reference to another role.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.services import pki
from twinmpc.services.aggregator.config import AggregatorConfig
from twinmpc.services.aggregator.metrics import Metrics
from twinmpc.services.aggregator.key_rotator import KeyRotator
from twinmpc.services.aggregator.privacy import CollectionGuard
from twinmpc.services.aggregator.share_opener import ShareOpener
from twinmpc.services.keyfiles import load_or_create_datastore_key, load_or_create_replica_id
from twinmpc.services.storage import Datastore, SqliteDatastore


def open_datastore(config: AggregatorConfig, worker: int = 0) -> Datastore:
    """The aggregator's store: PostgreSQL when `database_url` is set, else SQLite in data_dir.

    Replicas sharing one database must share `datastore.key` (it seals the secret columns).
    Worker processes of one aggregator share its data_dir; each has its own name in job
    leases (derived from the replica id, so a restarted worker resumes its own jobs).
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_datastore_key(config.data_dir / "datastore.key")
    owner = load_or_create_replica_id(config.data_dir / "replica.id")
    if worker:
        owner = hashlib.sha256(owner + worker.to_bytes(2, "big")).digest()[: len(owner)]
    lease = {"lease_owner": owner, "lease_seconds": config.limits.job_lease_seconds}
    if config.database_url:
        from twinmpc.services.storage.postgres import PostgresDatastore  # optional dependency: pip install '.[postgres]'

        return PostgresDatastore(config.database_url, key, password=config.database_password(), **lease)
    return SqliteDatastore(config.data_dir / "aggregator.sqlite3", key, **lease)


@dataclass
class AggregatorState:
    config: AggregatorConfig
    identity: str
    store: Datastore
    metrics: Metrics
    guard: CollectionGuard
    clock: Callable[[], float]
    keys: KeyRotator  # the HPKE key set, shared by replicas through the store

    @property
    def hpke(self) -> HpkeKeypair:
        """The current HPKE key: the config `GetHpkeConfig` hands out and new tasks pin."""
        return self.keys.current

    @property
    def hpke_keys(self) -> list[HpkeKeypair]:
        """Every key that still opens reports (current first): older ones stay until retired."""
        return self.keys.active

    @property
    def opener(self) -> ShareOpener:
        """HPKE opens of large batches on every core, with every non-retired key."""
        return self.keys.opener

    @classmethod
    def open(cls, config: AggregatorConfig, clock: Callable[[], float] = time.time, worker: int = 0) -> AggregatorState:
        """`worker`: this process's index among the aggregator's `config.workers` processes."""
        config.data_dir.mkdir(parents=True, exist_ok=True)
        identity = pki.principal_from_certificate(config.tls.cert.read_bytes()).identity
        store = open_datastore(config, worker)
        guard = CollectionGuard(config.data_dir, store, shared=config.workers > 1)
        try:
            keys = KeyRotator(store, load_or_create_datastore_key(config.data_dir / "datastore.key"), config.data_dir,
                              config.hpke_suite, guard, clock, config.limits.share_open_workers or None)
        except BaseException:
            guard.close()
            store.close()
            raise
        keys.start()
        metrics = Metrics()
        metrics.watch_transactions(store.transaction_stats)
        return cls(config, identity, store, metrics, guard, clock, keys)

    def close(self) -> None:
        self.keys.close()
        self.guard.close()
        self.store.close()

    def __repr__(self) -> str:
        return f"AggregatorState({self.identity!r}, store={self.store!r})"
