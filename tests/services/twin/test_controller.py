"""Webster's rule and the flow filter that feeds it from released (noisy) totals."""

from __future__ import annotations

import numpy as np
import pytest

from twinmpc.services.twin.controller import G_MIN, MAX_CYCLE, MIN_CYCLE, FlowEstimator, webster_plan
from twinmpc.services.twin.traffic import LOST_PER_PHASE, SATURATION_FLOW


def test_webster_cycle_and_splits_by_hand() -> None:
    # y = (0.3, 0.15): Y = 0.45, L = 8: C = (1.5*8 + 5) / 0.55 = 30.909..., G = C - L - 2*G_MIN shared 2:1.
    plan = webster_plan(np.array([[0.3 * SATURATION_FLOW, 0.15 * SATURATION_FLOW]]))
    cycle = 17 / 0.55
    assert plan.cycle[0] == pytest.approx(cycle)
    spare = cycle - 2 * LOST_PER_PHASE - 2 * G_MIN
    assert plan.green[0] == pytest.approx([G_MIN + spare * 2 / 3, G_MIN + spare / 3])


def test_webster_clamps_cycle_at_both_ends() -> None:
    plan = webster_plan(np.array([[0.01, 0.01], [0.45, 0.45]]))
    assert plan.cycle[0] == MIN_CYCLE and plan.cycle[1] == MAX_CYCLE
    assert np.all(plan.green >= G_MIN)
    with pytest.raises(ValueError):
        webster_plan(np.array([0.1, 0.2]))


def test_filter_trusts_exact_counts_and_resists_noise() -> None:
    sizes, period = np.array([100, 100]), 300
    prior = np.array([[0.1, 0.1], [0.1, 0.1]])
    truth = np.array([[0.2, 0.05], [0.05, 0.2]])
    totals = truth * sizes[:, None] * period
    exact = FlowEstimator(sizes, period, prior)
    assert np.allclose(exact.update(totals, 0.0), truth, rtol=0.05)  # Poisson variance only: nearly the count
    noisy = FlowEstimator(sizes, period, prior)
    huge = (1e3 * totals.max()) ** 2
    assert np.allclose(noisy.update(totals + 5e4, huge), prior, rtol=0.01)  # noise far above signal: keep the prior
    rng = np.random.default_rng(0)
    moderate = FlowEstimator(sizes, period, prior)
    for _ in range(8):
        est = moderate.update(totals + rng.normal(0, 1500, totals.shape), 1500.0**2)
    assert np.allclose(est, truth, atol=0.03)


def test_filter_takes_noise_per_district_and_skips_districts_not_released() -> None:
    sizes, period = np.array([100, 100]), 300
    prior = np.array([[0.1, 0.1], [0.1, 0.1]])
    truth = np.array([[0.2, 0.05], [0.05, 0.2]])
    totals = truth * sizes[:, None] * period
    est = FlowEstimator(sizes, period, prior)
    flows = est.update(totals, np.array([0.0, (1e3 * totals.max()) ** 2]))  # district 0 exact, district 1 drowned in noise
    assert np.allclose(flows[0], truth[0], rtol=0.05) and np.allclose(flows[1], prior[1], rtol=0.01)
    before, spread = est.estimate.copy(), est.variance.copy()
    missing = totals.copy()
    missing[1] = np.nan  # district 1 not released this window
    flows = est.update(missing, 0.0)
    assert np.array_equal(flows[1], np.clip(before[1], 1e-3, None))  # same flows, hence the same plan stays in force
    assert np.all(est.variance[1] > spread[1])  # but less sure of them
    assert np.allclose(flows[0], truth[0], rtol=0.05)
    assert np.array_equal(webster_plan(flows).green[1], webster_plan(np.clip(before, 1e-3, None)).green[1])
