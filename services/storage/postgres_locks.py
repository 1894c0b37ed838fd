"""Per-window advisory locks: how late uploads and a collection of their window stay apart.

Writers into a window (leader uploads, the helper's job insert) hold its lock
shared while they check that the window is open and insert; closing the window
for a collection takes it exclusively, so it waits for every writer already
inside. Afterwards every writer sees the window closed. Locks are taken in
ascending key order, so writers locking several windows never deadlock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import psycopg


def window_lock_key(task_id: bytes, window_start: int) -> int:
    """A signed 64-bit advisory-lock key for one window (a collision only adds waiting)."""
    digest = hashlib.blake2b(task_id + window_start.to_bytes(8, "big", signed=True), digest_size=8,
                             person=b"twinmpc-window").digest()
    return int.from_bytes(digest, "big", signed=True)


def share_window_locks(cur: psycopg.Cursor, windows: Iterable[tuple[bytes, int]]) -> None:
    """Hold the (task id, window start) windows' locks shared until the transaction ends."""
    keys = sorted({window_lock_key(task_id, w) for task_id, w in windows})
    if keys:  # ascending: one lock order for every writer
        cur.execute("SELECT pg_advisory_xact_lock_shared(k) FROM unnest(%s::bigint[]) AS k", (keys,))


def lock_window(cur: psycopg.Cursor, task_id: bytes, window_start: int) -> None:
    """Hold one window's lock exclusively until the transaction ends (waits for its writers)."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (window_lock_key(task_id, window_start),))
