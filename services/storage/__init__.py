"""Aggregator storage: one small interface (`Datastore`), SQLite as the embedded default."""

from twinmpc.services.storage.base import (
    AlreadyExists,
    CollectionRecord,
    Datastore,
    HelperReportRow,
    JobRecord,
    NotFound,
    PendingReport,
    PutOutcome,
    StorageError,
    TaskRecord,
    TxStats,
    WindowBusy,
    WindowClosed,
    WindowRecord,
)
from twinmpc.services.storage.sqlite import SqliteDatastore

__all__ = [
    "AlreadyExists",
    "CollectionRecord",
    "Datastore",
    "HelperReportRow",
    "JobRecord",
    "NotFound",
    "PendingReport",
    "PutOutcome",
    "SqliteDatastore",
    "StorageError",
    "TaskRecord",
    "TxStats",
    "WindowBusy",
    "WindowClosed",
    "WindowRecord",
]
