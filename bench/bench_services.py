"""Service throughput and latency: ingest rate and window-close -> result.

Starts K real aggregator processes on loopback (mTLS, SQLite), pre-shards
reports in this process (the edge cost is measured by bench_core), streams
them in batches to the leader, and measures

* ingest rate: acknowledged reports per second at the leader (batched upload);
* window-close -> result: real-time windows of `--window-seconds`; the N
  reports of a window arrive at an even pace during it (as edge nodes
  would), and the controller collects the moment the window closes.  The
  latency covers flushing what is still unaggregated, the helpers' shares
  and unsharding (p50/p99 over the windows).

Ingest is measured separately, as fast as the leader acknowledges a burst;
the timed windows start once the leader has aggregated the whole burst (read
from its datastore), whose rate is reported as `aggregate_reports_per_s`.

    python -m twinmpc.bench.bench_services --reports 10000 --windows 5 --out bench/out/services.json

Budgets: ingest >= 5,000 reports/s at one leader process, so 10,000 edge
nodes reporting every 2 s need one process and larger cities add replicas
(DESIGN "Scale beyond one machine"); p99 close -> result <= 250 ms for 10,000
reports per window, the collection's share of the 1 s in which a controller
must hold a window's result (docs/bench.md "Budgets"). Both for scalar reports
on the proof-less TwinRing64 scheme (the default here);
`--vdaf prio3` measures the same with validity proofs, `--vdaf prio3-multiproof`
with the Field64 multiproof SumVec variant (a one-entry vector).  Exits 1 when a
budget is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from twinmpc.mpc.client import shard_report
from twinmpc.services.aggregator.config import load_aggregator_config
from twinmpc.services.aggregator.state import open_datastore
from twinmpc.services.twin.local_cluster import LocalCluster

INGEST_BUDGET = 5000.0
CLOSE_TO_RESULT_P99_BUDGET = 0.250


async def _paced_upload(uploader, task, reports, batch: int, deadline: float) -> None:
    """Spread the uploads evenly until `deadline` (wall clock), like edge arrivals."""
    chunks = [reports[i : i + batch] for i in range(0, len(reports), batch)]
    start = time.time()
    span = max(0.0, deadline - start - 0.2)
    for n, chunk in enumerate(chunks):
        outcomes = await uploader.upload_batch(task.task_id, chunk)
        if not all(o.accepted for o in outcomes):
            raise RuntimeError("reports refused during the benchmark")
        await asyncio.sleep(max(0.0, start + span * (n + 1) / len(chunks) - time.time()))


async def _drained(cluster: LocalCluster, timeout: float) -> float:
    """Wait until the leader has aggregated every report it stored; the time waited.

    Otherwise the timed windows would queue behind the burst's backlog and measure it."""
    started = time.perf_counter()
    store = open_datastore(load_aggregator_config(cluster.nodes[0].config_path))
    try:
        while await asyncio.to_thread(store.count_unaggregated):
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the leader did not aggregate the burst within {timeout:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        store.close()
    return time.perf_counter() - started


async def run(
    reports_per_window: int,
    windows: int,
    k: int,
    batch: int,
    window_seconds: int,
    vdaf: str = "twinring64",
    database_url: str | None = None,
    database_password_env: str | None = None,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="twinmpc-bench-") as tmp:
        cluster = LocalCluster(
            Path(tmp), k=k, processes=True, database_urls={0: database_url} if database_url else {},
            database_password_env=database_password_env,
        )
        await cluster.start()
        try:
            vector = vdaf == "prio3-multiproof"  # that variant proves vectors: a one-entry vector here
            measurement = {"type": "sumvec", "length": 1, "bits": 16} if vector else {"type": "sum", "bits": 16}
            doc = {"measurement": measurement, "vdaf": vdaf, "min_batch_size": 1, "max_skew_seconds": 3600}
            burst_task = await cluster.provision({**doc, "window_seconds": 3600})
            task = await cluster.provision({**doc, "window_seconds": window_seconds})
            value = (lambda i: [i % 1000]) if vector else (lambda i: i % 1000)
            expected = sum(i % 1000 for i in range(reports_per_window))
            expected = [expected] if vector else expected
            ingest_rates, latencies = [], []
            async with cluster.upload_client(batch_size=batch) as uploader, cluster.collector() as collector:
                shard_started = time.perf_counter()
                bursts = [[shard_report(burst_task, value(i)) for i in range(reports_per_window)] for _ in range(windows)]
                shard_seconds = (time.perf_counter() - shard_started) / windows  # one window's reports
                burst_started = time.perf_counter()  # sharded ahead: the aggregation rate excludes client work
                for reports in bursts:  # ingest: bursts as fast as the leader acknowledges
                    t0 = time.perf_counter()
                    outcomes = await uploader.upload_batch(burst_task.task_id, reports)
                    ingest_rates.append(len(reports) / (time.perf_counter() - t0))
                    if not all(o.accepted for o in outcomes):
                        raise RuntimeError("reports refused during the benchmark")
                await _drained(cluster, timeout=600)
                aggregate_rate = windows * reports_per_window / (time.perf_counter() - burst_started)
                for _ in range(windows):  # close -> result: paced arrivals, collect at the close
                    # the first window that starts after this window's reports are sharded, so the
                    # uploads spread over the whole window as the scenario says
                    ready = time.time() + 1.5 * shard_seconds + 0.5
                    window = int(ready) - int(ready) % window_seconds + window_seconds
                    reports = [shard_report(task, value(i), time=window + 1) for i in range(reports_per_window)]
                    await asyncio.sleep(max(0.0, window - time.time()))
                    await _paced_upload(uploader, task, reports, batch, window + window_seconds)
                    await asyncio.sleep(max(0.0, window + window_seconds - time.time()))
                    t0 = time.perf_counter()
                    result = await collector.collect(task, window)
                    latencies.append(time.perf_counter() - t0)
                    if not np.array_equal(result.result, expected) or result.report_count != reports_per_window:
                        raise RuntimeError(f"wrong result {result.result} != {expected}")
        finally:
            await cluster.stop()
    lat = np.array(latencies)
    return {
        "k": k,
        "vdaf": vdaf,
        "leader_store": "postgresql" if database_url else "sqlite",
        "reports_per_window": reports_per_window,
        "windows": windows,
        "upload_batch_size": batch,
        "window_seconds": window_seconds,
        "ingest_reports_per_s_median": float(np.median(ingest_rates)),
        "ingest_reports_per_s": [round(r) for r in ingest_rates],
        "aggregate_reports_per_s": round(aggregate_rate),
        "close_to_result_ms_p50": float(np.percentile(lat, 50) * 1000),
        "close_to_result_ms_p99": float(np.percentile(lat, 99) * 1000),
        "budgets": {"ingest_reports_per_s_min": INGEST_BUDGET, "close_to_result_ms_p99_max": CLOSE_TO_RESULT_P99_BUDGET * 1000},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=10_000, help="reports per window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--aggregators", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000, help="reports per upload message")
    parser.add_argument("--window-seconds", type=int, default=4, help="real-time window length for the latency runs")
    parser.add_argument("--vdaf", choices=["twinring64", "prio3", "prio3-multiproof"], default="twinring64",
                        help="scheme of the Sum(16 bits) task (prio3 adds validity proofs to every report; "
                        "prio3-multiproof: Field64 SumVec with 3 proofs, as a one-entry vector)")
    parser.add_argument("--database-url", default=None,
                        help="run the leader on this (empty) PostgreSQL database instead of SQLite, e.g. postgresql://u@127.0.0.1:5432/bench")
    parser.add_argument("--database-password-env", default=None, help="name of the env var holding the database password")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.reports, args.windows, args.aggregators, args.batch, args.window_seconds, args.vdaf,
                             args.database_url, args.database_password_env))
    ok = result["ingest_reports_per_s_median"] >= INGEST_BUDGET and result["close_to_result_ms_p99"] <= CLOSE_TO_RESULT_P99_BUDGET * 1000
    result["budgets_met"] = ok
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
