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

`verify_log` re-checks the whole file offline and names the first bad line:
torn last line, invalid UTF-8/JSON, non-canonical bytes, foreign key id, bad
signature, out-of-order or missing sequence number, broken hash chain,
malformed fields, inconsistent checkpoint, or truncation behind the sidecar.
Appends are fsync-ed before `append` returns; a process holds an exclusive
``flock`` on the file while it is open for writing.

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
    ) -> None:
        self._path = path
        self._fd: int | None = fd
        self._key = signing_key
        self._seq = next_seq
        self._head = head
        self._interval = checkpoint_interval
        self._clock = clock
        self._lock = threading.Lock()  # one writer process (flock), possibly several threads

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        signing_key: SigningKey,
        *,
        checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL,
        clock: Callable[[], datetime] | None = None,
    ) -> AuditLog:
        """Open (or create) the log for appending; an existing log continues its chain.

        The last entry must be complete, canonical and signed by `signing_key`
        (AuditLogCorrupt otherwise); run `verify_log` to check the whole chain.
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
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditLogCorrupt(f"{p} is already open for writing by another process") from None
            next_seq, head = _resume(fd, p, signing_key.public_key)
        except BaseException:
            os.close(fd)
            raise
        log = cls(p, fd, signing_key, next_seq, head, checkpoint_interval, clock or _utc_now)
        log._checkpoint_if_due()
        _write_sidecar(_head_file(p), _signed_head(signing_key, log._seq, log._head))  # also repairs a crash after an append
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
            self._write_line(kind, actor, fields)
            entry_id = self._head
            self._checkpoint_if_due()
            _write_sidecar(_head_file(self._path), _signed_head(self._key, self._seq, self._head))
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


# ----------------------------------------------------------------- verifying
@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `verify_log`: ok, how far the chain holds, and where and why it breaks."""

    ok: bool
    entries: int
    head: str
    last_checkpoint_seq: int | None
    bad_line: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            cp = "none" if self.last_checkpoint_seq is None else f"seq {self.last_checkpoint_seq}"
            return f"{self.entries} entries verified, last checkpoint {cp}, head {self.head}"
        if self.bad_line is None:
            return self.reason
        return f"line {self.bad_line}: {self.reason}"


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


def verify_log(
    path: str | os.PathLike[str],
    public_key: VerifyKey,
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    head_path: str | os.PathLike[str] | None = None,
) -> VerifyResult:
    """Check the whole chain offline; the result names the first bad line (1-based) and why.

    `checkpoint_path` defaults to ``<log>.checkpoint`` when that file exists. The log's
    own signed head ``<log>.head`` must exist and be matched; `head_path` is an extra
    head kept elsewhere earlier, which the log must still extend.
    """
    p = Path(path)
    data = p.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline (or is empty)
    head = GENESIS_HASH
    last_cp: int | None = None

    def fail(index: int, reason: str) -> VerifyResult:
        return VerifyResult(False, index, head, last_cp, index + 1, reason)

    for index, line in enumerate(lines):
        problem, entry = _check_line(line, public_key)
        if problem is not None or entry is None:
            return fail(index, problem or "unreadable entry")
        if entry["seq"] != index:
            return fail(index, f"sequence number {entry['seq']}, expected {index} (entry missing, duplicated or reordered)")
        if entry["prev_hash"] != head:
            return fail(index, f"prev_hash does not match the hash of line {index} (chain broken)")
        if entry["kind"] == CHECKPOINT:
            f = entry["fields"]
            if set(f) != {"count", "head"} or f["count"] != index or f["head"] != head:
                return fail(index, "checkpoint count/head do not match the entries before it")
            last_cp = index
        head = _hash_line(line)
    if torn:
        return fail(len(lines), "last line is torn (no trailing newline): incomplete write or truncation")

    side = Path(checkpoint_path) if checkpoint_path is not None else _sidecar(p)
    if checkpoint_path is not None or side.exists():
        anchor = _check_sidecar(side, public_key)
        if isinstance(anchor, str):
            return VerifyResult(False, len(lines), head, last_cp, None, anchor)
        seq, anchor_line = anchor
        if seq >= len(lines):
            return VerifyResult(
                False, len(lines), head, last_cp, len(lines) + 1,
                f"log truncated: checkpoint {side.name} records entry seq {seq} but the log ends after "
                f"{len(lines)} entries",
            )
        if lines[seq] != anchor_line:
            return VerifyResult(
                False, len(lines), head, last_cp, seq + 1, f"line {seq + 1} differs from the checkpoint in {side.name}"
            )
    for where in (_head_file(p), *( [Path(head_path)] if head_path is not None else [])):
        problem = _check_extends(where, lines, public_key)
        if problem is not None:
            return VerifyResult(False, len(lines), head, last_cp, None, problem)
    return VerifyResult(True, len(lines), head, last_cp)


