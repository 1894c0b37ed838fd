"""The report a client uploads, and its canonical byte encoding.

Encoding (version 1, big-endian lengths)::

    u8  version = 1
    16  report_id          (also the VDAF nonce)
    u64 time               (unix seconds)
    u32 len | public_share
    u8  K
    K x (u32 len | sealed input share)

Decoding rejects unknown versions, truncation and trailing bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from twinmpc.mpc.errors import DecodeError

REPORT_ID_SIZE = 16
_VERSION = 1
MAX_PART = 1 << 28


@dataclass(frozen=True)
class Report:
    report_id: bytes
    time: int
    public_share: bytes
    sealed_shares: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.report_id) != REPORT_ID_SIZE:
            raise DecodeError(f"report id must be {REPORT_ID_SIZE} bytes")
        if not 0 <= self.time < 1 << 63:
            raise DecodeError("report time out of range")
        if not 1 <= len(self.sealed_shares) <= 255:
            raise DecodeError("a report carries 1..255 sealed shares")

    def __repr__(self) -> str:
        return f"Report(id={self.report_id.hex()}, time={self.time}, shares={len(self.sealed_shares)})"

    def encode(self) -> bytes:
        parts = [struct.pack(">B16sQI", _VERSION, self.report_id, self.time, len(self.public_share)), self.public_share]
        parts.append(bytes([len(self.sealed_shares)]))
        for s in self.sealed_shares:
            parts.append(struct.pack(">I", len(s)))
            parts.append(s)
        return b"".join(parts)

    def share_for(self, agg_index: int) -> ReportShare:
        """What aggregator `agg_index` receives of this report."""
        return ReportShare(self.report_id, self.time, self.public_share, self.sealed_shares[agg_index])

    @classmethod
    def decode(cls, data: bytes) -> Report:
        view = memoryview(data)
        if len(view) < 29:
            raise DecodeError("report truncated")
        version, report_id, time, plen = struct.unpack_from(">B16sQI", view, 0)
        if version != _VERSION:
            raise DecodeError(f"unknown report encoding version {version}")
        pos = 29
        public_share, pos = _take(view, pos, plen)
        if pos >= len(view):
            raise DecodeError("report truncated before share count")
        count = view[pos]
        pos += 1
        shares = []
        for _ in range(count):
            if pos + 4 > len(view):
                raise DecodeError("report truncated in share length")
            (slen,) = struct.unpack_from(">I", view, pos)
            share, pos = _take(view, pos + 4, slen)
            shares.append(share)
        if pos != len(view):
            raise DecodeError("trailing bytes after report")
        return cls(report_id, time, public_share, tuple(shares))


def _take(view: memoryview, pos: int, n: int) -> tuple[bytes, int]:
    if n > MAX_PART or pos + n > len(view):
        raise DecodeError("report field length exceeds the message")
    return bytes(view[pos : pos + n]), pos + n


@dataclass(frozen=True)
class ReportShare:
    """One aggregator's view of a report: the public parts and only its own sealed input share.

    Leader and helpers open their shares the same way (`mpc.aggregator.open_report_share`).
    """

    report_id: bytes
    time: int
    public_share: bytes
    sealed_share: bytes

    def __repr__(self) -> str:
        return f"ReportShare(id={self.report_id.hex()}, time={self.time})"
