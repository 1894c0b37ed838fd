"""Aggregator storage: one small interface (`Datastore`), SQLite as the embedded default."""

from twinmpc.services.storage.base import (
    AlreadyExists,
    Datastore,
    HelperReportRow,
    JobRecord,
    NotFound,
    PendingReport,
    StorageError,
    TaskRecord,
    WindowClosed,
    WindowRecord,
)
from twinmpc.services.storage.sqlite import SqliteDatastore

__all__ = [
    "AlreadyExists",
    "Datastore",
    "HelperReportRow",
    "JobRecord",
    "NotFound",
    "PendingReport",
    "SqliteDatastore",
    "StorageError",
    "TaskRecord",
    "WindowClosed",
    "WindowRecord",
]
