"""Soak: months of windows on an accelerated clock; the stores stay flat after the retention horizon.

Two real aggregator servers (mTLS on loopback, SQLite) share a clock that this
benchmark moves forward: each simulated day has `--windows-per-day` windows of
`--reports` reports each, uploaded, then collected once the window closes, while
the garbage collector runs every few milliseconds in transactions of at most
`--gc-batch-rows` rows. The task keeps reports for `--retention-days` (its report
expiry is one day less). After each simulated day it prints the live bytes and
rows of both stores: they grow for the retention horizon, then stay flat.

    python -m twinmpc.bench.bench_soak --days 8 --windows-per-day 24 --reports 200

Every collected result is checked exactly; the run exits 1 if a result is wrong
or a store is still growing after the horizon (live bytes of the last day more
than 10 % above the first day after the horizon).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from twinmpc.mpc.client import shard_report
from twinmpc.services.aggregator.config import load_aggregator_config
from twinmpc.services.aggregator.server import start_aggregator
from twinmpc.services.twin.local_cluster import LocalCluster

DAY = 86_400
START = 1_900_000_000 - 1_900_000_000 % DAY
GROWTH_TOLERANCE = 0.10


class SimulatedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def store_size(path: Path) -> dict[str, int]:
    """Live bytes (pages in use), file bytes, and rows per table of one SQLite store."""
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages, free = db.execute("PRAGMA page_count").fetchone()[0], db.execute("PRAGMA freelist_count").fetchone()[0]
        rows = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("reports", "helper_reports", "jobs", "windows", "collections")}
    return {"live_bytes": (pages - free) * page_size, "file_bytes": path.stat().st_size, **rows}


async def run(days: int, windows_per_day: int, reports: int, retention_days: int, gc_batch_rows: int) -> dict:
    window_seconds = DAY // windows_per_day
    with tempfile.TemporaryDirectory(prefix="twinmpc-soak-") as tmp:
        cluster = LocalCluster(Path(tmp), k=2, limits={"gc_interval_seconds": 0.01, "gc_batch_rows": gc_batch_rows})
        clock = SimulatedClock(START)
        for node in cluster.nodes:
            node.server, node.port, node.core = await start_aggregator(load_aggregator_config(node.config_path), clock=clock)
        try:
            task = await cluster.provision({
                "measurement": {"type": "sum", "bits": 8}, "vdaf": "twinring64", "window_seconds": window_seconds,
                "min_batch_size": 1, "report_expiry_seconds": (retention_days - 1) * DAY or window_seconds,
                "retention_seconds": retention_days * DAY,
            })
            per_day, wrong = [], 0
            started = time.perf_counter()
            async with cluster.upload_client(batch_size=500) as up, cluster.collector() as coll:
                for day in range(days):
                    for w in range(windows_per_day):
                        start = START + day * DAY + w * window_seconds
                        clock.now = start + 1
                        batch = [shard_report(task, i % 200, time=start + 1) for i in range(reports)]
                        outcomes = await up.upload_batch(task.task_id, batch)
                        clock.now = start + window_seconds + 1
                        result = await coll.collect(task, start)
                        expected = sum(i % 200 for i, o in enumerate(outcomes) if o.accepted)
                        wrong += int(result.result != expected or result.report_count != reports)
                    await asyncio.sleep(0.3)  # collector passes at the end of the day
                    sizes = [store_size(Path(tmp) / f"agg{i}-data" / "aggregator.sqlite3") for i in range(2)]
                    per_day.append({"day": day + 1, "leader": sizes[0], "helper": sizes[1]})
                    print(f"day {day + 1:3d}: leader {sizes[0]['live_bytes'] / 1e6:7.2f} MB live ({sizes[0]['reports']} reports), "
                          f"helper {sizes[1]['live_bytes'] / 1e6:7.2f} MB live ({sizes[1]['helper_reports']} replay records)", flush=True)
        finally:
            await cluster.stop()
    horizon = retention_days + 1  # the first day on which the oldest data is past retention
    flat = all(
        per_day[-1][side]["live_bytes"] <= (1 + GROWTH_TOLERANCE) * per_day[horizon - 1][side]["live_bytes"]
        for side in ("leader", "helper")
    ) if days > horizon else None
    return {
        "days": days, "windows_per_day": windows_per_day, "reports_per_window": reports, "retention_days": retention_days,
        "gc_batch_rows": gc_batch_rows, "wrong_results": wrong, "flat_after_horizon": flat,
        "seconds": round(time.perf_counter() - started, 1), "per_day": per_day,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--windows-per-day", type=int, default=24)
    parser.add_argument("--reports", type=int, default=200, help="reports per window")
    parser.add_argument("--retention-days", type=int, default=3)
    parser.add_argument("--gc-batch-rows", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.days, args.windows_per_day, args.reports, args.retention_days, args.gc_batch_rows))
    print(json.dumps({k: v for k, v in result.items() if k != "per_day"}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["wrong_results"] == 0 and result["flat_after_horizon"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
