"""The identity of one round: (task, window, attempt), and the binding every key and message carries."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property

from twinmpc.mpc.masks.errors import MalformedMessage

SESSION_SIZE = 32 + 8 + 4
_DST = b"twinmpc/v1/masks/session\x00"


@dataclass(frozen=True)
class Session:
    """One run of the protocol for a task's window; a retry after an abort is a new attempt."""

    task_id: bytes
    window_start: int
    attempt: int = 0

    def __post_init__(self) -> None:
        if len(self.task_id) != 32:
            raise ValueError("task_id must be 32 bytes")
        if not 0 <= self.window_start < 1 << 64 or not 0 <= self.attempt < 1 << 32:
            raise ValueError("window_start must fit in 64 bits and attempt in 32 bits")

    def encode(self) -> bytes:
        return self.task_id + struct.pack(">QI", self.window_start, self.attempt)

    @classmethod
    def decode(cls, data: bytes) -> Session:
        if len(data) != SESSION_SIZE:
            raise MalformedMessage(f"session is {len(data)} bytes, expected {SESSION_SIZE}")
        window_start, attempt = struct.unpack(">QI", data[32:])
        return cls(bytes(data[:32]), window_start, attempt)

    @cached_property
    def digest(self) -> bytes:
        """32-byte binder used in PRG, KDF and MAC inputs (SHA-256 of the encoding, domain-separated)."""
        return hashlib.sha256(_DST + self.encode()).digest()

    @cached_property
    def graph_seed(self) -> bytes:
        """Public seed of the neighbour graph: fixed by the session before anyone advertises."""
        return hashlib.sha256(b"twinmpc/v1/masks/graph-seed\x00" + self.encode()).digest()

    @property
    def name(self) -> str:
        """Printable id for logs and storage keys (no secret in it)."""
        return f"{self.task_id.hex()[:16]}/{self.window_start}/{self.attempt}"


__all__ = ["SESSION_SIZE", "Session"]
