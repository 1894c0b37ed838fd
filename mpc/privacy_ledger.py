"""Privacy accounting: zero-concentrated DP composition and a per-task budget ledger.

Accounting model (Bun and Steinke 2016, "Concentrated Differential Privacy:
Simplifications, Extensions, and Lower Bounds"; Canonne, Kamath and Steinke 2020):

* a discrete-Gaussian release with L2 sensitivity D and variance parameter s2 is
  rho-zCDP with ``rho = D^2 / (2 s2)`` (CKS20 Theorem 14, also for vectors);
* a pure eps-DP release (discrete Laplace) is ``eps^2 / 2``-zCDP (BS16 Prop. 1.4);
* zCDP composes additively: k releases cost ``sum(rho_i)`` (BS16 Lemma 2.3);
* rho-zCDP implies (eps, delta)-DP with ``eps = rho + 2 sqrt(rho ln(1/delta))``
  (BS16 Prop. 1.3), or the tighter ``inf_a a rho + (ln(1/delta) + (a-1) ln(1-1/a) - ln a)/(a-1)``
  (CKS20 Corollary 13), offered for display.

A `Budget` is stated as (epsilon, delta).  With delta > 0 it is turned into the
largest rho whose CKS20 conversion stays within epsilon, rounded *down* to an
exact `Fraction` (so the comparison with the spent rho is exact and errs on the
safe side).  With delta = 0 only pure-DP charges are accepted and their epsilons
add up (basic composition).  A collection fits if either valid accounting says it
does: pure composition while every charge was pure, or zCDP composition.

`PrivacyLedger` is a pure state machine: ``charge`` returns a new ledger or raises
`mpc.errors.BudgetExhausted`; ``to_bytes``/``from_bytes`` give canonical JSON that
the service layer stores durably (it owns the storage and the transaction).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from fractions import Fraction
from typing import Any, Mapping

from twinmpc.mpc.errors import BudgetExhausted, InvalidTask, UnknownTask

__all__ = [
    "Budget",
    "Charge",
    "Spent",
    "PrivacyLedger",
    "LEDGER_FORMAT_VERSION",
    "rho_from_pure_epsilon",
    "epsilon_from_rho",
    "epsilon_from_rho_cks20",
    "rho_from_epsilon_delta",
    "parse_fraction",
]

LEDGER_FORMAT_VERSION = 1
# rho budgets are rounded down by this relative margin (and calibrated noise up by
# a larger one in mpc.dp) so float error in sqrt/log can only make us stricter.
_RHO_MARGIN = Fraction(1, 1 << 30)
_RHO_DENOMINATOR = 1 << 64


def parse_fraction(value: Any, name: str) -> Fraction:
    """Read an exact rational from a config value: int, decimal float (by its shortest repr) or "a/b" string."""
    if isinstance(value, bool):
        raise InvalidTask(f"{name!r} must be a number, got a boolean")
    try:
        if isinstance(value, Fraction):
            out = value
        elif isinstance(value, int):
            out = Fraction(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidTask(f"{name!r} must be finite, got {value!r}")
            out = Fraction(repr(value))  # 1e-9 means 10^-9, not the nearest binary double
        elif isinstance(value, str):
            out = Fraction(value)
        else:
            raise InvalidTask(f"{name!r} must be a number or a fraction string, got {type(value).__name__}")
    except (ValueError, ZeroDivisionError) as exc:
        raise InvalidTask(f"{name!r}: {value!r} is not a rational number") from exc
    return out


def fraction_text(value: Fraction) -> str:
    """Canonical exact text of a Fraction: "3" or "1/1000000000"."""
    return str(value)


# ------------------------------------------------------------------ conversions
def rho_from_pure_epsilon(epsilon: Fraction) -> Fraction:
    """eps-DP implies (eps^2/2)-zCDP (BS16 Proposition 1.4); exact."""
    if epsilon < 0:
        raise ValueError("epsilon must be >= 0")
    return epsilon * epsilon / 2


def _check_rho_delta(rho: float | Fraction, delta: float | Fraction) -> tuple[float, float]:
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    return float(rho), float(delta)


def epsilon_from_rho(rho: float | Fraction, delta: float | Fraction) -> float:
    """Standard conversion ``rho + 2 sqrt(rho ln(1/delta))`` (BS16 Proposition 1.3)."""
    r, d = _check_rho_delta(rho, delta)
    return r + 2.0 * math.sqrt(r * math.log(1.0 / d))


def epsilon_from_rho_cks20(rho: float | Fraction, delta: float | Fraction) -> float:
    """Tighter conversion of CKS20 Corollary 13, minimised over the Renyi order a > 1.

    The objective is convex in a; its derivative is positive exactly when
    ``rho > ln(1/(a delta)) / (a-1)^2``, so the minimiser is found by bisection.
    """
    r, d = _check_rho_delta(rho, delta)
    if r == 0.0:
        return 0.0

    def objective(a: float) -> float:
        return a * r + ((a - 1.0) * math.log1p(-1.0 / a) - math.log(a) + math.log(1.0 / d)) / (a - 1.0)

    def rising(a: float) -> bool:
        return r > -math.log(a * d) / (a - 1.0) ** 2

    lo, hi = 1.0 + 1e-9, 2.0
    while not rising(hi):
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if rising(mid):
            hi = mid
        else:
            lo = mid
    return min(objective(hi), epsilon_from_rho(r, d))


def rho_from_epsilon_delta(epsilon: Fraction, delta: Fraction) -> Fraction:
    """Largest rho whose CKS20 conversion stays within (epsilon, delta), rounded down to an exact Fraction.

    The CKS20 epsilon is increasing in rho, so rho is found by bisection on
    ``[0, r0]`` where ``r0`` solves the standard bound with equality shifted to
    the right (the tighter conversion allows at least the standard rho):
    ``sqrt(r_std) = sqrt(ln(1/delta) + eps) - sqrt(ln(1/delta))``.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    eps = float(epsilon)
    log_term = math.log(1.0 / float(delta))
    root = math.sqrt(log_term + eps) - math.sqrt(log_term)
    lo, hi = root * root, eps  # eps(rho) >= rho, so rho <= eps
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if epsilon_from_rho_cks20(mid, delta) <= eps:
            lo = mid
        else:
            hi = mid
    rho = Fraction(lo) * (1 - _RHO_MARGIN)
    return Fraction(math.floor(rho * _RHO_DENOMINATOR), _RHO_DENOMINATOR)


