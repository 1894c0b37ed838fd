"""Federated averaging through the real services: one FedAvg round is one window of a task.

`fedavg_training.run_fedavg` takes an injected ``secure_sum``; `ServiceSecureSum` is
the one that goes through running aggregators (DESIGN.md, "Federated
learning"; DAP roles: client upload, collection):

* task: a ``fixedpointvec`` task (scheme ``twinring64``, K aggregators) whose
  measurement is `FedAvgConfig.measurement` - the same length, ``frac_bits``
  and per-entry clip the edge nodes encode with - and ``min_batch_size`` equal
  to the clients per round, so a controller never sees a smaller sum.
* edge node: its encoded update (Z/2^64, `mpc.fedavg.encode_update`) is decoded
  to floats and sharded with the task's `FixedPointVec`; the measurement the
  scheme encodes must equal the update bit for bit (checked, `InvalidMeasurement`
  otherwise: wrong length, entry beyond the clip, other ``frac_bits``), so the
  aggregators sum exactly what a plain sum would.  Each report goes over its
  own mTLS connection and edge identity to the leader.  `run_fedavg` hands the
  secure sum the round's vectors only, not which node sent them, so identities
  belong to the slot in the round (``fedavg-edge-<j>``), not to a node.
* controller: once every report of the round is acknowledged, it collects the
  round's window (`Collector`, the aggregate shares sealed to its HPKE key).
  The collector returns floats ``n / 2^frac_bits`` (`FixedPointVec.decode`);
  for ``|n| < 2^53`` that float is exact, so ``n`` is recovered exactly
  (`reencode_aggregate`, which refuses anything else): without DP the service
  run is bit-identical to the plain-sum run.

Windows: rounds must not wait for the wall clock, so the task uses 1-second
windows and round r reports into window ``first + r`` where every window is
already closed when the run starts (report times in the past, within
``max_skew_seconds``); each window is collected right after its uploads.

Server-side DP (DP-FedAvg): a task ``dp`` block (discrete Gaussian) makes every
aggregator add its noise to its aggregate share.  The noise is calibrated to the
sensitivity `FixedPointVec.sensitivity` reports, an L2 bound of
``ceil(clip * 2^f) * sqrt(d)`` (the box of per-entry clips), not the tighter
``sqrt(clip_norm^2 + 1) * 2^f`` of a clipped FedAvg update
(`FedAvgConfig.sensitivity`): the service-side noise is larger than a
DP-FedAvg analysis needs, by ``entry_clip * sqrt(d) / sqrt(clip_norm^2 + 1)``,
and, as every aggregator adds the full noise (`mpc.dp`), the released sum
carries K draws.

TwinRing64 has no validity proofs: a malicious edge node can still submit a
vector outside the clip (the check here runs on the honest client).  Tasks that
must resist poisoning need a proved type (`mpc.prio3`), not wired for
fixed-point vectors yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from twinmpc.crypto import fixedpoint, ring
from twinmpc.mpc.client import shard_reports
from twinmpc.mpc.collector import CollectionResult
from twinmpc.mpc.errors import InvalidMeasurement, InvalidTask, TwinMpcError
from twinmpc.mpc.fedavg import FedAvgConfig
from twinmpc.mpc.measurements import FixedPointVec
from twinmpc.mpc.modes import SharesMode, mode_of, noise_plan
from twinmpc.mpc.task import Task
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.services.client import Collector, UploadClient, report_to_proto
from twinmpc.services.twin.city import CityDataset, generate_city
from twinmpc.services.twin.fedavg_training import FedAvgHistory, run_fedavg
from twinmpc.services.twin.local_cluster import LocalCluster

ACCURACY_MARGIN = 0.02  # final FedAvg accuracy may trail centralised training by at most 2 points
_EXACT_LIMIT = 2.0**53  # float64 holds every integer below this exactly
_COLLECT_ATTEMPTS = 20


class FedAvgRoundError(TwinMpcError):
    """A round's collection does not match what was uploaded (count, length, exactness)."""


@dataclass(frozen=True)
class RoundCost:
    """What one round cost the services: wall time of each phase and upload payload bytes."""

    round: int
    window_start: int
    reports: int
    upload_seconds: float
    collect_seconds: float
    upload_bytes: int  # serialised UploadReportRequest messages (gRPC payload, before TLS framing)
    collect_retries: int = 0  # collections refused by the leader's rate limit and retried after its delay

    @property
    def seconds(self) -> float:
        return self.upload_seconds + self.collect_seconds


