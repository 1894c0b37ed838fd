"""Durable store-and-forward outbox of an edge node (SQLite, WAL, synchronous=FULL).

Invariants, the edge's half of DESIGN's "an acknowledged report is never lost,
never counted twice":

* A report is committed to disk **before** any upload attempt and deleted only
  after the aggregator acknowledged it, so an outage or a crash loses nothing.
* One report per (task, window, node): the ``windows`` ledger has that primary
  key and the report id is ``HMAC-SHA256(node_key, label || task_id ||
  window_start)[:16]``, so a restart can never put a second, different report
  id into a window, and a resend after a lost acknowledgement is dropped by the
  aggregators' replay check (the same id).
* Bounded: at ``max_reports`` pending reports a new window is **refused**
  (:class:`OutboxFull`; the caller logs an error and raises the
  ``outbox_full`` alarm); queued reports are never evicted silently.
* A permanent rejection moves the report to ``dead_letter`` with its reason.

The node key lives next to the database in ``node.key`` with mode 0600 (the
directory is 0700); a key file readable by group or others is refused.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from secrets import SystemRandom
from typing import Any, Protocol

from twinmpc.mpc.errors import DecodeError, TwinMpcError
import grpc

from twinmpc.mpc.report import REPORT_ID_SIZE, Report
from twinmpc.services.client import UploadOutcome

__all__ = [
    "DrainResult",
    "NODE_KEY_SIZE",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "OutboxFull",
    "OutcomeKind",
    "Uploader",
    "WindowAlreadyReported",
    "backoff_delay",
    "classify_outcome",
    "drain_once",
    "report_id_for",
    "retry_after_seconds",
]

log = logging.getLogger("twinmpc.edge.outbox")

NODE_KEY_SIZE = 32
_REPORT_ID_LABEL = b"twinmpc/edge/v1/report-id"
_SCHEMA_VERSION = 1


class OutboxError(TwinMpcError):
    """The outbox cannot do what was asked (base of the outbox errors)."""


class OutboxFull(OutboxError):
    """``max_reports`` reports are pending: the new window is refused, not queued."""


class WindowAlreadyReported(OutboxError):
    """The ledger already holds a report for this (task, window)."""


class Uploader(Protocol):
    """What the outbox needs from an upload client (`services.client.UploadClient`).

    Returns one outcome per report, in order: accepted, rejected with a
    permanent reason (REPLAYED, INVALID, STALE), or not accepted and not
    permanent (retry).  A transport failure raises (``grpc.RpcError``,
    ``OSError``) and the whole batch is retried.
    """

    async def upload_batch(self, task_id: bytes, reports: list[Report]) -> list[UploadOutcome]: ...


class OutcomeKind(enum.Enum):
    ACCEPTED = "accepted"
    REPLAYED = "replayed"
    REJECTED = "rejected"
    TRANSIENT = "transient"


def classify_outcome(outcome: UploadOutcome) -> tuple[OutcomeKind, str]:
    """Map an upload outcome to what the outbox does with the report.

    REPLAYED for *our* report id means an earlier attempt reached the
    aggregator (only this node holds the key that derives the id; the answer
    was lost), so it is settled as delivered, not dead-lettered.
    """
    if not isinstance(outcome, UploadOutcome):
        raise TypeError(f"expected an UploadOutcome, got {type(outcome).__name__}")
    if outcome.accepted:
        return OutcomeKind.ACCEPTED, "ACCEPTED"
    reason = f"{outcome.status}: {outcome.message}" if outcome.message else outcome.status
    if outcome.status == "REPLAYED":
        return OutcomeKind.REPLAYED, reason
    if outcome.permanent:
        return OutcomeKind.REJECTED, reason
    return OutcomeKind.TRANSIENT, reason


def report_id_for(node_key: bytes, task_id: bytes, window_start: int) -> bytes:
    """Deterministic report id of this node's report for (task, window)."""
    if len(node_key) != NODE_KEY_SIZE:
        raise ValueError(f"node key must be {NODE_KEY_SIZE} bytes")
    msg = _REPORT_ID_LABEL + len(task_id).to_bytes(2, "big") + task_id + window_start.to_bytes(8, "big", signed=False)
    return hmac.new(node_key, msg, hashlib.sha256).digest()[:REPORT_ID_SIZE]


def backoff_delay(attempts: int, initial: float, maximum: float, rand: Callable[[], float]) -> float:
    """Exponential backoff with "equal jitter": uniform in [d/2, d], d = min(max, initial*2^(n-1))."""
    if attempts < 1:
        raise ValueError("attempts starts at 1")
    d = min(maximum, initial * 2.0 ** min(attempts - 1, 62))
    return d / 2 + (d / 2) * rand()


