"""PostgreSQL backend: several stateless aggregator replicas on one database.

Same contract as `services.storage.sqlite` (the reference semantics): every
public method is one transaction, committed before it returns (so an upload
is durable before it is acknowledged); secret columns (verify keys, the
leader's opened input shares) are sealed by the shared `ColumnSealer`, in the
same format as the SQLite backend.

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
* late uploads versus a collection: `put_reports` and the helper-side job
  insert hold a shared advisory lock per window while they check the window
  state and insert, `freeze_collection` takes it exclusively, so every report
  either lands before the window closes (and the collection's flush sees it)
  or is refused as ``window_closed`` (`postgres_locks`); the helper-side merge
  refuses a frozen window.

The parts: `postgres_pool` (connections and the retrying transaction `_run`,
with per-name `transaction_stats` for metrics), `postgres_schema`,
`postgres_locks`, and the verbs here, in `postgres_collections` (collections,
blobs) and in `postgres_lifecycle` (the garbage collector's deletes).
"""

from __future__ import annotations

import secrets

import psycopg

from twinmpc.services.storage.base import (
    ACCEPTED,
    IN_JOB,
    PENDING,
    REJECTED,
    AlreadyExists,
    HelperReportRow,
    JobRecord,
    MergeFn,
    NotFound,
    PendingReport,
    PutOutcome,
    TaskRecord,
    TxStats,
    WindowClosed,
    WindowRecord,
    pack_list,
)
from twinmpc.services.storage.postgres_collections import PostgresCollections
from twinmpc.services.storage.postgres_lifecycle import PostgresLifecycle
from twinmpc.services.storage.postgres_locks import share_window_locks
from twinmpc.services.storage.postgres_pool import ConnectionPool
from twinmpc.services.storage.postgres_schema import create_schema
from twinmpc.services.storage.rows import HELPER_ROW_COLUMNS, REPORT_COLUMNS, helper_rows, window_record
from twinmpc.services.storage.sealing import ColumnSealer  # one format for both backends


def _closed_windows(cur: psycopg.Cursor, task_id: bytes, windows: list[int]) -> set[int]:
    """Which of a task's windows are frozen for a collection (no late reports)."""
    return {w for (w,) in cur.execute(
        "SELECT window_start FROM windows WHERE task_id=%s AND window_start = ANY(%s) AND state='collected'",
        (task_id, windows),
    )}


def _first_open(rows: list[tuple[int, PendingReport]] | list[tuple[int, HelperReportRow]], closed: set[int]) -> dict[bytes, int]:
    """Position of each report id's first row in an open window: a later repeat is a replay of it."""
    first: dict[bytes, int] = {}
    for pos, (w, r) in enumerate(rows):
        if w not in closed:
            first.setdefault(r.report_id, pos)
    return first


class PostgresDatastore(PostgresCollections, PostgresLifecycle):
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
        self._pool = ConnectionPool(
            url, password=password, pool_size=pool_size, max_attempts=max_attempts, connect_timeout=connect_timeout
        )
        self._run = self._pool.run  # every verb's transaction: (name, body(cursor)) -> body's result
        self._run("create_schema", create_schema)

    def __repr__(self) -> str:
        return f"PostgresDatastore({self._pool.where!r})"

    def transaction_stats(self) -> dict[str, TxStats]:
        """Commits, retries and time per transaction name (for metrics and benchmarks)."""
        return self._pool.stats()

    def close(self) -> None:
        self._pool.close()

    # --- tasks -------------------------------------------------------------------------
    def put_task(self, task_id: bytes, record: TaskRecord) -> None:
        """Store a new task; a task id that exists already raises AlreadyExists (tasks are immutable)."""
        key = self._sealer.seal_verify_key(task_id, record)
        inserted = self._run("put_task", lambda cur: cur.execute(
            "INSERT INTO tasks VALUES (%s,%s,%s,%s) ON CONFLICT (task_id) DO NOTHING RETURNING task_id",
            (task_id, record.task_json, record.agg_index, key),
        ).fetchone())
        if inserted is None:
            raise AlreadyExists("task already exists")

    def update_task(self, task_id: bytes, record: TaskRecord) -> None:
        """Replace a task's document (for audited amendments that only tighten privacy)."""
        key = self._sealer.seal_verify_key(task_id, record)
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
        return self._sealer.task_record(task_id, *row)

    def list_tasks(self) -> list[TaskRecord]:
        rows = self._run("list_tasks", lambda cur: cur.execute(
            "SELECT task_id, task_json, agg_index, verify_key FROM tasks ORDER BY task_id").fetchall())
        return [self._sealer.task_record(*r) for r in rows]

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
        sealed = {t: [self._sealer.seal_leader_share(t, r) for _, r in rows] for t, rows in merged.items()}

        def body(cur: psycopg.Cursor) -> dict[bytes, list[PutOutcome]]:
            share_window_locks(cur, ((t, w) for t, rows in merged.items() for w, _ in rows))
            return {t: self._insert_reports(cur, t, rows, sealed[t]) for t, rows in merged.items() if rows}

        outcomes = self._run("put_reports", body)
        return [[outcomes[t][pos] for t, pos in rows] for rows in where]

    def _insert_reports(self, cur: psycopg.Cursor, task_id: bytes, rows: list[tuple[int, PendingReport]], sealed: list[bytes]) -> list[PutOutcome]:
        closed = _closed_windows(cur, task_id, sorted({w for w, _ in rows}))
        first = _first_open(rows, closed)
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
        def body(cur: psycopg.Cursor) -> tuple[bytes, list] | None:
            task = cur.execute("SELECT task_id FROM jobs WHERE job_id=%s", (job_id,)).fetchone()
            if task is None:
                return None
            rows = cur.execute(f"SELECT {REPORT_COLUMNS} FROM reports WHERE job_id=%s ORDER BY window_start, seq", (job_id,)).fetchall()
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
            share_window_locks(cur, ((task_id, w) for w in windows))
            closed = _closed_windows(cur, task_id, windows)
            first = _first_open(rows, closed)
            batch = [rows[i] for i in first.values()]
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
            f"SELECT {HELPER_ROW_COLUMNS} FROM helper_reports WHERE job_id=%s ORDER BY report_id", (job_id,)
        ).fetchall())
        return helper_rows(rows)

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
        return window_record(task_id, window_start, row)

    def count_pending(self, task_id: bytes, window_start: int) -> int:
        (n,) = self._run("count_pending", lambda cur: cur.execute(
            f"SELECT COUNT(*) FROM reports WHERE task_id=%s AND window_start=%s AND state IN ({PENDING},{IN_JOB})",
            (task_id, window_start),
        ).fetchone())
        return n

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


__all__ = ["PostgresDatastore"]
