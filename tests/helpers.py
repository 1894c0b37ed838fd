"""Builders shared by tests: tasks with fresh keys, in-process protocol rounds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc import aggregator as agg
from twinmpc.mpc import collector
from twinmpc.mpc.client import shard_report, shard_reports
from twinmpc.mpc.task import Task, b64encode


@dataclass
class TaskKit:
    task: Task
    agg_keys: list[HpkeKeypair]
    collector_key: HpkeKeypair
    verify_key: bytes


def make_task(measurement: dict[str, Any], k: int = 2, *, vdaf: str = "twinring64", suite: str = "x25519-hkdf-sha256-aes128gcm", **extra: Any) -> TaskKit:
    agg_keys = [HpkeKeypair.generate(j, suite) for j in range(k)]
    collector_key = HpkeKeypair.generate(0, suite)
    doc = {
        "task_id": b64encode(os.urandom(32)),
        "measurement": measurement,
        "vdaf": vdaf,
        "aggregators": [{"endpoint": f"localhost:{7000 + j}", "hpke_config": b64encode(kp.config.encode())} for j, kp in enumerate(agg_keys)],
        "collector_hpke_config": b64encode(collector_key.config.encode()),
        "window_seconds": 60,
        "min_batch_size": 1,
    }
    doc.update(extra)
    task = Task.from_dict(doc)
    return TaskKit(task, agg_keys, collector_key, os.urandom(task.scheme.VERIFY_KEY_SIZE))


def run_round(kit: TaskKit, measurements: list[Any], time: int = 1_700_000_000, *, batch: bool = False) -> Any:
    """Client -> K aggregators -> collector entirely in process; returns the result.
    With batch=True the client shards all measurements in one `shard_reports` call."""
    task = kit.task
    accs = [agg.Accumulator(task) for _ in range(task.num_aggregators)]
    reports = shard_reports(task, measurements, time=time) if batch else [shard_report(task, m, time=time) for m in measurements]
    for report in reports:
        inits = []
        for j, kp in enumerate(kit.agg_keys):
            share = agg.open_input_share(task, kp, j, report)
            inits.append(agg.verify_init(task, kit.verify_key, j, report.report_id, report.public_share, share))
        message = agg.verifier_message(task, [v for _, v in inits])
        for j, (state, _) in enumerate(inits):
            accs[j].add([report.report_id], [agg.verify_finish(task, state, message)])
    window = task.window_start(time)
    sealed = [agg.seal_aggregate_share(task, window, j, a, a.agg_share) for j, a in enumerate(accs)]
    return collector.unshard(task, kit.collector_key, window, accs[0].count, accs[0].checksum, sealed).result
