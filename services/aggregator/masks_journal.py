"""Durable record of masks rounds in the aggregator's datastore (blob API only).

A round is rebuilt after a restart by replaying what this journal holds into a
fresh `mpc.masks.server.MasksServer`: the accepted messages of each phase in
arrival order, and for each closed phase how many of them it closed with.
Every message is stored before its sender is answered, and a close is stored
after the in-memory close, so a replay closes each phase with exactly the set
it had (the server state machine is deterministic).

Blob names (``{s}`` = ``masks/{task id, base64url}/{window start}/{attempt}``)::

    masks/sessions          live sessions: concatenated 44-byte session encodings
    {s}/status              version | opened_at ms | closes {phase, count, closed_at ms} | outcome | reason
                            | u16 count, identities summed (version 2; kept after the wipe so late retries get an answer)
    {s}/r{phase}/index      identities in arrival order (u8 length + UTF-8 each); emptied once the session ended
    {s}/r{phase}/{h}        the message of the identity whose SHA-256 starts with h (hex, 32 chars); emptied likewise
    masks-window/{task id}/{window start}
                            the window's state for collection (`mpc.masks.mode` encoding)

Blobs hold no secret: masked inputs, sealed shares and revealed shares of
*finished* unmasking are what the server sees anyway.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from twinmpc.mpc.errors import DecodeError
from twinmpc.mpc.masks.session import SESSION_SIZE, Session
from twinmpc.mpc.task import b64encode
from twinmpc.services.storage import Datastore

SESSIONS_BLOB = "masks/sessions"
RUNNING, DONE, ABORTED = 0, 1, 2
_VERSION = 2  # version 1 (no summed identities) is still read


def session_prefix(session: Session) -> str:
    return f"masks/{b64encode(session.task_id)}/{session.window_start}/{session.attempt}"


def window_blob(task_id: bytes, window_start: int) -> str:
    """Where a finished round leaves the window's state for the collection path."""
    return f"masks-window/{b64encode(task_id)}/{window_start}"


@dataclass
class Status:
    opened_at_ms: int
    closes: list[tuple[int, int, int]] = field(default_factory=list)  # (phase, messages it closed with, closed_at ms)
    outcome: int = RUNNING
    reason: str = ""
    summed: frozenset[str] | None = None  # whose inputs a DONE round holds (None: not recorded)

    def encode(self) -> bytes:
        out = [struct.pack(">BQB", _VERSION, self.opened_at_ms, len(self.closes))]
        out += [struct.pack(">BIQ", *c) for c in self.closes]
        reason = self.reason.encode()[:60000]
        out.append(struct.pack(">BH", self.outcome, len(reason)) + reason)
        if self.summed is not None:
            out.append(struct.pack(">H", len(self.summed)) + _pack_identities(sorted(self.summed)))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Status:
        try:
            version, opened, count = struct.unpack_from(">BQB", data, 0)
            if version not in (1, _VERSION):
                raise DecodeError(f"unsupported masks journal version {version}")
            closes = [struct.unpack_from(">BIQ", data, 10 + 13 * i) for i in range(count)]
            pos = 10 + 13 * count
            outcome, length = struct.unpack_from(">BH", data, pos)
            reason = data[pos + 3 : pos + 3 + length]
        except struct.error as exc:
            raise DecodeError("masks journal status is truncated") from exc
        end = pos + 3 + length
        if end > len(data) or (version == 1 and end != len(data)):
            raise DecodeError("masks journal status is truncated or has trailing bytes")
        summed = None
        if end < len(data):
            rest = data[end + 2 :]
            names = _unpack_identities(rest)
            if len(data) < end + 2 or struct.unpack_from(">H", data, end)[0] != len(names) or _pack_identities(names) != rest:
                raise DecodeError("masks journal status has a truncated identity list")
            summed = frozenset(names)
        return cls(opened, [tuple(c) for c in closes], outcome, reason.decode(), summed)

    @property
    def last_event_ms(self) -> int:
        return self.closes[-1][2] if self.closes else self.opened_at_ms


def _pack_identities(names: list[str]) -> bytes:
    return b"".join(bytes([len(raw)]) + raw for raw in (n.encode() for n in names))


def _unpack_identities(data: bytes) -> list[str]:
    out, pos = [], 0
    while pos < len(data):
        n = data[pos]
        out.append(data[pos + 1 : pos + 1 + n].decode())
        pos += 1 + n
    return out


class RoundJournal:
    """The blobs of one session."""

    def __init__(self, store: Datastore, session: Session) -> None:
        self.store = store
        self.session = session
        self.prefix = session_prefix(session)

    def _message_blob(self, phase: int, identity: str) -> str:
        return f"{self.prefix}/r{phase}/{hashlib.sha256(identity.encode()).hexdigest()[:32]}"

    def open(self, now_ms: int) -> Status:
        status = Status(now_ms)
        self.store.put_blob(f"{self.prefix}/status", status.encode())
        self.store.update_blob(SESSIONS_BLOB, lambda old: (old or b"") + self.session.encode())
        return status

    def status(self) -> Status | None:
        raw = self.store.get_blob(f"{self.prefix}/status")
        return None if raw is None else Status.decode(raw)

    def record(self, phase: int, identity: str, data: bytes) -> None:
        """Store an accepted message, then list it (a crash in between leaves it unlisted: the client retries)."""
        self.store.put_blob(self._message_blob(phase, identity), data)
        self.store.update_blob(f"{self.prefix}/r{phase}/index", lambda old: (old or b"") + _pack_identities([identity]))

    def messages(self, phase: int) -> list[tuple[str, bytes]]:
        names = _unpack_identities(self.store.get_blob(f"{self.prefix}/r{phase}/index") or b"")
        out = []
        for name in names:
            data = self.store.get_blob(self._message_blob(phase, name))
            if data is None:
                raise DecodeError(f"masks journal lists a message of {name!r} in phase {phase} that is not stored")
            out.append((name, data))
        return out

    def update_status(self, change: Callable[[Status], None]) -> None:
        def apply(old: bytes | None) -> bytes:
            if old is None:
                raise DecodeError(f"masks journal of {self.session.name} has no status")
            status = Status.decode(old)
            change(status)
            return status.encode()

        self.store.update_blob(f"{self.prefix}/status", apply)

    def wipe(self) -> None:
        """Empty an ended session's messages (the interface has no delete; an empty blob frees its pages).

        Masked inputs are d ring elements per client: kept, they would grow the store by the
        cohort's whole traffic every window.  Only an ended session is wiped; its status stays.
        """
        for phase in range(5):
            index = f"{self.prefix}/r{phase}/index"
            for name in _unpack_identities(self.store.get_blob(index) or b""):
                self.store.put_blob(self._message_blob(phase, name), b"")
            self.store.put_blob(index, b"")

    def finish(self) -> None:
        """Drop the session from the live list (its status keeps the outcome)."""
        mine = self.session.encode()

        def drop(old: bytes | None) -> bytes:
            data = old or b""
            chunks = [data[i : i + SESSION_SIZE] for i in range(0, len(data), SESSION_SIZE)]
            return b"".join(c for c in chunks if c != mine)

        self.store.update_blob(SESSIONS_BLOB, drop)


def live_sessions(store: Datastore) -> list[Session]:
    data = store.get_blob(SESSIONS_BLOB) or b""
    return [Session.decode(data[i : i + SESSION_SIZE]) for i in range(0, len(data), SESSION_SIZE)]


__all__ = ["ABORTED", "DONE", "RUNNING", "RoundJournal", "Status", "live_sessions", "session_prefix", "window_blob"]
