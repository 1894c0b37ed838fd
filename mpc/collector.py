"""Collector role: open the K sealed aggregate shares and unshard the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twinmpc.crypto import seal
from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc.aggregator import aggregate_share_info
from twinmpc.mpc.errors import DecodeError
from twinmpc.mpc.task import Task


@dataclass(frozen=True)
class CollectionResult:
    """What a controller gets: the result and the facts needed to interpret it."""

    task_id: bytes
    window_start: int
    window_seconds: int
    report_count: int
    result: Any
    dp: dict[str, Any]
    collection_id: str = ""


def unshard(
    task: Task,
    keypair: HpkeKeypair,
    window_start: int,
    report_count: int,
    checksum: bytes,
    sealed_agg_shares: list[bytes],
) -> CollectionResult:
    """Open each aggregator's share (bound to window, count and checksum) and combine."""
    if len(sealed_agg_shares) != task.num_aggregators:
        raise DecodeError(f"expected {task.num_aggregators} aggregate shares, got {len(sealed_agg_shares)}")
    shares = [
        seal.open_sealed(keypair, sealed, aggregate_share_info(task, window_start, j, report_count, checksum))
        for j, sealed in enumerate(sealed_agg_shares)
    ]
    result = task.scheme.unshard(b"", shares, report_count)
    return CollectionResult(task.task_id, window_start, task.window_seconds, report_count, result, dict(task.dp))
