"""The storage interface every aggregator backend implements (janus datastore style).

Uniform verbs (`get_`, `put_`, `update_`, `acquire_`, `finish_`), typed errors,
and every multi-row change inside one transaction, so that a crash at any
point leaves either the old or the new state: that is what makes "an
acknowledged report is counted exactly once" hold across SIGKILL.

A window's collections are durable jobs keyed by (task, window, collection
index): `freeze_collection` fixes the report set (and closes the window to late
reports) only once nothing of the window is still pending; `release_collection`
stores the released bytes together with the privacy-ledger charge in one
transaction and is idempotent, so a retried collection returns the same bytes
and charges once.

Errors::

    StorageError
    ├── NotFound
    ├── AlreadyExists
    ├── WindowClosed   the window was already collected: no late reports
    └── WindowBusy     reports of the window are still pending, or its accumulator moved
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twinmpc.mpc.errors import TwinMpcError

MergeFn = Callable[[bytes | None, bytes], bytes]
BlobUpdate = Callable[[bytes | None], bytes]


# Report states on the leader (both backends store them as integers).
PENDING, IN_JOB, ACCEPTED, REJECTED = 0, 1, 2, 3


def secret_column_ad(table: str, row: bytes, column: str) -> bytes:
    """AEAD associated data of a sealed column: a value cannot move to another row or column."""
    return b"twinmpc/v1/datastore\x00" + table.encode() + b"\x00" + column.encode() + b"\x00" + row


def pack_list(items: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Length-prefixed concatenation (the helpers' sealed shares of one report)."""
    return b"".join(struct.pack(">I", len(i)) + i for i in items)


def unpack_list(data: bytes) -> tuple[bytes, ...]:
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return tuple(out)


class StorageError(TwinMpcError):
    """Base class of storage failures."""


class NotFound(StorageError):
    pass


class AlreadyExists(StorageError):
    pass


class WindowClosed(StorageError):
    pass


class WindowBusy(StorageError):
    """The window cannot be frozen yet: flush its pending reports and try again."""


class PutOutcome(enum.Enum):
    """What storing one uploaded (or helper-side) report did."""

    STORED = "stored"
    REPLAYED = "replayed"  # the report id was stored before: not stored again
    WINDOW_CLOSED = "window_closed"  # the window is frozen for a collection: no late reports


@dataclass(frozen=True)
class TaskRecord:
    task_json: str
    agg_index: int
    verify_key: bytes

    def __repr__(self) -> str:
        return f"TaskRecord(agg_index={self.agg_index}, verify_key=<redacted>)"


@dataclass(frozen=True)
class PendingReport:
    """A leader-side report awaiting aggregation (leader share already opened)."""

    report_id: bytes
    time: int
    public_share: bytes
    leader_share: bytes
    helper_shares: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"PendingReport(id={self.report_id.hex()}, time={self.time})"


@dataclass(frozen=True)
class HelperReportRow:
    report_id: bytes
    time: int
    public_share: bytes
    sealed_share: bytes


@dataclass(frozen=True)
class JobRecord:
    job_id: bytes
    task_id: bytes
    state: str  # "init" | "continuing" | "done"
    report_ids: tuple[bytes, ...]
    verdicts: bytes  # encoded verdict list once state == "continuing"


@dataclass(frozen=True)
class WindowRecord:
    task_id: bytes
    window_start: int
    state: str  # "open" | "collected"
    accumulator: bytes | None


FROZEN, RELEASED = "frozen", "released"


@dataclass(frozen=True)
class CollectionRecord:
    """One collection of a window: frozen (report set fixed) then released (bytes stored)."""

    task_id: bytes
    window_start: int
    index: int
    collection_id: str
    state: str  # FROZEN | RELEASED
    report_count: int
    checksum: bytes
    accumulator: bytes | None  # the frozen batch
    response: bytes | None  # what this aggregator released, byte for byte (once RELEASED)
    audit_pending: bool  # released, but the audit entry may not be written yet

    def __repr__(self) -> str:
        return f"CollectionRecord({self.collection_id}, window={self.window_start}, index={self.index}, {self.state})"


@dataclass
class TxStats:
    """Per transaction name: commits, retried attempts, seconds spent in committed attempts."""

    commits: int = 0
    retries: int = 0
    seconds: float = 0.0


