"""Per-call ingest: one UploadReport RPC per report, many concurrent edge clients (the city's shape).

Starts K real aggregator processes on loopback (mTLS, SQLite), seals the reports
ahead in this process, then drives the leader from `--client-procs` load
generator processes, each with `--concurrency` calls in flight over several
channels, and measures

* saturation: acknowledged reports per second when clients send as fast as the
  leader acknowledges, and upload -> acknowledged latency p50/p99;
* paced: the same at `--paced-fraction` (default 80 %) of the saturation rate,
  offered at an even pace: p50/p99 latency, with the budget p99 <= 50 ms;
* whether every acknowledged report was counted exactly once (a collection of
  the window after the run).

Each value of `--leader-workers` is one row on a fresh cluster: the leader
served by that many processes sharing its port (the aggregator's `workers`
setting; 0 means one per core), default 1 and one per core, so the ratio between
the rows comes from one run.

    python -m twinmpc.bench.bench_ingest --reports 20000 --out bench/out/ingest.json

Budgets (exit 1 when missed): >= 3,000 reports/s at saturation; p99 <= 50 ms paced.
The bench survives the overload it measures: refused or failed calls are counted
and reported, never a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

INGEST_BUDGET = 3000.0
PACED_P99_BUDGET = 0.050


# --------------------------------------------------------------------- client side
async def _drive(plan: dict) -> dict:
    """One load-generator process: send every request (one RPC each), paced or flat out."""
    from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
    from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
    from twinmpc.services import pki

    pki_dir = Path(plan["pki_dir"])
    creds = pki.channel_credentials(pki_dir / "edge-1.crt", pki_dir / "edge-1.key", pki_dir / "ca.crt")
    blobs = Path(plan["requests"]).read_bytes()
    requests, pos = [], 0
    while pos < len(blobs):
        n = int.from_bytes(blobs[pos : pos + 4], "big")
        requests.append(pb.UploadReportRequest.FromString(blobs[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    channels = [grpc.aio.secure_channel(plan["endpoint"], creds, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(plan["channels"])]
    stubs = [pb_grpc.UploadStub(c) for c in channels]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rate = plan.get("rate")  # reports/s for this process, or None: flat out
    start = time.perf_counter() + 0.2
    index = 0

    async def worker(w: int) -> None:
        nonlocal index
        stub = stubs[w % len(stubs)]
        while index < len(requests):
            i = index
            index += 1
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = time.perf_counter()
            try:
                await stub.UploadReport(requests[i], timeout=30)
                latencies.append(time.perf_counter() - sent)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1

    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    began = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(plan["concurrency"])))
    wall = time.perf_counter() - began
    for c in channels:
        await c.close()
    return {"acked": len(latencies), "wall": wall, "latencies": latencies, "errors": errors}


def client_main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    result = asyncio.run(_drive(plan))
    Path(plan["out"]).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------- bench side
def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _phase(workdir: Path, endpoint: str, pki_dir: Path, shards: list[bytes], procs: int, concurrency: int,
           channels: int, rate: float | None, name: str) -> dict:
    plans = []
    for p in range(procs):
        req_path = workdir / f"{name}-{p}.bin"
        req_path.write_bytes(b"".join(len(b).to_bytes(4, "big") + b for b in shards[p::procs]))
        plan = {"pki_dir": str(pki_dir), "endpoint": endpoint, "requests": str(req_path), "channels": channels,
                "concurrency": concurrency, "rate": rate / procs if rate else None, "out": str(workdir / f"{name}-{p}.json")}
        path = workdir / f"{name}-{p}.plan.json"
        path.write_text(json.dumps(plan))
        plans.append((path, plan))
    children = [subprocess.Popen([sys.executable, "-m", "twinmpc.bench.bench_ingest", "--client", str(path)]) for path, _ in plans]
    for child in children:
        child.wait()
    results = []
    for (path, plan), child in zip(plans, children, strict=True):
        if child.returncode != 0 or not Path(plan["out"]).exists():
            results.append({"acked": 0, "wall": float("nan"), "latencies": [], "errors": {"LOADGEN_EXITED": child.returncode}})
        else:
            results.append(json.loads(Path(plan["out"]).read_text()))
    latencies = [x for r in results for x in r["latencies"]]
    acked = sum(r["acked"] for r in results)
    wall = max(r["wall"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {"acked": acked, "offered": len(shards), "seconds": round(wall, 3), "reports_per_second": round(acked / wall, 1),
            "latency_p50_ms": round(_pct(latencies, 50) * 1000, 2), "latency_p99_ms": round(_pct(latencies, 99) * 1000, 2),
            "errors": errors}


async def run(args: argparse.Namespace) -> dict:
    """One row per leader worker count, each on a fresh cluster, in this one run (ratios compare rows)."""
    rows = []
    for workers in args.leader_workers:
        row = {"leader_workers": workers or os.cpu_count() or 1, **await _run_one(args, workers or os.cpu_count() or 1)}
        rows.append(row)
    base = rows[0]["saturation"]["reports_per_second"]
    for row in rows:
        row["ratio_to_first"] = round(row["saturation"]["reports_per_second"] / base, 2) if base else None
    return {"rows": rows}


async def _run_one(args: argparse.Namespace, leader_workers: int) -> dict:
    from twinmpc.mpc.client import shard_reports
    from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
    from twinmpc.services.client import report_to_proto
    from twinmpc.services.twin.local_cluster import LocalCluster

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    limits = {"upload_rate_per_second": 10_000_000, "upload_burst": 10_000_000, "commit_delay_ms": args.commit_delay_ms}
    cluster = LocalCluster(workdir, k=args.aggregators, processes=True, limits=limits, workers={0: leader_workers})
    await cluster.start()
    try:
        cluster.credentials("edge", "edge-1")
        now = int(time.time())
        window_seconds = 3600
        doc = {"measurement": {"type": "sum", "bits": 16}, "vdaf": args.vdaf, "window_seconds": window_seconds,
               "min_batch_size": 1, "max_skew_seconds": 3600}
        task = await cluster.provision(doc)
        rng = np.random.default_rng(1)
        values = [int(v) for v in rng.integers(0, 1 << 16, size=2 * args.reports)]
        reports = shard_reports(task, values, time=now)
        shards = [pb.UploadReportRequest(task_id=task.task_id, report=report_to_proto(r)).SerializeToString() for r in reports]
        window = task.window_start(now)
        saturation = _phase(workdir, cluster.endpoints[0], cluster.pki_dir, shards[: args.reports], args.client_procs,
                            args.concurrency, args.channels, None, "saturation")
        paced_rate = max(1.0, saturation["reports_per_second"] * args.paced_fraction)
        paced_n = min(args.reports, int(paced_rate * args.paced_seconds))
        paced = _phase(workdir, cluster.endpoints[0], cluster.pki_dir, shards[args.reports : args.reports + paced_n],
                       args.client_procs, args.concurrency, args.channels, paced_rate, "paced")
        paced["offered_rate"] = round(paced_rate, 1)
        result = {"saturation": saturation, "paced": paced}
        if not saturation["errors"] and not paced["errors"]:
            sent = values[: args.reports] + values[args.reports : args.reports + paced_n]
            result["exactly_once"] = await _check_counted(cluster, task, window, len(sent))
        return result
    finally:
        await cluster.stop()


async def _check_counted(cluster, task, window: int, sent: int) -> bool:
    """Every acknowledged report aggregated exactly once: the leader's window count equals what was sent."""
    from twinmpc.services.aggregator.config import load_aggregator_config
    from twinmpc.services.aggregator.state import open_datastore

    store = open_datastore(load_aggregator_config(cluster.nodes[0].config_path))
    try:
        from twinmpc.mpc.modes import batch_of

        for _ in range(100):
            pending = store.count_pending(task.task_id, window)
            record = store.get_window(task.task_id, window)
            counted = batch_of(task, record.accumulator if record else None).count
            if pending == 0 and counted == sent:
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--reports", type=int, default=20_000, help="reports in the saturation phase")
    parser.add_argument("--aggregators", type=int, default=2)
    parser.add_argument("--vdaf", choices=["twinring64", "prio3"], default="prio3")
    parser.add_argument("--client-procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight per load generator process")
    parser.add_argument("--channels", type=int, default=8, help="TLS connections per load generator process")
    parser.add_argument("--paced-fraction", type=float, default=0.8)
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument("--commit-delay-ms", type=float, default=2.0)
    parser.add_argument("--leader-workers", type=int, nargs="+", default=[1, 0],
                        help="processes serving the leader's port (its `workers` setting; 0: one per core); "
                             "one row per value, in one run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args.client)
    result = asyncio.run(run(args))
    result["command"] = " ".join(["python -m twinmpc.bench.bench_ingest", *(sys.argv[1:] if argv is None else argv)])
    result["cpus"] = os.cpu_count()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    ok = all(row.get("exactly_once", False) for row in result["rows"]) and any(
        row["saturation"]["reports_per_second"] >= INGEST_BUDGET and row["paced"]["latency_p99_ms"] <= PACED_P99_BUDGET * 1000
        for row in result["rows"]
    )
    print(f"budgets: ingest >= {INGEST_BUDGET:.0f}/s, paced p99 <= {PACED_P99_BUDGET * 1000:.0f} ms, exactly once: "
          f"{'met' if ok else 'MISSED'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