@dataclass(frozen=True)
class OutboxEntry:
    """One pending report as stored (payload is the canonical Report encoding)."""

    report_id: bytes
    task_id: bytes
    window_start: int
    stream: str
    payload: bytes
    readings: int
    attempts: int
    next_attempt_at: float

    def __repr__(self) -> str:
        return (
            f"OutboxEntry(report_id={self.report_id.hex()}, stream={self.stream!r}, "
            f"window_start={self.window_start}, attempts={self.attempts}, bytes={len(self.payload)})"
        )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    task_id BLOB NOT NULL,
    window_start INTEGER NOT NULL,
    report_id BLOB,
    status TEXT NOT NULL CHECK (status IN ('pending', 'acked', 'dead', 'refused')),
    readings INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (task_id, window_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    report_id BLOB PRIMARY KEY,
    task_id BLOB NOT NULL,
    window_start INTEGER NOT NULL,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL,
    readings INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at);
CREATE TABLE IF NOT EXISTS open_windows (
    stream TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (stream, window_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letter (
    report_id BLOB PRIMARY KEY,
    task_id BLOB NOT NULL,
    window_start INTEGER NOT NULL,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL,
    readings INTEGER NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL
);
"""


def _load_or_create_key(path: Path, rand: Callable[[int], bytes]) -> bytes:
    """Load the node key, or create it atomically (temp file, fsync, hard link: never half-written)."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, rand(NODE_KEY_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process created the key meanwhile: use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise OutboxError(f"{path}: permissions {oct(st.st_mode & 0o777)}, the node key needs 0600")
    key = path.read_bytes()
    if len(key) != NODE_KEY_SIZE:
        raise OutboxError(f"{path}: node key must be {NODE_KEY_SIZE} bytes, found {len(key)}")
    return key


class Outbox:
    """The SQLite outbox plus the node key; one instance per agent process."""

    DB_NAME = "outbox.sqlite3"
    KEY_NAME = "node.key"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_reports: int,
        clock: Callable[[], float] = time.time,
        rand: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if max_reports < 1:
            raise ValueError("max_reports must be at least 1")
        self.dir = Path(directory)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._node_key = _load_or_create_key(self.dir / self.KEY_NAME, rand)
        self.max_reports = max_reports
        self._clock = clock
        # One event loop drives the outbox; it may be built on another thread (tests,
        # CLI start-up), never used from two at once.
        self._db = sqlite3.connect(self.dir / self.DB_NAME, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(_SCHEMA_VERSION),))
        elif row[0] != str(_SCHEMA_VERSION):
            raise OutboxError(f"outbox schema {row[0]} is not {_SCHEMA_VERSION}")

    def __repr__(self) -> str:
        return f"Outbox(dir={str(self.dir)!r}, max_reports={self.max_reports}, node_key=<redacted>)"

    # -- transactions -----------------------------------------------------
    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _tx(self) -> "Outbox._Tx":
        return Outbox._Tx(self._db)

    def close(self) -> None:
        self._db.close()

    # -- identity ---------------------------------------------------------
    def report_id(self, task_id: bytes, window_start: int) -> bytes:
        """This node's deterministic report id for (task, window)."""
        return report_id_for(self._node_key, task_id, window_start)

    def derive_key(self, label: bytes) -> bytes:
        """A sub-key of the node key for another purpose (e.g. contributor pseudonyms)."""
        return hmac.new(self._node_key, b"twinmpc/edge/v1/derive/" + label, hashlib.sha256).digest()

    # -- ledger -----------------------------------------------------------
    def window_status(self, task_id: bytes, window_start: int) -> str | None:
        row = self._db.execute(
            "SELECT status FROM windows WHERE task_id = ? AND window_start = ?", (task_id, window_start)
        ).fetchone()
        return None if row is None else row[0]

    def put(self, task_id: bytes, window_start: int, report: Report, *, stream: str, readings: int) -> None:
        """Store a window's report durably before any upload; refuse when full or already reported."""
        if report.report_id != self.report_id(task_id, window_start):
            raise ValueError("report id is not this node's id for (task, window)")
        now = self._clock()
        with self._tx() as db:
            if db.execute(
                "SELECT 1 FROM windows WHERE task_id = ? AND window_start = ?", (task_id, window_start)
            ).fetchone():
                raise WindowAlreadyReported(f"window {window_start} of task {task_id.hex()[:16]} already has a report")
            (pending,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            refused: OutboxFull | None = None
            if pending >= self.max_reports:  # committed: the ledger remembers the refusal
                db.execute(
                    "INSERT INTO windows VALUES (?, ?, NULL, 'refused', ?, ?)", (task_id, window_start, readings, now)
                )
                refused = OutboxFull(f"outbox holds {pending} pending reports (max_reports={self.max_reports})")
            else:
                db.execute(
                    "INSERT INTO windows VALUES (?, ?, ?, 'pending', ?, ?)",
                    (task_id, window_start, report.report_id, readings, now),
                )
                db.execute(
                    "INSERT INTO outbox (report_id, task_id, window_start, stream, payload, readings, created_at, "
                    "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (report.report_id, task_id, window_start, stream, report.encode(), readings, now, now),
                )
        if refused is not None:
            raise refused

    def refuse(self, task_id: bytes, window_start: int, *, readings: int) -> None:
        """Record in the ledger that a window was refused (so it is never reported later)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO windows VALUES (?, ?, NULL, 'refused', ?, ?)",
                (task_id, window_start, readings, self._clock()),
            )

    # -- queue ------------------------------------------------------------
    def due(self, now: float, limit: int) -> list[OutboxEntry]:
        rows = self._db.execute(
            "SELECT report_id, task_id, window_start, stream, payload, readings, attempts, next_attempt_at "
            "FROM outbox WHERE next_attempt_at <= ? ORDER BY next_attempt_at, window_start LIMIT ?",
            (now, limit),
        ).fetchall()
        return [OutboxEntry(*r) for r in rows]

    def entries(self) -> list[OutboxEntry]:
        rows = self._db.execute(
            "SELECT report_id, task_id, window_start, stream, payload, readings, attempts, next_attempt_at "
            "FROM outbox ORDER BY window_start"
        ).fetchall()
        return [OutboxEntry(*r) for r in rows]

    def pending(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return n

    def ack(self, entries: Iterable[OutboxEntry], *, status: str = "acked") -> None:
        """Delete acknowledged reports; the ledger keeps (task, window) -> acked."""
        now = self._clock()
        with self._tx() as db:
            for e in entries:
                db.execute("DELETE FROM outbox WHERE report_id = ?", (e.report_id,))
                db.execute(
                    "UPDATE windows SET status = ?, updated_at = ? WHERE task_id = ? AND window_start = ?",
                    (status, now, e.task_id, e.window_start),
                )

    def retry(self, entry: OutboxEntry, *, error: str, delay: float) -> None:
        now = self._clock()
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE report_id = ?",
                (now + delay, error[:200], entry.report_id),
            )

    def dead_letter(self, entry: OutboxEntry, *, reason: str) -> None:
        """Move a permanently rejected report aside with the reason; it is not retried."""
        now = self._clock()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO dead_letter VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.report_id,
                    entry.task_id,
                    entry.window_start,
                    entry.stream,
                    entry.payload,
                    entry.readings,
                    reason[:200],
                    entry.attempts + 1,
                    now,
                ),
            )
            db.execute("DELETE FROM outbox WHERE report_id = ?", (entry.report_id,))
            db.execute(
                "UPDATE windows SET status = 'dead', updated_at = ? WHERE task_id = ? AND window_start = ?",
                (now, entry.task_id, entry.window_start),
            )

    def dead_letters(self) -> list[tuple[bytes, int, str, str]]:
        """(report_id, window_start, stream, reason) of every dead letter."""
        return self._db.execute(
            "SELECT report_id, window_start, stream, reason FROM dead_letter ORDER BY window_start"
        ).fetchall()

    def windows(self) -> list[tuple[bytes, int, str, int]]:
        """(task_id, window_start, status, readings) of the ledger."""
        return self._db.execute(
            "SELECT task_id, window_start, status, readings FROM windows ORDER BY task_id, window_start"
        ).fetchall()

    # -- open windows across a graceful restart ----------------------------
    def save_open_windows(self, states: Iterable[tuple[str, int, str]]) -> None:
        """Replace the saved open-window states with (stream, window_start, JSON state)."""
        with self._tx() as db:
            db.execute("DELETE FROM open_windows")
            db.executemany("INSERT INTO open_windows VALUES (?, ?, ?)", list(states))

    def open_windows(self) -> list[tuple[str, int, str]]:
        return self._db.execute("SELECT stream, window_start, state FROM open_windows ORDER BY stream, window_start").fetchall()

    def forget_open_window(self, stream: str, window_start: int) -> None:
        """A window closed: its saved state (if any) must not be restored again."""
        with self._tx() as db:
            db.execute("DELETE FROM open_windows WHERE stream = ? AND window_start = ?", (stream, window_start))

    def prune(self, older_than: float) -> int:
        """Forget settled ledger rows of windows that started before ``older_than``."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM windows WHERE window_start < ? AND status != 'pending'", (int(older_than),)
            )
            return cur.rowcount


_TRANSIENT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"gRPC {exc.code().name}"
    return type(exc).__name__


def retry_after_seconds(exc: BaseException) -> float | None:
    """The ``retry-after-ms`` trailer of a refusal (rate limit, leader backlog), if the server sent one."""
    if not (isinstance(exc, grpc.RpcError) and hasattr(exc, "trailing_metadata")):
        return None
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after-ms":
            try:
                return max(0, int(value)) / 1000
            except ValueError:
                return None
    return None


def _looks_transient(exc: BaseException) -> bool:
    """An outage (retry quietly) rather than a refusal an operator must fix (log an error)."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code() in _TRANSIENT_CODES
    return True


@dataclass
class DrainResult:
    """What one pass over the due reports did."""

    accepted: int = 0
    replayed: int = 0
    dead: int = 0
    retried: int = 0
    readings_acked: int = 0


async def drain_once(
    outbox: Outbox,
    uploader: Uploader,
    *,
    now: float,
    batch_size: int,
    retry_initial: float,
    retry_max: float,
    jitter: Callable[[], float] = SystemRandom().random,
    transient_errors: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, grpc.RpcError),
) -> DrainResult:
    """Upload due reports, one batch per task; settle each by its outcome.

    Any exception in ``transient_errors`` from ``upload_batch`` (the aggregator
    or the network is down, a gRPC status) reschedules the whole batch with
    backoff: nothing is dropped on a transport error, even one a configuration
    fix must cure (unknown task, refused certificate), which is logged as such.
    """
    result = DrainResult()
    entries = outbox.due(now, batch_size)
    by_task: dict[bytes, list[OutboxEntry]] = {}
    for e in entries:
        by_task.setdefault(e.task_id, []).append(e)
    for task_id, batch in by_task.items():
        reports: list[Report] = []
        sendable: list[OutboxEntry] = []
        for e in batch:
            try:
                reports.append(Report.decode(e.payload))
                sendable.append(e)
            except DecodeError as exc:
                log.error("outbox entry %s does not decode (%s); dead-lettered", e.report_id.hex(), exc)
                outbox.dead_letter(e, reason=f"corrupt: {exc}")
                result.dead += 1
        if not sendable:
            continue
        try:
            outcomes = await uploader.upload_batch(task_id, reports)
        except transient_errors as exc:
            what = _describe(exc)
            hinted = retry_after_seconds(exc)  # the leader said when: come back then, spread over half as long again
            for e in sendable:
                delay = backoff_delay(e.attempts + 1, retry_initial, retry_max, jitter) if hinted is None else hinted * (1 + jitter() / 2)
                outbox.retry(e, error=what, delay=delay)
            result.retried += len(sendable)
            level = logging.WARNING if _looks_transient(exc) else logging.ERROR
            log.log(level, "upload of %d reports failed (%s); retrying with backoff", len(sendable), what)
            continue
        if len(outcomes) != len(sendable):
            raise OutboxError(f"uploader answered {len(outcomes)} outcomes for {len(sendable)} reports")
        acked: list[OutboxEntry] = []
        replayed: list[OutboxEntry] = []
        for e, outcome in zip(sendable, outcomes):
            kind, reason = classify_outcome(outcome)
            if kind is OutcomeKind.ACCEPTED:
                acked.append(e)
            elif kind is OutcomeKind.REPLAYED:
                replayed.append(e)
            elif kind is OutcomeKind.REJECTED:
                log.error("report %s of window %d rejected: %s (dead-lettered)", e.report_id.hex(), e.window_start, reason)
                outbox.dead_letter(e, reason=reason)
                result.dead += 1
            else:
                outbox.retry(e, error=reason, delay=backoff_delay(e.attempts + 1, retry_initial, retry_max, jitter))
                result.retried += 1
        if acked:
            outbox.ack(acked)
        if replayed:
            log.info("%d reports were already held by the aggregator (replay of our id): settled", len(replayed))
            outbox.ack(replayed, status="acked")
        result.accepted += len(acked)
        result.replayed += len(replayed)
        result.readings_acked += sum(e.readings for e in acked + replayed)
    return result
