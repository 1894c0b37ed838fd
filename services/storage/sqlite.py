"""SQLite backend (WAL, synchronous=FULL): the embedded default.

Every public method is one transaction.  ``synchronous=FULL`` makes a commit
durable before the call returns, so the upload servicer can acknowledge a
report as soon as `put_reports` returns.  Secret columns (verify keys, the
leader's opened input shares) are sealed with AES-256-GCM under the
datastore key, with table, row and column bound as associated data.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from twinmpc.services.storage.base import (
    FROZEN,
    RELEASED,
    AlreadyExists,
    BlobUpdate,
    CollectionRecord,
    HelperReportRow,
    JobRecord,
    MergeFn,
    NotFound,
    PendingReport,
    PutOutcome,
    TaskRecord,
    TxStats,
    WindowBusy,
    WindowClosed,
    WindowRecord,
    ACCEPTED,
    IN_JOB,
    PENDING,
    REJECTED,
    pack_list,
)
from twinmpc.services.storage.rows import (
    COLLECTION_COLUMNS,
    HELPER_ROW_COLUMNS,
    REPORT_COLUMNS,
    collection_record,
    helper_rows,
    window_record,
)
from twinmpc.services.storage.sealing import ColumnSealer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id BLOB PRIMARY KEY, task_json TEXT NOT NULL, agg_index INTEGER NOT NULL, verify_key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    task_id BLOB NOT NULL, report_id BLOB NOT NULL, window_start INTEGER NOT NULL, time INTEGER NOT NULL,
    public_share BLOB NOT NULL, leader_share BLOB NOT NULL, helper_shares BLOB NOT NULL,
    state INTEGER NOT NULL DEFAULT 0, job_id BLOB,
    PRIMARY KEY (task_id, report_id));
CREATE INDEX IF NOT EXISTS reports_pending ON reports (state, task_id, window_start);
CREATE INDEX IF NOT EXISTS reports_job ON reports (job_id);
CREATE TABLE IF NOT EXISTS jobs (
    job_id BLOB PRIMARY KEY, task_id BLOB NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL, verdicts BLOB);
CREATE TABLE IF NOT EXISTS helper_reports (
    task_id BLOB NOT NULL, report_id BLOB NOT NULL, job_id BLOB NOT NULL, window_start INTEGER NOT NULL,
    time INTEGER NOT NULL, public_share BLOB NOT NULL, sealed_share BLOB NOT NULL,
    PRIMARY KEY (task_id, report_id));
CREATE INDEX IF NOT EXISTS helper_reports_job ON helper_reports (job_id);
CREATE TABLE IF NOT EXISTS windows (
    task_id BLOB NOT NULL, window_start INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'open',
    accumulator BLOB,
    PRIMARY KEY (task_id, window_start));
CREATE TABLE IF NOT EXISTS collections (
    task_id BLOB NOT NULL, window_start INTEGER NOT NULL, idx INTEGER NOT NULL, collection_id TEXT NOT NULL,
    state TEXT NOT NULL, report_count INTEGER NOT NULL, checksum BLOB NOT NULL, accumulator BLOB,
    response BLOB, audit_pending INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, window_start, idx));
CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS reports_settled ON reports (task_id, window_start) WHERE state >= 2;
CREATE INDEX IF NOT EXISTS helper_reports_window ON helper_reports (task_id, window_start);
CREATE INDEX IF NOT EXISTS jobs_task ON jobs (task_id, state);
"""

# Columns added after the first release: created on old files by `_add_missing_columns`.
_ADDED_COLUMNS = {"jobs": (("lease_owner", "BLOB"), ("lease_expires", "REAL"))}


def _closed_windows(db: sqlite3.Connection, task_id: bytes, windows: Collection[int]) -> set[int]:
    """Which of a task's windows are frozen for a collection (no late reports)."""
    return {
        w for (w,) in db.execute(
            f"SELECT window_start FROM windows WHERE task_id=? AND state='collected' AND window_start IN ({','.join('?' * len(windows))})",
            (task_id, *windows),
        )
    }