# ------------------------------------------------------------------ values
@dataclass(frozen=True)
class Budget:
    """A total privacy budget (epsilon, delta); delta = 0 means pure DP only."""

    epsilon: Fraction
    delta: Fraction = Fraction(0)

    def __post_init__(self) -> None:
        if not isinstance(self.epsilon, Fraction) or not isinstance(self.delta, Fraction):
            raise TypeError("Budget epsilon and delta must be fractions.Fraction")
        if self.epsilon <= 0:
            raise InvalidTask(f"budget epsilon must be > 0, got {self.epsilon}")
        if not 0 <= self.delta < 1:
            raise InvalidTask(f"budget delta must lie in [0, 1), got {self.delta}")

    @cached_property
    def rho(self) -> Fraction | None:
        """The zCDP budget this (epsilon, delta) allows, or None for a pure budget."""
        if self.delta == 0:
            return None
        return rho_from_epsilon_delta(self.epsilon, self.delta)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "budget") -> Budget:
        if not isinstance(doc, Mapping):
            raise InvalidTask(f"{where} must be a table like {{\"epsilon\": 10, \"delta\": 1e-8}}")
        unknown = sorted(set(doc) - {"epsilon", "delta"})
        if unknown:
            raise InvalidTask(f"{where}: unknown key {unknown[0]!r}")
        if "epsilon" not in doc:
            raise InvalidTask(f"{where}: missing key 'epsilon'")
        return cls(
            parse_fraction(doc["epsilon"], f"{where}.epsilon"),
            parse_fraction(doc.get("delta", 0), f"{where}.delta"),
        )

    def to_dict(self) -> dict[str, str]:
        return {"epsilon": fraction_text(self.epsilon), "delta": fraction_text(self.delta)}


