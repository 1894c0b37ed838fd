"""`twinmpc bench`: scenario-driven load, chaos and peer comparison with budgets.

Starts K real aggregator processes on loopback (mTLS, SQLite; via
services.twin.local_cluster), drives a scenario's load from a separate load
generator process of many simulated edge nodes (bench.loadgen), measures every
stage of the pipeline, then runs the scenario's chaos runs and the peer
comparison, checks every budget and writes JSON + Markdown + PNG plots.

    python -m twinmpc.bench.runner --quick --out bench/out/quick     # < 1 min, 2 cores
    python -m twinmpc.bench.runner --full  --out bench/out/full      # README's table
    python -m twinmpc.bench.runner --scenario bench/scenarios/x.toml --out DIR

Exit status: 0 when every budget and every chaos check holds, 1 otherwise,
2 on a usage or scenario error.

Where each stage is measured (see bench.scenario for the definitions):
``edge`` and ``upload`` in the load generator process, per report;
``aggregate`` from the leader's durable state: a read-only poller of the
leader's SQLite store (every ``POLL_SECONDS``) sees its count of aggregated
reports rise, and the k-th acknowledged report is taken as aggregated when
that count first reaches k (jobs take pending reports in arrival order); the
latency has the poll interval as resolution and nothing is added to the
services for it; ``collect`` and ``unshard`` here, per window, through the
controller API and `mpc.collector.unshard`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from twinmpc.bench import chaos as chaos_mod
from twinmpc.bench import peers as peers_mod
from twinmpc.bench import report as report_mod
from twinmpc.bench.scenario import (
    SCENARIO_DIR,
    STAGES,
    DropEdges,
    KillRestart,
    LinkFault,
    LinkFaults,
    MalformedStorm,
    ReplayStorm,
    Scenario,
    ScenarioError,
    load_scenario,
)
from twinmpc.mpc import collector
from twinmpc.mpc.task import Task, b64encode
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.mpc.modes import noise_plan
from twinmpc.services.client import TaskAdminClient
from twinmpc.services.twin.local_cluster import LocalCluster
from twinmpc.services.storage.sqlite import ACCEPTED

REPO = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.02
DP_BETA = 1e-6  # a DP result must lie within the bound that holds with probability 1 - DP_BETA (as the demo)
TIMELINE_BIN = 0.25
EDGE_IDENTITY = "edge-bench"


# ------------------------------------------------------------------ stats ---
def summarize(samples_ms: list[float] | np.ndarray) -> dict[str, float | int | None]:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": int(a.size), "p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "max": round(float(a.max()), 3), "mean": round(float(a.mean()), 3)}


def aggregation_latencies(ack_times: np.ndarray, samples: list[tuple[float, int]]) -> np.ndarray:
    """Per acknowledged report: first poll that saw it aggregated minus its ack time (ms, >= 0).

    The k-th acknowledged report (by ack time) counts as aggregated once the
    leader's aggregated count reaches k.  Reports never seen aggregated are
    left out (the exactness check catches a lost one).
    """
    if not samples or ack_times.size == 0:
        return np.zeros(0)
    acks = np.sort(ack_times)
    t = np.array([s[0] for s in samples])
    counts = np.maximum.accumulate(np.array([s[1] for s in samples]))
    first_seen = np.searchsorted(counts, np.arange(1, acks.size + 1), side="left")
    seen = first_seen < t.size
    return np.maximum(0.0, (t[first_seen[seen]] - acks[seen]) * 1000.0)


def timeline(times: np.ndarray, origin: float, end: float) -> list[float]:
    """Events per second in TIMELINE_BIN bins from origin to end."""
    if end <= origin:
        return []
    bins = np.arange(origin, end + TIMELINE_BIN, TIMELINE_BIN)
    counts, _ = np.histogram(times, bins=bins)
    return [round(float(c) / TIMELINE_BIN, 1) for c in counts]


# ----------------------------------------------------------------- poller ---
class AggregationPoller:
    """Read-only poll of the leader's count of aggregated reports for one task."""

    def __init__(self, db_path: Path, task_id: bytes, interval: float = POLL_SECONDS) -> None:
        self.db_path = db_path
        self.task_id = task_id
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aggregation-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=0.5, check_same_thread=False)
                (n,) = conn.execute("SELECT count(*) FROM reports WHERE state=? AND task_id=?", (ACCEPTED, self.task_id)).fetchone()
                self.samples.append((time.time(), int(n)))
            except sqlite3.Error:
                if conn is not None:
                    conn.close()
                conn = None  # leader restarting or a checkpoint holds the lock: try again
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()


