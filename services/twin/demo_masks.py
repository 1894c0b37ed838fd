"""`twinmpc demo --mode masks`: the simulated city through one aggregator process in masks mode.

Every intersection is an edge node with its own certificate and channel key.
When a window closes, all of them run one SecAgg+ round with the aggregator
(mTLS, real process): each adds its part of the DP noise and its masks to
(vehicles, speed); about one node in ten drops out -- before its masked input
(the aggregator then recovers its mask key from the neighbours' shares) or
after it (its input counts; its neighbours' shares of its self-mask seed do the
rest) -- and the aggregator unmasks the survivors' sum.  The result is printed next to the true
sum of the inputs that reached it (synthetic data); the command fails if a
result is wrong.  See docs/masks.md.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from twinmpc.mpc.masks import mode
from twinmpc.mpc.masks.server import Phase
from twinmpc.mpc.task import Task
from twinmpc.services.masks_client import MasksRoundClient
from twinmpc.services.masks_credentials import CertificateDirectory, load_client_keys
from twinmpc.services.twin.local_cluster import LocalCluster

BETA = 1e-6
DROP_RATE = 0.1
ROUND_SECONDS = 60  # hard deadline of a round; it also closes idle_seconds after its latest message
DROP_POINTS = (Phase.MASKED_INPUT, Phase.UNMASK)  # after sharing (mask keys recovered) and after confirming


def _idle_seconds(n: int) -> int:
    """Generous: every simulated node runs in this one process, whose turns come in bursts that grow with n."""
    return max(2, n // 25)


async def _window_result(cluster: LocalCluster, task: Task, window: int) -> tuple[int, list[int], float] | None:
    """(count, sum, stated error bound) through the controller's Collect; None when the round left nothing."""
    try:
        async with cluster.collector() as collector:
            res = await collector.collect(task, window)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return None
        raise
    variance = float(res.dp.get("total_variance", 0.0))  # the survivors' noise, as the ledger was charged
    bound = math.sqrt(2 * variance * math.log(2 * task.measurement.length / BETA))
    return res.report_count, res.result, bound


async def run_masks_demo(console: Console, root: Path, rng: np.random.Generator, *, intersections: int, windows: int,
                         window_seconds: int, epsilon: float | None) -> bool:
    cluster = LocalCluster(root, k=1, processes=True)
    await cluster.start()
    try:
        return await _drive(console, cluster, rng, intersections, windows, window_seconds, epsilon)
    finally:
        await cluster.stop()


async def _drive(console: Console, cluster: LocalCluster, rng, n: int, windows: int, window_seconds: int, epsilon: float | None) -> bool:
    dp = {"algo": "discrete-gaussian", "epsilon": epsilon, "delta": 1e-9} if epsilon else {"algo": "none"}
    task = await cluster.provision({
        "measurement": {"type": "sumvec", "length": 2, "bits": 8},
        "mode": "masks",
        "masks": {"dropout": "1/5", "max_clients": n, "round_seconds": ROUND_SECONDS, "idle_seconds": _idle_seconds(n)},
        "window_seconds": window_seconds,
        "min_batch_size": max(2, n // 2),
        "dp": dp,
        "description": "vehicles and speed per window",
    })
    plan = mode.round_config(task, 0).plan(n)
    console.print(f"masks mode: {n} edge nodes, k = {plan.k} neighbours, threshold t = {plan.t}, release floor {plan.min_survivors}; "
                  f"about {DROP_RATE:.0%} drop out before their masked input or before unmasking")
    if epsilon:
        console.print(f"DP: each node adds discrete Gaussian noise sigma^2 = {float(plan.noise.sigma2):.1f} (encoded units), "
                      f"calibrated so the floor of {plan.min_survivors} survivors meets epsilon={epsilon}, delta=1e-9")
    directory = CertificateDirectory((cluster.pki_dir / "ca.crt").read_bytes())
    clients = []
    for i in range(n):
        ident = f"intersection-{i:04d}"
        creds = cluster.credentials("edge", ident)
        keys = load_client_keys(cluster.pki_dir / f"{ident}.crt", cluster.pki_dir / f"{ident}.key", cluster.workdir / "edge" / ident)
        clients.append(MasksRoundClient(cluster.endpoints[0], creds, keys, directory, state_dir=cluster.workdir / "edge" / ident))
    results = Table(title="Private sums vs. true sums of the inputs that reached the aggregator (synthetic data)")
    for col in ("window", "dropped", "summed", "vehicles (private / true)", "speed sum (private / true)", "seconds", "ok"):
        results.add_column(col)
    all_ok = True
    load = rng.uniform(0.5, 2.0, size=8)
    try:
        for _ in range(windows):
            now = time.time()
            window = int(now) - int(now) % window_seconds
            vehicles = np.minimum(rng.poisson(40 * load[np.arange(n) % 8]), 255)
            speed = np.clip(rng.normal(50, 8, n), 0, 255).astype(int)
            drops = {i: DROP_POINTS[int(rng.integers(len(DROP_POINTS)))] for i in range(n) if rng.random() < DROP_RATE}
            await asyncio.sleep(max(0.0, window + window_seconds - time.time()) + 0.05)
            t0 = time.perf_counter()
            outcomes = await asyncio.gather(*(
                c.run(task, window, [int(vehicles[i]), int(speed[i])], drop_before=drops.get(i)) for i, c in enumerate(clients)
            ))
            seconds = time.perf_counter() - t0
            included = [i for i in range(n) if drops.get(i, Phase.DONE) > Phase.MASKED_INPUT]
            truth = [int(vehicles[included].sum()), int(speed[included].sum())]
            got = await _window_result(cluster, task, window)
            if got is None:
                reasons = {o.detail for o in outcomes if o.status == "aborted"}
                results.add_row(str(window), str(len(drops)), "-", "aborted", "; ".join(sorted(reasons))[:60], f"{seconds:.1f}", "[red]NO[/]")
                all_ok = False
                continue
            count, private, bound = got
            ok = count == len(included) and all(abs(p - t) <= bound + 1e-9 for p, t in zip(private, truth))
            all_ok &= ok
            results.add_row(str(window), str(len(drops)), str(count), f"{private[0]} / {truth[0]}", f"{private[1]} / {truth[1]}",
                            f"{seconds:.1f}", "[green]yes[/]" if ok else "[red]NO[/]")
    finally:
        for c in clients:
            await c.close()
    console.print(results)
    verdict = "within the stated DP error" if epsilon else "exact"
    console.print(f"[bold green]all results {verdict}[/]" if all_ok else "[bold red]some results were wrong[/]")
    return all_ok


__all__ = ["run_masks_demo"]
