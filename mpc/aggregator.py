"""Aggregator role: open a sealed share, verify jointly, accumulate a window.

Pure protocol code; the gRPC servicers call these and persist the results.
Verification (draft-irtf-cfrg-vdaf-18 Section 5.2) runs in one round:

1. every aggregator j: ``open_input_share`` then ``verify_init`` -> verifier share
   (``verify_init_many`` for a whole aggregation job at once)
2. leader: ``verifier_message`` over all K verifier shares (raises on reject;
   ``verifier_messages`` for many reports)
3. every aggregator: ``verify_finish`` -> output share, added to the window's
   `Accumulator`.

A report is counted by all aggregators or by none: the leader only sends a
verifier message for reports every aggregator initialised successfully.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twinmpc.crypto import seal
from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc.client import input_share_info
from twinmpc.mpc.errors import DecodeError, InvalidReport
from twinmpc.mpc.report import Report, ReportShare
from twinmpc.mpc.task import Task

CHECKSUM_SIZE = 32


def open_input_share(task: Task, keypair: HpkeKeypair, agg_index: int, report: Report) -> bytes:
    """Decrypt this aggregator's input share of a whole report; `SealError` if it does not open."""
    if not 0 <= agg_index < task.num_aggregators:
        raise ValueError(f"aggregator index {agg_index} outside 0..{task.num_aggregators - 1}")
    if len(report.sealed_shares) != task.num_aggregators:
        raise DecodeError(f"report carries {len(report.sealed_shares)} shares, task has {task.num_aggregators} aggregators")
    return open_report_share(task, keypair, agg_index, report.share_for(agg_index))


def open_report_share(task: Task, keypair: HpkeKeypair, agg_index: int, share: ReportShare) -> bytes:
    """Decrypt one aggregator's view of a report (what a helper receives); `SealError` if it does not open."""
    if not 0 <= agg_index < task.num_aggregators:
        raise ValueError(f"aggregator index {agg_index} outside 0..{task.num_aggregators - 1}")
    info = input_share_info(task, share.report_id, share.time, agg_index, share.public_share)
    return seal.open_sealed(keypair, share.sealed_share, info)


def verify_init(task: Task, verify_key: bytes, agg_index: int, report_id: bytes, public_share: bytes, input_share: bytes):
    """Start verification of one report; returns (state, verifier share)."""
    return task.scheme.verify_init(verify_key, task.ctx(), agg_index, b"", report_id, public_share, input_share)


def verify_init_many(
    task: Task,
    verify_key: bytes,
    agg_index: int,
    report_ids: Sequence[bytes],
    public_shares: Sequence[bytes],
    input_shares: Sequence[bytes],
) -> list[tuple[Any, bytes] | InvalidReport]:
    """`verify_init` for the reports of one aggregation job at once (Prio3 vectorises the
    proof checks across them): entry b is (state, verifier share) or the report's `InvalidReport`."""
    return task.scheme.verify_init_batch(verify_key, task.ctx(), agg_index, b"", report_ids, public_shares, input_shares)


def verifier_messages(task: Task, verifier_shares: Sequence[list[bytes]]) -> list[bytes | InvalidReport]:
    """Leader: `verifier_message` for many reports; entry b is the message or the report's `InvalidReport`."""
    return task.scheme.verifier_shares_to_message_batch(task.ctx(), b"", verifier_shares)


def verifier_message(task: Task, verifier_shares: list[bytes]) -> bytes:
    """Leader: combine all aggregators' verifier shares; raises `VerifyError` on reject."""
    return task.scheme.verifier_shares_to_message(task.ctx(), b"", verifier_shares)


def verify_finish(task: Task, state: Any, message: bytes) -> np.ndarray:
    """Finish verification: the output share to accumulate."""
    return task.scheme.verify_next(task.ctx(), state, message)


def report_checksum(report_ids: list[bytes]) -> bytes:
    """XOR of SHA-256(report id): lets aggregators check they summed the same set."""
    acc = 0
    for rid in report_ids:
        acc ^= int.from_bytes(hashlib.sha256(rid).digest(), "big")
    return acc.to_bytes(CHECKSUM_SIZE, "big")


def xor_bytes(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(CHECKSUM_SIZE, "big")


@dataclass
class Accumulator:
    """Aggregate share of one (task, window): the sum, how many, and which."""

    task: Task
    agg_share: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    count: int = 0
    checksum: bytes = bytes(CHECKSUM_SIZE)

    def __post_init__(self) -> None:
        if self.agg_share is None:
            self.agg_share = self.task.scheme.agg_init(b"")

    def add(self, report_ids: list[bytes], out_shares: list[np.ndarray]) -> None:
        """Add a batch of verified output shares (one per report id, same order)."""
        if len(report_ids) != len(out_shares):
            raise ValueError(f"{len(report_ids)} report ids for {len(out_shares)} output shares")
        scheme = self.task.scheme
        for out in out_shares:
            self.agg_share = scheme.agg_update(b"", self.agg_share, out)
        self.count += len(report_ids)
        self.checksum = xor_bytes(self.checksum, report_checksum(report_ids))

    def merge(self, other: Accumulator) -> None:
        self.agg_share = self.task.scheme.merge(b"", [self.agg_share, other.agg_share])
        self.count += other.count
        self.checksum = xor_bytes(self.checksum, other.checksum)

    def encode(self) -> bytes:
        return struct.pack(">Q", self.count) + self.checksum + self.task.scheme.encode_agg_share(self.agg_share)

    @classmethod
    def decode(cls, task: Task, data: bytes) -> Accumulator:
        if len(data) < 8 + CHECKSUM_SIZE:
            raise DecodeError("accumulator state truncated")
        (count,) = struct.unpack_from(">Q", data, 0)
        checksum = bytes(data[8 : 8 + CHECKSUM_SIZE])
        return cls(task, task.scheme.decode_agg_share(bytes(data[8 + CHECKSUM_SIZE :])), count, checksum)


def aggregate_share_info(task: Task, window_start: int, agg_index: int, count: int, checksum: bytes) -> bytes:
    """HPKE info for an aggregate share sent to the collector."""
    return seal.binding(
        "aggregate-share",
        task.task_id,
        window_start.to_bytes(8, "big"),
        bytes([agg_index]),
        count.to_bytes(8, "big"),
        checksum,
    )


def seal_aggregate_share(task: Task, window_start: int, agg_index: int, acc: Accumulator, agg_share: np.ndarray) -> bytes:
    """Seal this aggregator's (noised) aggregate share to the collector."""
    info = aggregate_share_info(task, window_start, agg_index, acc.count, acc.checksum)
    return seal.seal(task.collector_hpke_config, task.scheme.encode_agg_share(agg_share), info)