# ------------------------------------------------------------------ phases ---
def _results_match(result: Any, expected: list[int], bound: float) -> bool:
    """Exact (bound 0), or every coordinate within the DP error bound."""
    got = np.asarray(result, dtype=object).reshape(-1)
    return len(got) == len(expected) and all(abs(int(g) - e) <= bound for g, e in zip(got, expected))


async def _read_lines(stream: asyncio.StreamReader, done: dict[int, float], events: dict[int, asyncio.Event]) -> None:
    while line := await stream.readline():
        word, _, value = line.decode().strip().partition(" ")
        if word == "done":
            done[int(value)] = time.time()
            events.setdefault(int(value), asyncio.Event()).set()


async def run_phase(cluster: LocalCluster, scn: Scenario, label: str, faults: LinkFaults, chaos: Any, windows: int, workdir: Path) -> dict[str, Any]:
    """One task through the cluster: load, optional link faults and chaos, collect, check."""
    w = scn.workload
    ws = w.window_seconds
    endpoints = list(cluster.endpoints)
    upload_endpoint = endpoints[0]
    proxy = None
    if faults.link != "none":
        proxy = chaos_mod.FaultProxy(endpoints[1] if faults.link == "leader-helper" else endpoints[0])
        await proxy.start()
        if faults.link == "leader-helper":
            endpoints[1] = proxy.endpoint
        else:
            upload_endpoint = proxy.endpoint
    try:
        doc = {
            "collector_hpke_config": b64encode(cluster.collector_key.config.encode()),
            "measurement": w.measurement,
            "vdaf": w.vdaf,
            "window_seconds": ws,
            "min_batch_size": 1,
            "max_skew_seconds": 300,
            "description": f"bench {scn.name} {label}",
            "dp": w.dp if chaos is None else {"algo": "none"},
        }
        task: Task = await TaskAdminClient(cluster.credentials("admin")).provision_task(endpoints, doc)
        if proxy is not None:  # faults only once the task is installed everywhere
            proxy.faults = chaos_mod.FaultSettings(faults.delay_ms, faults.loss, faults.rto_ms, faults.reset)
        cluster.credentials("edge", EDGE_IDENTITY)
        pki_dir = cluster.pki_dir
        tag = label.replace(":", "-")
        plan = {
            "task_json": task.to_json(),
            "endpoint": upload_endpoint,
            "cert": str(pki_dir / f"{EDGE_IDENTITY}.crt"),
            "key": str(pki_dir / f"{EDGE_IDENTITY}.key"),
            "ca": str(pki_dir / "ca.crt"),
            "measurement": w.measurement,
            "edge_nodes": w.edge_nodes,
            "reports_per_window": w.reports_per_window,
            "windows": windows,
            "window_seconds": ws,
            "send_fraction": w.send_fraction,
            "upload_batch": w.upload_batch,
            "connections": w.connections,
            "seed": w.seed,
            "out": str(workdir / f"loadgen-{tag}.json"),
            "drop_edges": {"fraction": chaos.fraction, "at": chaos.at} if isinstance(chaos, DropEdges) else None,
            "replay_storm": {"count": chaos.count, "at": chaos.at} if isinstance(chaos, ReplayStorm) else None,
            "malformed_storm": {"count": chaos.count, "at": chaos.at} if isinstance(chaos, MalformedStorm) else None,
        }
        plan_path = workdir / f"plan-{tag}.json"
        plan_path.write_text(json.dumps(plan))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(workdir / f"loadgen-{tag}.log", "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "twinmpc.bench.loadgen", str(plan_path),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=REPO, env=env,
            )
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
            if ready.strip() != b"ready":
                raise RuntimeError(f"load generator did not start (see {workdir / f'loadgen-{tag}.log'})")
            first = int(math.ceil((time.time() + 0.3) / ws) * ws)
            proc.stdin.write(f"go {first}\n".encode())  # type: ignore[union-attr]
            await proc.stdin.drain()  # type: ignore[union-attr]
            done: dict[int, float] = {}
            events: dict[int, asyncio.Event] = {first + i * ws: asyncio.Event() for i in range(windows)}
            reader = asyncio.ensure_future(_read_lines(proc.stdout, done, events))  # type: ignore[arg-type]
            poller = AggregationPoller(cluster.workdir / "agg0-data" / "aggregator.sqlite3", task.task_id)
            poller.start()
            chaos_events: list[dict[str, float]] = []
            chaos_failures: list[str] = []
            chaos_job = None
            if isinstance(chaos, KillRestart):
                async def kill_later() -> None:
                    await asyncio.sleep(max(0.0, first + chaos.at * ws - time.time()))
                    try:
                        chaos_events.append(await chaos_mod.kill_restart(cluster, chaos.target, chaos.down_seconds))
                    except (RuntimeError, OSError, TimeoutError) as exc:  # did not come back: the check says so
                        chaos_failures.append(f"{type(exc).__name__}: {exc}")
                chaos_job = asyncio.ensure_future(kill_later())
            collections = await _collect_windows(cluster, task, first, windows, ws, events, done, proc, workdir / f"loadgen-{tag}.log")
            if chaos_job is not None:
                await chaos_job
            rc = await asyncio.wait_for(proc.wait(), 120)
            await reader
            poller.stop()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if rc != 0:
            raise RuntimeError(f"load generator exited with {rc} (see {workdir / f'loadgen-{tag}.log'})")
        gen = json.loads(Path(plan["out"]).read_text())
    finally:
        if proxy is not None:
            await proxy.stop()
    return _phase_result(label, task, faults, chaos, first, ws, gen, collections, poller.samples, chaos_events or chaos_failures, proxy)


