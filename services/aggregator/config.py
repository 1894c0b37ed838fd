"""Aggregator configuration: typed, rejects unknown keys, secrets only from files.

Example (``aggregator.toml``)::

    listen = "127.0.0.1:7001"
    data_dir = "/var/lib/twinmpc/agg1"     # SQLite store, HPKE and datastore keys
    identity = "agg1"
    # optional: share one PostgreSQL database between replicas (default: SQLite in data_dir)
    # database_url = "postgresql://twinmpc@db.internal:5432/twinmpc"
    # database_password_env = "TWINMPC_DB_PASSWORD"   # the password only ever from the environment

    [tls]
    cert = "pki/agg1.crt"
    key = "pki/agg1.key"
    ca = "pki/ca.crt"

    [limits]
    max_message_bytes = 16777216
    upload_rate_per_second = 20000
    upload_burst = 40000
    collect_rate_per_second = 10
    collect_burst = 20
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from twinmpc.mpc.errors import InvalidTask
from twinmpc.services.listen import ListenAddress


class TlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cert: Path
    key: Path
    ca: Path


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1 << 30)
    upload_rate_per_second: int = Field(50_000, ge=1)
    upload_burst: int = Field(100_000, ge=1)
    collect_rate_per_second: int = Field(20, ge=1)
    collect_burst: int = Field(40, ge=1)
    job_size: int = Field(2000, ge=1, le=100_000)
    peer_timeout_seconds: float = Field(30.0, gt=0)
    # a leader job is leased to the replica driving it; another takes it over once the lease expires unrenewed
    job_lease_seconds: float = Field(60.0, gt=0)
    # garbage collector: how often it passes, and the most rows one of its transactions deletes
    gc_interval_seconds: float = Field(60.0, gt=0)
    gc_batch_rows: int = Field(1000, ge=1, le=100_000)
    # backpressure: uploads are refused (RESOURCE_EXHAUSTED, retry-after-ms) while the leader's backlog
    # of unaggregated reports exceeds max_pending_reports or, if set, max_backlog_seconds of work at the
    # measured aggregation rate
    max_pending_reports: int = Field(200_000, ge=1)
    max_backlog_seconds: float | None = Field(None, gt=0)
    # group commit: how long an upload waits for others to share its transaction (and fsync)
    commit_delay_ms: float = Field(2.0, ge=0, le=10_000)
    # the job driver waits this long after new reports before starting a job (larger jobs, fewer commits)
    job_delay_ms: float = Field(20.0, ge=0, le=10_000)
    # aggregation jobs the leader runs at once (its work on one overlaps the helpers' on another)
    concurrent_jobs: int = Field(2, ge=1, le=64)
    # worker processes that open HPKE-sealed shares of large batches (0: one per core)
    share_open_workers: int = Field(0, ge=0, le=64)


class AggregatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    listen: ListenAddress = "127.0.0.1:0"
    data_dir: Path
    identity: str = "aggregator"
    tls: TlsConfig
    limits: Limits = Limits()
    hpke_suite: str = "x25519-hkdf-sha256-aes128gcm"
    log_level: str = "INFO"
    metrics_listen: ListenAddress | None = None  # e.g. "127.0.0.1:9464": Prometheus GET /metrics
    database_url: str | None = None  # postgresql://user@host:port/db (docs/storage.md); None: SQLite in data_dir
    database_password_env: str | None = None  # name of the environment variable holding the database password
    # processes serving this aggregator's port (SO_REUSEPORT): each is a replica sharing data_dir and
    # the database, so uploads, jobs and collections use every core; masks rounds need workers = 1
    workers: int = Field(1, ge=1, le=64)

    @field_validator("database_url")
    @classmethod
    def _no_secret_in_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise ValueError("must not carry a password; name an environment variable in database_password_env")
        return url

    def database_password(self) -> str | None:
        """The database password from the environment variable `database_password_env` names."""
        if self.database_password_env is None:
            return None
        value = os.environ.get(self.database_password_env)
        if value is None:
            raise ConfigError(f"database_password_env: environment variable {self.database_password_env} is not set")
        return value


class ConfigError(InvalidTask):
    """A configuration file failed validation; the message names the key."""


def load_aggregator_config(path: str | Path) -> AggregatorConfig:
    """Parse and validate an aggregator TOML file; relative paths resolve against it."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    base = path.parent
    for section, keys in (("tls", ("cert", "key", "ca")),):
        for k in keys:
            if isinstance(doc.get(section), dict) and k in doc[section]:
                doc[section][k] = str(base / doc[section][k])
    if "data_dir" in doc:
        doc["data_dir"] = str(base / doc["data_dir"])
    try:
        return AggregatorConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    """Every validation error on one line, each naming its key."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def render_aggregator_config(
    *,
    identity: str,
    listen: str,
    pki_dir: str,
    data_dir: str,
    metrics_listen: str | None = None,
    database_url: str | None = None,
    database_password_env: str | None = None,
) -> str:
    """A commented aggregator TOML for `twinmpc aggregator init-config`.

    Paths are written as given (relative ones resolve against the file's
    folder when it is loaded).  The text is validated by parsing it back, so
    a file this writes always starts an aggregator as far as config goes.
    """

    def q(value: str) -> str:
        return json.dumps(value)  # a TOML basic string is a JSON string for these values

    pki = pki_dir.rstrip("/") or "."
    lines = [
        f"# Aggregator {identity}: written by `twinmpc aggregator init-config`; all keys: examples/aggregator.toml.",
        "# Run with:  twinmpc aggregator serve --config <this file>",
        "# Relative paths resolve against this file's folder.",
        "",
        f"listen = {q(listen)}",
        f"data_dir = {q(data_dir)}    # SQLite store, HPKE key, datastore key, audit log (created 0600/0700)",
        f"identity = {q(identity)}",
        'hpke_suite = "x25519-hkdf-sha256-aes128gcm"   # or "mlkem768x25519-hkdf-sha256-aes128gcm" (post-quantum hybrid)',
        'log_level = "INFO"',
        "# workers = 2                       # processes serving this port, one per core (docs/operations.md; masks tasks need 1)",
    ]
    if metrics_listen:
        lines.append(f"metrics_listen = {q(metrics_listen)}   # Prometheus GET /metrics (plain HTTP: loopback or a monitoring network)")
    else:
        lines.append('# metrics_listen = "127.0.0.1:9464"   # Prometheus GET /metrics (plain HTTP: loopback or a monitoring network)')
    if database_url:
        lines.append(f"database_url = {q(database_url)}   # replicas share it (docs/storage.md)")
        if database_password_env:
            lines.append(f"database_password_env = {q(database_password_env)}   # the password only ever from the environment")
    else:
        lines.append('# database_url = "postgresql://twinmpc@db.internal:5432/twinmpc"   # replicas share one database (docs/storage.md)')
        lines.append('# database_password_env = "TWINMPC_DB_PASSWORD"')
    lines += [
        "",
        f"[tls]                               # twinmpc pki issue --dir {pki} --role aggregator --identity {identity}",
        f"cert = {q(f'{pki}/{identity}.crt')}",
        f"key = {q(f'{pki}/{identity}.key')}",
        f"ca = {q(f'{pki}/ca.crt')}",
        "",
        "[limits]                            # defaults shown; see examples/aggregator.toml",
        "# upload_rate_per_second = 50000    # per edge certificate",
        "# collect_rate_per_second = 20      # per controller certificate",
        "",
    ]
    text = "\n".join(lines)
    try:
        AggregatorConfig.model_validate({**tomllib.loads(text), "data_dir": data_dir})
    except ValidationError as exc:
        raise ConfigError(f"the values given do not make a valid config: {_problems(exc)}") from None
    except tomllib.TOMLDecodeError as exc:  # e.g. a line break in a value that is also written in a comment
        raise ConfigError(f"the values given do not make a valid config: {exc}") from None
    return text
