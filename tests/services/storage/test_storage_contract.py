"""One contract for every `Datastore` backend: SQLite (reference) and PostgreSQL (real server).

Each test runs against both; the PostgreSQL runs use a fresh database on the
session's server (tests/fixtures/postgres.py).  The concurrency tests open two
datastore instances on one database, as two aggregator replicas would.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinmpc.services.storage import (
    AlreadyExists,
    HelperReportRow,
    NotFound,
    PendingReport,
    PutOutcome,
    SqliteDatastore,
    StorageError,
    TaskRecord,
    WindowBusy,
    WindowClosed,
)

pytest_plugins = ["tests.fixtures.postgres"]

TASK = b"T" * 32
OTHER_TASK = b"U" * 32
W0, W1, W2 = 3600, 7200, 10800
OK, REPLAY, CLOSED = PutOutcome.STORED, PutOutcome.REPLAYED, PutOutcome.WINDOW_CLOSED


def _sum_merge(old: bytes | None, delta: bytes) -> bytes:
    """Exact integer addition of big-endian int64 accumulators (the shape of a real merge)."""
    return struct.pack(">q", (struct.unpack(">q", old)[0] if old else 0) + struct.unpack(">q", delta)[0])


def _int(value: int) -> bytes:
    return struct.pack(">q", value)


def _report(i: int, time: int = W0 + 1, value: int = 0) -> PendingReport:
    rid = i.to_bytes(16, "big")
    return PendingReport(rid, time, _int(value), b"leader-share-%06d" % i, (b"helper-1-%d" % i, b"helper-2-%d" % i))


@dataclass
class Backend:
    name: str
    open: Callable[..., object]  # open(key=None): a new datastore instance on the same database
    raw: Callable[[str, tuple], list]  # run SQL against the database, bypassing the datastore
    key: bytes


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Backend:
    key = os.urandom(32)
    opened = []
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite3"

        def open_sqlite(other_key: bytes | None = None):
            opened.append(SqliteDatastore(path, other_key or key))
            return opened[-1]

        def raw_sqlite(sql: str, params: tuple) -> list:
            with sqlite3.connect(path) as db:
                return db.execute(sql.replace("%s", "?"), params).fetchall()

        b = Backend("sqlite", open_sqlite, raw_sqlite, key)
    else:
        import psycopg

        from twinmpc.services.storage.postgres import PostgresDatastore

        server = request.getfixturevalue("postgres_server")
        url = server.create_database()

        def open_pg(other_key: bytes | None = None):
            opened.append(PostgresDatastore(url, other_key or key, password=server.password))
            return opened[-1]

        def raw_pg(sql: str, params: tuple) -> list:
            with psycopg.connect(url, password=server.password, autocommit=True) as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []

        b = Backend("postgres", open_pg, raw_pg, key)
    yield b
    for store in opened:
        store.close()


@pytest.fixture
def store(backend):
    return backend.open()


# --- tasks ------------------------------------------------------------------------------------
def test_tasks_are_immutable_except_through_update(store):
    with pytest.raises(NotFound):
        store.get_task(TASK)
    store.put_task(TASK, TaskRecord('{"a": 1}', 0, b"k" * 16))
    store.put_task(OTHER_TASK, TaskRecord('{"b": 2}', 1, b"v" * 32))
    assert store.get_task(TASK) == TaskRecord('{"a": 1}', 0, b"k" * 16)
    with pytest.raises(AlreadyExists):
        store.put_task(TASK, TaskRecord('{"a": 2}', 1, b"j" * 16))
    assert store.get_task(TASK) == TaskRecord('{"a": 1}', 0, b"k" * 16)  # the refused put changed nothing
    store.update_task(TASK, TaskRecord('{"a": 2}', 1, b"j" * 16))
    assert store.get_task(TASK) == TaskRecord('{"a": 2}', 1, b"j" * 16)
    with pytest.raises(NotFound):
        store.update_task(b"Z" * 32, TaskRecord("{}", 0, b"k" * 16))
    assert [t.task_json for t in store.list_tasks()] == ['{"a": 2}', '{"b": 2}']
    assert "j" * 16 not in repr(store.get_task(TASK))


# --- uploads ------------------------------------------------------------------------------------
def test_put_reports_ok_replay_and_duplicate_in_batch(store):
    rows = [(W0, _report(i)) for i in range(4)]
    assert store.put_reports(TASK, []) == []
    assert store.put_reports(TASK, rows + [rows[1]]) == [OK, OK, OK, OK, REPLAY]
    assert store.put_reports(TASK, [rows[0], (W0, _report(9))]) == [REPLAY, OK]
    assert store.put_reports(OTHER_TASK, [rows[0]]) == [OK]  # report ids are per task
    assert store.count_pending(TASK, W0) == 5


def _flush(store, task: bytes, window: int) -> list[bytes]:
    """Aggregate every pending report of a window (each counts 1), as the leader's flush does."""
    done: list[bytes] = []
    while reports := store.acquire_window_reports(job := os.urandom(16), task, window, 1000):
        ids = [r.report_id for r in reports]
        store.finish_leader_job(job, task, {window: _int(len(ids))}, _sum_merge, ids, [])
        done.extend(ids)
    return done


