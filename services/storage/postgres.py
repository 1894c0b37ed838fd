"""PostgreSQL backend: several stateless aggregator replicas on one database.

Same contract as `services.storage.sqlite` (the reference semantics): every
public method is one transaction, committed before it returns (so an upload
is durable before it is acknowledged); secret columns (verify keys, the
leader's opened input shares) are sealed with AES-256-GCM under the datastore
key with table, row and column bound as associated data, in the same format
as the SQLite backend.

What SQLite gets from its single writer, this backend gets from row and
advisory locks under READ COMMITTED (docs/storage.md has the argument per
method):

* claiming reports: ``SELECT ... FOR UPDATE SKIP LOCKED`` then the state
  change in the same statement, so two replicas never claim one report (a row
  claimed and committed meanwhile fails the re-checked ``state = 0``);
* window accumulators: the window row is locked (upsert ``RETURNING``) before
  the merge callback reads it, so concurrent merges queue instead of losing
  an update; windows are locked in ascending order, so merges do not deadlock;
* finishing a job: the job row is locked first, so a job driven by two
  replicas is merged once;
* late uploads versus a collection: `put_reports` holds a shared advisory
  lock per window while it checks the window state and inserts,
  `update_window_collected` takes it exclusively, so every report either
  lands before the window closes (and the collection's flush sees it) or is
  refused as ``window_closed``; `freeze_collection` takes the same exclusive
  lock, and the helper-side job insert and merge refuse a frozen window.

Deadlocks the lock manager breaks (40P01), serialization failures (40001) and
connections lost before COMMIT are retried by `_run`, which counts attempts
per transaction name (`transaction_stats`) for metrics.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

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
    StorageError,
    TaskRecord,
    WindowBusy,
    WindowClosed,
    WindowRecord,
    ACCEPTED,
    IN_JOB,
    PENDING,
    REJECTED,
    pack_list,
)
from twinmpc.services.storage.sealing import ColumnSealer  # one format for both backends

log = logging.getLogger("twinmpc.storage.postgres")

T = TypeVar("T")

SCHEMA_VERSION = 2
_SCHEMA_LOCK = 0x74776E6D70630001  # advisory key: one replica creates the schema at a time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS twinmpc_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id BYTEA PRIMARY KEY, task_json TEXT NOT NULL, agg_index INTEGER NOT NULL, verify_key BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    task_id BYTEA NOT NULL, report_id BYTEA NOT NULL, window_start BIGINT NOT NULL, time BIGINT NOT NULL,
    public_share BYTEA NOT NULL, leader_share BYTEA NOT NULL, helper_shares BYTEA NOT NULL,
    state SMALLINT NOT NULL DEFAULT 0, job_id BYTEA,
    PRIMARY KEY (task_id, report_id));
CREATE INDEX IF NOT EXISTS reports_pending ON reports (task_id, window_start, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS reports_open ON reports (task_id, window_start) WHERE state IN (0, 1);
CREATE INDEX IF NOT EXISTS reports_job ON reports (job_id) WHERE job_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS jobs (
    job_id BYTEA PRIMARY KEY, task_id BYTEA NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL, verdicts BYTEA);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (job_id) WHERE role = 'leader' AND state <> 'done';
CREATE TABLE IF NOT EXISTS helper_reports (
    task_id BYTEA NOT NULL, report_id BYTEA NOT NULL, job_id BYTEA NOT NULL, window_start BIGINT NOT NULL,
    time BIGINT NOT NULL, public_share BYTEA NOT NULL, sealed_share BYTEA NOT NULL,
    PRIMARY KEY (task_id, report_id));
CREATE INDEX IF NOT EXISTS helper_reports_job ON helper_reports (job_id);
CREATE TABLE IF NOT EXISTS windows (
    task_id BYTEA NOT NULL, window_start BIGINT NOT NULL, state TEXT NOT NULL DEFAULT 'open',
    accumulator BYTEA,
    PRIMARY KEY (task_id, window_start));
CREATE TABLE IF NOT EXISTS collections (
    task_id BYTEA NOT NULL, window_start BIGINT NOT NULL, idx INTEGER NOT NULL, collection_id TEXT NOT NULL,
    state TEXT NOT NULL, report_count BIGINT NOT NULL, checksum BYTEA NOT NULL, accumulator BYTEA,
    response BYTEA, audit_pending BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (task_id, window_start, idx));
CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS lease_owner BYTEA;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS lease_expires TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS reports_settled ON reports (task_id, window_start) WHERE state >= 2;
CREATE INDEX IF NOT EXISTS helper_reports_window ON helper_reports (task_id, window_start);
CREATE INDEX IF NOT EXISTS jobs_done ON jobs (task_id) WHERE state = 'done';
"""