class Datastore(Protocol):
    # tasks (immutable: put_task raises AlreadyExists; update_task is for audited amendments)
    def put_task(self, task_id: bytes, record: TaskRecord) -> None: ...
    def update_task(self, task_id: bytes, record: TaskRecord) -> None: ...
    def get_task(self, task_id: bytes) -> TaskRecord: ...
    def list_tasks(self) -> list[TaskRecord]: ...

    # leader: reports and jobs
    def put_reports(self, task_id: bytes, rows: list[tuple[int, PendingReport]]) -> list[PutOutcome]: ...
    def put_reports_many(self, uploads: list[tuple[bytes, list[tuple[int, PendingReport]]]]) -> list[list[PutOutcome]]: ...
    def acquire_pending_reports(self, job_id: bytes, limit: int) -> tuple[bytes, list[PendingReport]] | None: ...
    def acquire_window_reports(self, job_id: bytes, task_id: bytes, window_start: int, limit: int) -> list[PendingReport]: ...
    def get_job_reports(self, job_id: bytes) -> list[PendingReport]: ...
    def update_job_verdicts(self, job_id: bytes, verdicts: bytes) -> None: ...
    def get_unfinished_jobs(self) -> list[JobRecord]: ...
    def finish_leader_job(
        self, job_id: bytes, task_id: bytes, deltas: dict[int, bytes], merge: MergeFn, accepted: list[bytes], rejected: list[bytes]
    ) -> None: ...

    # helper: replay protection and idempotent jobs
    def put_helper_job(self, job_id: bytes, task_id: bytes, rows: list[tuple[int, HelperReportRow]]) -> list[PutOutcome]: ...
    def get_helper_job_rows(self, job_id: bytes) -> list[tuple[int, HelperReportRow]]: ...
    def get_job_state(self, job_id: bytes) -> str | None: ...
    def finish_helper_job(self, job_id: bytes, task_id: bytes, deltas: dict[int, bytes], merge: MergeFn) -> bool: ...

    # windows
    def get_window(self, task_id: bytes, window_start: int) -> WindowRecord | None: ...
    def count_pending(self, task_id: bytes, window_start: int) -> int: ...

    # collections
    def get_collection(self, task_id: bytes, window_start: int, index: int) -> CollectionRecord | None: ...
    def freeze_collection(
        self, task_id: bytes, window_start: int, index: int, collection_id: str, expected_accumulator: bytes | None,
        report_count: int, checksum: bytes, snapshot: bytes | None = None,
    ) -> CollectionRecord: ...
    def release_collection(
        self, task_id: bytes, window_start: int, index: int, response: bytes, ledger: str, charge: BlobUpdate | None,
    ) -> tuple[CollectionRecord, bool]: ...
    def update_collection_audited(self, task_id: bytes, window_start: int, index: int) -> None: ...

    # key/value for small durable state (privacy ledger, HPKE keys metadata)
    def get_blob(self, name: str) -> bytes | None: ...
    def put_blob(self, name: str, value: bytes) -> None: ...
    def update_blob(self, name: str, update: Callable[[bytes | None], bytes]) -> bytes: ...

    # job leases: a leader job is driven by the process that claimed it (or took it over once
    # its lease expired unrenewed); `get_unfinished_jobs` returns only such jobs and leases them
    def renew_job_lease(self, job_id: bytes) -> bool: ...
    def count_unaggregated(self) -> int: ...

    # data lifecycle: one short transaction per call, deleting at most `limit` rows of windows
    # that start before `before` (the task's retention horizon); the count deleted
    def delete_expired_reports(self, task_id: bytes, before: int, limit: int) -> int: ...
    def delete_expired_helper_reports(self, task_id: bytes, before: int, limit: int) -> int: ...
    def delete_finished_jobs(self, task_id: bytes, limit: int, helper_blob_prefix: str) -> int: ...
    def delete_expired_windows(self, task_id: bytes, before: int, limit: int) -> int: ...

    # operations: commits, retries and time per transaction name since the store was opened
    # (the aggregator exports them as Prometheus counters)
    def transaction_stats(self) -> dict[str, TxStats]: ...

    def close(self) -> None: ...