def _flush_and_freeze(store, task: bytes, window: int, index: int = 0):
    """Flush, then freeze the window for a collection; again while uploads still move it."""
    flushed: list[bytes] = []
    while True:
        flushed += _flush(store, task, window)
        record = store.get_window(task, window)
        try:
            return store.freeze_collection(task, window, index, "cid", record.accumulator if record else None,
                                           len(flushed), b"c" * 32), flushed
        except WindowBusy:
            continue


def test_put_reports_refused_once_window_frozen(store):
    store.put_reports(TASK, [(W0, _report(1))])
    with pytest.raises(WindowBusy):  # a pending report: the batch is not complete yet
        store.freeze_collection(TASK, W0, 0, "cid", None, 0, b"c" * 32)
    assert store.get_collection(TASK, W0, 0) is None and store.get_window(TASK, W0) is None  # refused: nothing frozen
    record, flushed = _flush_and_freeze(store, TASK, W0)
    assert flushed == [_report(1).report_id] and record.state == "frozen" and record.accumulator == _int(1)
    assert store.get_window(TASK, W0).state == "collected"
    out = store.put_reports(TASK, [(W0, _report(2)), (W1, _report(3)), (W0, _report(1))])
    assert out == [CLOSED, OK, CLOSED]
    assert store.count_pending(TASK, W0) == 0 and store.count_pending(TASK, W1) == 1


def test_freeze_refuses_a_moved_accumulator_and_is_idempotent(store):
    store.put_reports(TASK, [(W0, _report(1))])
    _flush(store, TASK, W0)
    with pytest.raises(WindowBusy):
        store.freeze_collection(TASK, W0, 0, "cid", _int(99), 1, b"c" * 32)  # not the batch the caller checked
    first = store.freeze_collection(TASK, W0, 0, "cid", _int(1), 1, b"c" * 32)
    again = store.freeze_collection(TASK, W0, 0, "other-id", None, 7, b"x" * 32)
    assert again == first and again.collection_id == "cid" and again.report_count == 1


def test_release_stores_once_and_charges_in_the_same_transaction(store):
    store.put_reports(TASK, [(W0, _report(1))])
    record, _ = _flush_and_freeze(store, TASK, W0)
    with pytest.raises(NotFound):
        store.release_collection(TASK, W0, 5, b"never", "ledger", None)

    def refuse(_old):
        raise RuntimeError("budget exhausted")

    with pytest.raises(RuntimeError):
        store.release_collection(TASK, W0, 0, b"first", "ledger", refuse)
    assert store.get_collection(TASK, W0, 0).state == "frozen" and store.get_blob("ledger") is None  # nothing spent
    charges = []
    charge = lambda old: (charges.append(1), (old or b"") + b"+")[1]  # noqa: E731
    released, fresh = store.release_collection(TASK, W0, 0, b"first", "ledger", charge)
    assert fresh and released.response == b"first" and released.audit_pending and store.get_blob("ledger") == b"+"
    repeat, fresh = store.release_collection(TASK, W0, 0, b"second draw", "ledger", charge)
    assert not fresh and repeat.response == b"first" and store.get_blob("ledger") == b"+" and len(charges) == 1
    store.update_collection_audited(TASK, W0, 0)
    assert not store.get_collection(TASK, W0, 0).audit_pending


