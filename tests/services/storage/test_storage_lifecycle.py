"""Data lifecycle and job leases, on both backends (SQLite and a real PostgreSQL).

The garbage collector's deletes are bounded (at most `limit` rows per call) and
never touch what is still needed: pending reports, windows not yet released,
jobs whose reports remain. A job lease keeps a second process (a replica on the
same database) away from a job in flight until the lease expires unrenewed.
"""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from twinmpc.services.storage import HelperReportRow, PutOutcome, SqliteDatastore
from tests.services.storage.test_storage_contract import TASK, W0, W1, W2, _flush, _int, _report, _sum_merge

pytest_plugins = ["tests.fixtures.postgres"]

HELPER_BLOB = "helper-job-rejected/"


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request, tmp_path):
    """open(**kwargs) -> a new datastore instance on one shared database; raw(sql, params) bypasses it."""
    key = os.urandom(32)
    opened = []
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite3"

        def open_store(**kwargs):
            opened.append(SqliteDatastore(path, key, **kwargs))
            return opened[-1]

        def raw(sql: str, params: tuple = ()) -> list:
            with sqlite3.connect(path) as db:
                return db.execute(sql.replace("%s", "?"), params).fetchall()
    else:
        import psycopg

        from twinmpc.services.storage.postgres import PostgresDatastore

        server = request.getfixturevalue("postgres_server")
        url = server.create_database()

        def open_store(**kwargs):
            opened.append(PostgresDatastore(url, key, password=server.password, **kwargs))
            return opened[-1]

        def raw(sql: str, params: tuple = ()) -> list:
            with psycopg.connect(url, password=server.password, autocommit=True) as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []

    yield open_store, raw
    for s in opened:
        s.close()


def _drain(delete, *args) -> list[int]:
    """Call a bounded delete until it deletes nothing; the count of each call."""
    counts = []
    while n := delete(*args):
        counts.append(n)
    return counts


def test_expired_reports_go_in_bounded_batches_pending_ones_stay(opener):
    open_store, raw = opener
    store = open_store()
    store.put_reports(TASK, [(W0, _report(i)) for i in range(5)] + [(W1, _report(10 + i, time=W1 + 1)) for i in range(3)])
    _flush(store, TASK, W0)
    store.put_reports(TASK, [(W0, _report(99))])  # still pending: a job has not settled it yet
    assert _drain(store.delete_expired_reports, TASK, W1, 2) == [2, 2, 1]
    left = sorted(int.from_bytes(bytes(r), "big") for (r,) in raw("SELECT report_id FROM reports"))
    assert left == [10, 11, 12, 99]  # the newer window and the pending report remain
    assert store.count_unaggregated() == 4
    assert store.put_reports(TASK, [(W0, _report(0))]) == [PutOutcome.STORED]  # forgotten: upload refuses it by time


def test_windows_go_only_once_every_collection_is_released(opener):
    open_store, raw = opener
    store = open_store()
    for w in (W0, W1, W2):
        store.put_reports(TASK, [(w, _report(w, time=w + 1))])
        _flush(store, TASK, w)
    for w in (W0, W1):
        store.freeze_collection(TASK, w, 0, f"c{w}", _int(1), 1, b"c" * 32)
    store.release_collection(TASK, W0, 0, b"released", "ledger", None)
    assert store.delete_expired_windows(TASK, W2 + 1, 10) == 1  # W1 frozen, W2 open: kept
    assert store.get_window(TASK, W0) is None and store.get_collection(TASK, W0, 0) is None
    assert store.get_window(TASK, W1).state == "collected" and store.get_window(TASK, W2).state == "open"
    assert store.delete_expired_windows(TASK, W1, 10) == 0  # the horizon excludes W1 anyway


def test_finished_jobs_go_with_their_reports_and_helper_blob(opener):
    open_store, raw = opener
    store = open_store()
    store.put_reports(TASK, [(W0, _report(i)) for i in range(3)])
    _flush(store, TASK, W0)
    helper_job = b"h" * 16
    store.put_helper_job(helper_job, TASK, [(W0, HelperReportRow(b"r" * 16, W0 + 1, b"", b"sealed"))])
    store.finish_helper_job(helper_job, TASK, {W0: _int(1)}, _sum_merge)
    store.put_blob(HELPER_BLOB + helper_job.hex(), b"")
    assert store.delete_finished_jobs(TASK, 10, HELPER_BLOB) == 0  # their reports are still there
    _drain(store.delete_expired_reports, TASK, W1, 100)
    _drain(store.delete_expired_helper_reports, TASK, W1, 100)
    assert _drain(store.delete_finished_jobs, TASK, 1, HELPER_BLOB) == [1, 1]
    assert raw("SELECT COUNT(*) FROM jobs")[0][0] == 0 and store.get_blob(HELPER_BLOB + helper_job.hex()) is None


def test_a_leased_job_is_left_alone_until_its_lease_expires(opener):
    open_store, raw = opener
    first = open_store(lease_owner=b"replica-a", lease_seconds=1.0)
    second = open_store(lease_owner=b"replica-b", lease_seconds=1.0)
    first.put_reports(TASK, [(W0, _report(i)) for i in range(3)])
    job = os.urandom(16)
    assert len(first.acquire_pending_reports(job, 10)[1]) == 3
    assert second.get_unfinished_jobs() == [] and not second.renew_job_lease(job)  # in flight at the first
    assert [j.job_id for j in first.get_unfinished_jobs()] == [job]  # its own: resumed at once (a restart)
    assert first.renew_job_lease(job)
    time.sleep(1.3)  # the first stops renewing (SIGKILLed): the second takes the job over
    taken = second.get_unfinished_jobs()
    assert [j.job_id for j in taken] == [job] and len(taken[0].report_ids) == 3
    assert not first.renew_job_lease(job) and first.get_unfinished_jobs() == []
    second.finish_leader_job(job, TASK, {W0: _int(3)}, _sum_merge, [r for r in taken[0].report_ids], [])
    assert not second.renew_job_lease(job)  # finished: nothing to hold
    assert bytes(raw("SELECT accumulator FROM windows")[0][0]) == _int(3)
