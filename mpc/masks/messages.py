"""Canonical, versioned byte encodings of every round message (no pickle, no protobuf inside).

Every message starts with ``version (u8, = 1) || kind (u8) || session (44 bytes:
task_id || window_start u64 || attempt u32)``; integers are big-endian; lists
carry a u32 count; decoders reject unknown versions or kinds, wrong lengths,
unsorted or repeated indices and trailing bytes (`MalformedMessage`).  gRPC
only frames these bytes.

=====  ==============  ==========  ==================================================
kind   message         direction   body
=====  ==============  ==========  ==================================================
1      Advertise       C -> S      identity (u8 len) | credential (u16 len) | mask public key (32) | self-mask commitment (32)
2      Roster          S -> C      n (u32) | index (u32) | count | {index (u32) | identity (u8 len) | credential (u16 len)}
3      ShareKeys       C -> S      sender (u32) | count | {receiver (u32) | sealed share (142)}
4      Forward         S -> C      receiver (u32) | count | {sender (u32) | sealed share (142)}
5      MaskedInput     C -> S      sender (u32) | length (u32) | Z/2^64 vector (8 per element, little-endian)
6      Survivors       S -> C      n (u32) | bitmap (ceil(n/8), bit i-1 = client i, LSB first)
7      Confirm         C -> S      sender (u32) | count | {receiver (u32) | HMAC-SHA256 (32)}
8      UnmaskRequest   S -> C      receiver (u32) | n | bitmap | count | {sender | tag (32)} | count | {survivor} | count | {dropped}
9      Unmask          C -> S      sender (u32) | count | {peer (u32) | kind (u8: 1 self-mask seed, 2 mask key) | x (u16) | 5 Field64}
=====  ==============  ==========  ==================================================

A sealed share opens to ``mask public key (32) | x (u16) | 10 Field64``: the
sender's authenticated mask key and the receiver's Shamir share of
(self-mask seed || mask key).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from twinmpc.crypto import ring
from twinmpc.mpc.masks.channel import MAC_SIZE, NONCE_SIZE, SECRET_ELEMENTS, TAG_SIZE
from twinmpc.mpc.masks.errors import MalformedMessage
from twinmpc.mpc.masks.session import SESSION_SIZE, Session

VERSION = 1
SHARE_PLAINTEXT_SIZE = 32 + 2 + 2 * SECRET_ELEMENTS * 8
SEALED_SHARE_SIZE = NONCE_SIZE + SHARE_PLAINTEXT_SIZE + TAG_SIZE
REVEALED_SHARE_SIZE = 2 + SECRET_ELEMENTS * 8
SELF_MASK_SEED = 1
MASK_KEY = 2
MAX_IDENTITY = 255
MAX_CREDENTIAL = 65535


class _Reader:
    """Bounds-checked cursor over untrusted bytes."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(bytes(data))
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.view):
            raise MalformedMessage("message is truncated")
        out = self.view[self.pos : self.pos + n].tobytes()
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def identity(self) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessage("identity is not UTF-8") from exc

    def count(self, item_size: int) -> int:
        n = self.u32()
        if n * item_size > len(self.view) - self.pos:
            raise MalformedMessage("list count exceeds the message")
        return n

    def indices(self) -> tuple[int, ...]:
        out = tuple(self.u32() for _ in range(self.count(4)))
        _check_sorted(out)
        return out

    def finish(self) -> None:
        if self.pos != len(self.view):
            raise MalformedMessage(f"{len(self.view) - self.pos} trailing bytes")


def _check_sorted(indices: tuple[int, ...] | list[int]) -> None:
    if any(i < 1 for i in indices) or any(a >= b for a, b in zip(indices, indices[1:])):
        raise MalformedMessage("client indices must be >= 1, strictly increasing")


def _identity_bytes(identity: str) -> bytes:
    raw = identity.encode("utf-8")
    if not raw or len(raw) > MAX_IDENTITY:
        raise ValueError(f"identity must be 1..{MAX_IDENTITY} UTF-8 bytes")
    return bytes([len(raw)]) + raw


def _credential_bytes(credential: bytes) -> bytes:
    if len(credential) > MAX_CREDENTIAL:
        raise ValueError("credential too long")
    return struct.pack(">H", len(credential)) + credential


