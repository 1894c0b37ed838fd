"""Checking an audit log offline: the whole chain, its checkpoint sidecar and its signed head.

The format and the writer are in `crypto.audit_log`; this module only reads.
`verify_log` names the first bad line: torn last line, invalid UTF-8/JSON,
non-canonical bytes, foreign key id, bad signature, out-of-order or missing
sequence number, broken hash chain, malformed fields, inconsistent checkpoint,
or truncation behind the sidecar or the signed head.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from twinmpc.crypto.audit_log import (
    _HEAD_KEYS,
    _HEX64,
    CHECKPOINT,
    DST_AUDIT_HEAD,
    GENESIS_HASH,
    AuditLogCorrupt,
    _check_line,
    _hash_line,
    _head_file,
    _sidecar,
    canonical_json,
)
from twinmpc.crypto.signing import BadSignature, VerifyKey


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
