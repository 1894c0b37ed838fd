"""Connections to PostgreSQL and the retrying transaction every PostgreSQL datastore call runs in.

A small fixed pool built in (no extra dependency): connections open lazily,
broken ones are dropped. `ConnectionPool.run` runs one named READ COMMITTED
transaction; deadlocks the lock manager breaks (40P01), serialization failures
(40001) and connections lost before COMMIT are retried, and commits, retries
and time are counted per transaction name for metrics.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from twinmpc.services.storage.base import StorageError, TxStats

log = logging.getLogger("twinmpc.storage.postgres")

T = TypeVar("T")

_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


class Transact(Protocol):
    """`ConnectionPool.run`'s signature, for the code that only runs transactions through it."""

    def __call__(self, name: str, body: Callable[[psycopg.Cursor], T], /) -> T: ...


class ConnectionPool:
    """Thread-safe pool of at most `pool_size` connections to one database.

    `url` is a libpq URL or conninfo without a password; the password comes from
    `password` or from libpq's own PGPASSWORD / .pgpass.
    """

    def __init__(self, url: str, *, password: str | None, pool_size: int, max_attempts: int, connect_timeout: int) -> None:
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
        # host:port/dbname, for messages and repr (never the password)
        self.where = f"{params.get('host', 'local')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
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

    def __repr__(self) -> str:
        return f"ConnectionPool({self.where!r})"

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._url, **self._connect_kwargs)
        except psycopg.OperationalError as exc:
            raise StorageError(f"cannot connect to PostgreSQL at {self.where}: {str(exc).strip().splitlines()[-1]}") from None
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

    def run(self, name: str, body: Callable[[psycopg.Cursor], T]) -> T:
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

    def stats(self) -> dict[str, TxStats]:
        """A copy of the commits, retries and time per transaction name."""
        with self._stats_lock:
            return {k: TxStats(v.commits, v.retries, v.seconds) for k, v in self._stats.items()}

    def close(self) -> None:
        """Close the idle connections; those in use close when returned, and no new call starts."""
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