async def _settled(event: asyncio.Event, proc: asyncio.subprocess.Process, log: Path) -> None:
    """Wait for a window's "done" line; fail at once if the load generator dies first."""
    waiter = asyncio.ensure_future(event.wait())
    exited = asyncio.ensure_future(proc.wait())
    try:
        finished, _ = await asyncio.wait({waiter, exited}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        exited.cancel()
    if waiter not in finished and exited in finished:
        try:  # the last "done" line may still be in the pipe when the process is reaped
            await asyncio.wait_for(event.wait(), 2)
            return
        except TimeoutError:
            pass
    if not event.is_set():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        why = f"exited with {proc.returncode}" if exited in finished else "sent no 'done' within 120 s"
        raise RuntimeError(f"load generator {why}: {' '.join(tail)}")


async def _collect_windows(cluster: LocalCluster, task: Task, first: int, windows: int, ws: int,
                           events: dict[int, asyncio.Event], done: dict[int, float],
                           proc: asyncio.subprocess.Process, log: Path) -> list[dict[str, Any]]:
    """Collect each window the moment it closes (and its uploads settled): timing + result."""
    out = []
    opts = [("grpc.max_receive_message_length", 16 << 20)]
    async with grpc.aio.secure_channel(cluster.endpoints[0], cluster.credentials("controller"), options=opts) as channel:
        stub = pb_grpc.CollectionStub(channel)
        await channel.channel_ready()
        for i in range(windows):
            start = first + i * ws
            close = start + ws
            await asyncio.sleep(max(0.0, close - time.time()))
            await _settled(events[start], proc, log)
            ready = max(close, done[start])
            await asyncio.sleep(max(0.0, ready - time.time()))
            t0 = time.time()
            entry: dict[str, Any] = {"start": start, "settled_after_close_ms": round(max(0.0, done[start] - close) * 1000, 3)}
            try:
                resp = await stub.Collect(pb.CollectRequest(task_id=task.task_id, window_start=start), timeout=120)
            except grpc.aio.AioRpcError as exc:
                entry["error"] = f"{exc.code().name}: {exc.details()}"
                out.append(entry)
                continue
            t1 = time.time()
            u0 = time.perf_counter()
            result = collector.unshard(task, cluster.collector_key, start, resp.report_count, resp.checksum, list(resp.sealed_aggregate_shares))
            entry.update(collect_ms=(t1 - t0) * 1000, unshard_ms=(time.perf_counter() - u0) * 1000, at=t1,
                         report_count=resp.report_count, result=np.asarray(result.result, dtype=object).reshape(-1).tolist())
            out.append(entry)
    return out


def _phase_result(label: str, task: Task, faults: LinkFaults, chaos: Any, first: int, ws: int, gen: dict[str, Any],
                  collections: list[dict[str, Any]], samples: list[tuple[float, int]], chaos_events: list[Any],
                  proxy: chaos_mod.FaultProxy | None) -> dict[str, Any]:
    """Stage samples, summaries, timeline and the exactness / chaos checks of one run."""
    reps = gen["reports"]
    status = np.array(reps["status"], dtype=object)
    acked_mask = np.array([a is not None for a in reps["acked"]], dtype=bool)
    acked = np.array([a if a is not None else np.nan for a in reps["acked"]], dtype=np.float64)
    sealed = np.array(reps["sealed"], dtype=np.float64)
    window_idx = np.array(reps["window"], dtype=np.int64)
    edge_ms = np.array(reps["edge_s"], dtype=np.float64) * 1000
    upload_ms = (acked[acked_mask] - sealed[acked_mask]) * 1000
    agg_ms = aggregation_latencies(acked[acked_mask], samples)
    by_window = {c["start"]: c for c in collections}
    noisy = task.dp.get("algo", "none") != "none"
    bound = noise_plan(task).error_bound(DP_BETA, all_coordinates=True) if noisy else 0.0
    what = f"within the stated DP error bound {bound:.0f} (prob. 1-{DP_BETA:g})" if noisy else "exact"
    checks: list[dict[str, Any]] = []
    windows = []
    collect_ms, unshard_ms = [], []
    e2e_ms = []
    for i, wdoc in enumerate(gen["windows"]):
        c = by_window.get(wdoc["start"], {})
        ok = "error" not in c and c.get("report_count") == wdoc["acked"] and _results_match(c.get("result"), wdoc["expected"], bound)
        verdict = "matches" if ok else "does NOT match"
        detail = c.get("error") or f"collected {c.get('report_count')} reports, {wdoc['acked']} acknowledged; result {verdict} the sum of acknowledged readings ({what})"
        checks.append({"check": f"window {i}: result {what}, count exact (no acknowledged report lost or doubled)", "ok": bool(ok), "detail": detail})
        windows.append({"start": wdoc["start"], "acked": wdoc["acked"], "refused": wdoc["refused"], "collected": c.get("report_count"),
                        "collect_ms": c.get("collect_ms"), "unshard_ms": c.get("unshard_ms"), "settled_after_close_ms": c.get("settled_after_close_ms")})
        if "collect_ms" in c:
            collect_ms.append(c["collect_ms"])
            unshard_ms.append(c["unshard_ms"])
            in_w = acked_mask & (window_idx == i)
            e2e_ms.append(edge_ms[in_w] + (acked[in_w] - sealed[in_w]) * 1000 + c["collect_ms"] + c["unshard_ms"])
    for err in gen["errors"]:
        checks.append({"check": "load generator", "ok": False, "detail": err})
    storms = gen.get("storms", {})
    if isinstance(chaos, ReplayStorm):
        st = storms.get("replay", {"sent": 0, "statuses": {}})
        ok = st["sent"] == chaos.count and set(st["statuses"]) == {"REPLAYED"}
        checks.append({"check": "replay storm: every replay refused as REPLAYED", "ok": ok, "detail": json.dumps(st["statuses"])})
    if isinstance(chaos, MalformedStorm):
        st = storms.get("malformed", {"statuses": {}})
        for kind, (allowed, _) in chaos_mod.MALFORMED_KINDS.items():
            got = st["statuses"].get(kind, {})
            ok = bool(got) and set(got) <= allowed
            checks.append({"check": f"malformed storm: {kind} gets {'/'.join(sorted(allowed))}", "ok": ok, "detail": json.dumps(got)})
    if isinstance(chaos, KillRestart):
        ok = len(chaos_events) == 1 and isinstance(chaos_events[0], dict)
        detail = json.dumps({k: round(v, 3) for k, v in chaos_events[0].items()}) if ok else f"restart failed: {chaos_events}"
        checks.append({"check": f"aggregator {chaos.target} killed (SIGKILL) and restarted mid-window", "ok": ok, "detail": detail})
    t_origin = float(first)
    t_end = float(max([first + len(gen["windows"]) * ws] + [c.get("at", 0) for c in collections]))
    agg_times = []
    prev = 0
    for t, n in samples:
        if n > prev:
            agg_times.extend([t] * (n - prev))
            prev = n
    all_e2e = np.concatenate(e2e_ms) if e2e_ms else np.zeros(0)
    acked_times = acked[acked_mask]
    taken = np.array(reps["taken"], dtype=np.float64)
    rates = []  # per window: acknowledged / (last ack - first reading taken)
    for i in range(len(gen["windows"])):
        in_w = acked_mask & (window_idx == i)
        if in_w.sum() > 1:
            rates.append(in_w.sum() / max(1e-9, acked[in_w].max() - taken[window_idx == i].min()))
    return {
        "label": label,
        "task_id": task.task_id_b64,
        "faults": faults.model_dump(),
        "chaos": chaos.model_dump() if chaos is not None else None,
        "windows": windows,
        "reports": {"sent": len(status), "acked": int(acked_mask.sum()),
                    "refused": {k: int(v) for k, v in zip(*np.unique(status[~acked_mask], return_counts=True))} if (~acked_mask).any() else {}},
        "ingest_per_s": round(float(np.median(rates)), 1) if rates else None,
        "stages": {"edge": summarize(edge_ms), "upload": summarize(upload_ms), "aggregate": summarize(agg_ms),
                   "collect": summarize(collect_ms), "unshard": summarize(unshard_ms), "end_to_end": summarize(all_e2e)},
        "samples_ms": {"edge": _r(edge_ms), "upload": _r(upload_ms), "aggregate": _r(agg_ms), "collect": _r(collect_ms),
                       "unshard": _r(unshard_ms), "end_to_end": _r(all_e2e)},
        "timeline": {"bin_seconds": TIMELINE_BIN, "origin": t_origin,
                     "acked_per_s": timeline(acked_times, t_origin, t_end), "aggregated_per_s": timeline(np.array(agg_times), t_origin, t_end)},
        "storms": storms,
        "proxy": vars(proxy.stats) if proxy is not None else None,
        "checks": checks,
    }


def _r(a: Any) -> list[float]:
    return [round(float(x), 3) for x in np.asarray(a, dtype=np.float64)]


# ----------------------------------------------------------------- budgets ---
def check_budgets(scn: Scenario, main: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for stage in STAGES:
        budget = getattr(scn.budgets, stage)
        measured = main["stages"][stage]
        for q in ("p50", "p99"):
            limit = getattr(budget, f"{q}_ms")
            if limit is None:
                continue
            value = measured[q]
            out.append({"budget": f"{stage} {q}", "limit_ms": limit, "measured_ms": value, "ok": value is not None and value <= limit})
    if scn.budgets.min_ingest_per_s:
        value = main["ingest_per_s"]
        out.append({"budget": "ingest reports/s", "min": scn.budgets.min_ingest_per_s, "measured": value,
                    "ok": value is not None and value >= scn.budgets.min_ingest_per_s})
    return out


def _failed_phase(label: str, chaos: Any, faults: LinkFaults, exc: BaseException) -> dict[str, Any]:
    """A run that could not complete: no samples, one failed check saying why."""
    return {
        "label": label, "task_id": None, "faults": faults.model_dump(), "chaos": chaos.model_dump() if chaos is not None else None,
        "windows": [], "reports": {"sent": 0, "acked": 0, "refused": {}}, "ingest_per_s": None,
        "stages": {s: summarize([]) for s in STAGES}, "samples_ms": {},
        "timeline": {"bin_seconds": TIMELINE_BIN, "origin": 0.0, "acked_per_s": [], "aggregated_per_s": []},
        "storms": {}, "proxy": None,
        "checks": [{"check": "run completed", "ok": False, "detail": f"{type(exc).__name__}: {exc} (see logs/)"}],
    }


async def _guarded_phase(cluster: LocalCluster, scn: Scenario, label: str, faults: LinkFaults, chaos: Any, windows: int, work: Path) -> dict[str, Any]:
    try:
        return await run_phase(cluster, scn, label, faults, chaos, windows, work)
    except (RuntimeError, OSError, TimeoutError, grpc.aio.AioRpcError, json.JSONDecodeError) as exc:
        print(f"twinmpc bench: run {label} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return _failed_phase(label, chaos, faults, exc)


def _keep_logs(work: Path, logs: Path) -> None:
    """Copy the load generator's and the aggregators' logs next to the report."""
    logs.mkdir(parents=True, exist_ok=True)
    for f in [*work.glob("loadgen-*.log"), *(work / "cluster").glob("agg*.log")]:
        shutil.copyfile(f, logs / f.name)


async def run_scenario(scn: Scenario, *, with_peers: bool = True, logs: Path | None = None) -> dict[str, Any]:
    """Run a scenario end to end; returns the result document (JSON-serialisable).

    A run that cannot complete (an aggregator that does not come back, a load
    generator that stops answering) is recorded as a failed check and the
    remaining runs go on; with `logs`, every process's log is copied there.
    """
    started = time.time()
    load_before = round(os.getloadavg()[0], 2)  # other jobs on a shared machine show here
    with tempfile.TemporaryDirectory(prefix="twinmpc-bench-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster", k=scn.workload.aggregators, processes=True,
                               workers={0: scn.workload.leader_workers})
        await cluster.start()
        try:
            main = await _guarded_phase(cluster, scn, "main", scn.network, None, scn.workload.windows, work)
            chaos_runs = []
            for n, c in enumerate(scn.chaos):
                faults = c.faults if isinstance(c, LinkFault) else LinkFaults()
                chaos_runs.append(await _guarded_phase(cluster, scn, f"chaos{n}:{c.action}", faults, c, 1, work))
        finally:
            await cluster.stop()
            if logs is not None:
                _keep_logs(work, logs)
    peers = peers_mod.run_peers(scn.peers) if with_peers and scn.peers.enabled else None
    budgets = check_budgets(scn, main)
    checks = main["checks"] + [c for run in chaos_runs for c in run["checks"]]
    return {
        "scenario": scn.model_dump(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_1min_before": load_before, "loadavg_1min_after": round(os.getloadavg()[0], 2)},
        "started": started,
        "wall_seconds": round(time.time() - started, 1),
        "main": main,
        "chaos": chaos_runs,
        "peers": peers,
        "budgets": budgets,
        "checks": checks,
        "ok": all(b["ok"] for b in budgets) and all(c["ok"] for c in checks),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twinmpc bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="bench/scenarios/quick.toml (default): under a minute on 2 cores")
    which.add_argument("--full", action="store_true", help="bench/scenarios/full.toml: the README's performance table")
    which.add_argument("--scenario", type=Path, help="a scenario TOML file")
    parser.add_argument("--out", type=Path, default=None, help="output folder (result.json, report.md, *.png)")
    parser.add_argument("--json", action="store_true", help="print the result JSON (without raw samples) on stdout")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer comparison")
    args = parser.parse_args(argv)
    path = args.scenario or SCENARIO_DIR / ("full.toml" if args.full else "quick.toml")
    try:
        scn = load_scenario(path)
    except ScenarioError as exc:
        print(f"twinmpc bench: {exc}", file=sys.stderr)
        return 2
    out = args.out or REPO / "bench" / "out" / scn.name
    result = asyncio.run(run_scenario(scn, with_peers=not args.no_peers, logs=out / "logs"))
    result["command"] = " ".join(["python -m twinmpc.bench.runner", *(sys.argv[1:] if argv is None else argv)])
    files = report_mod.write_report(result, out)
    if args.json:
        print(json.dumps(report_mod.without_samples(result), indent=2))
    print(report_mod.summary_text(result))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
