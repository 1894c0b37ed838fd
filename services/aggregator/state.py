"""What one aggregator process holds: configuration, keys, store, metrics, ledger and audit.

Every role (upload, leader jobs, collection, helper, task registry) receives this
object explicitly; none keeps a reference to another role.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.services import pki
from twinmpc.services.aggregator.config import AggregatorConfig
from twinmpc.services.aggregator.metrics import Metrics
from twinmpc.services.aggregator.privacy import CollectionGuard
from twinmpc.services.aggregator.share_opener import ShareOpener
from twinmpc.services.keyfiles import load_or_create_datastore_key, load_or_create_hpke, load_or_create_replica_id
from twinmpc.services.storage import Datastore, SqliteDatastore


def open_datastore(config: AggregatorConfig) -> Datastore:
    """The aggregator's store: PostgreSQL when `database_url` is set, else SQLite in data_dir.

    Replicas sharing one database must share `datastore.key` (it seals the secret columns).
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_datastore_key(config.data_dir / "datastore.key")
    lease = {"lease_owner": load_or_create_replica_id(config.data_dir / "replica.id"), "lease_seconds": config.limits.job_lease_seconds}
    if config.database_url:
        from twinmpc.services.storage.postgres import PostgresDatastore  # optional dependency: pip install '.[postgres]'

        return PostgresDatastore(config.database_url, key, password=config.database_password(), **lease)
    return SqliteDatastore(config.data_dir / "aggregator.sqlite3", key, **lease)


@dataclass
class AggregatorState:
    config: AggregatorConfig
    identity: str
    hpke: HpkeKeypair
    store: Datastore
    metrics: Metrics
    guard: CollectionGuard
    clock: Callable[[], float]
    opener: ShareOpener  # HPKE opens of large batches on every core

    @classmethod
    def open(cls, config: AggregatorConfig, clock: Callable[[], float] = time.time) -> AggregatorState:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        hpke = load_or_create_hpke(config.data_dir / "hpke_key.json", config.hpke_suite)
        identity = pki.principal_from_certificate(config.tls.cert.read_bytes()).identity
        store = open_datastore(config)
        opener = ShareOpener([hpke], config.limits.share_open_workers or None)
        return cls(config, identity, hpke, store, Metrics(), CollectionGuard(config.data_dir, store), clock, opener)

    def close(self) -> None:
        self.opener.close()
        self.guard.close()
        self.store.close()

    def __repr__(self) -> str:
        return f"AggregatorState({self.identity!r}, store={self.store!r})"
