"""`twinmpc demo`: a simulated city through real aggregator processes on loopback.

Intersections report, every window, their vehicle count (Sum), congestion
level (Histogram over 5 levels) and mean speed (Mean).  Each report is
sharded and sealed at the "edge", uploaded in batches over mTLS to the
leader, aggregated by K aggregator processes, and collected through the
controller API once the window closes.  The private results are printed next
to the true values (shown only because the data are synthetic); the command
fails if any result is wrong.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from mpc.client import shard_report
from services.local_cluster import LocalCluster

LEVELS = ["free", "light", "moderate", "heavy", "jammed"]


@dataclass
class CityWindow:
    vehicles: np.ndarray
    congestion: np.ndarray
    speed: np.ndarray


def simulate_window(rng: np.random.Generator, n: int, district_load: np.ndarray) -> CityWindow:
    """One window of synthetic intersection readings (Poisson traffic, load-driven congestion)."""
    district = np.arange(n) % district_load.size
    vehicles = rng.poisson(40 * district_load[district])
    congestion = np.clip((vehicles / 25 + rng.normal(0, 0.4, n)).astype(int), 0, len(LEVELS) - 1)
    speed = np.clip(rng.normal(55 - 9 * congestion, 4), 0, 255).astype(int)
    return CityWindow(vehicles.astype(int), congestion, speed)


@dataclass
class StageTimes:
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.samples.setdefault(stage, []).append(seconds)

    def row(self, stage: str) -> tuple[str, str, str]:
        s = np.array(self.samples.get(stage, [0.0])) * 1000
        return stage, f"{np.percentile(s, 50):.2f}", f"{np.percentile(s, 99):.2f}"


async def run_demo(*, intersections: int, windows: int, window_seconds: int, k: int, seed: int, workdir: Path | None) -> bool:
    console = Console()
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="twinmpc-demo-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        console.print(f"[bold]twinmpc demo[/]: {intersections} intersections, {windows} windows of {window_seconds}s, K={k} aggregator processes, mTLS on loopback")
        cluster = LocalCluster(root, k=k, processes=True)
        await cluster.start()
        try:
            return await _drive(console, cluster, rng, intersections, windows, window_seconds)
        finally:
            await cluster.stop()


async def _drive(console: Console, cluster: LocalCluster, rng, n: int, windows: int, window_seconds: int) -> bool:
    base = {"window_seconds": window_seconds, "min_batch_size": max(1, n // 2), "max_skew_seconds": 30}
    tasks = {
        "vehicles": await cluster.provision({**base, "measurement": {"type": "sum", "bits": 12}, "description": "vehicles per window"}),
        "congestion": await cluster.provision({**base, "measurement": {"type": "histogram", "buckets": len(LEVELS)}, "description": "congestion levels"}),
        "speed": await cluster.provision({**base, "measurement": {"type": "mean", "bits": 8}, "description": "mean speed km/h"}),
    }
    times = StageTimes()
    results = Table(title="Private results vs. true values (synthetic data)")
    for col in ("window", "task", "reports", "private result", "true value", "ok"):
        results.add_column(col)
    all_ok = True
    district_load = rng.uniform(0.5, 2.0, size=8)
    async with cluster.upload_client() as uploader, cluster.collector() as collector:
        for _ in range(windows):
            now = time.time()
            window = int(now) - int(now) % window_seconds
            city = simulate_window(rng, n, district_load)
            truth = {
                "vehicles": int(city.vehicles.sum()),
                "congestion": np.bincount(city.congestion, minlength=len(LEVELS)).tolist(),
                "speed": float(city.speed.mean()),
            }
            values = {"vehicles": city.vehicles, "congestion": city.congestion, "speed": city.speed}
            report_time = max(window, int(now))
            for name, task in tasks.items():
                t0 = time.perf_counter()
                reports = [shard_report(task, int(v), time=report_time) for v in values[name]]
                times.add("edge shard+seal (per report)", (time.perf_counter() - t0) / len(reports))
                t0 = time.perf_counter()
                outcomes = await uploader.upload_batch(task.task_id, reports)
                times.add("upload batch (per report)", (time.perf_counter() - t0) / len(reports))
                if not all(o.accepted for o in outcomes):
                    console.print(f"[red]{sum(not o.accepted for o in outcomes)} reports refused[/]")
                    all_ok = False
            await asyncio.sleep(max(0.0, window + window_seconds - time.time()) + 0.01)
            for name, task in tasks.items():
                t0 = time.perf_counter()
                res = await collector.collect(task, window)
                times.add("window close -> result", time.perf_counter() - t0)
                private = res.result["mean"] if name == "speed" else res.result
                ok = _matches(private, truth[name]) and res.report_count == n
                all_ok &= ok
                results.add_row(str(window), name, str(res.report_count), _fmt(private), _fmt(truth[name]), "[green]yes[/]" if ok else "[red]NO[/]")
    console.print(results)
    lat = Table(title="Stage latency (ms)")
    for col in ("stage", "p50", "p99"):
        lat.add_column(col)
    for stage in times.samples:
        lat.add_row(*times.row(stage))
    console.print(lat)
    console.print("[bold green]all results exact[/]" if all_ok else "[bold red]some results were wrong[/]")
    return all_ok


def _matches(private, truth) -> bool:
    if isinstance(truth, float):
        return abs(private - truth) < 1e-9
    return private == truth


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