# --- leader jobs ----------------------------------------------------------------------------------
def test_acquire_claims_each_pending_report_once(store):
    assert store.acquire_pending_reports(b"j0" * 8, 10) is None
    store.put_reports(TASK, [(W1, _report(i, W1 + 1)) for i in range(3)] + [(W0, _report(i)) for i in range(3, 6)])
    task_id, first = store.acquire_pending_reports(b"j1" * 8, 4)
    assert task_id == TASK and len(first) == 4
    assert [r.time for r in first] == [W0 + 1] * 3 + [W1 + 1]  # oldest window first
    assert first[0] == _report(3)  # shares opened, helper shares unpacked
    _, second = store.acquire_pending_reports(b"j2" * 8, 4)
    assert {r.report_id for r in first}.isdisjoint({r.report_id for r in second}) and len(second) == 2
    assert store.acquire_pending_reports(b"j3" * 8, 4) is None
    assert store.count_pending(TASK, W0) == 3 and store.count_pending(TASK, W1) == 3


def test_acquire_window_reports_takes_only_that_window(store):
    store.put_reports(TASK, [(W0, _report(1)), (W1, _report(2, W1 + 1)), (W0, _report(3))])
    got = store.acquire_window_reports(b"jw" * 8, TASK, W0, 10)
    assert {r.report_id for r in got} == {_report(1).report_id, _report(3).report_id}
    assert store.acquire_window_reports(b"jx" * 8, TASK, W0, 10) == []
    assert store.acquire_window_reports(b"jy" * 8, TASK, W2, 10) == []


def test_job_lifecycle_and_idempotent_finish(store):
    store.put_reports(TASK, [(W0, _report(i, value=i)) for i in range(4)])
    job = b"job-lifecycle-01"
    _, reports = store.acquire_pending_reports(job, 10)
    with pytest.raises(NotFound):
        store.get_job_reports(b"no-such-job-0000")
    assert store.get_job_reports(job) == reports
    (unfinished,) = store.get_unfinished_jobs()
    assert (unfinished.job_id, unfinished.task_id, unfinished.state) == (job, TASK, "init")
    assert unfinished.report_ids == tuple(r.report_id for r in reports)
    store.update_job_verdicts(job, b"verdicts")
    (unfinished,) = store.get_unfinished_jobs()
    assert (unfinished.state, unfinished.verdicts) == ("continuing", b"verdicts")
    accepted, rejected = [r.report_id for r in reports[:3]], [reports[3].report_id]
    store.finish_leader_job(job, TASK, {W0: _int(3)}, _sum_merge, accepted, rejected)
    store.finish_leader_job(job, TASK, {W0: _int(3)}, _sum_merge, accepted, rejected)  # retried: no double count
    assert store.get_window(TASK, W0).accumulator == _int(3)
    assert store.get_unfinished_jobs() == []
    assert store.count_pending(TASK, W0) == 0
    assert store.put_reports(TASK, [(W0, _report(3)), (W0, _report(0))]) == [REPLAY, REPLAY]  # rejected rows keep their id


def test_finish_of_unknown_leader_job_changes_nothing(store):
    store.finish_leader_job(b"never-acquired-0", TASK, {W0: _int(5)}, _sum_merge, [], [])
    assert store.get_window(TASK, W0) is None


# --- helper jobs ------------------------------------------------------------------------------------
def _helper_row(i: int) -> tuple[int, HelperReportRow]:
    return W0, HelperReportRow(i.to_bytes(16, "big"), W0 + 1, b"pub-%d" % i, b"sealed-%d" % i)


def test_helper_job_replay_detection(store):
    job_a, job_b = b"helper-job-aaaa1", b"helper-job-bbbb2"
    assert store.get_job_state(job_a) is None
    assert store.put_helper_job(job_a, TASK, [_helper_row(1), _helper_row(2)]) == [OK, OK]
    assert store.get_job_state(job_a) == "init"
    assert store.put_helper_job(job_a, TASK, [_helper_row(1), _helper_row(2)]) == [OK, OK]  # same job retried
    assert store.put_helper_job(job_b, TASK, [_helper_row(2), _helper_row(3), _helper_row(3)]) == [REPLAY, OK, OK]
    assert sorted(r.report_id for _, r in store.get_helper_job_rows(job_a)) == [_helper_row(i)[1].report_id for i in (1, 2)]
    assert store.put_helper_job(job_b, OTHER_TASK, []) == []