@dataclass(frozen=True)
class Charge:
    """What one collection costs: its zCDP rho, and its epsilon when it is pure DP."""

    collection_id: str
    task_id: str
    rho: Fraction
    epsilon_pure: Fraction | None = None
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.collection_id, str) or not self.collection_id:
            raise ValueError("collection_id must be a non-empty string")
        if not isinstance(self.task_id, str) or not self.task_id:
            raise ValueError("task_id must be a non-empty string")
        if not isinstance(self.rho, Fraction) or self.rho < 0:
            raise ValueError(f"rho must be a Fraction >= 0, got {self.rho!r}")
        if self.epsilon_pure is not None:
            if not isinstance(self.epsilon_pure, Fraction) or self.epsilon_pure < 0:
                raise ValueError(f"epsilon_pure must be a Fraction >= 0, got {self.epsilon_pure!r}")
            if self.rho != rho_from_pure_epsilon(self.epsilon_pure):
                raise ValueError("a pure charge must have rho = epsilon^2 / 2")
        if not isinstance(self.groups, tuple) or not all(isinstance(g, str) and g for g in self.groups):
            raise ValueError("groups must be a tuple of non-empty strings")
        if len(set(self.groups)) != len(self.groups):
            raise ValueError("groups must not repeat")

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection_id": self.collection_id,
            "task_id": self.task_id,
            "rho": fraction_text(self.rho),
            "epsilon_pure": None if self.epsilon_pure is None else fraction_text(self.epsilon_pure),
            "groups": list(self.groups),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Charge:
        _exact_keys(doc, {"collection_id", "task_id", "rho", "epsilon_pure", "groups"}, "charge")
        eps = doc["epsilon_pure"]
        return cls(
            collection_id=doc["collection_id"],
            task_id=doc["task_id"],
            rho=_stored_fraction(doc["rho"]),
            epsilon_pure=None if eps is None else _stored_fraction(eps),
            groups=tuple(doc["groups"]),
        )


@dataclass(frozen=True)
class Spent:
    """Composed cost so far in one scope (a task, or a subject group of a task)."""

    rho: Fraction = Fraction(0)
    epsilon_pure: Fraction = Fraction(0)
    all_pure: bool = True
    collections: int = 0

    def plus(self, charge: Charge) -> Spent:
        pure = charge.epsilon_pure is not None
        return Spent(
            rho=self.rho + charge.rho,
            epsilon_pure=self.epsilon_pure + (charge.epsilon_pure if pure else 0),
            all_pure=self.all_pure and pure,
            collections=self.collections + 1,
        )

    def within(self, budget: Budget) -> bool:
        """True if pure composition or zCDP composition keeps this within the budget."""
        if self.all_pure and self.epsilon_pure <= budget.epsilon:
            return True
        rho_budget = budget.rho
        return rho_budget is not None and self.rho <= rho_budget

    def epsilon(self, delta: Fraction) -> float:
        """Best (epsilon, delta) statement for display (pure sum, or CKS20 from rho)."""
        if self.all_pure:
            return float(self.epsilon_pure)
        return epsilon_from_rho_cks20(self.rho, delta)


@dataclass(frozen=True)
class TaskBudget:
    """A task's total budget and optional budgets per subject group."""

    total: Budget
    groups: Mapping[str, Budget] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.total, Budget):
            raise TypeError("total must be a Budget")
        if not all(isinstance(k, str) and k and isinstance(v, Budget) for k, v in self.groups.items()):
            raise TypeError("groups must map non-empty names to Budget")
        object.__setattr__(self, "groups", dict(self.groups))

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total.to_dict(), "groups": {g: b.to_dict() for g, b in self.groups.items()}}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TaskBudget:
        _exact_keys(doc, {"total", "groups"}, "task budget")
        groups = doc["groups"]
        if not isinstance(groups, Mapping):
            raise ValueError("task budget groups must be an object")
        return cls(
            Budget.from_dict(doc["total"], "total"),
            {g: Budget.from_dict(b, f"groups.{g}") for g, b in groups.items()},
        )


