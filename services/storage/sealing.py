"""Secret columns, sealed the same way by every backend.

A sealed value is ``nonce (12) || AES-256-GCM(datastore key)`` with the table,
the row key and the column bound as associated data, so a value copied into
another row or column fails to open. One format for SQLite and PostgreSQL means
a sealed column can move between them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from twinmpc.services.storage.base import PendingReport, TaskRecord, secret_column_ad, unpack_list


class ColumnSealer:
    """Seal and open secret columns under one datastore key."""

    def __init__(self, datastore_key: bytes) -> None:
        if len(datastore_key) != 32:
            raise ValueError("datastore key must be 32 bytes")
        self._aead = AESGCM(datastore_key)

    def __repr__(self) -> str:
        return "ColumnSealer(<redacted>)"

    def seal(self, table: str, row: bytes, column: str, value: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, value, secret_column_ad(table, row, column))

    def open(self, table: str, row: bytes, column: str, value: bytes) -> bytes:
        value = bytes(value)
        return self._aead.decrypt(value[:12], value[12:], secret_column_ad(table, row, column))

    def seal_verify_key(self, task_id: bytes, record: TaskRecord) -> bytes:
        """The task's verify key as stored in its row."""
        return self.seal("tasks", task_id, "verify_key", record.verify_key)

    def task_record(self, task_id: bytes, task_json: str, agg_index: int, sealed_key: bytes) -> TaskRecord:
        """A tasks row (its verify key sealed) as a record."""
        return TaskRecord(task_json, agg_index, self.open("tasks", task_id, "verify_key", sealed_key))

    def seal_leader_share(self, task_id: bytes, report: PendingReport) -> bytes:
        """The leader's opened input share of a report as stored in its row."""
        return self.seal("reports", task_id + report.report_id, "leader_share", report.leader_share)

    def pending_reports(self, task_id: bytes, rows: Iterable[tuple]) -> list[PendingReport]:
        """Rows of (report_id, time, public_share, sealed leader_share, packed helper_shares)."""
        return [
            PendingReport(bytes(rid), t, bytes(ps), self.open("reports", task_id + bytes(rid), "leader_share", ls), unpack_list(bytes(hs)))
            for rid, t, ps, ls, hs in rows
        ]
