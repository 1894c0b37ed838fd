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
from services.aggregator.privacy import noise_plan
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


async def run_demo(
    *, intersections: int, windows: int, window_seconds: int, k: int, seed: int, workdir: Path | None, epsilon: float | None = None
) -> bool:
    console = Console()
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="twinmpc-demo-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        console.print(f"[bold]twinmpc demo[/]: {intersections} intersections, {windows} windows of {window_seconds}s, K={k} aggregator processes, mTLS on loopback")
        cluster = LocalCluster(root, k=k, processes=True)
        await cluster.start()
        try:
            return await _drive(console, cluster, rng, intersections, windows, window_seconds, epsilon)
        finally:
            await cluster.stop()


BETA = 1e-6  # a DP result must lie within the bound that holds with probability 1 - BETA


async def _drive(console: Console, cluster: LocalCluster, rng, n: int, windows: int, window_seconds: int, epsilon: float | None) -> bool:
    dp = {"algo": "discrete-gaussian", "epsilon": epsilon, "delta": 1e-9} if epsilon else {"algo": "none"}
    base = {"window_seconds": window_seconds, "min_batch_size": max(1, n // 2), "max_skew_seconds": 30, "dp": dp}
    tasks = {
        "vehicles": await cluster.provision({**base, "measurement": {"type": "sum", "bits": 8}, "description": "vehicles per window"}),
        "congestion": await cluster.provision({**base, "measurement": {"type": "histogram", "buckets": len(LEVELS)}, "description": "congestion levels"}),
        "speed": await cluster.provision({**base, "measurement": {"type": "mean", "bits": 8}, "description": "mean speed km/h"}),
    }
    times = StageTimes()
    bounds = {name: noise_plan(task).error_bound(BETA, all_coordinates=True) if epsilon else 0.0 for name, task in tasks.items()}
    if epsilon:
        console.print(f"DP: discrete Gaussian, epsilon={epsilon}, delta=1e-9 per collection, full noise at each of the {cluster.k} aggregators")
        for name, task in tasks.items():
            plan = noise_plan(task)
            console.print(f"  {name}: sigma^2 per aggregator = {float(plan.parameter):.1f}, total stddev = {plan.total_stddev:.1f} (encoded units), "
                          f"stated error bound {bounds[name]:.1f} (prob. 1-{BETA:g})")
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
                bound = bounds[name] / n if name == "speed" else bounds[name]
                ok = _matches(private, truth[name], bound) and res.report_count == n
                all_ok &= ok
                results.add_row(str(window), name, str(res.report_count), _fmt(private), _fmt(truth[name]), "[green]yes[/]" if ok else "[red]NO[/]")
    console.print(results)
    lat = Table(title="Stage latency (ms)")
    for col in ("stage", "p50", "p99"):
        lat.add_column(col)
    for stage in times.samples:
        lat.add_row(*times.row(stage))
    console.print(lat)
    verdict = "within the stated DP error" if epsilon else "exact"
    console.print(f"[bold green]all results {verdict}[/]" if all_ok else "[bold red]some results were wrong[/]")
    return all_ok


def _matches(private, truth, bound: float) -> bool:
    """Exact without DP; within the stated per-coordinate error bound with DP."""
    if isinstance(truth, list):
        return len(private) == len(truth) and all(abs(p - t) <= bound + 1e-9 for p, t in zip(private, truth))
    return abs(private - truth) <= bound + 1e-9


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