def read_signed_head(path: str | os.PathLike[str], public_key: VerifyKey) -> tuple[int, str]:
    """(count, head hash) of a signed head file; `AuditLogCorrupt` if it is missing, altered or foreign."""
    where = Path(path)
    try:
        raw = where.read_bytes()
    except OSError as exc:
        raise AuditLogCorrupt(f"signed head {where} cannot be read ({exc.strerror}): the log may have been truncated or replaced") from None
    try:
        if not raw.endswith(b"\n") or raw.count(b"\n") != 1:
            raise ValueError("must hold exactly one line")
        doc = json.loads(raw[:-1])
        if not isinstance(doc, dict) or set(doc) != _HEAD_KEYS or canonical_json(doc) != raw[:-1]:
            raise ValueError("not a canonical signed head")
        if doc["key_id"] != public_key.key_id:
            raise ValueError(f"signed by key {doc['key_id']!r}, expected {public_key.key_id}")
        body = {k: v for k, v in doc.items() if k != "signature"}
        public_key.verify(bytes.fromhex(doc["signature"]), canonical_json(body), dst=DST_AUDIT_HEAD)
        count, head = doc["count"], doc["head"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0 or not isinstance(head, str) or not _HEX64.match(head):
            raise ValueError("count or head malformed")
    except (ValueError, BadSignature, UnicodeDecodeError) as exc:
        raise AuditLogCorrupt(f"signed head {where.name} does not verify: {exc}") from None
    return count, head


def _check_extends(where: Path, lines: list[bytes], public_key: VerifyKey) -> str | None:
    """None if the log holds the entry the signed head names (it may hold more), else why not."""
    try:
        count, head = read_signed_head(where, public_key)
    except AuditLogCorrupt as exc:
        return str(exc)
    if count > len(lines):
        return f"log truncated: the signed head {where.name} records {count} entries but the log holds {len(lines)}"
    at = GENESIS_HASH if count == 0 else _hash_line(lines[count - 1])
    if at != head:
        return f"the log does not extend the signed head {where.name}: entry {count} differs from the one it signed"
    return None


def _check_sidecar(side: Path, public_key: VerifyKey) -> tuple[int, bytes] | str:
    try:
        raw = side.read_bytes()
    except OSError as exc:
        return f"cannot read checkpoint file {side}: {exc.strerror}"
    if not raw.endswith(b"\n") or raw.count(b"\n") != 1:
        return f"checkpoint file {side.name} must hold exactly one line"
    line = raw[:-1]
    problem, entry = _check_line(line, public_key)
    if problem is not None or entry is None:
        return f"checkpoint file {side.name}: {problem}"
    if entry["kind"] != CHECKPOINT:
        return f"checkpoint file {side.name} holds a {entry['kind']!r} entry"
    return entry["seq"], line


def audit_verify_main(log_path: str, public_key_path: str, head_path: str | None = None) -> tuple[int, str]:
    """CLI body of ``twinmpc audit verify``: exit 0 if the log verifies, 1 if it does not, 2 on unusable input."""
    try:
        key = VerifyKey.load(public_key_path)
    except (OSError, ValueError) as exc:
        return 2, f"cannot read public key {public_key_path}: {exc}"
    try:
        result = verify_log(log_path, key, head_path=head_path)
    except OSError as exc:
        return 2, f"cannot read audit log {log_path}: {exc.strerror or exc}"
    if result.ok:
        return 0, f"OK {log_path}: {result.describe()} (key {key.key_id})"
    return 1, f"FAILED {log_path}: {result.describe()}"
