"""Client role: turn one measurement into a sealed report (VDAF ``shard`` + HPKE).

Each aggregator's input share is sealed to that aggregator only, bound to
(task id, report id, time, aggregator index, public share digest), so a
relay or the leader can neither read a helper's share nor move it to another
report, task or aggregator.  The user never handles a nonce or a seed.
"""

from __future__ import annotations

import os
import time as _time
from collections.abc import Callable, Sequence
from typing import Any

from twinmpc.crypto import seal
from twinmpc.mpc.report import REPORT_ID_SIZE, Report
from twinmpc.mpc.task import Task


def input_share_info(
    task: Task, report_id: bytes, report_time: int, agg_index: int, public_share: bytes, *, public_digest: bytes | None = None
) -> bytes:
    """HPKE info binding an input share to its report and recipient."""
    return seal.binding(
        "input-share",
        task.task_id,
        report_id,
        report_time.to_bytes(8, "big"),
        bytes([agg_index]),
        seal.digest(public_share) if public_digest is None else public_digest,
    )


def shard_report(
    task: Task,
    measurement: Any,
    *,
    time: int | None = None,
    report_id: bytes | None = None,
    rand: Callable[[int], bytes] = os.urandom,
) -> Report:
    """Validate, shard and seal one measurement for `task` (mode 'shares')."""
    if task.mode != "shares":
        raise ValueError(f"shard_report is for mode 'shares'; task uses {task.mode!r}")
    report_time = int(_time.time()) if time is None else int(time)
    report_id = rand(REPORT_ID_SIZE) if report_id is None else report_id
    scheme = task.scheme
    public_share, input_shares = scheme.shard(task.ctx(), measurement, report_id, rand(scheme.RAND_SIZE))
    return seal_report(task, report_id, report_time, public_share, input_shares)


def shard_reports(
    task: Task,
    measurements: Sequence[Any],
    *,
    time: int | None = None,
    rand: Callable[[int], bytes] = os.urandom,
) -> list[Report]:
    """`shard_report` for many measurements of one task (a gateway's window, a file upload):
    the VDAF shards them in one batch, each report still gets its own id, nonce and seeds.

    Raises InvalidMeasurement naming the first bad entry ("measurement i: ..."); nothing is returned then.
    """
    if task.mode != "shares":
        raise ValueError(f"shard_reports is for mode 'shares'; task uses {task.mode!r}")
    report_time = int(_time.time()) if time is None else int(time)
    scheme = task.scheme
    report_ids = [rand(REPORT_ID_SIZE) for _ in measurements]
    rands = [rand(scheme.RAND_SIZE) for _ in measurements]
    sharded = scheme.shard_batch(task.ctx(), list(measurements), report_ids, rands)
    return [
        seal_report(task, report_id, report_time, public_share, input_shares)
        for report_id, (public_share, input_shares) in zip(report_ids, sharded, strict=True)
    ]


def seal_report(task: Task, report_id: bytes, report_time: int, public_share: bytes, input_shares: list[bytes]) -> Report:
    """Seal each input share to its aggregator, bound to the report."""
    digest = seal.digest(public_share)
    sealed = tuple(
        seal.seal(agg.hpke_config, share, input_share_info(task, report_id, report_time, j, public_share, public_digest=digest))
        for j, (agg, share) in enumerate(zip(task.aggregators, input_shares, strict=True))
    )
    return Report(report_id, report_time, public_share, sealed)