def _update_blob(db: sqlite3.Connection, name: str, update: BlobUpdate) -> bytes:
    """Read-modify-write of one blob inside the caller's transaction."""
    row = db.execute("SELECT value FROM blobs WHERE name=?", (name,)).fetchone()
    value = update(row[0] if row else None)
    db.execute("INSERT INTO blobs VALUES (?,?) ON CONFLICT(name) DO UPDATE SET value=excluded.value", (name, value))
    return value


class SqliteDatastore:
    """Thread-safe (one lock) SQLite datastore; one file per aggregator."""

    def __init__(self, path: str | Path, datastore_key: bytes, *, lease_owner: bytes | None = None, lease_seconds: float = 60.0) -> None:
        """`lease_owner` names this process in job leases (stable across restarts: it resumes its own jobs at once)."""
        self._sealer = ColumnSealer(datastore_key)
        self._lease_owner = lease_owner or os.urandom(8)
        self._lease_seconds = lease_seconds
        self.path = str(path)
        self._lock = threading.Lock()
        self._writes = TxStats()  # one writer, no retries: every write transaction under one name
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def __repr__(self) -> str:
        return f"SqliteDatastore({self.path!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            started = time.perf_counter()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._writes.commits += 1
            self._writes.seconds += time.perf_counter() - started

    def transaction_stats(self) -> dict[str, TxStats]:
        """Write transactions (commits and time, the fsync included) under the name "write"."""
        with self._lock:
            return {"write": TxStats(self._writes.commits, 0, self._writes.seconds)}

    # --- tasks -------------------------------------------------------------------
    def put_task(self, task_id: bytes, record: TaskRecord) -> None:
        """Store a new task; a task id that exists already raises AlreadyExists (tasks are immutable)."""
        key = self._sealer.seal_verify_key(task_id, record)
        with self._tx() as db:
            cur = db.execute("INSERT INTO tasks VALUES (?,?,?,?) ON CONFLICT(task_id) DO NOTHING", (task_id, record.task_json, record.agg_index, key))
            if cur.rowcount != 1:
                raise AlreadyExists("task already exists")

    def update_task(self, task_id: bytes, record: TaskRecord) -> None:
        """Replace a task's document (for audited amendments that only tighten privacy)."""
        key = self._sealer.seal_verify_key(task_id, record)
        with self._tx() as db:
            cur = db.execute("UPDATE tasks SET task_json=?, agg_index=?, verify_key=? WHERE task_id=?", (record.task_json, record.agg_index, key, task_id))
            if cur.rowcount != 1:
                raise NotFound("unknown task")

    def get_task(self, task_id: bytes) -> TaskRecord:
        with self._lock:
            row = self._db.execute("SELECT task_json, agg_index, verify_key FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        if row is None:
            raise NotFound("unknown task")
        return self._sealer.task_record(task_id, *row)

    def list_tasks(self) -> list[TaskRecord]:
        with self._lock:
            rows = self._db.execute("SELECT task_id, task_json, agg_index, verify_key FROM tasks ORDER BY task_id").fetchall()
        return [self._sealer.task_record(*r) for r in rows]

    # --- leader: reports -----------------------------------------------------------
    def put_reports(self, task_id: bytes, rows: list[tuple[int, PendingReport]]) -> list[PutOutcome]:
        """Insert reports durably; one outcome per row."""
        return self.put_reports_many([(task_id, rows)])[0]

    def put_reports_many(self, uploads: list[tuple[bytes, list[tuple[int, PendingReport]]]]) -> list[list[PutOutcome]]:
        """Several uploads (of any tasks) in ONE durable transaction: the group commit of concurrent calls.

        Outcomes are per upload, per row; a report id stored by an earlier upload of the same
        group is a replay for the later ones.
        """
        sealed = [[self._sealer.seal_leader_share(task_id, r) for _, r in rows] for task_id, rows in uploads]
        with self._tx() as db:
            return [self._insert_reports(db, task_id, rows, shares) for (task_id, rows), shares in zip(uploads, sealed, strict=True)]

    def _insert_reports(self, db: sqlite3.Connection, task_id: bytes, rows: list[tuple[int, PendingReport]], sealed: list[bytes]) -> list[PutOutcome]:
        if not rows:
            return []
        closed = _closed_windows(db, task_id, {w for w, _ in rows})
        results: list[PutOutcome] = []
        for (window_start, r), share in zip(rows, sealed, strict=True):
            if window_start in closed:
                results.append(PutOutcome.WINDOW_CLOSED)
                continue
            cur = db.execute(
                "INSERT OR IGNORE INTO reports (task_id, report_id, window_start, time, public_share, leader_share, helper_shares) "
                "VALUES (?,?,?,?,?,?,?)",
                (task_id, r.report_id, window_start, r.time, r.public_share, share, pack_list(r.helper_shares)),
            )
            results.append(PutOutcome.STORED if cur.rowcount == 1 else PutOutcome.REPLAYED)
        return results

    def _claim(self, db: sqlite3.Connection, job_id: bytes, task_id: bytes, ids: list[bytes]) -> None:
        db.executemany("UPDATE reports SET state=?, job_id=? WHERE task_id=? AND report_id=?", [(IN_JOB, job_id, task_id, i) for i in ids])
        db.execute(
            "INSERT INTO jobs (job_id, task_id, role, state, lease_owner, lease_expires) VALUES (?,?,'leader','init',?,?)",
            (job_id, task_id, self._lease_owner, time.time() + self._lease_seconds),
        )

    def acquire_pending_reports(self, job_id: bytes, limit: int) -> tuple[bytes, list[PendingReport]] | None:
        """Claim up to `limit` pending reports of one task into a new job."""
        with self._tx() as db:
            first = db.execute("SELECT task_id FROM reports WHERE state=? LIMIT 1", (PENDING,)).fetchone()
            if first is None:
                return None
            task_id = first[0]
            rows = db.execute(
                f"SELECT {REPORT_COLUMNS} FROM reports WHERE state=? AND task_id=? ORDER BY window_start LIMIT ?",
                (PENDING, task_id, limit),
            ).fetchall()
            self._claim(db, job_id, task_id, [r[0] for r in rows])
        return task_id, self._sealer.pending_reports(task_id, rows)

    def acquire_window_reports(self, job_id: bytes, task_id: bytes, window_start: int, limit: int) -> list[PendingReport]:
        """Claim pending reports of one window (used to flush before a collection)."""
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {REPORT_COLUMNS} FROM reports WHERE state=? AND task_id=? AND window_start=? LIMIT ?",
                (PENDING, task_id, window_start, limit),
            ).fetchall()
            if rows:
                self._claim(db, job_id, task_id, [r[0] for r in rows])
        return self._sealer.pending_reports(task_id, rows)

    def get_job_reports(self, job_id: bytes) -> list[PendingReport]:
        with self._lock:
            task = self._db.execute("SELECT task_id FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if task is None:
                raise NotFound("unknown job")
            rows = self._db.execute(f"SELECT {REPORT_COLUMNS} FROM reports WHERE job_id=? ORDER BY rowid", (job_id,)).fetchall()
        return self._sealer.pending_reports(task[0], rows)

    def update_job_verdicts(self, job_id: bytes, verdicts: bytes) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='continuing', verdicts=? WHERE job_id=? AND state='init'", (verdicts, job_id))

    def get_unfinished_jobs(self) -> list[JobRecord]:
        """Unfinished leader jobs this process may drive: its own, and those whose lease expired (taken over).

        Each returned job is leased to this process for `lease_seconds` from now: another
        process sharing the store leaves it alone until the lease expires unrenewed.
        """
        now = time.time()
        with self._tx() as db:
            jobs = db.execute(
                "SELECT job_id, task_id, state, verdicts FROM jobs WHERE role='leader' AND state!='done' "
                "AND (lease_owner=? OR lease_owner IS NULL OR lease_expires<?)",
                (self._lease_owner, now),
            ).fetchall()
            db.executemany("UPDATE jobs SET lease_owner=?, lease_expires=? WHERE job_id=?",
                           [(self._lease_owner, now + self._lease_seconds, j[0]) for j in jobs])
            out = []
            for job_id, task_id, state, verdicts in jobs:
                ids = tuple(r[0] for r in self._db.execute("SELECT report_id FROM reports WHERE job_id=? ORDER BY rowid", (job_id,)))
                out.append(JobRecord(job_id, task_id, state, ids, verdicts or b""))
        return out

    def _merge_windows(self, db: sqlite3.Connection, task_id: bytes, deltas: dict[int, bytes], merge: MergeFn) -> None:
        for window_start, delta in deltas.items():
            row = db.execute("SELECT accumulator, state FROM windows WHERE task_id=? AND window_start=?", (task_id, window_start)).fetchone()
            if row is not None and row[1] == "collected":
                raise WindowClosed(f"window {window_start} is frozen for a collection; its accumulator cannot change")
            merged = merge(row[0] if row else None, delta)
            db.execute(
                "INSERT INTO windows (task_id, window_start, accumulator) VALUES (?,?,?) "
                "ON CONFLICT(task_id, window_start) DO UPDATE SET accumulator=excluded.accumulator",
                (task_id, window_start, merged),
            )

    def finish_leader_job(
        self, job_id: bytes, task_id: bytes, deltas: dict[int, bytes], merge: MergeFn, accepted: list[bytes], rejected: list[bytes]
    ) -> None:
        with self._tx() as db:
            state = db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if state is None or state[0] == "done":
                return
            self._merge_windows(db, task_id, deltas, merge)
            db.executemany("UPDATE reports SET state=? WHERE task_id=? AND report_id=?", [(ACCEPTED, task_id, i) for i in accepted])
            # rejected reports keep their row (anti-replay) but drop their share material
            db.executemany(
                "UPDATE reports SET state=?, leader_share=x'', helper_shares=x'' WHERE task_id=? AND report_id=?",
                [(REJECTED, task_id, i) for i in rejected],
            )
            db.execute("UPDATE jobs SET state='done', verdicts=NULL WHERE job_id=?", (job_id,))

    # --- helper ------------------------------------------------------------------------
    def put_helper_job(self, job_id: bytes, task_id: bytes, rows: list[tuple[int, HelperReportRow]]) -> list[PutOutcome]:
        """Record a job's reports: REPLAYED for an id seen in another job, WINDOW_CLOSED for a frozen window."""
        fresh: list[PutOutcome] = []
        with self._tx() as db:
            existing = db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if existing is None:
                db.execute("INSERT INTO jobs (job_id, task_id, role, state) VALUES (?,?,'helper','init')", (job_id, task_id))
            closed = _closed_windows(db, task_id, sorted({w for w, _ in rows})) if rows else set()
            for window_start, r in rows:
                if window_start in closed:
                    fresh.append(PutOutcome.WINDOW_CLOSED)
                    continue
                prior = db.execute("SELECT job_id FROM helper_reports WHERE task_id=? AND report_id=?", (task_id, r.report_id)).fetchone()
                if prior is None:
                    db.execute(
                        "INSERT INTO helper_reports VALUES (?,?,?,?,?,?,?)",
                        (task_id, r.report_id, job_id, window_start, r.time, r.public_share, r.sealed_share),
                    )
                    fresh.append(PutOutcome.STORED)
                else:  # the same job retried is not a replay
                    fresh.append(PutOutcome.STORED if prior[0] == job_id else PutOutcome.REPLAYED)
        return fresh

    def get_helper_job_rows(self, job_id: bytes) -> list[tuple[int, HelperReportRow]]:
        with self._lock:
            rows = self._db.execute(f"SELECT {HELPER_ROW_COLUMNS} FROM helper_reports WHERE job_id=?", (job_id,)).fetchall()
        return helper_rows(rows)

    def get_job_state(self, job_id: bytes) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return row[0] if row else None

    def finish_helper_job(self, job_id: bytes, task_id: bytes, deltas: dict[int, bytes], merge: MergeFn) -> bool:
        """Commit a job's accepted shares once; False if it was already committed."""
        with self._tx() as db:
            state = db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if state is None:
                raise NotFound("unknown aggregation job")
            if state[0] == "done":
                return False
            self._merge_windows(db, task_id, deltas, merge)
            db.execute("UPDATE helper_reports SET sealed_share=x'' WHERE job_id=?", (job_id,))
            db.execute("UPDATE jobs SET state='done' WHERE job_id=?", (job_id,))
        return True

    # --- windows -----------------------------------------------------------------------
    def get_window(self, task_id: bytes, window_start: int) -> WindowRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT state, accumulator FROM windows WHERE task_id=? AND window_start=?", (task_id, window_start)
            ).fetchone()
        return window_record(task_id, window_start, row)

    def count_pending(self, task_id: bytes, window_start: int) -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM reports WHERE task_id=? AND window_start=? AND state IN (?,?)",
                (task_id, window_start, PENDING, IN_JOB),
            ).fetchone()
        return n

    # --- collections ---------------------------------------------------------------------
    def _collection(self, db: sqlite3.Connection, task_id: bytes, window_start: int, index: int) -> CollectionRecord | None:
        row = db.execute(
            f"SELECT {COLLECTION_COLUMNS} FROM collections WHERE task_id=? AND window_start=? AND idx=?", (task_id, window_start, index)
        ).fetchone()
        return collection_record(task_id, window_start, index, row)

    def get_collection(self, task_id: bytes, window_start: int, index: int) -> CollectionRecord | None:
        with self._lock:
            return self._collection(self._db, task_id, window_start, index)

    def freeze_collection(
        self, task_id: bytes, window_start: int, index: int, collection_id: str, expected_accumulator: bytes | None,
        report_count: int, checksum: bytes, snapshot: bytes | None = None,
    ) -> CollectionRecord:
        """Fix the window's report set for this collection and close the window to late reports.

        The frozen batch is the window's accumulator, or `snapshot` for a mode that keeps its
        window state elsewhere. Idempotent (an existing collection is returned as it is). Raises WindowBusy while a
        report of the window is pending or in a job, or when the accumulator is no longer
        `expected_accumulator` (the batch that passed the caller's checks).
        """
        with self._tx() as db:
            existing = self._collection(db, task_id, window_start, index)
            if existing is not None:
                return existing
            (busy,) = db.execute(
                "SELECT COUNT(*) FROM reports WHERE task_id=? AND window_start=? AND state IN (?,?)", (task_id, window_start, PENDING, IN_JOB)
            ).fetchone()
            row = db.execute("SELECT accumulator FROM windows WHERE task_id=? AND window_start=?", (task_id, window_start)).fetchone()
            current = row[0] if row else None
            if busy or current != expected_accumulator:
                raise WindowBusy(f"window {window_start} changed while its collection was being prepared")
            db.execute(
                "INSERT INTO windows (task_id, window_start, state) VALUES (?,?,'collected') "
                "ON CONFLICT(task_id, window_start) DO UPDATE SET state='collected'",
                (task_id, window_start),
            )
            db.execute(
                "INSERT INTO collections (task_id, window_start, idx, collection_id, state, report_count, checksum, accumulator) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (task_id, window_start, index, collection_id, FROZEN, report_count, checksum, current if snapshot is None else snapshot),
            )
            return self._collection(db, task_id, window_start, index)  # type: ignore[return-value]

    def release_collection(
        self, task_id: bytes, window_start: int, index: int, response: bytes, ledger: str, charge: BlobUpdate | None,
    ) -> tuple[CollectionRecord, bool]:
        """Store what this aggregator releases and charge its ledger, in one transaction.

        Returns (record, True) when this call released it, (the stored record, False) when
        it was released before: its bytes, not `response`, are the answer. An exception from
        `charge` (budget exhausted) leaves everything unchanged.
        """
        with self._tx() as db:
            existing = self._collection(db, task_id, window_start, index)
            if existing is None:
                raise NotFound("collection was never frozen")
            if existing.state == RELEASED:
                return existing, False
            if charge is not None:
                _update_blob(db, ledger, charge)
            db.execute(
                "UPDATE collections SET state=?, response=?, audit_pending=1 WHERE task_id=? AND window_start=? AND idx=?",
                (RELEASED, response, task_id, window_start, index),
            )
            return self._collection(db, task_id, window_start, index), True  # type: ignore[return-value]

    def update_collection_audited(self, task_id: bytes, window_start: int, index: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE collections SET audit_pending=0 WHERE task_id=? AND window_start=? AND idx=?", (task_id, window_start, index))

    # --- small durable state -------------------------------------------------------------
    def get_blob(self, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM blobs WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def put_blob(self, name: str, value: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO blobs VALUES (?,?) ON CONFLICT(name) DO UPDATE SET value=excluded.value", (name, value))

    def update_blob(self, name: str, update: BlobUpdate) -> bytes:
        """Atomic read-modify-write; an exception from `update` leaves the blob unchanged."""
        with self._tx() as db:
            return _update_blob(db, name, update)

    # --- job leases ------------------------------------------------------------------------
    def renew_job_lease(self, job_id: bytes) -> bool:
        """Extend this process's lease on an unfinished job; False if another process holds it now."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_owner=?, lease_expires=? WHERE job_id=? AND state!='done' "
                "AND (lease_owner=? OR lease_owner IS NULL OR lease_expires<?)",
                (self._lease_owner, now + self._lease_seconds, job_id, self._lease_owner, now),
            )
            return cur.rowcount == 1

    def count_unaggregated(self) -> int:
        """Reports stored but not yet aggregated (pending or in a job), all tasks: the leader's backlog."""
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM reports WHERE state IN (?,?)", (PENDING, IN_JOB)).fetchone()
        return n

    # --- data lifecycle: bounded deletes for the garbage collector ---------------------------
    # Each call is one short transaction deleting at most `limit` rows of windows that start
    # before `before` (the caller's retention horizon), so uploads never wait long behind it.
    def delete_expired_reports(self, task_id: bytes, before: int, limit: int) -> int:
        """Settled (accepted or rejected) leader reports; pending ones stay until a job settles them."""
        with self._tx() as db:
            return db.execute(
                "DELETE FROM reports WHERE rowid IN (SELECT rowid FROM reports WHERE task_id=? AND window_start<? "
                "AND state>=? LIMIT ?)", (task_id, before, ACCEPTED, limit),
            ).rowcount

    def delete_expired_helper_reports(self, task_id: bytes, before: int, limit: int) -> int:
        """A helper's replay records (and spent shares) of expired windows."""
        with self._tx() as db:
            return db.execute(
                "DELETE FROM helper_reports WHERE rowid IN (SELECT rowid FROM helper_reports WHERE task_id=? AND window_start<? LIMIT ?)",
                (task_id, before, limit),
            ).rowcount

    def delete_finished_jobs(self, task_id: bytes, limit: int, helper_blob_prefix: str) -> int:
        """Finished jobs none of whose reports remain, with each helper job's `helper_blob_prefix + job id hex` blob."""
        with self._tx() as db:
            gone = db.execute(
                "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs j WHERE task_id=? AND state='done' "
                "AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.job_id=j.job_id) "
                "AND NOT EXISTS (SELECT 1 FROM helper_reports h WHERE h.job_id=j.job_id) LIMIT ?) RETURNING job_id, role",
                (task_id, limit),
            ).fetchall()
            db.executemany("DELETE FROM blobs WHERE name=?", [(helper_blob_prefix + j.hex(),) for j, role in gone if role == "helper"])
        return len(gone)

    def delete_expired_windows(self, task_id: bytes, before: int, limit: int) -> int:
        """Windows whose every collection was released, with their collections; never one still open or frozen."""
        with self._tx() as db:
            windows = [w for (w,) in db.execute(
                "SELECT window_start FROM windows w WHERE task_id=? AND window_start<? AND state='collected' AND NOT EXISTS "
                "(SELECT 1 FROM collections c WHERE c.task_id=w.task_id AND c.window_start=w.window_start AND c.state!=?) LIMIT ?",
                (task_id, before, RELEASED, limit),
            )]
            db.executemany("DELETE FROM collections WHERE task_id=? AND window_start=?", [(task_id, w) for w in windows])
            db.executemany("DELETE FROM windows WHERE task_id=? AND window_start=?", [(task_id, w) for w in windows])
        return len(windows)
