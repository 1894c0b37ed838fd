"""PostgreSQL: a window's collections, and the blobs (privacy ledgers among them) a release charges.

Part of `PostgresDatastore` (a mixin over its `_run`); the locking argument is
that datastore's: freezing takes the window's lock exclusively, so it waits for
uploads into the window still in flight, and rows read to be changed are locked.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from twinmpc.services.storage.base import (
    FROZEN,
    IN_JOB,
    PENDING,
    RELEASED,
    BlobUpdate,
    CollectionRecord,
    NotFound,
    WindowBusy,
)
from twinmpc.services.storage.postgres_locks import lock_window
from twinmpc.services.storage.postgres_pool import Transact
from twinmpc.services.storage.rows import COLLECTION_COLUMNS, collection_record


def _collection(cur: psycopg.Cursor, task_id: bytes, window_start: int, index: int, lock: bool = False) -> CollectionRecord | None:
    row = cur.execute(
        f"SELECT {COLLECTION_COLUMNS} FROM collections WHERE task_id=%s AND window_start=%s AND idx=%s"
        + (" FOR UPDATE" if lock else ""),
        (task_id, window_start, index),
    ).fetchone()
    return collection_record(task_id, window_start, index, row)


def _update_blob(cur: psycopg.Cursor, name: str, update: BlobUpdate) -> bytes:
    """Read-modify-write of one blob under its row lock (created empty first, so there is a row to lock)."""
    cur.execute("INSERT INTO blobs VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (name, b""))
    (current,) = cur.execute("SELECT value FROM blobs WHERE name=%s FOR UPDATE", (name,)).fetchone()
    value = update(bytes(current) or None)
    cur.execute("UPDATE blobs SET value=%s WHERE name=%s", (value, name))
    return value


class PostgresCollections:
    """Collection and blob verbs of `PostgresDatastore`."""

    _run: Transact

    # --- collections -------------------------------------------------------------------------
    def get_collection(self, task_id: bytes, window_start: int, index: int) -> CollectionRecord | None:
        return self._run("get_collection", lambda cur: _collection(cur, task_id, window_start, index))

    def freeze_collection(
        self, task_id: bytes, window_start: int, index: int, collection_id: str, expected_accumulator: bytes | None,
        report_count: int, checksum: bytes, snapshot: bytes | None = None,
    ) -> CollectionRecord:
        """Fix the window's report set for this collection and close the window to late reports.

        The exclusive window lock waits for uploads into the window still in flight; then a
        report still pending or in a job, or an accumulator other than `expected_accumulator`,
        raises WindowBusy (flush and retry). Idempotent: an existing collection is returned.
        """

        def body(cur: psycopg.Cursor) -> CollectionRecord | None:
            lock_window(cur, task_id, window_start)
            existing = _collection(cur, task_id, window_start, index, lock=True)
            if existing is not None:
                return existing
            (busy,) = cur.execute(
                f"SELECT COUNT(*) FROM reports WHERE task_id=%s AND window_start=%s AND state IN ({PENDING},{IN_JOB})",
                (task_id, window_start),
            ).fetchone()
            row = cur.execute(
                "SELECT accumulator FROM windows WHERE task_id=%s AND window_start=%s FOR UPDATE", (task_id, window_start)
            ).fetchone()
            current = None if row is None or row[0] is None else bytes(row[0])
            if busy or current != expected_accumulator:
                return None
            cur.execute(
                "INSERT INTO windows (task_id, window_start, state) VALUES (%s,%s,'collected') "
                "ON CONFLICT (task_id, window_start) DO UPDATE SET state='collected'",
                (task_id, window_start),
            )
            cur.execute(
                "INSERT INTO collections (task_id, window_start, idx, collection_id, state, report_count, checksum, accumulator) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                (task_id, window_start, index, collection_id, FROZEN, report_count, checksum, current if snapshot is None else snapshot),
            )
            return _collection(cur, task_id, window_start, index)

        record = self._run("freeze_collection", body)
        if record is None:
            raise WindowBusy(f"window {window_start} changed while its collection was being prepared")
        return record

    def release_collection(
        self, task_id: bytes, window_start: int, index: int, response: bytes, ledger: str, charge: BlobUpdate | None,
    ) -> tuple[CollectionRecord, bool]:
        """Store what this aggregator releases and charge its ledger, in one transaction (see SQLite)."""

        def body(cur: psycopg.Cursor) -> tuple[CollectionRecord, bool] | None:
            existing = _collection(cur, task_id, window_start, index, lock=True)
            if existing is None:
                return None
            if existing.state == RELEASED:
                return existing, False
            if charge is not None:
                _update_blob(cur, ledger, charge)
            cur.execute(
                "UPDATE collections SET state=%s, response=%s, audit_pending=TRUE WHERE task_id=%s AND window_start=%s AND idx=%s",
                (RELEASED, response, task_id, window_start, index),
            )
            return _collection(cur, task_id, window_start, index), True  # type: ignore[return-value]

        result = self._run("release_collection", body)
        if result is None:
            raise NotFound("collection was never frozen")
        return result

    def update_collection_audited(self, task_id: bytes, window_start: int, index: int) -> None:
        self._run("update_collection_audited", lambda cur: cur.execute(
            "UPDATE collections SET audit_pending=FALSE WHERE task_id=%s AND window_start=%s AND idx=%s", (task_id, window_start, index)))

    # --- small durable state ---------------------------------------------------------------
    def get_blob(self, name: str) -> bytes | None:
        row = self._run("get_blob", lambda cur: cur.execute("SELECT value FROM blobs WHERE name=%s", (name,)).fetchone())
        return row[0] if row else None

    def put_blob(self, name: str, value: bytes) -> None:
        self._run("put_blob", lambda cur: cur.execute(
            "INSERT INTO blobs VALUES (%s,%s) ON CONFLICT (name) DO UPDATE SET value=excluded.value", (name, value)))

    def update_blob(self, name: str, update: Callable[[bytes | None], bytes]) -> bytes:
        """Atomic read-modify-write across replicas (row lock); `update` may run more than once."""
        return self._run("update_blob", lambda cur: _update_blob(cur, name, update))
