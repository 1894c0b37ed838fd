"""The simulated street grid: seeded demand and a vertical-queue model of signalised intersections.

Model (documented in docs/twin.md; small on purpose, every number checkable):

* ``Grid``: N intersections split round-robin into D districts.  Each
  intersection has two conflicting approaches, north-south (``ns``) and
  east-west (``ew``), one lane each, a demand factor (log-normal, sd 0.2) and
  a signal offset (uniform over a cycle, no coordination).
* ``Demand``: arrival rates per district and approach (vehicles/s at an
  average intersection) for each window of simulated time.  Over a run the
  ns flow has a morning-like peak early and the ew flow an evening-like peak
  late, with a district-specific size and direction, so the ratio of the two
  swings and a plan tuned to the average is wrong most of the time.
  Arrivals are Poisson per second (``arrivals``) and exogenous: they do not
  depend on the signal plan, so every controller faces the same vehicles.
* ``QueueSim``: a point ("vertical") queue per approach, advanced in 1 s
  steps.  During its effective green an approach discharges at the
  saturation flow ``s`` (0.5 veh/s = 1800 veh/h); each phase is followed by
  ``lost_per_phase`` seconds of amber/all-red.  Every vehicle still queued at
  the end of a second accrues one second of delay, so the mean vehicle delay
  is queued vehicle-seconds / arrivals (the uniform-plus-overflow delay of
  Webster's formula, without its closed form).

Not for: corridor progression, turning movements, spill-back or pedestrians;
the model exists so a controller's benefit, and what privacy noise costs it,
can be measured on identical traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

APPROACHES = ("ns", "ew")
SATURATION_FLOW = 0.5  # vehicles per second of effective green, one lane
LOST_PER_PHASE = 4.0  # seconds of amber + all-red after each of the two phases


@dataclass(frozen=True)
class SignalPlan:
    """One timing plan per district: cycle length and effective green of each approach (seconds)."""

    cycle: np.ndarray  # (D,)
    green: np.ndarray  # (D, 2): ns, ew

    def __post_init__(self) -> None:
        cycle = np.asarray(self.cycle, dtype=np.float64)
        green = np.asarray(self.green, dtype=np.float64)
        if cycle.ndim != 1 or green.shape != (cycle.size, 2):
            raise ValueError("a plan needs cycle (D,) and green (D, 2)")
        if np.any(green <= 0) or np.any(green.sum(axis=1) + 2 * LOST_PER_PHASE > cycle + 1e-6):
            raise ValueError("greens must be positive and fit in the cycle with the lost time")
        object.__setattr__(self, "cycle", cycle)
        object.__setattr__(self, "green", green)

    def describe(self, district: int) -> dict[str, float]:
        return {"cycle": round(float(self.cycle[district]), 1), "green_ns": round(float(self.green[district, 0]), 1),
                "green_ew": round(float(self.green[district, 1]), 1)}


@dataclass(frozen=True)
class Grid:
    """Intersections, their district, demand factor and signal offset."""

    district_of: np.ndarray  # (N,) int
    factor: np.ndarray  # (N,) demand multiplier
    offset: np.ndarray  # (N,) seconds
    districts: int

    @classmethod
    def generate(cls, intersections: int, districts: int, seed: int) -> Grid:
        if districts < 1 or intersections < districts:
            raise ValueError("need at least one intersection per district")
        rng = np.random.default_rng([seed, 1])
        return cls(
            district_of=np.arange(intersections) % districts,
            factor=rng.lognormal(-0.02, 0.2, intersections),
            offset=rng.uniform(0, 200, intersections),
            districts=districts,
        )

    @property
    def intersections(self) -> int:
        return int(self.district_of.size)

    def sizes(self) -> np.ndarray:
        """Intersections per district."""
        return np.bincount(self.district_of, minlength=self.districts)

    def district_totals(self, counts: np.ndarray) -> np.ndarray:
        """(N, 2) per-intersection counts -> (D, 2) district totals (what the aggregate should equal)."""
        out = np.zeros((self.districts, 2), dtype=np.int64)
        np.add.at(out, self.district_of, counts)
        return out


@dataclass(frozen=True)
class Demand:
    """Arrival rates (veh/s at an average intersection) per district, approach and window."""

    base: np.ndarray  # (D, 2)
    peak: np.ndarray  # (D, 2) relative size of each approach's peak
    windows: int

    @classmethod
    def generate(cls, districts: int, windows: int, seed: int) -> Demand:
        rng = np.random.default_rng([seed, 2])
        base = rng.uniform(0.08, 0.16, (districts, 2))
        peak = rng.uniform(0.4, 1.4, (districts, 2))
        return cls(base, peak, windows)

    def rates(self, window: int) -> np.ndarray:
        """(D, 2) rates in ``window``: ns peaks a quarter into the run, ew three quarters in."""
        phase = (window + 0.5) / max(self.windows, 1)
        shape = np.array([np.exp(-0.5 * ((phase - 0.25) / 0.18) ** 2), np.exp(-0.5 * ((phase - 0.75) / 0.18) ** 2)])
        return self.base * (1.0 + self.peak * shape)

    def mean_rates(self) -> np.ndarray:
        """(D, 2) the run's average rates: what a count survey behind a fixed-time plan measures."""
        return np.mean([self.rates(w) for w in range(self.windows)], axis=0)


def arrivals(grid: Grid, rates: np.ndarray, seconds: int, rng: np.random.Generator) -> np.ndarray:
    """(seconds, N, 2) Poisson arrivals per second at every approach."""
    lam = rates[grid.district_of] * grid.factor[:, None]
    return rng.poisson(lam, size=(seconds, grid.intersections, 2)).astype(np.int32)


@dataclass(frozen=True)
class PeriodStats:
    """What one simulated window cost: queued vehicle-seconds, arrivals, mean queue per approach."""

    delay_seconds: float
    arrived: int
    mean_queue: float

    @property
    def mean_delay(self) -> float:
        return self.delay_seconds / max(self.arrived, 1)


class QueueSim:
    """Queues of every approach under a plan that may change between windows (the state carries over)."""

    def __init__(self, grid: Grid, saturation_flow: float = SATURATION_FLOW, lost_per_phase: float = LOST_PER_PHASE) -> None:
        self.grid = grid
        self.saturation_flow = saturation_flow
        self.lost = lost_per_phase
        self.queue = np.zeros((grid.intersections, 2))
        self.clock = 0

    def run(self, arrived: np.ndarray, plan: SignalPlan) -> PeriodStats:
        """Advance one window of ``arrived`` (seconds, N, 2) under ``plan``."""
        d = self.grid.district_of
        cycle, g_ns, g_ew = plan.cycle[d], plan.green[d, 0], plan.green[d, 1]
        ew_start = g_ns + self.lost
        ew_end = ew_start + g_ew
        capacity = np.empty((self.grid.intersections, 2))
        queue = self.queue
        delay = 0.0
        queue_sum = 0.0
        for step in range(arrived.shape[0]):
            pos = np.mod(self.clock + step + self.grid.offset, cycle)
            capacity[:, 0] = (pos < g_ns) * self.saturation_flow
            capacity[:, 1] = ((pos >= ew_start) & (pos < ew_end)) * self.saturation_flow
            queue += arrived[step]
            queue -= np.minimum(queue, capacity)
            total = float(queue.sum())
            delay += total
            queue_sum += total
        self.clock += arrived.shape[0]
        return PeriodStats(delay, int(arrived.sum()), queue_sum / (arrived.shape[0] * queue.size))
