"""Scaling on PostgreSQL: 1 vs 2 leader replicas, and reports per window from 1k to 100k.

For every (replicas, reports per window) it starts a fresh database, a leader of
`replicas` processes on it (each its own data_dir, the shared HPKE and datastore
keys, one job lease per in-flight job) and a helper process on SQLite, all real
processes with mTLS on loopback. It pre-shards the window's reports (the edge's
cost is bench_core's), then

* ingest: streams them to the replicas at once (half to each with two), as fast
  as the leader acknowledges: reports/s from first send to last acknowledgement;
* close -> result: collects the window right after its last report was
  acknowledged, so the figure includes aggregating the backlog the burst left
  (the worst case; bench_services paces arrivals over the window instead);
* peak RSS of the largest leader process (VmHWM) and the database size after it.

Prints one Markdown table (and JSON with --out).

    python -m twinmpc.bench.bench_scaling --database-url postgresql://twinmpc@127.0.0.1:5432/postgres \\
        --database-password-env PGPASSWORD --sizes 1000 10000 50000 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from twinmpc.mpc.client import shard_report
from twinmpc.services.client import Collector, UploadClient
from twinmpc.services.twin.local_cluster import LocalCluster


def start_leader_replica(cluster: LocalCluster, name: str) -> tuple[subprocess.Popen, int]:
    """Another process of leader agg0 (running on a database): its own data_dir, the keys replicas share."""
    data = cluster.workdir / f"{name}-data"
    data.mkdir(mode=0o700)
    for key in ("hpke_key.json", "datastore.key"):
        shutil.copy2(cluster.workdir / "agg0-data" / key, data / key)
    text = (cluster.workdir / "agg0.toml").read_text()
    listen = next(line for line in text.splitlines() if line.startswith("listen"))
    config = cluster.workdir / f"{name}.toml"
    config.write_text(text.replace(listen, 'listen = "127.0.0.1:0"').replace('data_dir = "agg0-data"', f'data_dir = "{name}-data"'))
    port_file = cluster.workdir / f"{name}.port"
    repo = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "twinmpc.services.cli", "aggregator", "serve", "--config", str(config), "--port-file", str(port_file)],
        stdout=open(cluster.workdir / f"{name}.log", "ab"), stderr=subprocess.STDOUT, cwd=cluster.workdir,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))},
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"leader replica {name} did not start; see {name}.log")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _fresh_database(url: str, password: str | None) -> str:
    """CREATE DATABASE next to the one `url` names; the URL of the new one."""
    name = "twinmpc_scaling_" + secrets.token_hex(4)
    with psycopg.connect(url, password=password, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def measure(url: str, password_env: str | None, replicas: int, reports_per_window: int, batch: int) -> dict:
    password = os.environ.get(password_env) if password_env else None
    db = _fresh_database(url, password)
    with tempfile.TemporaryDirectory(prefix="twinmpc-scaling-") as tmp:
        cluster = LocalCluster(Path(tmp), k=2, processes=True, database_urls={0: db}, database_password_env=password_env)
        await cluster.start()
        extra: list[tuple[subprocess.Popen, int]] = []
        try:
            extra = [start_leader_replica(cluster, f"agg0r{i}") for i in range(1, replicas)]
            endpoints = [cluster.endpoints[0]] + [f"127.0.0.1:{port}" for _, port in extra]
            task = await cluster.provision({"measurement": {"type": "sum", "bits": 16}, "vdaf": "twinring64",
                                            "window_seconds": 3600, "min_batch_size": 1, "max_skew_seconds": 7200})
            now = int(time.time())
            window = now - now % 3600 - 3600  # closed by the clock, still open to reports until it is collected
            values = [i % 1000 for i in range(reports_per_window)]
            reports = [shard_report(task, v, time=window + 1) for v in values]
            parts = [reports[i :: len(endpoints)] for i in range(len(endpoints))]
            creds = cluster.credentials("edge", "edge-1")
            clients = [UploadClient(e, creds, batch_size=batch) for e in endpoints]
            t0 = time.perf_counter()
            outcomes = await asyncio.gather(*(c.upload_batch(task.task_id, p) for c, p in zip(clients, parts, strict=True)))
            ingest_s = time.perf_counter() - t0
            for c in clients:
                await c.close()
            if not all(o.accepted for batch_outcomes in outcomes for o in batch_outcomes):
                raise RuntimeError("reports refused during the benchmark")
            # the last report is in: the controller collects at once
            async with Collector(endpoints[0], cluster.credentials("controller"), cluster.collector_key, timeout=300) as collector:
                t0 = time.perf_counter()
                result = await collector.collect(task, window)
                close_s = time.perf_counter() - t0
            if result.report_count != reports_per_window or result.result != sum(values):
                raise RuntimeError(f"wrong result: {result.report_count} reports, sum {result.result}")
            rss = max(_peak_rss_mb(p.pid) for p in [cluster.nodes[0].process] + [proc for proc, _ in extra])
            with psycopg.connect(db, password=password, autocommit=True) as conn:
                db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        finally:
            for proc, _ in extra:
                proc.terminate()
                proc.wait(15)
            await cluster.stop()
    return {
        "replicas": replicas, "reports_per_window": reports_per_window,
        "ingest_reports_per_s": round(reports_per_window / ingest_s), "close_to_result_ms": round(close_s * 1000),
        "leader_peak_rss_mb": round(rss), "database_mb": round(db_bytes / 1e6, 1),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| leader replicas | reports / window | ingest (reports/s) | close -> result (ms) | leader peak RSS (MB) | database (MB) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['replicas']} | {r['reports_per_window']:,} | {r['ingest_reports_per_s']:,} | {r['close_to_result_ms']:,} | "
              f"{r['leader_peak_rss_mb']} | {r['database_mb']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL URL whose user may CREATE DATABASE (no password in it)")
    parser.add_argument("--database-password-env", default=None, help="name of the env var holding the database password")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 50_000, 100_000], help="reports per window")
    parser.add_argument("--batch", type=int, default=1000, help="reports per upload message")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for n in args.sizes:
        for replicas in args.replicas:
            rows.append(asyncio.run(measure(args.database_url, args.database_password_env, replicas, n, args.batch)))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
