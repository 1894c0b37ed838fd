"""Privacy accounting: conversions against hand-computed values, budget exhaustion, persistence."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.mpc.dp import DpParams, calibrate
from twinmpc.mpc.errors import BudgetExhausted, InvalidTask, UnknownTask
from twinmpc.mpc.privacy_ledger import (
    Budget,
    Charge,
    PrivacyLedger,
    Spent,
    epsilon_from_rho,
    epsilon_from_rho_cks20,
    parse_fraction,
    rho_from_epsilon_delta,
    rho_from_pure_epsilon,
)

DELTA = Fraction(1, 10**9)


def pure(cid: str, eps: Fraction, task: str = "t1", groups: tuple[str, ...] = ()) -> Charge:
    return Charge(cid, task, rho_from_pure_epsilon(eps), eps, groups)


# ----------------------------------------------------------- conversions
def test_pure_epsilon_to_rho_is_exact() -> None:
    assert rho_from_pure_epsilon(Fraction(1)) == Fraction(1, 2)
    assert rho_from_pure_epsilon(Fraction(3, 10)) == Fraction(9, 200)


def test_standard_conversion_hand_computed() -> None:
    # 0.5 + 2 sqrt(0.5 * ln(10^6)) = 0.5 + 2 * sqrt(6.907755279) = 0.5 + 2 * 2.628260885
    assert epsilon_from_rho(Fraction(1, 2), Fraction(1, 10**6)) == pytest.approx(5.756521770, abs=1e-8)
    assert epsilon_from_rho(0, 1e-6) == 0.0


@pytest.mark.parametrize("rho", [0.001, 0.0149, 0.1, 0.5, 2.0, 10.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-9, 1e-12])
def test_cks20_conversion_is_the_minimum_over_orders_and_tighter(rho: float, delta: float) -> None:
    def objective(a: float) -> float:
        return a * rho + ((a - 1) * math.log1p(-1 / a) - math.log(a) + math.log(1 / delta)) / (a - 1)

    grid = min(objective(1 + 10 ** (k / 400)) for k in range(-2400, 1601))  # a in (1 + 1e-6, 1 + 1e4)
    got = epsilon_from_rho_cks20(rho, delta)
    best = min(grid, epsilon_from_rho(rho, delta))
    assert best * (1 - 1e-5) <= got <= best + 1e-12  # bisection finds the minimum the grid brackets
    assert got <= epsilon_from_rho(rho, delta)


def test_rho_budget_inverts_the_conversion_and_rounds_down() -> None:
    rho = rho_from_epsilon_delta(Fraction(1), DELTA)
    assert rho.denominator == 1 << 64 or (1 << 64) % rho.denominator == 0
    assert epsilon_from_rho_cks20(rho, DELTA) <= 1.0
    assert epsilon_from_rho_cks20(rho, DELTA) == pytest.approx(1.0, abs=1e-6)
    # the closed-form standard rho (hand value: (sqrt(ln 1e9 + 1) - sqrt(ln 1e9))^2 = 0.0117812)
    # is smaller: the tighter conversion buys more rho for the same (eps, delta).
    assert 0.0117811 < float(rho) and float(rho) == pytest.approx(0.0149731, abs=1e-6)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (epsilon_from_rho, (-1, 1e-6)),
        (epsilon_from_rho, (1, 0)),
        (epsilon_from_rho_cks20, (1, 1)),
        (rho_from_epsilon_delta, (Fraction(0), DELTA)),
        (rho_from_epsilon_delta, (Fraction(1), Fraction(0))),
        (rho_from_pure_epsilon, (Fraction(-1),)),
    ],
)
def test_conversion_argument_errors(call, args) -> None:
    with pytest.raises(ValueError):
        call(*args)


def test_parse_fraction_forms() -> None:
    assert parse_fraction(1e-9, "d") == Fraction(1, 10**9)
    assert parse_fraction("1/3", "e") == Fraction(1, 3)
    assert parse_fraction(2, "e") == 2
    for bad in (True, float("nan"), "x", [1], "1/0"):
        with pytest.raises(InvalidTask):
            parse_fraction(bad, "e")


# ----------------------------------------------------------- budgets
def test_budget_parsing() -> None:
    b = Budget.from_dict({"epsilon": 10, "delta": 1e-8})
    assert b == Budget(Fraction(10), Fraction(1, 10**8))
    assert Budget.from_dict({"epsilon": "3/2"}).rho is None
    with pytest.raises(InvalidTask, match="'eps'"):
        Budget.from_dict({"eps": 1})
    with pytest.raises(InvalidTask, match="missing key 'epsilon'"):
        Budget.from_dict({"delta": 1e-9})
    with pytest.raises(InvalidTask, match="epsilon must be > 0"):
        Budget.from_dict({"epsilon": 0})
    with pytest.raises(InvalidTask, match="delta"):
        Budget.from_dict({"epsilon": 1, "delta": 1})
    with pytest.raises(InvalidTask, match="table"):
        Budget.from_dict([1])
    with pytest.raises(TypeError):
        Budget(1.0)  # type: ignore[arg-type]


def test_charge_validation() -> None:
    with pytest.raises(ValueError, match="rho = epsilon"):
        Charge("c", "t", Fraction(1), Fraction(1))
    with pytest.raises(ValueError, match="collection_id"):
        Charge("", "t", Fraction(0))
    with pytest.raises(ValueError, match="task_id"):
        Charge("c", "", Fraction(0))
    with pytest.raises(ValueError, match="rho"):
        Charge("c", "t", Fraction(-1))
    with pytest.raises(ValueError, match="groups"):
        Charge("c", "t", Fraction(0), None, ("a", "a"))
    with pytest.raises(ValueError, match="groups"):
        Charge("c", "t", Fraction(0), None, ["a"])  # type: ignore[arg-type]


# ----------------------------------------------------------- the ledger
def test_pure_budget_allows_exactly_its_epsilon_then_refuses() -> None:
    ledger = PrivacyLedger().with_task("t1", Budget(Fraction(3)))
    for i in range(3):
        ledger = ledger.charge(pure(f"c{i}", Fraction(1)))
    before = ledger
    with pytest.raises(BudgetExhausted) as exc:
        ledger.charge(pure("c3", Fraction(1)))
    msg = str(exc.value)
    assert "task 't1'" in msg and "'c3'" in msg and "exhausted" in msg and "epsilon=3" in msg
    assert ledger is before and len(ledger.charges) == 3  # refusal leaves state unchanged
    assert ledger.spent("t1") == Spent(Fraction(3, 2), Fraction(3), True, 3)


def test_gaussian_refused_under_a_pure_budget() -> None:
    plan = calibrate(
        DpParams.from_dict({"algo": "discrete-gaussian", "epsilon": 1, "delta": 1e-9}),
        l1_sensitivity=1, l2_sensitivity=1, dimension=1, num_aggregators=2,
    )
    ledger = PrivacyLedger().with_task("t1", Budget(Fraction(100)))
    with pytest.raises(BudgetExhausted, match="rho="):
        ledger.charge(plan.charge("g1", "t1"))


def test_gaussian_composition_matches_hand_count() -> None:
    """Each collection costs rho_1 = rho(1, 1e-9) ~ 0.014973; budget rho(2, 1e-9) ~ 0.05613 fits 3."""
    plan = calibrate(
        DpParams.from_dict({"algo": "discrete-gaussian", "epsilon": 1, "delta": 1e-9}),
        l1_sensitivity=1, l2_sensitivity=1, dimension=1, num_aggregators=2,
    )
    budget = Budget(Fraction(2), DELTA)
    assert float(budget.rho) == pytest.approx(0.056131, abs=1e-5)
    ledger = PrivacyLedger().with_task("t1", budget)
    n = 0
    while True:
        try:
            ledger = ledger.charge(plan.charge(f"g{n}", "t1"))
        except BudgetExhausted:
            break
        n += 1
    assert n == 3 == math.floor(budget.rho / plan.rho)  # basic composition would allow only 2
    assert ledger.spent("t1").rho == 3 * plan.rho


def test_one_collection_at_its_own_epsilon_fits_exactly_once() -> None:
    params = DpParams.from_dict({"algo": "discrete-gaussian", "epsilon": "1/2", "delta": 1e-10})
    plan = calibrate(params, l1_sensitivity=40, l2_sensitivity=7, dimension=50, num_aggregators=3)
    ledger = PrivacyLedger().with_task("t", Budget(params.epsilon, params.delta)).charge(plan.charge("a", "t"))
    with pytest.raises(BudgetExhausted):
        ledger.charge(plan.charge("b", "t"))


def test_mixed_pure_then_gaussian_uses_zcdp() -> None:
    ledger = PrivacyLedger().with_task("t1", Budget(Fraction(2), DELTA))
    ledger = ledger.charge(pure("p", Fraction(1, 10)))
    g = Charge("g", "t1", Fraction(1, 100))
    ledger = ledger.charge(g)
    spent = ledger.spent("t1")
    assert spent.rho == Fraction(1, 200) + Fraction(1, 100) and not spent.all_pure
    assert spent.epsilon(DELTA) == pytest.approx(epsilon_from_rho_cks20(Fraction(3, 200), DELTA))


def test_subject_group_budgets() -> None:
    ledger = PrivacyLedger().with_task(
        "t1", Budget(Fraction(10)), {"district-1": Budget(Fraction(1)), "district-2": Budget(Fraction(2))}
    )
    ledger = ledger.charge(pure("a", Fraction(1), groups=("district-1",)))
    ledger = ledger.charge(pure("b", Fraction(1), groups=("district-2",)))
    ledger = ledger.charge(pure("c", Fraction(1)))  # touches no group: only the task total counts
    with pytest.raises(BudgetExhausted, match="group 'district-1'"):
        ledger.charge(pure("d", Fraction(1, 2), groups=("district-2", "district-1")))
    ledger = ledger.charge(pure("e", Fraction(1), groups=("district-2",)))
    assert ledger.spent("t1", "district-2").epsilon_pure == 2
    assert ledger.spent("t1").epsilon_pure == 4
    with pytest.raises(ValueError, match="no budget for subject group 'district-9'"):
        ledger.charge(pure("f", Fraction(1), groups=("district-9",)))


def test_unknown_task_and_duplicate_collection() -> None:
    ledger = PrivacyLedger().with_task("t1", Budget(Fraction(5)))
    with pytest.raises(UnknownTask, match="t2"):
        ledger.charge(pure("a", Fraction(1), task="t2"))
    ledger = ledger.charge(pure("a", Fraction(1)))
    assert ledger.has_charged("a") and not ledger.has_charged("b")
    with pytest.raises(ValueError, match="already charged"):
        ledger.charge(pure("a", Fraction(1)))
    with pytest.raises(TypeError):
        ledger.charge("a")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ledger.with_task("", Budget(Fraction(1)))


def test_lowering_a_budget_blocks_further_charges() -> None:
    ledger = PrivacyLedger().with_task("t1", Budget(Fraction(5))).charge(pure("a", Fraction(2)))
    ledger = ledger.with_task("t1", Budget(Fraction(1)))
    with pytest.raises(BudgetExhausted):
        ledger.charge(pure("b", Fraction(1, 100)))


def test_report() -> None:
    ledger = PrivacyLedger().with_task("t1", Budget(Fraction(2), DELTA)).charge(Charge("g", "t1", Fraction(1, 100)))
    r = ledger.report("t1")
    assert r["collections"] == 1 and r["rho_spent"] == 0.01 and r["epsilon_pure_spent"] is None
    assert r["epsilon_spent"] == pytest.approx(epsilon_from_rho_cks20(0.01, 1e-9))
    pure_ledger = PrivacyLedger().with_task("p", Budget(Fraction(2))).charge(pure("x", Fraction(1), task="p"))
    assert pure_ledger.report("p")["epsilon_spent"] == 1.0 and pure_ledger.report("p")["rho_budget"] is None


# ----------------------------------------------------------- persistence
def _sample_ledger() -> PrivacyLedger:
    return (
        PrivacyLedger()
        .with_task("t1", Budget(Fraction(4), DELTA), {"g": Budget(Fraction(1))})
        .with_task("t2", Budget(Fraction(1, 3)))
        .charge(pure("a", Fraction(1, 2), groups=("g",)))
        .charge(Charge("b", "t1", Fraction(1, 100)))
        .charge(pure("c", Fraction(1, 3), task="t2"))
    )


def test_round_trip_is_canonical_and_exact() -> None:
    ledger = _sample_ledger()
    data = ledger.to_bytes()
    back = PrivacyLedger.from_bytes(data)
    assert back == ledger and back.to_bytes() == data
    assert b" " not in data and json.loads(data)["v"] == 1
    assert back.spent("t1") == ledger.spent("t1")
    with pytest.raises(BudgetExhausted):  # the restored ledger still enforces
        back.charge(pure("d", Fraction(1, 100), task="t2"))


def _mutate(doc_fn) -> bytes:
    doc = json.loads(_sample_ledger().to_bytes())
    doc_fn(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[]", "JSON object"),
        (_mutate(lambda d: d.update(v=2)), "version"),
        (_mutate(lambda d: d.update(extra=1)), "keys"),
        (_mutate(lambda d: d["charges"][0].update(rho=0.5)), "stored fraction"),
        (_mutate(lambda d: d["charges"][0].update(rho="1/0")), "bad stored fraction"),
        (_mutate(lambda d: d["charges"].append(d["charges"][0])), "duplicate"),
        (_mutate(lambda d: d["budgets"]["t1"].pop("groups")), "keys"),
        (_mutate(lambda d: d["budgets"]["t1"]["total"].update(epsilon="-1")), "malformed"),
        (_mutate(lambda d: d.update(charges={})), "list"),
    ],
)
def test_from_bytes_rejects_malformed_state(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PrivacyLedger.from_bytes(data)


@settings(max_examples=50, deadline=None)
@given(
    budget=st.fractions(min_value=Fraction(1, 10), max_value=5, max_denominator=20),
    epsilons=st.lists(st.fractions(min_value=Fraction(1, 20), max_value=2, max_denominator=20), max_size=12),
)
def test_pure_ledger_accepts_iff_sum_fits(budget: Fraction, epsilons: list[Fraction]) -> None:
    ledger = PrivacyLedger().with_task("t", Budget(budget))
    total = Fraction(0)
    for i, eps in enumerate(epsilons):
        fits = total + eps <= budget
        try:
            ledger = ledger.charge(pure(f"c{i}", eps, task="t"))
            assert fits
            total += eps
        except BudgetExhausted:
            assert not fits
    assert ledger.spent("t").epsilon_pure == total
