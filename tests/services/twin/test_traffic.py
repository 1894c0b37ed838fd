"""The vertical-queue model: conservation, capacity, plans, seeded demand."""

from __future__ import annotations

import numpy as np
import pytest

from twinmpc.services.twin.traffic import LOST_PER_PHASE, SATURATION_FLOW, Demand, Grid, QueueSim, SignalPlan, arrivals


def _plan(districts: int, cycle: float, g_ns: float, g_ew: float) -> SignalPlan:
    return SignalPlan(np.full(districts, cycle), np.tile([g_ns, g_ew], (districts, 1)))


def test_vehicles_are_conserved_and_delay_counts_queued_seconds() -> None:
    grid = Grid.generate(30, 3, seed=1)
    rng = np.random.default_rng(0)
    arrived = arrivals(grid, np.full((3, 2), 0.12), 400, rng)
    sim = QueueSim(grid)
    stats = sim.run(arrived, _plan(3, 60, 26, 26))
    served = arrived.sum() - sim.queue.sum()
    assert stats.arrived == arrived.sum() and served > 0
    # every vehicle left at most at the saturation flow during its approach's green
    assert served <= 400 * 30 * 2 * SATURATION_FLOW * 26 / 60 + 30 * 2 * SATURATION_FLOW * 26
    assert stats.delay_seconds > 0 and stats.mean_delay == pytest.approx(stats.delay_seconds / stats.arrived)


def test_green_split_matters_for_asymmetric_demand() -> None:
    """A plan giving the heavy approach more green delays vehicles less than an even split."""
    grid = Grid.generate(40, 2, seed=2)
    arrived = arrivals(grid, np.tile([0.3, 0.06], (2, 1)), 900, np.random.default_rng(3))
    even = QueueSim(grid).run(arrived, _plan(2, 80, 36, 36))
    tuned = QueueSim(grid).run(arrived, _plan(2, 80, 56, 16))
    assert tuned.mean_delay < 0.5 * even.mean_delay
    assert tuned.mean_queue < even.mean_queue


def test_oversaturation_grows_the_queue_across_windows() -> None:
    grid = Grid.generate(10, 1, seed=0)
    sim = QueueSim(grid)
    rng = np.random.default_rng(1)
    plan = _plan(1, 60, 20, 32)
    first = sim.run(arrivals(grid, np.array([[0.4, 0.05]]), 300, rng), plan)  # ns capacity 0.5*20/60 < 0.4
    second = sim.run(arrivals(grid, np.array([[0.4, 0.05]]), 300, rng), plan)
    assert second.mean_queue > first.mean_queue and sim.clock == 600


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="fit in the cycle"):
        _plan(1, 30, 20, 20)
    with pytest.raises(ValueError, match="positive"):
        _plan(1, 60, 0, 20)
    with pytest.raises(ValueError, match=r"\(D, 2\)"):
        SignalPlan(np.array([60.0]), np.array([20.0, 20.0]))
    assert _plan(1, 20 + 2 * LOST_PER_PHASE + 20, 20, 20).describe(0) == {"cycle": 48.0, "green_ns": 20.0, "green_ew": 20.0}


def test_grid_and_demand_are_seeded() -> None:
    a, b = Grid.generate(50, 4, seed=7), Grid.generate(50, 4, seed=7)
    assert np.array_equal(a.factor, b.factor) and list(a.sizes()) == [13, 13, 12, 12]
    counts = np.arange(100).reshape(50, 2)
    totals = a.district_totals(counts)
    assert totals.sum() == counts.sum() and totals[0, 0] == sum(counts[i, 0] for i in range(0, 50, 4))
    d = Demand.generate(4, 12, seed=7)
    early, late = d.rates(2), d.rates(9)
    assert np.all(early[:, 0] / early[:, 1] > late[:, 0] / late[:, 1])  # ns peaks early, ew late
    assert d.mean_rates().shape == (4, 2)
    with pytest.raises(ValueError):
        Grid.generate(3, 4, seed=0)