def encode_bitmap(n: int, members: frozenset[int] | set[int]) -> bytes:
    bits = np.zeros(n, dtype=bool)
    idx = np.fromiter(members, dtype=np.int64, count=len(members))
    if idx.size and (idx.min() < 1 or idx.max() > n):
        raise ValueError("member outside 1..n")
    bits[idx - 1] = True
    return struct.pack(">I", n) + np.packbits(bits, bitorder="little").tobytes()


def _read_bitmap(r: _Reader) -> tuple[int, frozenset[int]]:
    n = r.u32()
    raw = r.take((n + 7) // 8)
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    if bits[n:].any():
        raise MalformedMessage("bitmap has bits set beyond n")
    return n, frozenset(int(i) + 1 for i in np.flatnonzero(bits[:n]))


@dataclass(frozen=True)
class Message:
    KIND: ClassVar[int]
    session: Session

    def _body(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        return bytes([VERSION, self.KIND]) + self.session.encode() + self._body()

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> Message:
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes) -> Message:
        """Parse untrusted bytes as this message kind; `MalformedMessage` on any defect."""
        r = _Reader(data)
        version, kind = r.u8(), r.u8()
        if version != VERSION:
            raise MalformedMessage(f"unsupported masks message version {version}")
        if kind != cls.KIND:
            raise MalformedMessage(f"expected a {cls.__name__} message (kind {cls.KIND}), got kind {kind}")
        session = Session.decode(r.take(SESSION_SIZE))
        msg = cls._read(session, r)
        r.finish()
        return msg


@dataclass(frozen=True)
class Advertise(Message):
    KIND: ClassVar[int] = 1
    identity: str
    credential: bytes
    mask_public_key: bytes
    self_mask_commitment: bytes

    def __post_init__(self) -> None:
        if len(self.mask_public_key) != 32 or len(self.self_mask_commitment) != 32:
            raise ValueError("mask public key and commitment are 32 bytes")

    def _body(self) -> bytes:
        return _identity_bytes(self.identity) + _credential_bytes(self.credential) + self.mask_public_key + self.self_mask_commitment

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> Advertise:
        identity = r.identity()
        credential = r.take(r.u16())
        return cls(session, identity, credential, r.take(32), r.take(32))


@dataclass(frozen=True)
class RosterEntry:
    index: int
    identity: str
    credential: bytes


@dataclass(frozen=True)
class Roster(Message):
    KIND: ClassVar[int] = 2
    n: int
    index: int
    neighbours: tuple[RosterEntry, ...]

    def _body(self) -> bytes:
        out = [struct.pack(">III", self.n, self.index, len(self.neighbours))]
        for e in self.neighbours:
            out += [struct.pack(">I", e.index), _identity_bytes(e.identity), _credential_bytes(e.credential)]
        return b"".join(out)

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> Roster:
        n, index = r.u32(), r.u32()
        entries = []
        for _ in range(r.count(4 + 1 + 2)):
            i = r.u32()
            identity = r.identity()
            entries.append(RosterEntry(i, identity, r.take(r.u16())))
        _check_sorted([e.index for e in entries])
        return cls(session, n, index, tuple(entries))


def _pairs(r: _Reader, size: int) -> tuple[tuple[int, bytes], ...]:
    out = tuple((r.u32(), r.take(size)) for _ in range(r.count(4 + size)))
    _check_sorted([i for i, _ in out])
    return out


def _pairs_bytes(pairs: tuple[tuple[int, bytes], ...]) -> bytes:
    return struct.pack(">I", len(pairs)) + b"".join(struct.pack(">I", i) + b for i, b in pairs)


@dataclass(frozen=True)
class ShareKeys(Message):
    KIND: ClassVar[int] = 3
    sender: int
    sealed: tuple[tuple[int, bytes], ...]  # (receiver, sealed share), receivers increasing

    def _body(self) -> bytes:
        return struct.pack(">I", self.sender) + _pairs_bytes(self.sealed)

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> ShareKeys:
        return cls(session, r.u32(), _pairs(r, SEALED_SHARE_SIZE))


@dataclass(frozen=True)
class Forward(Message):
    KIND: ClassVar[int] = 4
    receiver: int
    sealed: tuple[tuple[int, bytes], ...]  # (sender, sealed share), senders increasing

    def _body(self) -> bytes:
        return struct.pack(">I", self.receiver) + _pairs_bytes(self.sealed)

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> Forward:
        return cls(session, r.u32(), _pairs(r, SEALED_SHARE_SIZE))


@dataclass(frozen=True)
class MaskedInput(Message):
    KIND: ClassVar[int] = 5
    sender: int
    vector: np.ndarray = field(repr=False, compare=False)

    def _body(self) -> bytes:
        return struct.pack(">II", self.sender, self.vector.shape[0]) + ring.encode(self.vector)

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> MaskedInput:
        sender = r.u32()
        length = r.count(ring.ELEMENT_SIZE)
        return cls(session, sender, ring.decode(r.take(length * ring.ELEMENT_SIZE), length))


@dataclass(frozen=True)
class Survivors(Message):
    KIND: ClassVar[int] = 6
    n: int
    members: frozenset[int]

    def _body(self) -> bytes:
        return encode_bitmap(self.n, self.members)

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> Survivors:
        n, members = _read_bitmap(r)
        return cls(session, n, members)


@dataclass(frozen=True)
class Confirm(Message):
    KIND: ClassVar[int] = 7
    sender: int
    tags: tuple[tuple[int, bytes], ...]  # (receiver, tag)

    def _body(self) -> bytes:
        return struct.pack(">I", self.sender) + _pairs_bytes(self.tags)

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> Confirm:
        return cls(session, r.u32(), _pairs(r, MAC_SIZE))


@dataclass(frozen=True)
class UnmaskRequest(Message):
    KIND: ClassVar[int] = 8
    receiver: int
    n: int
    members: frozenset[int]  # the survivor set U3
    tags: tuple[tuple[int, bytes], ...]  # (sender, tag addressed to the receiver)
    survivors: tuple[int, ...]  # peers whose self-mask seed share is asked for
    dropped: tuple[int, ...]  # peers whose mask-key share is asked for

    def _body(self) -> bytes:
        def ints(xs: tuple[int, ...]) -> bytes:
            return struct.pack(f">I{len(xs)}I", len(xs), *xs)

        return (
            struct.pack(">I", self.receiver) + encode_bitmap(self.n, self.members) + _pairs_bytes(self.tags)
            + ints(self.survivors) + ints(self.dropped)
        )

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> UnmaskRequest:
        receiver = r.u32()
        n, members = _read_bitmap(r)
        return cls(session, receiver, n, members, _pairs(r, MAC_SIZE), r.indices(), r.indices())


@dataclass(frozen=True)
class RevealedShare:
    peer: int
    kind: int  # SELF_MASK_SEED or MASK_KEY
    share: bytes = field(repr=False)  # x (u16) || 5 Field64 elements

    def __repr__(self) -> str:
        return f"RevealedShare(peer={self.peer}, kind={self.kind}, share=<redacted>)"


@dataclass(frozen=True)
class Unmask(Message):
    KIND: ClassVar[int] = 9
    sender: int
    shares: tuple[RevealedShare, ...]  # peers increasing

    def _body(self) -> bytes:
        return struct.pack(">II", self.sender, len(self.shares)) + b"".join(
            struct.pack(">IB", s.peer, s.kind) + s.share for s in self.shares
        )

    @classmethod
    def _read(cls, session: Session, r: _Reader) -> Unmask:
        sender = r.u32()
        shares = []
        for _ in range(r.count(5 + REVEALED_SHARE_SIZE)):
            peer, kind = r.u32(), r.u8()
            if kind not in (SELF_MASK_SEED, MASK_KEY):
                raise MalformedMessage(f"unknown share kind {kind}")
            shares.append(RevealedShare(peer, kind, r.take(REVEALED_SHARE_SIZE)))
        _check_sorted([s.peer for s in shares])
        return cls(session, sender, tuple(shares))


CLIENT_MESSAGES: dict[int, type[Message]] = {m.KIND: m for m in (Advertise, ShareKeys, MaskedInput, Confirm, Unmask)}
SERVER_MESSAGES: dict[int, type[Message]] = {m.KIND: m for m in (Roster, Forward, Survivors, UnmaskRequest)}

__all__ = [
    "MASK_KEY",
    "SEALED_SHARE_SIZE",
    "SELF_MASK_SEED",
    "Advertise",
    "Confirm",
    "Forward",
    "MaskedInput",
    "Message",
    "RevealedShare",
    "Roster",
    "RosterEntry",
    "ShareKeys",
    "Survivors",
    "Unmask",
    "UnmaskRequest",
    "encode_bitmap",
]