def reencode_aggregate(values: Sequence[float] | np.ndarray, frac_bits: int) -> np.ndarray:
    """Exact inverse of `FixedPointVec.decode` on a collected sum: floats n / 2^f back to n mod 2^64.

    Scaling by a power of two is exact in binary floating point, so ``n`` comes
    back unchanged whenever ``|n| < 2^53``; beyond that the collector's float
    has already lost bits and the sum is refused rather than silently rounded.
    """
    scaled = np.asarray(values, dtype=np.float64) * 2.0**frac_bits
    if scaled.ndim != 1:
        raise FedAvgRoundError("collected aggregate must be a vector")
    if not np.all(np.isfinite(scaled)) or np.any(np.abs(scaled) >= _EXACT_LIMIT) or np.any(scaled != np.rint(scaled)):
        raise FedAvgRoundError(f"collected aggregate is not exactly n / 2^{frac_bits} with |n| < 2^53")
    return scaled.astype(np.int64).astype(ring.DTYPE)


def update_measurement(task: Task, update: np.ndarray) -> np.ndarray:
    """Edge node: the float vector whose FixedPointVec encoding is exactly `update`.

    Raises InvalidMeasurement if the task's measurement would encode anything
    else (wrong length or dtype, an entry beyond the task's clip, other frac_bits).
    """
    measurement = task.measurement
    if not isinstance(measurement, FixedPointVec):
        raise InvalidTask(f"FedAvg rounds need a fixedpointvec task, not {measurement.NAME!r}")
    u = np.asarray(update)
    if u.dtype != ring.DTYPE:
        raise InvalidMeasurement(f"an encoded update is a uint64 vector, got dtype {u.dtype}")
    values = fixedpoint.decode(u, measurement.frac_bits)
    encoded = measurement.encode(values)  # the scheme's own encoding (TwinRing64.shard calls it)
    if not np.array_equal(encoded, u):
        raise InvalidMeasurement("update does not re-encode bit for bit: an entry lies beyond the task's clip")
    return values


