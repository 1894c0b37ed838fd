"""The closed loop: traffic -> detectors -> private aggregates -> Webster plans -> traffic, per window.

One seeded run drives several controllers on identical vehicles (arrivals
are exogenous, `traffic`):

* ``fixed-time``: Webster's plan for each district's surveyed average demand,
  set once and never changed;
* ``ours eps=E`` for every epsilon: plans from the district totals released
  by the real aggregators with DP at that epsilon: one task per district and
  epsilon (a SumVec of length 2, the district's ns and ew arrivals), each
  intersection reporting to its own district's task only;
* ``oracle``: the same controller on the exact raw counts (what privacy forbids).

Timeline of window w (wall clock, windows of ``window_seconds`` back to back):
at its start the plans decided at the close of window w-1 are in force; the
twin simulates ``period_seconds`` of traffic under them, the cabinets report
their arrival counts (`feeds`), and at the close every DP controller collects
the window of each of its district tasks (concurrently), filters, plans, logs
the decision (signed, fsync-ed) and applies it.  "Loop latency" is wall time
from the window's close to the plan being applied, per controller.

Why one task per district: the aggregators calibrate the noise to the
sensitivity of one report over the whole vector (`SumVec.sensitivity`: every
entry at its maximum).  A single vector for all districts, in which a report
fills only its own district's two entries, would be noised for a report that
fills all 2D of them: sqrt(D) times the L2 sensitivity one intersection can
have.  With a task per district the stated sensitivity is the real one, and
an intersection's window is in exactly one task's collection per controller,
so (parallel composition over disjoint reports) the per-intersection
guarantee of a controller's window is its task's epsilon, whatever D.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from twinmpc.mpc.privacy_ledger import epsilon_from_rho_cks20
from twinmpc.mpc.task import Task, b64encode
from twinmpc.services.client import Collector
from twinmpc.services.twin.controller import RULE, FlowEstimator, webster_plan
from twinmpc.mpc.collector import CollectionResult
from twinmpc.services.twin.decision_log import MAX_DISTRICTS, DecisionLog, DistrictInput
from twinmpc.services.twin.feeds import GatewayFeed, MqttFeed
from twinmpc.services.twin.local_cluster import LocalCluster
from twinmpc.services.twin.traffic import Demand, Grid, PeriodStats, QueueSim, SignalPlan, arrivals

MODES = ("prio3", "twinring64", "paillier")
BETA = 0.05  # error bars and logged bounds: |noise| <= bound with probability 95 % per coordinate (error_bound_95)
DELTA = 1e-9
BUDGET_DELTA = 1e-8
FIXED = "fixed-time"
ORACLE = "oracle"


@dataclass(frozen=True)
class TwinConfig:
    """One run of the twin; validated here so the CLI can answer bad options with one line."""

    intersections: int = 1000
    districts: int = 4
    windows: int = 12
    window_seconds: int = 5
    period_seconds: int = 300
    epsilons: tuple[float, ...] = (0.5, 1.0, 4.0)
    mode: str = "prio3"
    bits: int = 7
    seed: int = 0
    aggregators: int = 2
    mqtt: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not 1 <= self.districts <= MAX_DISTRICTS or self.intersections < self.districts:
            raise ValueError(f"need 1 to {MAX_DISTRICTS} districts and at least one intersection per district")
        if self.windows < 2 or self.window_seconds < 1 or self.period_seconds < 10:
            raise ValueError("need windows >= 2, window_seconds >= 1 and period_seconds >= 10")
        if not self.epsilons or any(not 0 < e <= 100 for e in self.epsilons):
            raise ValueError("epsilons must lie in (0, 100]")
        if not 1 <= self.bits <= 16:
            raise ValueError("bits must lie in [1, 16]")
        if self.mode == "paillier" and self.aggregators != 1:
            object.__setattr__(self, "aggregators", 1)  # one aggregator sums ciphertexts under the collector's key

    @property
    def report_bits(self) -> int:
        """Bits of one report's coordinates: a cabinet's count, or over MQTT a whole district's sum."""
        if self.mqtt is None:
            return self.bits
        per_district = math.ceil(self.intersections / self.districts)
        return min(32, self.bits + max(1, per_district - 1).bit_length())


