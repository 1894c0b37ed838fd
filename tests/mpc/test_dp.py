"""mpc.dp: DP blocks, calibration, distributed noise added to shares in their ring or field."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import ring
from twinmpc.crypto.field import Field64, Field128
from twinmpc.mpc import dp
from twinmpc.mpc.dp import DpParams, calibrate
from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.privacy_ledger import Budget, epsilon_from_rho_cks20, rho_from_epsilon_delta

P64 = Field64.MODULUS
P128 = Field128.MODULUS
GAUSS = {"algo": "discrete-gaussian", "epsilon": 1.0, "delta": 1e-9}


# ----------------------------------------------------------- DpParams
def test_parse_gaussian_block_exactly() -> None:
    p = DpParams.from_dict(GAUSS)
    assert p.algo == "discrete-gaussian" and p.epsilon == 1 and p.delta == Fraction(1, 10**9)
    assert DpParams.from_dict({"algo": "discrete-gaussian", "epsilon": "1", "delta": "1/1000000000"}) == p


def test_parse_other_blocks() -> None:
    assert DpParams.from_dict({"algo": "none"}) == DpParams()
    assert DpParams.from_dict({}) == DpParams()
    lap = DpParams.from_dict({"algo": "discrete-laplace", "epsilon": "1/3"})
    assert lap.epsilon == Fraction(1, 3) and lap.delta == 0
    with_budget = DpParams.from_dict({**GAUSS, "budget": {"epsilon": 10, "delta": 1e-8}})
    assert with_budget.budget == Budget(Fraction(10), Fraction(1, 10**8))
    assert DpParams.from_dict({**GAUSS, "budget": {"epsilon": "10", "delta": "1/100000000"}}) == with_budget


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({**GAUSS, "sensitivity": 1}, "unknown key 'sensitivity'"),
        ({"algo": "DP-Sum", "epsilon": 1}, "must be one of"),
        ({"algo": 3}, "string"),
        ({"algo": "discrete-laplace"}, "needs 'epsilon'"),
        ({"algo": "discrete-laplace", "epsilon": 1, "delta": 1e-9}, "pure DP"),
        ({"algo": "discrete-gaussian", "epsilon": 1}, "0 < delta < 1"),
        ({"algo": "discrete-gaussian", "epsilon": 1, "delta": 1}, "0 < delta < 1"),
        ({**GAUSS, "epsilon": 0}, r"epsilon must lie"),
        ({**GAUSS, "epsilon": -1}, r"epsilon must lie"),
        ({**GAUSS, "epsilon": 1000}, r"epsilon must lie"),
        ({**GAUSS, "epsilon": True}, "boolean"),
        ({**GAUSS, "epsilon": "one"}, "not a rational"),
        ({"algo": "none", "epsilon": 1}, "takes no epsilon"),
        ({**GAUSS, "budget": {"epsilon": 5}}, "budget.delta must be > 0"),
        ({**GAUSS, "budget": {"epsilon": 5, "eps": 1}}, "unknown key 'eps'"),
    ],
)
def test_dp_block_rejections(doc: dict, match: str) -> None:
    with pytest.raises(InvalidTask, match=match):
        DpParams.from_dict(doc)


def test_dp_block_must_be_a_table() -> None:
    with pytest.raises(InvalidTask, match="table"):
        DpParams.from_dict(["algo"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DpParams("discrete-laplace", 1.0)  # type: ignore[arg-type]


# ----------------------------------------------------------- calibration
def test_laplace_calibration_exact() -> None:
    plan = calibrate(
        DpParams.from_dict({"algo": "discrete-laplace", "epsilon": "1/2"}),
        l1_sensitivity=3, l2_sensitivity=2, dimension=4, num_aggregators=2,
    )
    assert plan.distribution == "discrete-laplace"
    assert plan.parameter == plan.per_aggregator_parameter == Fraction(6)
    assert plan.rho == Fraction(1, 8) and plan.epsilon_pure == Fraction(1, 2) and plan.epsilon() == 0.5
    p = math.exp(-1 / 6)
    assert plan.total_variance == pytest.approx(2 * 2 * p / (1 - p) ** 2)


@pytest.mark.parametrize(("l2", "eps", "delta"), [(1, 1, 1e-9), (7, "1/2", 1e-10), (65536, 3, 1e-6), (1, 50, 1e-5)])
def test_gaussian_calibration_never_exceeds_target(l2: int, eps, delta) -> None:
    params = DpParams.from_dict({"algo": "discrete-gaussian", "epsilon": eps, "delta": delta})
    plan = calibrate(params, l1_sensitivity=l2 * 3, l2_sensitivity=l2, dimension=9, num_aggregators=3)
    target = rho_from_epsilon_delta(params.epsilon, params.delta)
    assert plan.rho == Fraction(l2 * l2) / (2 * plan.parameter)  # exact zCDP of what is sampled
    assert plan.rho <= target
    assert plan.rho >= target * (1 - Fraction(1, 1 << 19))  # and not much more noise than needed
    assert epsilon_from_rho_cks20(plan.rho, params.delta) <= float(params.epsilon)
    assert plan.epsilon() <= float(params.epsilon)
    assert plan.total_variance == 3 * float(plan.parameter)


def test_gaussian_count_hand_computed() -> None:
    """Count, eps=1, delta=1e-9: rho ~ 0.014973 so sigma^2 ~ 1/(2 rho) ~ 33.39."""
    plan = calibrate(DpParams.from_dict(GAUSS), l1_sensitivity=1, l2_sensitivity=1, dimension=1, num_aggregators=2)
    assert float(plan.parameter) == pytest.approx(33.393, abs=0.01)
    assert plan.total_stddev == pytest.approx(math.sqrt(2 * 33.393), abs=0.01)
    assert plan.error_bound(0.05) == pytest.approx(math.sqrt(2 * 2 * float(plan.parameter) * math.log(40)))


def test_none_plan() -> None:
    plan = calibrate(DpParams(), l1_sensitivity=1, l2_sensitivity=1, dimension=3, num_aggregators=2)
    assert plan.rho == 0 and not plan.sample((2, 3)).any() and plan.total_variance == 0
    assert plan.error_bound(0.1) == 0 and plan.epsilon() == math.inf
    assert plan.describe()["epsilon"] is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"l1_sensitivity": 0, "l2_sensitivity": 1, "dimension": 1, "num_aggregators": 2},
        {"l1_sensitivity": 1, "l2_sensitivity": -1, "dimension": 1, "num_aggregators": 2},
        {"l1_sensitivity": 1, "l2_sensitivity": 1, "dimension": 0, "num_aggregators": 2},
        {"l1_sensitivity": 1, "l2_sensitivity": 1, "dimension": 1, "num_aggregators": True},
        {"l1_sensitivity": 1.0, "l2_sensitivity": 1, "dimension": 1, "num_aggregators": 2},
    ],
)
def test_calibration_argument_errors(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        calibrate(DpParams.from_dict(GAUSS), **kwargs)
    with pytest.raises(TypeError):
        calibrate(GAUSS, l1_sensitivity=1, l2_sensitivity=1, dimension=1, num_aggregators=2)  # type: ignore[arg-type]


# ----------------------------------------------------------- sampling and stated error
def test_sum_of_k_aggregator_noises_has_stated_variance_and_tail() -> None:
    plan = calibrate(DpParams.from_dict(GAUSS), l1_sensitivity=1, l2_sensitivity=1, dimension=1, num_aggregators=3)
    rng = np.random.default_rng(21)
    total = sum(plan.sample(100_000, rng) for _ in range(3))
    assert total.dtype == np.int64
    # Var(sum) <= K sigma^2 and, for sigma ~ 5.8, equal to it within sampling error (~0.5%).
    assert total.var() == pytest.approx(plan.total_variance, rel=0.02)
    assert np.mean(np.abs(total)) <= plan.total_stddev  # Jensen: E|Z| <= sqrt(Var Z)
    beta = 0.01
    assert np.mean(np.abs(total) > plan.error_bound(beta)) <= beta


def test_laplace_sum_tail_and_shape() -> None:
    plan = calibrate(
        DpParams.from_dict({"algo": "discrete-laplace", "epsilon": 1}),
        l1_sensitivity=2, l2_sensitivity=2, dimension=6, num_aggregators=2,
    )
    rng = np.random.default_rng(22)
    noise = plan.sample((2, 20_000, 6), rng)
    assert noise.shape == (2, 20_000, 6)
    total = noise.sum(axis=0)
    assert total.var() == pytest.approx(plan.total_variance, rel=0.03)
    assert np.mean(np.abs(total) > plan.error_bound(0.05)) <= 0.05
    assert np.mean((np.abs(total) > plan.error_bound(0.05, all_coordinates=True)).any(axis=1)) <= 0.05
    with pytest.raises(ValueError):
        plan.error_bound(1.5)


def test_charge_from_plan() -> None:
    plan = calibrate(DpParams.from_dict(GAUSS), l1_sensitivity=1, l2_sensitivity=1, dimension=1, num_aggregators=2)
    c = plan.charge("col-1", "task-1", ("d1",))
    assert c.rho == plan.rho and c.epsilon_pure is None and c.groups == ("d1",)


# ----------------------------------------------------------- applying noise
def test_count_near_zero_decodes_negative_in_the_ring() -> None:
    share0 = np.array([5, 0], dtype=np.uint64)
    share1 = np.array([(1 << 64) - 5, 0], dtype=np.uint64)  # shares of the count (0, 0)
    noisy0 = dp.add_noise(share0, np.array([-3, 2], dtype=np.int64))
    noisy1 = dp.add_noise(share1, np.array([1, -4], dtype=np.int64))
    total = noisy0 + noisy1
    assert total[0] == (1 << 64) - 2  # what a naive decode would show
    decoded = ring.to_signed(total)  # what Count/Sum/SumVec.decode apply
    assert decoded.tolist() == [-2, -2] and decoded.dtype == np.int64


def test_add_noise_errors() -> None:
    share = np.zeros(2, dtype=np.uint64)
    with pytest.raises(TypeError, match="int64"):
        dp.add_noise(share, np.zeros(2, dtype=np.int32))
    with pytest.raises(ValueError, match="shape"):
        dp.add_noise(share, np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="uint64"):
        dp.add_noise(np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="odd prime"):
        dp.add_noise(share, np.zeros(2, dtype=np.int64), 1 << 61)
    with pytest.raises(ValueError, match="canonical"):
        dp.add_noise(np.array([P64], dtype=np.uint64), np.zeros(1, dtype=np.int64), P64)
    with pytest.raises(TypeError, match="prime-field"):
        dp.add_noise(share, np.zeros(2, dtype=np.int64), P128)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(0, P64 - 1), min_size=1, max_size=20),
    noise=st.lists(st.integers(-(1 << 62), 1 << 62), min_size=20, max_size=20),
)
def test_add_noise_field64_matches_python_ints(values: list[int], noise: list[int]) -> None:
    n = noise[: len(values)]
    got = dp.add_noise(np.array(values, dtype=np.uint64), np.array(n, dtype=np.int64), P64)
    assert got.dtype == np.uint64
    assert [int(g) for g in got] == [(v + e) % P64 for v, e in zip(values, n)]


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.integers(0, P128 - 1), min_size=1, max_size=10),
    noise=st.lists(st.integers(-(1 << 62), 1 << 62), min_size=10, max_size=10),
)
def test_add_noise_field128_matches_python_ints(values: list[int], noise: list[int]) -> None:
    n = noise[: len(values)]
    got = dp.add_noise(np.array(values, dtype=object), np.array(n, dtype=np.int64), P128)
    assert [int(g) for g in got] == [(v + e) % P128 for v, e in zip(values, n)]
