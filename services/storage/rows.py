"""Stored rows into records, the same way for every backend.

Both backends select the same columns in the same order, so one conversion
serves both: values come back as bytes, memoryview or None depending on the
driver, and a boolean column as an integer on SQLite; the records always hold
bytes and bools.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from twinmpc.services.storage.base import CollectionRecord, HelperReportRow, WindowRecord

# The row shape `ColumnSealer.pending_reports` opens.
REPORT_COLUMNS = "report_id, time, public_share, leader_share, helper_shares"
HELPER_ROW_COLUMNS = "window_start, report_id, time, public_share, sealed_share"
COLLECTION_COLUMNS = "collection_id, state, report_count, checksum, accumulator, response, audit_pending"


def _blob(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def collection_record(task_id: bytes, window_start: int, index: int, row: Sequence | None) -> CollectionRecord | None:
    """A row of `COLLECTION_COLUMNS` (or None, for no row) as a record."""
    if row is None:
        return None
    return CollectionRecord(
        task_id, window_start, index, row[0], row[1], row[2], bytes(row[3]), _blob(row[4]), _blob(row[5]), bool(row[6])
    )


def window_record(task_id: bytes, window_start: int, row: Sequence | None) -> WindowRecord | None:
    """A row of (state, accumulator) (or None, for no row) as a record."""
    return None if row is None else WindowRecord(task_id, window_start, row[0], _blob(row[1]))


def helper_rows(rows: Iterable[Sequence]) -> list[tuple[int, HelperReportRow]]:
    """Rows of `HELPER_ROW_COLUMNS` as (window start, row) pairs."""
    return [(w, HelperReportRow(rid, t, ps, ss)) for w, rid, t, ps, ss in rows]