@dataclass
class ControllerRun:
    """One controller's simulation, current plan and record (a private one: its task per district)."""

    name: str
    sim: QueueSim
    plan: SignalPlan
    epsilon: float | None = None
    tasks: list[Task] = field(default_factory=list)  # one per district
    estimator: FlowEstimator | None = None
    stats: list[PeriodStats] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rho_spent: list[Fraction] = field(default_factory=list)  # per district task
    collections: int = 0  # district collections used
    last_totals: np.ndarray | None = None  # (D, 2): each district's latest released totals
    last_bounds: np.ndarray | None = None  # (D,): their 95 % error bounds
    failures: int = 0  # district collections refused, failed or incomplete

    @property
    def mean_delay(self) -> float:
        return sum(s.delay_seconds for s in self.stats) / max(1, sum(s.arrived for s in self.stats))

    @property
    def mean_queue(self) -> float:
        return float(np.mean([s.mean_queue for s in self.stats])) if self.stats else 0.0

    def latency_ms(self, q: float) -> float | None:
        return float(np.percentile(np.array(self.latencies) * 1000, q)) if self.latencies else None


def task_document(config: TwinConfig, epsilon: float, district: int, members: int, he_public_key: bytes | None) -> dict[str, Any]:
    """The task of one district for one DP controller: its (ns, ew) arrivals as a SumVec of length 2.

    `members` is the district's number of intersections; at least half of them
    must report for a window to be released (one gateway's report over MQTT).
    """
    doc: dict[str, Any] = {
        "description": f"twin: arrivals in district {district} per approach (ns, ew), epsilon {epsilon:g} per window",
        "measurement": {"type": "sumvec", "length": 2, "bits": config.report_bits},
        "window_seconds": config.window_seconds,
        "min_batch_size": 1 if config.mqtt else max(1, members // 2),
        "max_skew_seconds": 30,
        "dp": {"algo": "discrete-gaussian", "epsilon": epsilon, "delta": DELTA,
               "budget": {"epsilon": epsilon * config.windows, "delta": BUDGET_DELTA}},
    }
    if config.mode == "paillier":
        doc.update(mode="paillier", he_public_key=b64encode(he_public_key or b""), he_max_reports=max(members, 2))
    else:
        doc["vdaf"] = config.mode
    return doc


class TwinLoop:
    """Runs the controllers window by window; `snapshot` is what the dashboard shows."""

    def __init__(self, config: TwinConfig, cluster: LocalCluster, workdir: Path, decisions: DecisionLog) -> None:
        self.config = config
        self.cluster = cluster
        self.workdir = workdir
        self.decisions = decisions
        self.grid = Grid.generate(config.intersections, config.districts, config.seed)
        self.demand = Demand.generate(config.districts, config.windows, config.seed)
        self.rng = np.random.default_rng([config.seed, 3])
        surveyed = self.demand.mean_rates()
        fixed = webster_plan(surveyed)
        self.fixed_plan = fixed
        self.controllers = [ControllerRun(FIXED, QueueSim(self.grid), fixed)]
        self.controllers += [
            ControllerRun(f"ours eps={e:g}", QueueSim(self.grid), fixed, epsilon=e,
                          estimator=FlowEstimator(self.grid.sizes(), config.period_seconds, surveyed))
            for e in config.epsilons
        ]
        self.controllers.append(ControllerRun(ORACLE, QueueSim(self.grid), fixed,
                                              estimator=FlowEstimator(self.grid.sizes(), config.period_seconds, surveyed)))
        self.window = -1
        self.completed = -1  # the last window whose close has been re-planned (what the dashboard shows)
        self.truth: np.ndarray | None = None
        self.refused = 0
        self.last_error = ""
        self._he_secret: Any = None
        self._feed: GatewayFeed | MqttFeed | None = None
        self._collector: Collector | None = None

    @property
    def private(self) -> list[ControllerRun]:
        return [c for c in self.controllers if c.epsilon is not None]

    async def start(self) -> None:
        """Provision one task per district and epsilon and connect the feed and the collector."""
        he_public = None
        if self.config.mode == "paillier":
            from twinmpc.crypto import paillier

            public, self._he_secret = await asyncio.to_thread(paillier.generate_keypair, 2048)
            raw = public.to_json()
            he_public = raw if isinstance(raw, bytes) else raw.encode()
        sizes = self.grid.sizes()
        for c in self.private:
            for d in range(self.config.districts):
                doc = task_document(self.config, c.epsilon, d, int(sizes[d]), he_public)  # type: ignore[arg-type]
                c.tasks.append(await self.cluster.provision(doc, aggregators=self.config.aggregators))
            c.rho_spent = [Fraction(0)] * self.config.districts
        if self.config.mqtt:
            host, _, port = self.config.mqtt.rpartition(":")
            streams = [{f"eps{i}": c.tasks[d] for i, c in enumerate(self.private)} for d in range(self.config.districts)]
            self._feed = MqttFeed(self.workdir / "edge", self.cluster, self.grid, streams, host or "127.0.0.1", int(port))
            await self._feed.start()
        else:
            self._feed = GatewayFeed(self.cluster, self.grid)
        self._collector = self.cluster.collector(he_secret_key=self._he_secret)

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        if self._collector is not None:
            await self._collector.close()

    async def run(self) -> None:
        for _ in range(self.config.windows):
            await self.step()

    async def step(self) -> None:
        """One window: simulate under the current plans, report, and re-plan at the close."""
        cfg = self.config
        now = time.time()
        window_start = int(now) - int(now) % cfg.window_seconds
        if window_start + cfg.window_seconds - now < 0.6 * cfg.window_seconds and self.window < 0:
            window_start += cfg.window_seconds  # too little of this window left for the first reports
            await asyncio.sleep(window_start - time.time())
        self.window += 1
        arrived = await asyncio.to_thread(arrivals, self.grid, self.demand.rates(self.window), cfg.period_seconds, self.rng)
        for c in self.controllers:
            c.stats.append(await asyncio.to_thread(c.sim.run, arrived, c.plan))
        counts = np.minimum(arrived.sum(axis=0), (1 << cfg.bits) - 1)  # a cabinet clamps to the task's range
        self.truth = self.grid.district_totals(counts)
        if self._feed is None:
            raise RuntimeError("TwinLoop.start() must run before step()")
        report_time = max(window_start, min(int(time.time()), window_start + cfg.window_seconds - 1))
        by_district = [[c.tasks[d] for c in self.private] for d in range(cfg.districts)]
        self.refused += await self._feed.deliver(by_district, counts, report_time)
        close = window_start + cfg.window_seconds
        if isinstance(self._feed, MqttFeed) and not await self._feed.wait_uploaded(close):
            raise TimeoutError("district gateways did not upload the window in time")
        await asyncio.sleep(max(0.0, close + 0.002 - time.time()))
        await asyncio.gather(*(self._replan(c, window_start, close) for c in self.private))
        oracle = self.controllers[-1]
        flows = oracle.estimator.update(self.truth, 0.0)  # type: ignore[union-attr]
        self._apply(oracle, flows, self.truth, np.zeros(cfg.districts), close, [""] * cfg.districts)
        self.completed = self.window

    async def _collect(self, c: ControllerRun, d: int, window_start: int) -> CollectionResult | None:
        """District d's release of the window, or None (said in `last_error`) when refused, failed or incomplete."""
        try:
            result = await self._collector.collect(c.tasks[d], window_start)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a refused collection keeps the district's plan in force, and says so
            c.failures += 1
            self.last_error = f"{c.name}: district {d}: collection of window {window_start} failed: {exc}"
            return None
        expected = 1 if self.config.mqtt else int(self.grid.sizes()[d])
        c.rho_spent[d] += Fraction(str(result.dp.get("rho", "0")))
        if result.report_count != expected:  # a late gateway: a partial total would read as a traffic drop
            c.failures += 1
            self.last_error = f"{c.name}: district {d}: window {window_start} holds {result.report_count} of {expected} reports; plan kept"
            return None
        return result

    async def _replan(self, c: ControllerRun, window_start: int, close: float) -> None:
        """Collect every district's task concurrently, then filter and re-plan the districts that were released."""
        n = self.config.districts
        results = await asyncio.gather(*(self._collect(c, d, window_start) for d in range(n)))
        if not any(results):
            return  # nothing released: every plan stays in force, nothing new to log
        totals = np.full((n, 2), np.nan)
        variance, bounds, collection_ids = np.zeros(n), np.full(n, np.nan), [""] * n
        for d, result in enumerate(results):
            if result is None:
                continue
            # The leader states the noise every aggregator added (NoisePlan.describe): its variance feeds the
            # filter, its 95 % bound is the error bar logged with the decision.
            totals[d] = np.asarray(result.result, dtype=np.float64)
            variance[d] = float(result.dp.get("total_variance", 0.0))
            bounds[d] = float(result.dp.get("error_bound_95", 0.0))
            collection_ids[d] = result.collection_id
            c.collections += 1
        flows = c.estimator.update(totals, variance)  # type: ignore[union-attr]
        self._apply(c, flows, totals, bounds, close, collection_ids)

    def _apply(self, c: ControllerRun, flows: np.ndarray, totals: np.ndarray, bounds: np.ndarray, close: float,
               collection_ids: list[str]) -> None:
        """Log the decision (NaN totals: a district not released this window, whose plan stays) and apply it."""
        new_plan = webster_plan(flows)
        inputs = []
        for d, (t, f) in enumerate(zip(totals, flows)):
            seen = bool(np.all(np.isfinite(t)))
            inputs.append(DistrictInput(t[0] if seen else None, t[1] if seen else None, bounds[d] if seen else None, f[0], f[1],
                                        task_id=c.tasks[d].task_id_b64 if c.tasks else "", collection_id=collection_ids[d]))
        self.decisions.record_plan(window=self.window, controller=c.name, inputs=inputs, plan=new_plan, rule=RULE, beta=BETA)
        c.plan = new_plan
        c.latencies.append(time.time() - close)
        seen_rows = np.all(np.isfinite(totals), axis=1)
        c.last_totals = np.where(seen_rows[:, None], totals, np.nan if c.last_totals is None else c.last_totals)
        c.last_bounds = np.where(seen_rows, bounds, np.nan if c.last_bounds is None else c.last_bounds)

    # -- results ------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """The three-controller table: delay, queue, share of the oracle's reduction, loop latency."""
        fixed = self.controllers[0].mean_delay
        gain = fixed - self.controllers[-1].mean_delay
        out = []
        for c in self.controllers:
            out.append({
                "controller": c.name,
                "mean_delay_s": round(c.mean_delay, 2),
                "mean_queue_veh": round(c.mean_queue, 2),
                "reduction_vs_fixed_pct": round(100 * (fixed - c.mean_delay) / fixed, 1) if fixed else 0.0,
                "share_of_oracle_gain_pct": round(100 * (fixed - c.mean_delay) / gain, 1) if gain > 0 else None,
                "close_to_plan_p50_ms": None if c.name == FIXED else _round(c.latency_ms(50)),
                "close_to_plan_p99_ms": None if c.name == FIXED else _round(c.latency_ms(99)),
                "failed_collections": c.failures,
            })
        return out

    def budget(self) -> list[dict[str, Any]]:
        """Privacy spent per controller so far: zCDP rho composed per district task, shown as epsilon at the budget's delta.

        An intersection reports to one district task per controller, so what a
        controller has spent on any intersection is what its district's task
        has spent: the largest over the district tasks (parallel composition).
        """
        out = []
        for c in self.private:
            worst = max(c.rho_spent, default=Fraction(0))
            out.append({
                "task": c.name, "task_ids": [t.task_id_b64 for t in c.tasks], "collections": c.collections,
                "epsilon_per_window": c.epsilon,
                "spent_epsilon": round(epsilon_from_rho_cks20(worst, Fraction(str(BUDGET_DELTA))), 3) if worst else 0.0,
                "budget_epsilon": (c.epsilon or 0) * self.config.windows, "delta": BUDGET_DELTA,
            })
        return out

    def snapshot(self) -> dict[str, Any]:
        """Live state for the dashboard (aggregates, bounds, plans, delays; never a raw reading)."""
        districts = []
        for d in range(self.config.districts):
            row: dict[str, Any] = {"district": d, "intersections": int(self.grid.sizes()[d]), "results": {}}
            for c in self.private:
                if c.last_totals is not None and c.last_bounds is not None and np.all(np.isfinite(c.last_totals[d])):
                    row["results"][c.name] = {"ns": round(float(c.last_totals[d, 0]), 1), "ew": round(float(c.last_totals[d, 1]), 1),
                                              "bound": round(float(c.last_bounds[d]), 1)}
            row["plans"] = {c.name: c.plan.describe(d) for c in self.controllers}
            districts.append(row)
        return {
            "window": self.completed, "windows": self.config.windows, "mode": self.config.mode,
            "intersections": self.config.intersections, "beta": BETA,
            "districts": districts,
            "delay_series": {c.name: [round(s.mean_delay, 2) for s in c.stats] for c in self.controllers},
            "table": self.rows(), "budget": self.budget(),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