def test_helper_finish_once(store):
    job = b"helper-job-fin01"
    with pytest.raises(NotFound):
        store.finish_helper_job(job, TASK, {W0: _int(1)}, _sum_merge)
    store.put_helper_job(job, TASK, [_helper_row(1)])
    assert store.finish_helper_job(job, TASK, {W0: _int(7)}, _sum_merge) is True
    assert store.finish_helper_job(job, TASK, {W0: _int(7)}, _sum_merge) is False
    assert store.get_window(TASK, W0).accumulator == _int(7)
    assert store.get_job_state(job) == "done"
    assert [r.sealed_share for _, r in store.get_helper_job_rows(job)] == [b""]  # share material dropped


# --- windows and blobs ------------------------------------------------------------------------------
def test_windows_merge_across_jobs(store):
    assert store.get_window(TASK, W0) is None
    for n, (job, deltas) in enumerate([(b"merge-job-00001", {W0: 5, W1: 1}), (b"merge-job-00002", {W0: -2})]):
        store.put_helper_job(job + b"h", TASK, [_helper_row(n)])
        store.finish_helper_job(job + b"h", TASK, {w: _int(v) for w, v in deltas.items()}, _sum_merge)
    w0 = store.get_window(TASK, W0)
    assert (w0.state, w0.accumulator) == ("open", _int(3))
    assert store.get_window(TASK, W1).accumulator == _int(1)
    frozen = store.freeze_collection(TASK, W0, 0, "cid", _int(3), 2, b"c" * 32)
    assert (frozen.accumulator, store.get_window(TASK, W0).state) == (_int(3), "collected")
    # a frozen window takes no more helper reports and no more merges (a leader cannot grow a released batch)
    assert store.put_helper_job(b"merge-job-late1h", TASK, [_helper_row(9)]) == [CLOSED]
    with pytest.raises(WindowClosed):
        store.finish_helper_job(b"merge-job-late1h", TASK, {W0: _int(5)}, _sum_merge)
    assert store.get_window(TASK, W0).accumulator == _int(3)


def test_blobs(store):
    assert store.get_blob("ledger") is None
    store.put_blob("ledger", b"one")
    store.put_blob("ledger", b"two")
    assert store.get_blob("ledger") == b"two"


def test_state_survives_reopen(backend):
    first = backend.open()
    first.put_task(TASK, TaskRecord("{}", 0, b"k" * 16))
    first.put_reports(TASK, [(W0, _report(1))])
    first.close()
    second = backend.open()
    assert second.get_task(TASK).verify_key == b"k" * 16
    assert second.put_reports(TASK, [(W0, _report(1))]) == [REPLAY]


# --- secrets at rest ------------------------------------------------------------------------------------
def test_secret_columns_are_sealed_at_rest(backend, store):
    store.put_task(TASK, TaskRecord("{}", 0, b"VERIFYKEY-SECRET"))
    store.put_reports(TASK, [(W0, _report(1)), (W0, _report(2))])
    (raw_key,) = backend.raw("SELECT verify_key FROM tasks WHERE task_id=%s", (TASK,))[0]
    assert b"VERIFYKEY-SECRET" not in bytes(raw_key) and len(raw_key) == 12 + 16 + 16
    shares = [bytes(r[0]) for r in backend.raw("SELECT leader_share FROM reports ORDER BY report_id", ())]
    assert len(shares) == 2 and not any(b"leader-share" in s for s in shares)


def test_sealed_column_is_bound_to_its_row(backend, store):
    """Moving a sealed share onto another report's row must fail to open (row is in the AD)."""
    store.put_reports(TASK, [(W0, _report(1)), (W0, _report(2))])
    one, two = _report(1).report_id, _report(2).report_id
    (sealed_one,) = backend.raw("SELECT leader_share FROM reports WHERE report_id=%s", (one,))[0]
    backend.raw("UPDATE reports SET leader_share=%s WHERE report_id=%s", (bytes(sealed_one), two))
    with pytest.raises(InvalidTag):
        store.acquire_pending_reports(b"tamper-job-00001", 10)


