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

from twinmpc.mpc.client import shard_reports
from twinmpc.mpc.modes import noise_plan
from twinmpc.services.twin.local_cluster import LocalCluster

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
    *,
    intersections: int,
    windows: int,
    window_seconds: int,
    k: int,
    seed: int,
    workdir: Path | None,
    epsilon: float | None = None,
    mqtt: str | None = None,
    mode: str = "shares",
) -> bool:
    console = Console()
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="twinmpc-demo-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if mode == "masks":  # one aggregator, edge nodes in SecAgg+ rounds (services/twin/demo_masks.py)
            from twinmpc.services.twin.demo_masks import run_masks_demo

            return await run_masks_demo(console, root, rng, intersections=intersections, windows=windows,
                                        window_seconds=window_seconds, epsilon=epsilon)
        feed = f"MQTT broker {mqtt} -> {DISTRICTS} district gateways (edge agents)" if mqtt else "in-process feed"
        console.print(f"[bold]twinmpc demo[/]: {intersections} intersections, {windows} windows of {window_seconds}s, "
                      f"K={k} aggregator processes, mTLS on loopback, {feed}")
        cluster = LocalCluster(root, k=k, processes=True)
        await cluster.start()
        try:
            return await _drive(console, cluster, rng, intersections, windows, window_seconds, epsilon, mqtt, root)
        finally:
            await cluster.stop()


BETA = 1e-6  # a DP result must lie within the bound that holds with probability 1 - BETA


DISTRICTS = 8


async def _drive(
    console: Console, cluster: LocalCluster, rng, n: int, windows: int, window_seconds: int, epsilon: float | None, mqtt: str | None, root: Path
) -> bool:
    dp = {"algo": "discrete-gaussian", "epsilon": epsilon, "delta": 1e-9} if epsilon else {"algo": "none"}
    reporters = DISTRICTS if mqtt else n
    base = {"window_seconds": window_seconds, "min_batch_size": max(1, reporters // 2), "max_skew_seconds": 30, "dp": dp}
    vehicle_bits = 16 if mqtt else 8  # a gateway reports its district's sum
    tasks = {
        "vehicles": await cluster.provision({**base, "measurement": {"type": "sum", "bits": vehicle_bits}, "description": "vehicles per window"}),
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
    district_load = rng.uniform(0.5, 2.0, size=DISTRICTS)
    district = np.arange(n) % DISTRICTS
    city_feed = None
    if mqtt:
        from twinmpc.services.twin.demo_mqtt import MqttCity, district_truth

        host, _, port = mqtt.rpartition(":")
        city_feed = MqttCity(root / "edge", cluster, tasks, DISTRICTS, host or "127.0.0.1", int(port))
        await city_feed.start()
    try:
        async with cluster.upload_client() as uploader, cluster.collector() as collector:
            for _ in range(windows):
                now = time.time()
                window = int(now) - int(now) % window_seconds
                city = simulate_window(rng, n, district_load)
                values = {"vehicles": city.vehicles, "congestion": city.congestion, "speed": city.speed}
                if city_feed is not None:
                    truth = district_truth(values, district, DISTRICTS, len(LEVELS))
                    t0 = time.perf_counter()
                    await city_feed.publish(max(window, int(now)), values, district, rng)
                    times.add("MQTT publish (per reading)", (time.perf_counter() - t0) / n)
                    if not await city_feed.wait_uploaded(window + window_seconds):
                        console.print("[red]gateways did not upload in time[/]")
                        all_ok = False
                else:
                    truth = {
                        "vehicles": int(city.vehicles.sum()),
                        "congestion": np.bincount(city.congestion, minlength=len(LEVELS)).tolist(),
                        "speed": float(city.speed.mean()),
                    }
                    all_ok &= await _upload_direct(console, uploader, tasks, values, max(window, int(now)), times)
                    await asyncio.sleep(max(0.0, window + window_seconds - time.time()) + 0.01)
                all_ok &= await _collect_window(collector, tasks, window, truth, bounds, reporters, times, results)
    finally:
        if city_feed is not None:
            await city_feed.stop()
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


async def _upload_direct(console: Console, uploader, tasks, values, report_time: int, times: StageTimes) -> bool:
    """The in-process feed: shard and seal every intersection's readings, upload in batches."""
    ok = True
    for name, task in tasks.items():
        t0 = time.perf_counter()
        reports = shard_reports(task, [int(v) for v in values[name]], time=report_time)
        times.add("edge shard+seal (per report)", (time.perf_counter() - t0) / len(reports))
        t0 = time.perf_counter()
        outcomes = await uploader.upload_batch(task.task_id, reports)
        times.add("upload batch (per report)", (time.perf_counter() - t0) / len(reports))
        if not all(o.accepted for o in outcomes):
            console.print(f"[red]{sum(not o.accepted for o in outcomes)} reports refused[/]")
            ok = False
    return ok


async def _collect_window(collector, tasks, window: int, truth: dict, bounds: dict, reporters: int, times: StageTimes, results: Table) -> bool:
    ok_all = True
    for name, task in tasks.items():
        t0 = time.perf_counter()
        res = await collector.collect(task, window)
        times.add("window close -> result", time.perf_counter() - t0)
        private = res.result["mean"] if name == "speed" else res.result
        bound = bounds[name] / reporters if name == "speed" else bounds[name]
        ok = _matches(private, truth[name], bound) and res.report_count == reporters
        ok_all &= ok
        results.add_row(str(window), name, str(res.report_count), _fmt(private), _fmt(truth[name]), "[green]yes[/]" if ok else "[red]NO[/]")
    return ok_all


def _matches(private, truth, bound: float) -> bool:
    """Exact without DP; within the stated per-coordinate error bound with DP."""
    if isinstance(truth, list):
        return len(private) == len(truth) and all(abs(p - t) <= bound + 1e-9 for p, t in zip(private, truth))
    return abs(private - truth) <= bound + 1e-9


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