# ------------------------------------------------------------------ the ledger
@dataclass(frozen=True)
class PrivacyLedger:
    """Immutable ledger: budgets per task (and group), the charges made, and what they cost."""

    budgets: Mapping[str, TaskBudget] = field(default_factory=dict)
    charges: tuple[Charge, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "budgets", dict(self.budgets))
        ids = [c.collection_id for c in self.charges]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate collection id in ledger charges")

    # -- configuration
    def with_task(self, task_id: str, total: Budget, groups: Mapping[str, Budget] | None = None) -> PrivacyLedger:
        """Set (or replace) a task's budget; charges already made keep counting."""
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("task_id must be a non-empty string")
        budgets = dict(self.budgets)
        budgets[task_id] = TaskBudget(total, dict(groups or {}))
        return replace(self, budgets=budgets)

    # -- queries
    def spent(self, task_id: str, group: str | None = None) -> Spent:
        """Composed cost of the task's charges (or those touching one group)."""
        out = Spent()
        for c in self.charges:
            if c.task_id == task_id and (group is None or group in c.groups):
                out = out.plus(c)
        return out

    def has_charged(self, collection_id: str) -> bool:
        return any(c.collection_id == collection_id for c in self.charges)

    def _task_budget(self, task_id: str) -> TaskBudget:
        try:
            return self.budgets[task_id]
        except KeyError:
            raise UnknownTask(f"no privacy budget configured for task {task_id!r}") from None

    def check(self, charge: Charge) -> None:
        """Raise BudgetExhausted if `charge` would exceed the task's or one of its groups' budget."""
        if not isinstance(charge, Charge):
            raise TypeError("charge must be a Charge")
        tb = self._task_budget(charge.task_id)
        if self.has_charged(charge.collection_id):
            raise ValueError(f"collection {charge.collection_id!r} was already charged")
        unknown = [g for g in charge.groups if g not in tb.groups]
        if unknown:
            raise ValueError(f"task {charge.task_id!r} has no budget for subject group {unknown[0]!r}")
        scopes: list[tuple[str, Spent, Budget]] = [
            (f"task {charge.task_id!r}", self.spent(charge.task_id), tb.total)
        ]
        scopes += [
            (f"task {charge.task_id!r} group {g!r}", self.spent(charge.task_id, g), tb.groups[g])
            for g in charge.groups
        ]
        for scope, before, budget in scopes:
            after = before.plus(charge)
            if not after.within(budget):
                raise BudgetExhausted(_refusal(scope, charge, before, budget))

    def charge(self, charge: Charge) -> PrivacyLedger:
        """Return the ledger with `charge` recorded; BudgetExhausted (state unchanged) if it does not fit."""
        self.check(charge)
        return replace(self, charges=self.charges + (charge,))

    def report(self, task_id: str) -> dict[str, Any]:
        """Human-facing summary of a task's spend (floats, for display only)."""
        tb = self._task_budget(task_id)
        s = self.spent(task_id)
        display_delta = tb.total.delta if tb.total.delta > 0 else None
        return {
            "task_id": task_id,
            "collections": s.collections,
            "rho_spent": float(s.rho),
            "rho_budget": None if tb.total.rho is None else float(tb.total.rho),
            "epsilon_pure_spent": float(s.epsilon_pure) if s.all_pure else None,
            "epsilon_spent": (
                s.epsilon(display_delta) if display_delta is not None else float(s.epsilon_pure)
            ),
            "budget": {"epsilon": float(tb.total.epsilon), "delta": float(tb.total.delta)},
        }

    # -- persistence
    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, UTF-8); fractions as exact "a/b" strings."""
        doc = {
            "v": LEDGER_FORMAT_VERSION,
            "budgets": {t: b.to_dict() for t, b in self.budgets.items()},
            "charges": [c.to_dict() for c in self.charges],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> PrivacyLedger:
        """Parse `to_bytes` output; ValueError on anything malformed (spent is recomputed, never trusted)."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"privacy ledger state is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValueError("privacy ledger state must be a JSON object")
        _exact_keys(doc, {"v", "budgets", "charges"}, "ledger")
        if doc["v"] != LEDGER_FORMAT_VERSION:
            raise ValueError(f"unsupported privacy ledger version {doc['v']!r}")
        if not isinstance(doc["budgets"], dict) or not isinstance(doc["charges"], list):
            raise ValueError("ledger budgets must be an object and charges a list")
        try:
            budgets = {t: TaskBudget.from_dict(b) for t, b in doc["budgets"].items()}
            charges = tuple(Charge.from_dict(c) for c in doc["charges"])
        except (InvalidTask, TypeError, KeyError) as exc:
            raise ValueError(f"privacy ledger state is malformed: {exc}") from exc
        return cls(budgets, charges)


def _refusal(scope: str, charge: Charge, before: Spent, budget: Budget) -> str:
    kind = f"epsilon={float(charge.epsilon_pure):g} (pure)" if charge.epsilon_pure is not None else ""
    cost = kind or f"rho={float(charge.rho):.6g}"
    rho_budget = budget.rho
    limits = f"epsilon={float(budget.epsilon):g}, delta={float(budget.delta):g}"
    if rho_budget is not None:
        limits += f" (rho budget {float(rho_budget):.6g})"
    spent = f"rho {float(before.rho):.6g}"
    if before.all_pure:
        spent += f", pure epsilon {float(before.epsilon_pure):g}"
    return (
        f"privacy budget exhausted for {scope}: collection {charge.collection_id!r} costs {cost}, "
        f"already spent {spent} over {before.collections} collection(s), budget {limits}"
    )


def _exact_keys(doc: Any, keys: set[str], where: str) -> None:
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where} must be an object")
    if set(doc) != keys:
        raise ValueError(f"{where} keys must be exactly {sorted(keys)}, got {sorted(doc)}")


def _stored_fraction(text: Any) -> Fraction:
    if not isinstance(text, str):
        raise ValueError(f"stored fraction must be a string, got {text!r}")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"bad stored fraction {text!r}") from exc