def test_wrong_datastore_key_cannot_open(backend, store):
    store.put_task(TASK, TaskRecord("{}", 0, b"k" * 16))
    with pytest.raises(InvalidTag):
        backend.open(os.urandom(32)).get_task(TASK)


@pytest.mark.parametrize("bad_key", [b"", b"k" * 31, b"k" * 33])
def test_datastore_key_must_be_32_bytes(tmp_path, bad_key):
    with pytest.raises(ValueError, match="32 bytes"):
        SqliteDatastore(tmp_path / "x.sqlite3", bad_key)
    psycopg_store = pytest.importorskip("twinmpc.services.storage.postgres")
    with pytest.raises(ValueError, match="32 bytes"):
        psycopg_store.PostgresDatastore("postgresql://u@127.0.0.1:1/db", bad_key)


# --- two replicas on one database ---------------------------------------------------------------------------
def _run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test thread
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]


def test_replicas_never_claim_a_report_twice_and_merges_add_up(backend):
    """Two instances, two threads each, claiming small jobs and merging into shared windows."""
    replicas = [backend.open(), backend.open()]
    values = {i: (i * 7919) % 1000 - 300 for i in range(600)}
    windows = (W0, W1, W2)
    rows = [(windows[i % 3], _report(i, windows[i % 3] + 1, v)) for i, v in values.items()]
    for start in range(0, len(rows), 100):
        replicas[start // 100 % 2].put_reports(TASK, rows[start : start + 100])
    claimed: list[list[bytes]] = [[] for _ in range(4)]

    def worker(n: int) -> Callable[[], None]:
        def run() -> None:
            store = replicas[n % 2]
            while True:
                job_id = os.urandom(16)
                got = store.acquire_pending_reports(job_id, 7)
                if got is None:
                    return
                _, reports = got
                claimed[n].extend(r.report_id for r in reports)
                deltas: dict[int, int] = {}
                for r in reports:
                    w = r.time - r.time % 3600
                    deltas[w] = deltas.get(w, 0) + struct.unpack(">q", r.public_share)[0]
                store.finish_leader_job(job_id, TASK, {w: _int(v) for w, v in deltas.items()}, _sum_merge,
                                        [r.report_id for r in reports], [])
        return run

    _run_threads([worker(n) for n in range(4)])
    every = [rid for ids in claimed for rid in ids]
    assert len(every) == len(set(every)) == len(values)  # each report claimed exactly once
    for w in windows:
        expected = sum(v for i, v in values.items() if windows[i % 3] == w)
        assert replicas[0].get_window(TASK, w).accumulator == _int(expected)
        assert replicas[1].count_pending(TASK, w) == 0


def test_replicas_upload_the_same_reports_concurrently(backend):
    replicas = [backend.open(), backend.open()]
    rows = [(W0, _report(i)) for i in range(300)]
    results: list[list[PutOutcome]] = [[], []]

    def upload(n: int) -> Callable[[], None]:
        def run() -> None:
            for start in range(0, len(rows), 20):
                results[n].extend(replicas[n].put_reports(TASK, rows[start : start + 20]))
        return run

    _run_threads([upload(0), upload(1)])
    for i in range(len(rows)):
        assert {results[0][i], results[1][i]} == {OK, REPLAY}


def test_collection_sees_every_report_acknowledged_before_it(backend):
    """Uploads racing a collection: each report is refused, or acknowledged and flushed."""
    uploader, collector = backend.open(), backend.open()
    acknowledged: list[bytes] = []
    closed = threading.Event()
    flushed: list[bytes] = []

    def upload() -> None:
        i = 0
        while not closed.is_set() or i < 4000:
            batch = [(W0, _report(i + k)) for k in range(10)]
            for (_, r), outcome in zip(batch, uploader.put_reports(TASK, batch), strict=True):
                if outcome is OK:
                    acknowledged.append(r.report_id)
                else:
                    assert outcome is CLOSED
            i += 10
            if i > 20000:
                return

    def collect() -> None:
        while len(acknowledged) < 200:
            time.sleep(0.001)
        _, ids = _flush_and_freeze(collector, TASK, W0)
        flushed.extend(ids)
        closed.set()

    _run_threads([upload, collect])
    assert len(acknowledged) >= 200
    assert sorted(flushed) == sorted(acknowledged)


# --- PostgreSQL only ---------------------------------------------------------------------------------------
@pytest.fixture
def pg(postgres_server):
    from twinmpc.services.storage.postgres import PostgresDatastore

    url = postgres_server.create_database()
    key = os.urandom(32)
    store = PostgresDatastore(url, key, password=postgres_server.password)
    yield store, url, postgres_server, key
    store.close()


def test_pg_late_verdicts_do_not_reopen_a_finished_job(pg):
    """A replica that lost the race for a job must not make it runnable again (double count)."""
    store, _, _, _ = pg
    store.put_reports(TASK, [(W0, _report(1))])
    job = b"raced-job-000001"
    store.acquire_pending_reports(job, 10)
    store.update_job_verdicts(job, b"first")
    store.update_job_verdicts(job, b"second")
    assert store.get_unfinished_jobs()[0].verdicts == b"first"
    store.finish_leader_job(job, TASK, {W0: _int(1)}, _sum_merge, [_report(1).report_id], [])
    store.update_job_verdicts(job, b"late")
    assert store.get_unfinished_jobs() == []
    assert store.get_window(TASK, W0).accumulator == _int(1)


def test_pg_transactions_are_named_for_metrics(pg):
    store, _, _, _ = pg
    store.put_blob("a", b"1")
    store.get_blob("a")
    stats = store.transaction_stats()
    assert stats["put_blob"].commits == 1 and stats["get_blob"].commits == 1 and stats["put_blob"].retries == 0


def test_pg_rejects_password_in_url_and_bad_sizes():
    from twinmpc.services.storage.postgres import PostgresDatastore

    key = os.urandom(32)
    with pytest.raises(ValueError, match="password"):
        PostgresDatastore("postgresql://u:hunter2@127.0.0.1/db", key)
    with pytest.raises(ValueError, match="password"):
        PostgresDatastore("host=127.0.0.1 password=hunter2 dbname=db", key)
    with pytest.raises(ValueError, match="pool_size"):
        PostgresDatastore("postgresql://u@127.0.0.1/db", key, pool_size=0)
    with pytest.raises(ValueError, match="max_attempts"):
        PostgresDatastore("postgresql://u@127.0.0.1/db", key, max_attempts=0)
    with pytest.raises(ValueError, match="malformed"):
        PostgresDatastore("postgresql://u@127.0.0.1/db?nonsense_option=1", key)


def test_pg_unreachable_server_is_a_storage_error(postgres_server):
    from twinmpc.services.storage.postgres import PostgresDatastore

    with pytest.raises(StorageError, match="cannot connect") as info:
        PostgresDatastore(postgres_server.url("no_such_database"), os.urandom(32), password=postgres_server.password)
    assert postgres_server.password not in str(info.value)


def test_pg_wrong_password_is_a_storage_error(postgres_server):
    from twinmpc.services.storage.postgres import PostgresDatastore

    with pytest.raises(StorageError, match="cannot connect"):
        PostgresDatastore(postgres_server.url("postgres"), os.urandom(32), password="wrong-password")


def test_pg_refuses_a_newer_schema(pg):
    from twinmpc.services.storage.postgres import PostgresDatastore

    store, url, server, _ = pg
    store._run("bump", lambda cur: cur.execute("UPDATE twinmpc_schema SET version = version + 1"))
    with pytest.raises(StorageError, match="schema version"):
        PostgresDatastore(url, os.urandom(32), password=server.password)


def test_pg_repr_has_no_password(pg):
    store, _, server, _ = pg
    assert server.password not in repr(store) and str(server.port) in repr(store)



def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_pg_collection_waits_for_an_upload_in_flight(pg):
    """Deterministic interleaving: an upload is stalled inside its transaction (a conflicting
    uncommitted insert holds it) when its window is collected; the collection must wait for
    it, and the flush after it must see the report."""
    import psycopg

    from twinmpc.services.storage.postgres import PostgresDatastore

    store, url, server, key = pg
    collector = PostgresDatastore(url, key, password=server.password)
    blocker = psycopg.connect(url, password=server.password)  # not autocommit: holds its transaction
    monitor = psycopg.connect(url, password=server.password, autocommit=True)
    a, x = _report(1), _report(2)
    try:
        blocker.execute(
            "INSERT INTO reports (task_id, report_id, window_start, time, public_share, leader_share, helper_shares) "
            "VALUES (%s,%s,%s,%s,'','','')", (TASK, x.report_id, W0, x.time))
        outcome: list[list[PutOutcome]] = []
        flushed: list[bytes] = []

        def upload() -> None:
            outcome.append(store.put_reports(TASK, [(W0, a), (W0, x)]))

        def collect() -> None:
            flushed.extend(_flush_and_freeze(collector, TASK, W0)[1])

        def waiting(kind: str) -> bool:
            rows = monitor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype=%s", (kind,)).fetchone()
            return rows[0] > 0

        uploader = threading.Thread(target=upload)
        uploader.start()
        _wait_for(lambda: waiting("transactionid"), "the upload to block on the uncommitted insert")
        closer = threading.Thread(target=collect)
        closer.start()
        _wait_for(lambda: waiting("advisory") or not closer.is_alive(), "the collection to block or finish")
        blocker.rollback()  # the upload proceeds and commits
        uploader.join(timeout=20)
        closer.join(timeout=20)
        assert outcome == [[OK, OK]]
        assert sorted(flushed) == sorted([a.report_id, x.report_id])
    finally:
        blocker.close()
        monitor.close()
        collector.close()


def test_pg_connections_closed_by_the_server_are_replaced(pg):
    """A restart or an idle-connection reaper closes pooled connections: the next calls reconnect."""
    import psycopg

    store, url, server, _ = pg
    store.put_blob("before", b"1")
    with psycopg.connect(url, password=server.password, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'twinmpc-aggregator' AND datname = current_database()"
        ).fetchone()[0]
    assert killed >= 1
    store.put_blob("after", b"2")
    assert store.get_blob("before") == b"1" and store.get_blob("after") == b"2"
    assert store.transaction_stats()["put_blob"].retries >= 1


# --- property: upload outcomes follow the reference model -------------------------------------------------
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.lists(st.tuples(st.integers(0, 2), st.integers(0, 7)), max_size=6)),
        st.tuples(st.just("close"), st.integers(0, 2)),
    ),
    max_size=6,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_upload_outcomes_follow_the_model(store, ops):
    """Any interleaving of uploads (with repeats) and collections: ok / replay / window_closed as modelled."""
    task = os.urandom(32)  # one store for all examples: a fresh task keeps them apart
    stored: set[int] = set()
    closed: set[int] = set()
    windows = (W0, W1, W2)
    flushed = 0
    for op, arg in ops:
        if op == "close":
            closed.add(arg)
            flushed += len(_flush_and_freeze(store, task, windows[arg])[1])
            continue
        expected = []
        for w, i in arg:
            if w in closed:
                expected.append(CLOSED)
            elif i in stored:
                expected.append(REPLAY)
            else:
                stored.add(i)
                expected.append(OK)
        assert store.put_reports(task, [(windows[w], _report(i, windows[w] + 1)) for w, i in arg]) == expected
    assert sum(store.count_pending(task, w) for w in windows) + flushed == len(stored)


def test_update_blob_is_atomic_across_replicas(backend):
    """The privacy ledger's read-modify-write: concurrent increments from two replicas all count."""
    replicas = [backend.open(), backend.open()]

    def increment(raw: bytes | None) -> bytes:
        return _int((struct.unpack(">q", raw)[0] if raw else 0) + 1)

    def worker(n: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(25):
                replicas[n % 2].update_blob("counter", increment)
        return run

    _run_threads([worker(n) for n in range(4)])
    assert replicas[0].get_blob("counter") == _int(100)


def test_update_blob_refusal_changes_nothing(store):
    store.put_blob("ledger", b"before")

    def refuse(raw: bytes | None) -> bytes:
        raise ValueError("budget exhausted")

    with pytest.raises(ValueError):
        store.update_blob("ledger", refuse)
    assert store.get_blob("ledger") == b"before"
    assert store.update_blob("fresh", lambda raw: b"new" if raw is None else b"old") == b"new"
