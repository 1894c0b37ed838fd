"""Append-only, hash-chained, Ed25519-signed audit log, verifiable offline.

One entry per line, each line the canonical JSON of one object (sorted keys, no
spaces, UTF-8, no NaN)::

    {"actor":"leader","fields":{"task":"t1"},"key_id":"<16 hex>","kind":"task_created",
     "prev_hash":"<64 hex>","seq":0,"signature":"<128 hex>","time":"2026-11-25T08:44:01.000000Z","v":1}

* ``seq`` counts from 0 with no gaps; ``prev_hash`` is SHA-256 of the previous
  line's bytes (without its newline), 64 zeros for the first entry;
* ``signature`` is Ed25519 (`crypto.signing`, tag ``b"twinmpc/v1/audit-entry"``)
  over the canonical bytes of the entry without its ``signature`` key;
* the entry id returned by `AuditLog.append` is SHA-256 of the full line: the
  next entry's ``prev_hash``, and the decision-log id a collection result cites;
* every ``checkpoint_interval`` entries a ``checkpoint`` entry records
  ``count`` (entries before it) and ``head`` (hash of the entry before it), and
  the same signed line is written atomically to ``<log>.checkpoint``.  Deleting
  whole entries at the end of the log is invisible inside the log itself; the
  sidecar (or a copy of it kept elsewhere) lets `verify_log` detect a log cut
  back past its last checkpoint;
* after every append the *signed head* ``<log>.head`` is rewritten atomically:
  one canonical JSON line ``{"count", "head", "key_id", "v", "signature"}``
  signed with tag ``b"twinmpc/v1/audit-head"``. `verify_log` requires it and
  fails when the log ends before the entry it names or differs there, so
  deleting trailing entries or emptying the file is detected at once. A head
  copied elsewhere earlier (`twinmpc audit head`) proves later that the log
  still extends what was seen then (``verify_log(..., head_path=copy)``).

The log carries metadata only, never a reading or a share: field values are
restricted to short strings, numbers, booleans, null and small lists/objects of
those; bytes and arrays are refused outright.

`crypto.audit_verify.verify_log` re-checks the whole file offline and names
the first bad line.
Appends are fsync-ed before `append` returns; a process holds an exclusive
``flock`` on the file while it is open for writing.  Processes of one service
that share a log (worker processes on one port) open it with ``shared=True``:
each append then takes the ``flock``, re-reads the chain's head from the file
(another process may have appended since), writes, fsyncs and releases it.

Not for: high-rate per-report telemetry (each entry costs a signature and an fsync).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from twinmpc.crypto.errors import CryptoError
from twinmpc.crypto.signing import BadSignature, SigningKey, VerifyKey

__all__ = [
    "AuditLog",
    "AuditLogCorrupt",
    "VerifyResult",
    "verify_log",
    "audit_verify_main",
    "canonical_json",
    "KINDS",
    "DST_AUDIT_ENTRY",
    "DST_AUDIT_HEAD",
    "read_signed_head",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1
DST_AUDIT_ENTRY = b"twinmpc/v1/audit-entry"
DST_AUDIT_HEAD = b"twinmpc/v1/audit-head"
_HEAD_KEYS = frozenset({"v", "count", "head", "key_id", "signature"})
GENESIS_HASH = "0" * 64
CHECKPOINT = "checkpoint"
KINDS = frozenset(
    {
        "task_created",
        "task_changed",
        "task_deleted",
        "key_event",
        "collection",
        "refusal",
        "report_rejected",
        "budget_changed",
        "config_changed",
        CHECKPOINT,
    }
)
DEFAULT_CHECKPOINT_INTERVAL = 100
MAX_STRING = 1024
MAX_LIST = 16
MAX_KEYS = 32
MAX_DEPTH = 2
_ENTRY_KEYS = frozenset({"v", "seq", "time", "kind", "actor", "fields", "key_id", "prev_hash", "signature"})
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class AuditLogCorrupt(CryptoError):
    """The audit log cannot be continued: its tail is torn, foreign or does not verify."""


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, finite numbers only: the bytes that are hashed and signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _hash_line(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _check_value(value: Any, where: str, depth: int) -> None:
    """Metadata only: refuse bytes/arrays and anything long enough to carry a reading vector or a share."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -(1 << 63) <= value < 1 << 63:
            raise ValueError(f"audit field {where}: integer out of int64 range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"audit field {where}: non-finite number")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueError(f"audit field {where}: string longer than {MAX_STRING} characters")
        return
    if depth >= MAX_DEPTH:
        raise ValueError(f"audit field {where}: nested deeper than {MAX_DEPTH}")
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST:
            raise ValueError(f"audit field {where}: list longer than {MAX_LIST} items (no readings or shares)")
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        _check_fields(value, where, depth + 1)
        return
    raise TypeError(
        f"audit field {where}: {type(value).__name__} is not allowed (no bytes, arrays or objects: metadata only)"
    )


def _check_fields(fields: Mapping[str, Any], where: str = "fields", depth: int = 0) -> None:
    if len(fields) > MAX_KEYS:
        raise ValueError(f"audit {where}: more than {MAX_KEYS} keys")
    for key, value in fields.items():
        if not isinstance(key, str) or not _NAME.match(key):
            raise ValueError(f"audit {where}: bad field name {key!r} (lowercase identifier)")
        _check_value(value, f"{where}.{key}" if where != "fields" else key, depth)


def _check_actor(actor: Any) -> None:
    if not isinstance(actor, str) or not 0 < len(actor) <= 128:
        raise ValueError("actor must be a non-empty string of at most 128 characters")


def _format_time(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("audit clock must return timezone-aware datetimes")
    return when.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".checkpoint")


def _head_file(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _signed_head(key: SigningKey, count: int, head: str) -> bytes:
    body = {"v": FORMAT_VERSION, "count": count, "head": head, "key_id": key.key_id}
    return canonical_json({**body, "signature": key.sign(canonical_json(body), dst=DST_AUDIT_HEAD).hex()})


# ----------------------------------------------------------------- writing
class AuditLog:
    """Appender for one log file; use `AuditLog.open` (it locks the file and resumes the chain)."""

    def __init__(
        self,
        path: Path,
        fd: int,
        signing_key: SigningKey,
        next_seq: int,
        head: str,
        checkpoint_interval: int,
        clock: Callable[[], datetime],
        shared: bool = False,
    ) -> None:
        self._path = path
        self._fd: int | None = fd
        self._key = signing_key
        self._seq = next_seq
        self._head = head
        self._interval = checkpoint_interval
        self._clock = clock
        self._lock = threading.Lock()  # the threads of this process; the flock orders processes
        self._shared = shared

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        signing_key: SigningKey,
        *,
        checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL,
        clock: Callable[[], datetime] | None = None,
        shared: bool = False,
    ) -> AuditLog:
        """Open (or create) the log for appending; an existing log continues its chain.

        The last entry must be complete, canonical and signed by `signing_key`
        (AuditLogCorrupt otherwise); run `verify_log` to check the whole chain.
        `shared`: other processes holding the same key append too (each append
        locks the file and continues from its current head); otherwise this
        process holds the file exclusively until `close`.
        """
        if not isinstance(signing_key, SigningKey):
            raise TypeError("signing_key must be a crypto.signing.SigningKey")
        if isinstance(checkpoint_interval, bool) or not isinstance(checkpoint_interval, int) or checkpoint_interval < 1:
            raise ValueError("checkpoint_interval must be a positive int")
        p = Path(path)
        created = not p.exists()
        fd = os.open(p, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        if created:
            _fsync_dir(p.parent)  # the new directory entry survives a crash too
        try:
            _lock_file(fd, p, wait=_SHARED_LOCK_WAIT_SECONDS if shared else 0.0)
            next_seq, head = _resume(fd, p, signing_key.public_key)
        except BaseException:
            os.close(fd)
            raise
        log = cls(p, fd, signing_key, next_seq, head, checkpoint_interval, clock or _utc_now, shared)
        try:
            log._checkpoint_if_due()
            _write_sidecar(_head_file(p), _signed_head(signing_key, log._seq, log._head))  # also repairs a crash after an append
        finally:
            if shared and log._fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return log

    @property
    def path(self) -> Path:
        return self._path

    @property
    def count(self) -> int:
        """Entries in the log (checkpoints included)."""
        return self._seq

    @property
    def head(self) -> str:
        """Hash of the last entry (GENESIS_HASH for an empty log)."""
        return self._head

    def append(self, kind: str, actor: str, **fields: Any) -> str:
        """Sign, write and fsync one entry; return its id (SHA-256 of its line)."""
        if kind not in KINDS or kind == CHECKPOINT:
            raise ValueError(f"unknown audit entry kind {kind!r}; one of {sorted(KINDS - {CHECKPOINT})}")
        _check_actor(actor)
        _check_fields(fields)
        with self._lock:
            if self._fd is None:
                raise ValueError("audit log is closed")
            fd = self._fd
            if self._shared:  # another process may have appended: continue from the file's head
                _lock_file(fd, self._path, wait=_SHARED_LOCK_WAIT_SECONDS)
            try:
                if self._shared:
                    self._seq, self._head = _resume(fd, self._path, self._key.public_key)
                self._write_line(kind, actor, fields)
                entry_id = self._head
                self._checkpoint_if_due()
                _write_sidecar(_head_file(self._path), _signed_head(self._key, self._seq, self._head))
            finally:
                if self._shared and self._fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        return entry_id

    def _checkpoint_if_due(self) -> None:
        """Slot seq = k (N+1) - 1 holds a checkpoint; also filled on reopen after a crash in between."""
        if self._seq % (self._interval + 1) == self._interval:
            line = self._write_line(CHECKPOINT, "audit-log", {"count": self._seq, "head": self._head})
            _write_sidecar(_sidecar(self._path), line)

    def _write_line(self, kind: str, actor: str, fields: Mapping[str, Any]) -> bytes:
        if self._fd is None:
            raise ValueError("audit log is closed")
        entry = {
            "v": FORMAT_VERSION,
            "seq": self._seq,
            "time": _format_time(self._clock()),
            "kind": kind,
            "actor": actor,
            "fields": dict(fields),
            "key_id": self._key.key_id,
            "prev_hash": self._head,
        }
        entry["signature"] = self._key.sign(canonical_json(entry), dst=DST_AUDIT_ENTRY).hex()
        line = canonical_json(entry)
        data = line + b"\n"
        fd = self._fd
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            self.close()  # the tail may be torn: refuse to write after it
            raise
        self._seq += 1
        self._head = _hash_line(line)
        return line

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # also releases the flock

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog(path={str(self._path)!r}, count={self._seq}, key_id={self._key.key_id})"


_SHARED_LOCK_WAIT_SECONDS = 30.0  # an append by another process holds the lock for one fsync or two


def _lock_file(fd: int, path: Path, *, wait: float) -> None:
    """Take the exclusive flock, waiting up to `wait` seconds (0: fail at once if another process holds it)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise AuditLogCorrupt(f"{path} is already open for writing by another process") from None
            time.sleep(0.002)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_sidecar(path: Path, line: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, line + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_last_line(fd: int) -> bytes:
    """The file's last line including its newline (b"" for an empty file), read backwards in blocks."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return b""
    chunk = b""
    pos = end
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        chunk = os.pread(fd, step, pos) + chunk
        cut = chunk.rfind(b"\n", 0, len(chunk) - 1)
        if cut >= 0:
            return chunk[cut + 1 :]
    return chunk


def _resume(fd: int, path: Path, public_key: VerifyKey) -> tuple[int, str]:
    last = _read_last_line(fd)
    if not last:
        return 0, GENESIS_HASH
    if not last.endswith(b"\n"):
        raise AuditLogCorrupt(f"{path}: last line is torn (no newline); verify the log and repair it by hand")
    line = last[:-1]
    problem, entry = _check_line(line, public_key)
    if problem is not None or entry is None:
        raise AuditLogCorrupt(f"{path}: last entry does not verify ({problem}); refusing to continue the chain")
    return entry["seq"] + 1, _hash_line(line)


# ----------------------------------------------------------------- checking one line


def _check_line(line: bytes, public_key: VerifyKey) -> tuple[str | None, dict[str, Any] | None]:
    """Self-contained checks of one line (no chain context): returns (problem, entry)."""
    try:
        entry = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "not valid UTF-8", None
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg} at column {exc.colno})", None
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        return f"entry must have exactly the keys {sorted(_ENTRY_KEYS)}, got {got}", None
    try:
        canonical = canonical_json(entry)
    except ValueError:
        return "entry contains a non-finite number", None
    if canonical != line:
        return "entry bytes are not canonical JSON (altered or re-serialised)", None
    if entry["v"] != FORMAT_VERSION:
        return f"unsupported format version {entry['v']!r}", None
    if entry["key_id"] != public_key.key_id:
        return f"signed by key {entry['key_id']!r}, expected {public_key.key_id}", None
    sig_hex = entry["signature"]
    body = {k: v for k, v in entry.items() if k != "signature"}
    try:
        signature = bytes.fromhex(sig_hex) if isinstance(sig_hex, str) else b""
        public_key.verify(signature, canonical_json(body), dst=DST_AUDIT_ENTRY)
    except (ValueError, BadSignature):
        return "bad signature (entry altered or not signed by this key)", None
    # Signed but still malformed: a buggy or hostile writer holding the key.
    if isinstance(entry["seq"], bool) or not isinstance(entry["seq"], int) or entry["seq"] < 0:
        return "seq must be a non-negative integer", None
    if not isinstance(entry["prev_hash"], str) or not _HEX64.match(entry["prev_hash"]):
        return "prev_hash must be 64 lowercase hex characters", None
    if not isinstance(entry["time"], str) or not _TIME.match(entry["time"]):
        return "time must look like 2026-01-31T12:00:00.000000Z", None
    if entry["kind"] not in KINDS:
        return f"unknown kind {entry['kind']!r}", None
    try:
        _check_actor(entry["actor"])
        if not isinstance(entry["fields"], dict):
            raise ValueError("fields must be an object")
        _check_fields(entry["fields"])
    except (ValueError, TypeError) as exc:
        return str(exc), None
    return None, entry