_REPORT_COLUMNS = "report_id, time, public_share, leader_share, helper_shares"
_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


@dataclass
class TxStats:
    """Per transaction name: commits, retried attempts, seconds spent in committed attempts."""

    commits: int = 0
    retries: int = 0
    seconds: float = 0.0


def _window_lock_key(task_id: bytes, window_start: int) -> int:
    """A signed 64-bit advisory-lock key for one window (a collision only adds waiting)."""
    digest = hashlib.blake2b(task_id + window_start.to_bytes(8, "big", signed=True), digest_size=8,
                             person=b"twinmpc-window").digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresDatastore:
    """Thread-safe datastore over a small pool of psycopg connections.

    `url` is a libpq URL or conninfo without a password (``postgresql://user@host/db``);
    the password comes from `password` (read from the environment by the caller) or
    from libpq's own PGPASSWORD / .pgpass.  Every replica sharing the database must
    use the same `datastore_key`.
    """

    def __init__(
        self,
        url: str,
        datastore_key: bytes,
        *,
        password: str | None = None,
        pool_size: int = 4,
        max_attempts: int = 8,
        connect_timeout: int = 10,
        lease_owner: bytes | None = None,
        lease_seconds: float = 60.0,
    ) -> None:
        """`lease_owner` names this replica in job leases (stable across its restarts); leases run on the database's clock."""
        self._sealer = ColumnSealer(datastore_key)
        self._lease_owner = lease_owner or secrets.token_bytes(8)
        self._lease = f"{float(lease_seconds)} seconds"
        if not 1 <= pool_size <= 64:
            raise ValueError("pool_size must be within 1..64")
        if not 1 <= max_attempts <= 100:
            raise ValueError("max_attempts must be within 1..100")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"malformed database URL: {exc}") from None
        if params.get("password"):
            raise ValueError("the database URL must not carry a password; pass it from the environment")
        self._where = f"{params.get('host', 'local')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        self._connect_kwargs: dict[str, object] = {
            "autocommit": True,
            "connect_timeout": connect_timeout,
            "application_name": "twinmpc-aggregator",
        }
        if password is not None:
            self._connect_kwargs["password"] = password
        self._url = url
        self._max_attempts = max_attempts
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle: list[psycopg.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._stats: dict[str, TxStats] = {}
        self._stats_lock = threading.Lock()
        self._run("create_schema", self._create_schema)

    def __repr__(self) -> str:
        return f"PostgresDatastore({self._where!r})"

    # --- connections and the transaction helper ------------------------------------
    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._url, **self._connect_kwargs)
        except psycopg.OperationalError as exc:
            raise StorageError(f"cannot connect to PostgreSQL at {self._where}: {str(exc).strip().splitlines()[-1]}") from None
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED  # the locking argument assumes it
        return conn

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if not self._slots.acquire(timeout=60):
            raise StorageError("no database connection free within 60 s")
        conn = None
        try:
            with self._pool_lock:
                if self._closed:
                    raise StorageError("datastore is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = self._connect()
            yield conn
        finally:
            if conn is not None:
                with self._pool_lock:
                    if self._closed or conn.closed or conn.broken:
                        conn.close()
                    else:
                        self._idle.append(conn)
            self._slots.release()

    def _run(self, name: str, body: Callable[[psycopg.Cursor], T]) -> T:
        """Run `body` in one READ COMMITTED transaction; retry deadlocks and serialization failures.

        `body` may run more than once, so it must only touch the database through its cursor.
        A connection lost before COMMIT is retried on a fresh connection (nothing was
        committed); one lost during COMMIT is a `StorageError`, since the outcome is unknown.
        """
        with self._stats_lock:
            stats = self._stats.setdefault(name, TxStats())
        for attempt in range(1, self._max_attempts + 1):
            started = time.perf_counter()
            committing = False
            conn = None
            try:
                with self._connection() as conn, conn.transaction():
                    with conn.cursor() as cur:
                        result = body(cur)
                    committing = True  # leaving the block sends COMMIT
            except _RETRYABLE as exc:
                with self._stats_lock:
                    stats.retries += 1
                log.debug("transaction %s retried (%s), attempt %d", name, type(exc).__name__, attempt)
                time.sleep(min(0.2, 0.002 * 2**attempt) * (1 + secrets.randbelow(1000) / 1000))
                continue
            except psycopg.OperationalError as exc:
                if conn is None or not (conn.broken or conn.closed):  # the server refused the statement itself
                    raise StorageError(f"{name}: database error ({type(exc).__name__})") from exc
                if committing:  # lost during COMMIT: it may have committed, so only the caller can decide
                    raise StorageError(f"{name}: connection lost while committing ({type(exc).__name__})") from exc
                # lost before COMMIT (a pooled connection the server closed, a restart): nothing committed
                with self._stats_lock:
                    stats.retries += 1
                log.warning("transaction %s: connection lost before commit (%s); retrying on a new connection", name, type(exc).__name__)
                continue
            with self._stats_lock:
                stats.commits += 1
                stats.seconds += time.perf_counter() - started
            return result
        raise StorageError(f"{name}: gave up after {self._max_attempts} attempts (conflicts or lost connections)")

    def transaction_stats(self) -> dict[str, TxStats]:
        """Commits, retries and time per transaction name (for metrics and benchmarks)."""
        with self._stats_lock:
            return {k: TxStats(v.commits, v.retries, v.seconds) for k, v in self._stats.items()}

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _create_schema(self, cur: psycopg.Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        cur.execute(_SCHEMA)
        cur.execute("SELECT version FROM twinmpc_schema")
        row = cur.fetchone()
        if row is None:
            cur.execute("INSERT INTO twinmpc_schema VALUES (%s)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise StorageError(f"database schema version {row[0]}, this build needs {SCHEMA_VERSION}")

    # --- tasks -------------------------------------------------------------------------
    def put_task(self, task_id: bytes, record: TaskRecord) -> None:
        """Store a new task; a task id that exists already raises AlreadyExists (tasks are immutable)."""
        key = self._sealer.seal("tasks", task_id, "verify_key", record.verify_key)
        inserted = self._run("put_task", lambda cur: cur.execute(
            "INSERT INTO tasks VALUES (%s,%s,%s,%s) ON CONFLICT (task_id) DO NOTHING RETURNING task_id",
            (task_id, record.task_json, record.agg_index, key),
        ).fetchone())
        if inserted is None:
            raise AlreadyExists("task already exists")

    def update_task(self, task_id: bytes, record: TaskRecord) -> None:
        """Replace a task's document (for audited amendments that only tighten privacy)."""
        key = self._sealer.seal("tasks", task_id, "verify_key", record.verify_key)
        updated = self._run("update_task", lambda cur: cur.execute(
            "UPDATE tasks SET task_json=%s, agg_index=%s, verify_key=%s WHERE task_id=%s RETURNING task_id",
            (record.task_json, record.agg_index, key, task_id),
        ).fetchone())
        if updated is None:
            raise NotFound("unknown task")

    def get_task(self, task_id: bytes) -> TaskRecord:
        row = self._run("get_task", lambda cur: cur.execute(
            "SELECT task_json, agg_index, verify_key FROM tasks WHERE task_id=%s", (task_id,)).fetchone())
        if row is None:
            raise NotFound("unknown task")
        return TaskRecord(row[0], row[1], self._sealer.open("tasks", task_id, "verify_key", row[2]))

    def list_tasks(self) -> list[TaskRecord]:
        rows = self._run("list_tasks", lambda cur: cur.execute(
            "SELECT task_id, task_json, agg_index, verify_key FROM tasks ORDER BY task_id").fetchall())
        return [TaskRecord(r[1], r[2], self._sealer.open("tasks", r[0], "verify_key", r[3])) for r in rows]

    # --- leader: reports ------------------------------------------------------------------
    def put_reports(self, task_id: bytes, rows: list[tuple[int, PendingReport]]) -> list[PutOutcome]:
        """Insert reports durably; one outcome per row (see `put_reports_many`)."""
        return self.put_reports_many([(task_id, rows)])[0]

    def put_reports_many(self, uploads: list[tuple[bytes, list[tuple[int, PendingReport]]]]) -> list[list[PutOutcome]]:
        """Several uploads (of any tasks) in ONE transaction: the group commit of concurrent calls.

        Like the reference backend, a report id repeated within the group is a replay of
        its first occurrence that lands in an open window.
        """
        merged: dict[bytes, list[tuple[int, PendingReport]]] = {}
        where: list[list[tuple[bytes, int]]] = []  # per upload, per row: (task, position in merged[task])
        for task_id, rows in uploads:
            target = merged.setdefault(task_id, [])
            where.append([(task_id, len(target) + i) for i in range(len(rows))])
            target.extend(rows)
        sealed = {t: [self._sealer.seal("reports", t + r.report_id, "leader_share", r.leader_share) for _, r in rows]
                  for t, rows in merged.items()}

        def body(cur: psycopg.Cursor) -> dict[bytes, list[PutOutcome]]:
            keys = sorted({_window_lock_key(t, w) for t, rows in merged.items() for w, _ in rows})
            if keys:  # ascending: one lock order for every writer
                cur.execute("SELECT pg_advisory_xact_lock_shared(k) FROM unnest(%s::bigint[]) AS k", (keys,))
            return {t: self._insert_reports(cur, t, rows, sealed[t]) for t, rows in merged.items() if rows}

        outcomes = self._run("put_reports", body)
        return [[outcomes[t][pos] for t, pos in rows] for rows in where]

    def _insert_reports(self, cur: psycopg.Cursor, task_id: bytes, rows: list[tuple[int, PendingReport]], sealed: list[bytes]) -> list[PutOutcome]:
        windows = sorted({w for w, _ in rows})
        closed = {w for (w,) in cur.execute(
            "SELECT window_start FROM windows WHERE task_id=%s AND window_start = ANY(%s) AND state='collected'",
            (task_id, windows),
        )}
        first: dict[bytes, int] = {}
        for pos, (w, r) in enumerate(rows):
            if w not in closed:
                first.setdefault(r.report_id, pos)
        keep = list(first.values())
        inserted: set[bytes] = set()
        if keep:
            cur.execute(
                "INSERT INTO reports (task_id, report_id, window_start, time, public_share, leader_share, helper_shares) "
                "SELECT %s, u.report_id, u.window_start, u.time, u.public_share, u.leader_share, u.helper_shares "
                "FROM unnest(%s::bytea[], %s::bigint[], %s::bigint[], %s::bytea[], %s::bytea[], %s::bytea[]) "
                "WITH ORDINALITY AS u(report_id, window_start, time, public_share, leader_share, helper_shares, n) "
                "ORDER BY u.n ON CONFLICT DO NOTHING RETURNING report_id",
                (
                    task_id,
                    [rows[i][1].report_id for i in keep],
                    [rows[i][0] for i in keep],
                    [rows[i][1].time for i in keep],
                    [rows[i][1].public_share for i in keep],
                    [sealed[i] for i in keep],
                    [pack_list(rows[i][1].helper_shares) for i in keep],
                ),
            )
            inserted = {bytes(rid) for (rid,) in cur.fetchall()}
        return [
            PutOutcome.WINDOW_CLOSED if w in closed
            else PutOutcome.STORED if first[r.report_id] == pos and r.report_id in inserted else PutOutcome.REPLAYED
            for pos, (w, r) in enumerate(rows)
        ]

    def _claim(self, cur: psycopg.Cursor, job_id: bytes, task_id: bytes, where: str, params: tuple, limit: int) -> list:
        """Lock up to `limit` pending rows nobody else holds and move them into `job_id`, in one statement."""
        cur.execute(
            f"WITH picked AS (SELECT report_id FROM reports WHERE state={PENDING} AND task_id=%s {where} "
            f"ORDER BY window_start, seq LIMIT %s FOR UPDATE SKIP LOCKED) "
            f"UPDATE reports r SET state={IN_JOB}, job_id=%s FROM picked WHERE r.task_id=%s AND r.report_id=picked.report_id "
            f"RETURNING r.window_start, r.seq, r.report_id, r.time, r.public_share, r.leader_share, r.helper_shares",
            (task_id, *params, limit, job_id, task_id),
        )
        rows = sorted(cur.fetchall(), key=lambda r: (r[0], r[1]))
        if rows:
            cur.execute(
                "INSERT INTO jobs (job_id, task_id, role, state, lease_owner, lease_expires) "
                "VALUES (%s,%s,'leader','init',%s, clock_timestamp() + %s::interval)",
                (job_id, task_id, self._lease_owner, self._lease),
            )
        return [r[2:] for r in rows]

    def acquire_pending_reports(self, job_id: bytes, limit: int) -> tuple[bytes, list[PendingReport]] | None:
        """Claim up to `limit` pending reports of one task into a new job (none another replica holds)."""

        def body(cur: psycopg.Cursor) -> tuple[bytes, list] | None:
            first = cur.execute(f"SELECT task_id FROM reports WHERE state={PENDING} LIMIT 1 FOR UPDATE SKIP LOCKED").fetchone()
            if first is None:
                return None
            rows = self._claim(cur, job_id, first[0], "", (), limit)
            return (first[0], rows) if rows else None

        claimed = self._run("acquire_pending_reports", body)
        if claimed is None:
            return None
        return claimed[0], self._sealer.pending_reports(claimed[0], claimed[1])

    def acquire_window_reports(self, job_id: bytes, task_id: bytes, window_start: int, limit: int) -> list[PendingReport]:
        """Claim pending reports of one window (used to flush before a collection)."""
        rows = self._run("acquire_window_reports",
                         lambda cur: self._claim(cur, job_id, task_id, "AND window_start=%s", (window_start,), limit))
        return self._sealer.pending_reports(task_id, rows)

    def get_job_reports(self, job_id: bytes) -> list[PendingReport]:
        def body(cur: psycopg.Cursor):
            task = cur.execute("SELECT task_id FROM jobs WHERE job_id=%s", (job_id,)).fetchone()
            if task is None:
                return None
            rows = cur.execute(f"SELECT {_REPORT_COLUMNS} FROM reports WHERE job_id=%s ORDER BY window_start, seq", (job_id,)).fetchall()
            return task[0], rows

        found = self._run("get_job_reports", body)
        if found is None:
            raise NotFound("unknown job")
        return self._sealer.pending_reports(*found)

    def update_job_verdicts(self, job_id: bytes, verdicts: bytes) -> None:
        """Persist the first verdicts of a job; a replica that lost the race leaves them (and 'done') alone."""
        self._run("update_job_verdicts", lambda cur: cur.execute(
            "UPDATE jobs SET state='continuing', verdicts=%s WHERE job_id=%s AND state='init'", (verdicts, job_id)))

    def get_unfinished_jobs(self) -> list[JobRecord]:
        """Unfinished leader jobs this replica may drive: its own, and those whose lease expired (taken over).

        Each returned job is leased to this replica for `lease_seconds` (database clock): another
        replica leaves an in-flight job alone until its holder stops renewing the lease.
        """
        rows = self._run("get_unfinished_jobs", lambda cur: cur.execute(
            "WITH mine AS (UPDATE jobs SET lease_owner=%s, lease_expires=clock_timestamp() + %s::interval "
            "WHERE job_id IN (SELECT job_id FROM jobs WHERE role='leader' AND state <> 'done' "
            "AND (lease_owner=%s OR lease_owner IS NULL OR lease_expires < clock_timestamp()) FOR UPDATE SKIP LOCKED) "
            "RETURNING job_id, task_id, state, verdicts) "
            "SELECT j.job_id, j.task_id, j.state, j.verdicts, "
            "array_agg(r.report_id ORDER BY r.window_start, r.seq) FILTER (WHERE r.report_id IS NOT NULL) "
            "FROM mine j LEFT JOIN reports r ON r.job_id = j.job_id "
            "GROUP BY j.job_id, j.task_id, j.state, j.verdicts ORDER BY j.job_id",
            (self._lease_owner, self._lease, self._lease_owner),
        ).fetchall())
        return [JobRecord(job_id, task_id, state, tuple(ids or ()), verdicts or b"") for job_id, task_id, state, verdicts, ids in rows]

    def _merge_windows(self, cur: psycopg.Cursor, task_id: bytes, deltas: dict[int, bytes], merge: MergeFn) -> None:
        for window_start in sorted(deltas):  # one lock order for every merger: no deadlock
            # the no-op DO UPDATE locks the row and returns the latest committed accumulator
            (old, state) = cur.execute(
                "INSERT INTO windows (task_id, window_start) VALUES (%s,%s) ON CONFLICT (task_id, window_start) "
                "DO UPDATE SET accumulator = windows.accumulator RETURNING accumulator, state",
                (task_id, window_start),
            ).fetchone()
            if state == "collected":
                raise WindowClosed(f"window {window_start} is frozen for a collection; its accumulator cannot change")
            cur.execute(
                "UPDATE windows SET accumulator=%s WHERE task_id=%s AND window_start=%s",
                (merge(old, deltas[window_start]), task_id, window_start),
            )

    def finish_leader_job(
        self, job_id: bytes, task_id: bytes, deltas: dict[int, bytes], merge: MergeFn, accepted: list[bytes], rejected: list[bytes]
    ) -> None:
        def body(cur: psycopg.Cursor) -> None:
            state = cur.execute("SELECT state FROM jobs WHERE job_id=%s FOR UPDATE", (job_id,)).fetchone()
            if state is None or state[0] == "done":
                return
            self._merge_windows(cur, task_id, deltas, merge)
            if accepted:
                cur.execute(f"UPDATE reports SET state={ACCEPTED} WHERE task_id=%s AND report_id = ANY(%s)", (task_id, accepted))
            if rejected:  # rejected reports keep their row (anti-replay) but drop their share material
                cur.execute(
                    f"UPDATE reports SET state={REJECTED}, leader_share='', helper_shares='' WHERE task_id=%s AND report_id = ANY(%s)",
                    (task_id, rejected),
                )
            cur.execute("UPDATE jobs SET state='done', verdicts=NULL WHERE job_id=%s", (job_id,))

        self._run("finish_leader_job", body)

    # --- helper --------------------------------------------------------------------------
    def put_helper_job(self, job_id: bytes, task_id: bytes, rows: list[tuple[int, HelperReportRow]]) -> list[PutOutcome]:
        """Record a job's reports: REPLAYED for an id seen in another job, WINDOW_CLOSED for a frozen window."""
        windows = sorted({w for w, _ in rows})

        def body(cur: psycopg.Cursor) -> tuple[set[int], dict[bytes, bytes]]:
            cur.execute("INSERT INTO jobs VALUES (%s,%s,'helper','init',NULL) ON CONFLICT (job_id) DO NOTHING", (job_id, task_id))
            if not rows:
                return set(), {}
            cur.execute(
                "SELECT pg_advisory_xact_lock_shared(k) FROM unnest(%s::bigint[]) AS k",
                (sorted(_window_lock_key(task_id, w) for w in windows),),
            )
            closed = {w for (w,) in cur.execute(
                "SELECT window_start FROM windows WHERE task_id=%s AND window_start = ANY(%s) AND state='collected'",
                (task_id, windows),
            )}
            first: dict[bytes, tuple[int, HelperReportRow]] = {}
            for window_start, r in rows:
                if window_start not in closed:
                    first.setdefault(r.report_id, (window_start, r))
            batch = list(first.values())
            if not batch:
                return closed, {}
            cur.execute(
                "INSERT INTO helper_reports (task_id, job_id, report_id, window_start, time, public_share, sealed_share) "
                "SELECT %s, %s, u.* FROM unnest(%s::bytea[], %s::bigint[], %s::bigint[], %s::bytea[], %s::bytea[]) "
                "AS u(report_id, window_start, time, public_share, sealed_share) ON CONFLICT DO NOTHING",
                (
                    task_id,
                    job_id,
                    [r.report_id for _, r in batch],
                    [w for w, _ in batch],
                    [r.time for _, r in batch],
                    [r.public_share for _, r in batch],
                    [r.sealed_share for _, r in batch],
                ),
            )
            owners = cur.execute(
                "SELECT report_id, job_id FROM helper_reports WHERE task_id=%s AND report_id = ANY(%s)",
                (task_id, list(first)),
            ).fetchall()
            return closed, dict(owners)

        closed, owner = self._run("put_helper_job", body)
        return [  # the same job retried is not a replay
            PutOutcome.WINDOW_CLOSED if w in closed else PutOutcome.STORED if owner.get(r.report_id) == job_id else PutOutcome.REPLAYED
            for w, r in rows
        ]

    def get_helper_job_rows(self, job_id: bytes) -> list[tuple[int, HelperReportRow]]:
        rows = self._run("get_helper_job_rows", lambda cur: cur.execute(
            "SELECT window_start, report_id, time, public_share, sealed_share FROM helper_reports WHERE job_id=%s ORDER BY report_id",
            (job_id,),
        ).fetchall())
        return [(w, HelperReportRow(rid, t, ps, ss)) for w, rid, t, ps, ss in rows]

    def get_job_state(self, job_id: bytes) -> str | None:
        row = self._run("get_job_state", lambda cur: cur.execute("SELECT state FROM jobs WHERE job_id=%s", (job_id,)).fetchone())
        return row[0] if row else None

    def finish_helper_job(self, job_id: bytes, task_id: bytes, deltas: dict[int, bytes], merge: MergeFn) -> bool:
        """Commit a job's accepted shares once; False if it was already committed."""

        def body(cur: psycopg.Cursor) -> bool | None:
            state = cur.execute("SELECT state FROM jobs WHERE job_id=%s FOR UPDATE", (job_id,)).fetchone()
            if state is None:
                return None
            if state[0] == "done":
                return False
            self._merge_windows(cur, task_id, deltas, merge)
            cur.execute("UPDATE helper_reports SET sealed_share='' WHERE job_id=%s", (job_id,))
            cur.execute("UPDATE jobs SET state='done' WHERE job_id=%s", (job_id,))
            return True

        done = self._run("finish_helper_job", body)
        if done is None:
            raise NotFound("unknown aggregation job")
        return done

    # --- windows ---------------------------------------------------------------------------
    def get_window(self, task_id: bytes, window_start: int) -> WindowRecord | None:
        row = self._run("get_window", lambda cur: cur.execute(
            "SELECT state, accumulator FROM windows WHERE task_id=%s AND window_start=%s", (task_id, window_start)
        ).fetchone())
        return WindowRecord(task_id, window_start, row[0], bytes(row[1]) if row[1] is not None else None) if row else None

    def count_pending(self, task_id: bytes, window_start: int) -> int:
        (n,) = self._run("count_pending", lambda cur: cur.execute(
            f"SELECT COUNT(*) FROM reports WHERE task_id=%s AND window_start=%s AND state IN ({PENDING},{IN_JOB})",
            (task_id, window_start),
        ).fetchone())
        return n

    # --- collections -------------------------------------------------------------------------
    _COLLECTION_COLUMNS = "collection_id, state, report_count, checksum, accumulator, response, audit_pending"

    def _collection(self, cur: psycopg.Cursor, task_id: bytes, window_start: int, index: int, lock: bool = False) -> CollectionRecord | None:
        row = cur.execute(
            f"SELECT {self._COLLECTION_COLUMNS} FROM collections WHERE task_id=%s AND window_start=%s AND idx=%s"
            + (" FOR UPDATE" if lock else ""),
            (task_id, window_start, index),
        ).fetchone()
        if row is None:
            return None
        blob = lambda v: None if v is None else bytes(v)  # noqa: E731
        return CollectionRecord(task_id, window_start, index, row[0], row[1], row[2], bytes(row[3]), blob(row[4]), blob(row[5]), row[6])

    def get_collection(self, task_id: bytes, window_start: int, index: int) -> CollectionRecord | None:
        return self._run("get_collection", lambda cur: self._collection(cur, task_id, window_start, index))

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
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_window_lock_key(task_id, window_start),))
            existing = self._collection(cur, task_id, window_start, index, lock=True)
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
            return self._collection(cur, task_id, window_start, index)

        record = self._run("freeze_collection", body)
        if record is None:
            raise WindowBusy(f"window {window_start} changed while its collection was being prepared")
        return record

    def release_collection(
        self, task_id: bytes, window_start: int, index: int, response: bytes, ledger: str, charge: BlobUpdate | None,
    ) -> tuple[CollectionRecord, bool]:
        """Store what this aggregator releases and charge its ledger, in one transaction (see SQLite)."""

        def body(cur: psycopg.Cursor) -> tuple[CollectionRecord, bool] | None:
            existing = self._collection(cur, task_id, window_start, index, lock=True)
            if existing is None:
                return None
            if existing.state == RELEASED:
                return existing, False
            if charge is not None:
                cur.execute("INSERT INTO blobs VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (ledger, b""))
                (current,) = cur.execute("SELECT value FROM blobs WHERE name=%s FOR UPDATE", (ledger,)).fetchone()
                cur.execute("UPDATE blobs SET value=%s WHERE name=%s", (charge(bytes(current) or None), ledger))
            cur.execute(
                "UPDATE collections SET state=%s, response=%s, audit_pending=TRUE WHERE task_id=%s AND window_start=%s AND idx=%s",
                (RELEASED, response, task_id, window_start, index),
            )
            return self._collection(cur, task_id, window_start, index), True  # type: ignore[return-value]

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

        def body(cur: psycopg.Cursor) -> bytes:
            cur.execute("INSERT INTO blobs VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (name, b""))
            (current,) = cur.execute("SELECT value FROM blobs WHERE name=%s FOR UPDATE", (name,)).fetchone()
            value = update(bytes(current) or None)
            cur.execute("UPDATE blobs SET value=%s WHERE name=%s", (value, name))
            return value

        return self._run("update_blob", body)

    # --- job leases ------------------------------------------------------------------------
    def renew_job_lease(self, job_id: bytes) -> bool:
        """Extend this replica's lease on an unfinished job; False if another replica holds it now."""
        row = self._run("renew_job_lease", lambda cur: cur.execute(
            "UPDATE jobs SET lease_owner=%s, lease_expires=clock_timestamp() + %s::interval WHERE job_id=%s AND state <> 'done' "
            "AND (lease_owner=%s OR lease_owner IS NULL OR lease_expires < clock_timestamp()) RETURNING job_id",
            (self._lease_owner, self._lease, job_id, self._lease_owner),
        ).fetchone())
        return row is not None

    def count_unaggregated(self) -> int:
        """Reports stored but not yet aggregated (pending or in a job), all tasks: the leader's backlog."""
        (n,) = self._run("count_unaggregated", lambda cur: cur.execute(
            f"SELECT COUNT(*) FROM reports WHERE state IN ({PENDING},{IN_JOB})").fetchone())
        return n

    # --- data lifecycle: bounded deletes for the garbage collector ---------------------------
    # One short transaction per call, at most `limit` rows of windows starting before `before`;
    # SKIP LOCKED, so a row some writer holds is left for the next pass instead of waited for.
    def delete_expired_reports(self, task_id: bytes, before: int, limit: int) -> int:
        """Settled (accepted or rejected) leader reports; pending ones stay until a job settles them."""
        return self._run("delete_expired_reports", lambda cur: cur.execute(
            f"DELETE FROM reports WHERE (task_id, report_id) IN (SELECT task_id, report_id FROM reports "
            f"WHERE task_id=%s AND window_start<%s AND state>={ACCEPTED} LIMIT %s FOR UPDATE SKIP LOCKED)",
            (task_id, before, limit),
        ).rowcount)

    def delete_expired_helper_reports(self, task_id: bytes, before: int, limit: int) -> int:
        """A helper's replay records (and spent shares) of expired windows."""
        return self._run("delete_expired_helper_reports", lambda cur: cur.execute(
            "DELETE FROM helper_reports WHERE (task_id, report_id) IN (SELECT task_id, report_id FROM helper_reports "
            "WHERE task_id=%s AND window_start<%s LIMIT %s FOR UPDATE SKIP LOCKED)",
            (task_id, before, limit),
        ).rowcount)

    def delete_finished_jobs(self, task_id: bytes, limit: int, helper_blob_prefix: str) -> int:
        """Finished jobs none of whose reports remain, with each helper job's `helper_blob_prefix + job id hex` blob."""

        def body(cur: psycopg.Cursor) -> int:
            gone = cur.execute(
                "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs j WHERE task_id=%s AND state='done' "
                "AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.job_id=j.job_id) "
                "AND NOT EXISTS (SELECT 1 FROM helper_reports h WHERE h.job_id=j.job_id) LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING job_id, role",
                (task_id, limit),
            ).fetchall()
            names = [helper_blob_prefix + bytes(j).hex() for j, role in gone if role == "helper"]
            if names:
                cur.execute("DELETE FROM blobs WHERE name = ANY(%s)", (names,))
            return len(gone)

        return self._run("delete_finished_jobs", body)

    def delete_expired_windows(self, task_id: bytes, before: int, limit: int) -> int:
        """Windows whose every collection was released, with their collections; never one still open or frozen."""

        def body(cur: psycopg.Cursor) -> int:
            windows = [w for (w,) in cur.execute(
                "SELECT window_start FROM windows w WHERE task_id=%s AND window_start<%s AND state='collected' AND NOT EXISTS "
                "(SELECT 1 FROM collections c WHERE c.task_id=w.task_id AND c.window_start=w.window_start AND c.state<>%s) "
                "LIMIT %s FOR UPDATE SKIP LOCKED",
                (task_id, before, RELEASED, limit),
            )]
            if windows:
                cur.execute("DELETE FROM collections WHERE task_id=%s AND window_start = ANY(%s)", (task_id, windows))
                cur.execute("DELETE FROM windows WHERE task_id=%s AND window_start = ANY(%s)", (task_id, windows))
            return len(windows)

        return self._run("delete_expired_windows", body)


__all__ = ["PostgresDatastore", "TxStats"]