class ServiceSecureSum:
    """`mpc.fedavg.SecureSum` through running aggregators: one window of `task` per call.

    Construct on the event loop that runs the cluster's clients; call it from
    another thread (run_fedavg is synchronous, e.g. under `asyncio.to_thread`).
    ``windows`` is how many rounds it can serve; all of them are closed windows
    in the past when it is built.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        task: Task,
        loop: asyncio.AbstractEventLoop,
        *,
        windows: int,
        clock: Callable[[], float] = time.time,
        rand: Callable[[int], bytes] = os.urandom,
        timeout: float = 300.0,
    ) -> None:
        if not isinstance(task.measurement, FixedPointVec) or not isinstance(mode_of(task), SharesMode):
            raise InvalidTask("FedAvg rounds need a fixedpointvec task in mode 'shares'")
        if windows < 1:
            raise ValueError("windows must be >= 1")
        span = (windows + 1) * task.window_seconds
        if span >= task.max_skew_seconds:
            raise InvalidTask(
                f"{windows} past windows of {task.window_seconds}s need max_skew_seconds > {span}, "
                f"task has {task.max_skew_seconds}"
            )
        self.cluster = cluster
        self.task = task
        self._loop = loop
        self._rand = rand
        self._timeout = timeout
        self._windows = windows
        self._rounds_started = 0
        # the last window, first + (windows - 1) * w, closes at window_start(now) - w <= now
        self.first_window = task.window_start(int(clock())) - (windows + 1) * task.window_seconds
        self._uploaders: list[UploadClient] = []
        self._collector: Collector | None = None
        self.costs: list[RoundCost] = []
        self.dp_applied: dict[str, Any] = {}

    def __call__(self, updates: Sequence[np.ndarray]) -> np.ndarray:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("ServiceSecureSum blocks: call it from a worker thread, not from its event loop")
        return asyncio.run_coroutine_threadsafe(self.sum_round(list(updates)), self._loop).result(self._timeout)

    async def sum_round(self, updates: Sequence[np.ndarray]) -> np.ndarray:
        """Upload one report per update into the next window, collect it, return the encoded sum."""
        if not updates:
            raise ValueError("a round needs at least one update")
        r = self._rounds_started
        if r >= self._windows:
            raise ValueError(f"all {self._windows} windows are used")
        values = [update_measurement(self.task, u) for u in updates]  # refuse before anything is sent
        self._rounds_started += 1  # a failed round still spends its window: it may hold some reports
        window = self.first_window + r * self.task.window_seconds
        reports = shard_reports(self.task, values, time=window, rand=self._rand)
        sent = sum(pb.UploadReportRequest(task_id=self.task.task_id, report=report_to_proto(rep)).ByteSize() for rep in reports)
        while len(self._uploaders) < len(reports):
            self._uploaders.append(self.cluster.upload_client(f"fedavg-edge-{len(self._uploaders)}"))
        if self._collector is None:
            self._collector = self.cluster.collector("fedavg-controller")
        t0 = time.perf_counter()
        # each call returns only once the leader has stored the report durably (ack)
        await asyncio.gather(*(c.upload(self.task.task_id, rep) for c, rep in zip(self._uploaders, reports)))
        t1 = time.perf_counter()
        result, retries = await self._collect(self._collector, window)
        t2 = time.perf_counter()
        if result.report_count != len(reports):
            raise FedAvgRoundError(f"window {window} counted {result.report_count} reports, round uploaded {len(reports)}")
        total = reencode_aggregate(result.result, self.task.measurement.frac_bits)
        if total.shape != np.shape(updates[0]):
            raise FedAvgRoundError(f"collected {total.shape[0]} entries, updates have {np.shape(updates[0])}")
        self.dp_applied = result.dp
        self.costs.append(RoundCost(r, window, len(reports), t1 - t0, t2 - t1, sent, retries))
        return total

    async def _collect(self, collector: Collector, window: int) -> tuple[CollectionResult, int]:
        """Collect, waiting out the leader's per-controller rate limit (RESOURCE_EXHAUSTED + retry-after-ms).

        Short rounds can outpace ``collect_rate_per_second``; the limiter
        refuses before the collection touches the window, so a retry is safe.
        Any other refusal (budget exhausted, batch too small) is raised.
        """
        retries = 0
        while True:
            try:
                return await collector.collect(self.task, window), retries
            except grpc.aio.AioRpcError as exc:
                retry_ms = dict(exc.trailing_metadata() or ()).get("retry-after-ms")
                retries += 1
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or retry_ms is None or retries >= _COLLECT_ATTEMPTS:
                    raise
                await asyncio.sleep(int(retry_ms) / 1000)

    async def aclose(self) -> None:
        for c in self._uploaders:
            await c.close()
        self._uploaders.clear()
        if self._collector is not None:
            await self._collector.close()
            self._collector = None


async def provision_fedavg_task(
    cluster: LocalCluster,
    config: FedAvgConfig,
    num_features: int,
    *,
    clients_per_round: int,
    epsilon: float | None = None,
    delta: float = 1e-9,
    window_seconds: int = 1,
    max_skew_seconds: int = 3600,
) -> Task:
    """Install the FixedPointVec task whose windows are FedAvg rounds (DP block if epsilon is set)."""
    doc: dict[str, Any] = {
        "measurement": config.measurement(num_features).params(),
        "vdaf": "twinring64",
        "window_seconds": window_seconds,
        "min_batch_size": clients_per_round,
        "max_skew_seconds": max_skew_seconds,
        "description": "FedAvg rounds of the traffic model (services.fedavg_runner)",
    }
    if epsilon is not None:
        doc["dp"] = {"algo": "discrete-gaussian", "epsilon": epsilon, "delta": delta}
    return await cluster.provision(doc)


@dataclass(frozen=True)
class ServiceRun:
    """A FedAvg run through the services and what each round cost."""

    history: FedAvgHistory
    task: Task
    costs: tuple[RoundCost, ...]
    dp_applied: dict[str, Any]
    wall_seconds: float


async def run_fedavg_on_cluster(
    cluster: LocalCluster,
    dataset: CityDataset,
    *,
    rounds: int,
    clients_per_round: int,
    config: FedAvgConfig,
    epsilon: float | None = None,
) -> ServiceRun:
    """Provision a task on a running cluster and train through it (run_fedavg in a worker thread)."""
    task = await provision_fedavg_task(
        cluster, config, dataset.num_features, clients_per_round=clients_per_round, epsilon=epsilon
    )
    secure = ServiceSecureSum(cluster, task, asyncio.get_running_loop(), windows=rounds)
    try:
        t0 = time.perf_counter()
        history = await asyncio.to_thread(run_fedavg, dataset, rounds, clients_per_round, secure, config=config)
        wall = time.perf_counter() - t0
    finally:
        await secure.aclose()
    return ServiceRun(history, task, tuple(secure.costs), secure.dp_applied, wall)


def plain_sum(updates: Sequence[np.ndarray]) -> np.ndarray:
    """The reference a secure sum must equal: the sum in Z/2^64 in the clear."""
    return np.sum(np.stack(updates), axis=0, dtype=ring.DTYPE)


def summarise(
    run: ServiceRun,
    reference: FedAvgHistory,
    config: FedAvgConfig,
    *,
    k: int,
    processes: bool,
    seed: int,
    epsilon: float | None,
) -> dict[str, Any]:
    """JSON-ready account of a run: accuracy per round vs centralised, cost per round, DP facts."""
    h = run.history
    costs = run.costs
    n_reports = sum(c.reports for c in costs)
    l1, l2_squared = run.task.measurement.sensitivity()
    scale = 2.0**run.task.measurement.frac_bits
    out: dict[str, Any] = {
        "aggregators": k,
        "processes": processes,
        "seed": seed,
        "rounds": len(h.rounds),
        "clients_per_round": len(h.rounds[0].clients),
        "epsilon_per_round": epsilon,
        "accuracy_per_round": [r.accuracy for r in h.rounds],
        "final_accuracy": h.final_accuracy,
        "centralised_accuracy": h.centralised_accuracy,
        "plain_sum_final_accuracy": reference.final_accuracy,
        # without DP the service run must reproduce the plain-sum run exactly
        "identical_to_plain_sum": bool(np.array_equal(h.weights, reference.weights)) if epsilon is None else None,
        "margin": ACCURACY_MARGIN,
        "within_margin": h.final_accuracy >= h.centralised_accuracy - ACCURACY_MARGIN,
        "cost_per_round": {
            "seconds": float(np.mean([c.seconds for c in costs])),
            "upload_seconds": float(np.mean([c.upload_seconds for c in costs])),
            "collect_seconds": float(np.mean([c.collect_seconds for c in costs])),
            "upload_bytes": float(np.mean([c.upload_bytes for c in costs])),
            "bytes_per_report": sum(c.upload_bytes for c in costs) / n_reports,
            "wall_seconds_incl_local_training": run.wall_seconds / len(costs),
        },
        "rounds_detail": [{**asdict(c), "accuracy": r.accuracy} for c, r in zip(costs, h.rounds)],
        "dp_sensitivity": {
            "fixedpointvec_l2": float(np.sqrt(l2_squared)) / scale,
            "fixedpointvec_l1": l1 / scale,
            "fedavg_update_l2": config.sensitivity,
        },
    }
    if epsilon is not None:
        out["dp_applied"] = run.dp_applied  # as the leader reported it (every aggregator adds this much)
        # stddev of the summed noise of all K aggregators, in model units (the weight-sum entry included)
        out["noise_stddev_per_entry"] = noise_plan(run.task).total_stddev / scale
    return out


async def run_fedavg_through_services(
    workdir: str | Path,
    *,
    k: int = 2,
    rounds: int,
    clients_per_round: int,
    seed: int,
    processes: bool = True,
    epsilon: float | None = None,
) -> dict[str, Any]:
    """Start a K-aggregator cluster in `workdir`, train the traffic model through it, stop it."""
    dataset = generate_city(seed)
    config = FedAvgConfig(seed=seed)
    if rounds < 1 or not 1 <= clients_per_round <= len(dataset.clients):
        raise ValueError(f"need rounds >= 1 and 1 <= clients_per_round <= {len(dataset.clients)} edge nodes")
    cluster = LocalCluster(Path(workdir), k=k, processes=processes)
    await cluster.start()
    try:
        run = await run_fedavg_on_cluster(
            cluster, dataset, rounds=rounds, clients_per_round=clients_per_round, config=config, epsilon=epsilon
        )
    finally:
        await cluster.stop()
    reference = run_fedavg(dataset, rounds, clients_per_round, plain_sum, config=config)
    return summarise(run, reference, config, k=k, processes=processes, seed=seed, epsilon=epsilon)


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    central = summary["centralised_accuracy"]
    table = Table(
        title=f"FedAvg through {summary['aggregators']} aggregators "
        f"({summary['clients_per_round']} edge nodes/round, seed {summary['seed']}, "
        f"epsilon/round {summary['epsilon_per_round'] or 'off'})"
    )
    for col in ("round", "FedAvg accuracy", "centralised", "gap (pp)", "upload s", "collect s", "bytes up"):
        table.add_column(col, justify="right")
    for d in summary["rounds_detail"]:
        table.add_row(
            str(d["round"] + 1),
            f"{100 * d['accuracy']:.2f} %",
            f"{100 * central:.2f} %",
            f"{100 * (d['accuracy'] - central):+.2f}",
            f"{d['upload_seconds']:.3f}",
            f"{d['collect_seconds']:.3f}",
            str(d["upload_bytes"]),
        )
    console = Console()
    console.print(table)
    cost = summary["cost_per_round"]
    console.print(
        f"final {100 * summary['final_accuracy']:.2f} % vs centralised {100 * central:.2f} % "
        f"(margin {100 * summary['margin']:.0f} pp: {'ok' if summary['within_margin'] else 'MISSED'}); "
        f"plain-sum run {100 * summary['plain_sum_final_accuracy']:.2f} %"
        + ("" if summary["identical_to_plain_sum"] is None else f", identical model: {summary['identical_to_plain_sum']}")
    )
    console.print(
        f"cost per round: {cost['seconds']:.3f} s in the services (upload {cost['upload_seconds']:.3f} s, "
        f"collect {cost['collect_seconds']:.3f} s), {cost['upload_bytes']:.0f} bytes uploaded "
        f"({cost['bytes_per_report']:.0f} per report); {cost['wall_seconds_incl_local_training']:.3f} s with local training"
    )
    if summary["epsilon_per_round"] is not None:
        console.print(
            f"server-side DP: discrete Gaussian, epsilon {summary['epsilon_per_round']} per round (delta 1e-9), "
            f"calibrated to the FixedPointVec L2 sensitivity {summary['dp_sensitivity']['fixedpointvec_l2']:.3f} "
            f"(a clipped update's is {summary['dp_sensitivity']['fedavg_update_l2']:.3f}); "
            f"noise stddev per entry of the sum {summary['noise_stddev_per_entry']:.3f}"
        )


def fedavg_main(argv: list[str] | None = None) -> int:
    """``twinmpc fedavg``: train across simulated edge nodes through real aggregator processes.

    Exit status 1 when the final accuracy trails centralised training by more
    than `ACCURACY_MARGIN`, or when a run without DP does not reproduce the
    plain-sum model exactly.
    """
    parser = argparse.ArgumentParser(prog="twinmpc fedavg", description="Train the traffic model across simulated edge nodes through real aggregator processes.")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients-per-round", type=int, default=8)
    parser.add_argument("--aggregators", type=int, default=2, help="K >= 2 aggregator processes")
    parser.add_argument("--seed", type=int, default=0, help="seeds the city data set, client sampling and local SGD")
    parser.add_argument("--epsilon", type=float, default=None, help="per-round epsilon of server-side discrete-Gaussian DP (delta 1e-9)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    parser.add_argument("--workdir", type=Path, default=None, help="keep PKI, configs and aggregator logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.aggregators < 2:
        parser.error("--aggregators must be >= 2 (mode 'shares')")
    if args.rounds < 1 or args.clients_per_round < 1:
        parser.error("--rounds and --clients-per-round must be >= 1")

    def run(workdir: Path) -> dict[str, Any]:
        return asyncio.run(
            run_fedavg_through_services(
                workdir,
                k=args.aggregators,
                rounds=args.rounds,
                clients_per_round=args.clients_per_round,
                seed=args.seed,
                processes=True,
                epsilon=args.epsilon,
            )
        )

    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            summary = run(args.workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="twinmpc-fedavg-") as tmp:
                summary = run(Path(tmp))
    except (TwinMpcError, ValueError) as exc:
        print(f"fedavg: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"fedavg: an aggregator refused: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_table(summary)
    ok = summary["within_margin"] and summary["identical_to_plain_sum"] is not False
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(fedavg_main())
