"""The PostgreSQL schema: tables and indexes, what was added to them since, and their version.

Every replica creates the schema when it starts. The statements are idempotent,
but replicas starting together would still race on the catalog, so creation
runs under one advisory lock; a database whose recorded version is not this
build's is refused instead of being read with the wrong layout.
"""

from __future__ import annotations

import psycopg

from twinmpc.services.storage.base import StorageError

SCHEMA_VERSION = 2
_SCHEMA_LOCK = 0x74776E6D70630001  # advisory key: one replica creates the schema at a time

_TABLES = """
CREATE TABLE IF NOT EXISTS twinmpc_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id BYTEA PRIMARY KEY, task_json TEXT NOT NULL, agg_index INTEGER NOT NULL, verify_key BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    task_id BYTEA NOT NULL, report_id BYTEA NOT NULL, window_start BIGINT NOT NULL, time BIGINT NOT NULL,
    public_share BYTEA NOT NULL, leader_share BYTEA NOT NULL, helper_shares BYTEA NOT NULL,
    state SMALLINT NOT NULL DEFAULT 0, job_id BYTEA,
    PRIMARY KEY (task_id, report_id));
CREATE INDEX IF NOT EXISTS reports_pending ON reports (task_id, window_start, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS reports_open ON reports (task_id, window_start) WHERE state IN (0, 1);
CREATE INDEX IF NOT EXISTS reports_job ON reports (job_id) WHERE job_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS jobs (
    job_id BYTEA PRIMARY KEY, task_id BYTEA NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL, verdicts BYTEA);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (job_id) WHERE role = 'leader' AND state <> 'done';
CREATE TABLE IF NOT EXISTS helper_reports (
    task_id BYTEA NOT NULL, report_id BYTEA NOT NULL, job_id BYTEA NOT NULL, window_start BIGINT NOT NULL,
    time BIGINT NOT NULL, public_share BYTEA NOT NULL, sealed_share BYTEA NOT NULL,
    PRIMARY KEY (task_id, report_id));
CREATE INDEX IF NOT EXISTS helper_reports_job ON helper_reports (job_id);
CREATE TABLE IF NOT EXISTS windows (
    task_id BYTEA NOT NULL, window_start BIGINT NOT NULL, state TEXT NOT NULL DEFAULT 'open',
    accumulator BYTEA,
    PRIMARY KEY (task_id, window_start));
CREATE TABLE IF NOT EXISTS collections (
    task_id BYTEA NOT NULL, window_start BIGINT NOT NULL, idx INTEGER NOT NULL, collection_id TEXT NOT NULL,
    state TEXT NOT NULL, report_count BIGINT NOT NULL, checksum BYTEA NOT NULL, accumulator BYTEA,
    response BYTEA, audit_pending BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (task_id, window_start, idx));
CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
"""

# Added after the first release (job leases, the garbage collector's indexes): brings an
# older database up to date in place, and does nothing on one created by `_TABLES` above.
_MIGRATIONS = """
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS lease_owner BYTEA;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS lease_expires TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS reports_settled ON reports (task_id, window_start) WHERE state >= 2;
CREATE INDEX IF NOT EXISTS helper_reports_window ON helper_reports (task_id, window_start);
CREATE INDEX IF NOT EXISTS jobs_done ON jobs (task_id) WHERE state = 'done';
"""


def create_schema(cur: psycopg.Cursor) -> None:
    """Create or update the schema inside the caller's transaction; a foreign version raises StorageError."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
    cur.execute(_TABLES)
    cur.execute(_MIGRATIONS)
    cur.execute("SELECT version FROM twinmpc_schema")
    row = cur.fetchone()
    if row is None:
        cur.execute("INSERT INTO twinmpc_schema VALUES (%s)", (SCHEMA_VERSION,))
    elif row[0] != SCHEMA_VERSION:
        raise StorageError(f"database schema version {row[0]}, this build needs {SCHEMA_VERSION}")
