"""PostgreSQL: the garbage collector's bounded deletes.

Part of `PostgresDatastore` (a mixin over its `_run`). One short transaction per
call, at most `limit` rows of windows starting before `before`; SKIP LOCKED, so a
row some writer holds is left for the next pass instead of waited for.
"""

from __future__ import annotations

import psycopg

from twinmpc.services.storage.base import ACCEPTED, RELEASED
from twinmpc.services.storage.postgres_pool import Transact


class PostgresLifecycle:
    """Data-lifecycle verbs of `PostgresDatastore`."""

    _run: Transact

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
