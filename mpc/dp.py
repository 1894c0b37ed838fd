"""Differential privacy for collections: task DP blocks, noise calibration, adding noise to a share.

Model (distributed DP, in the spirit of libprio's ``add_noise_to_agg_share``):
every one of the K aggregators adds, to its own aggregate share, independent
noise drawn with the *full* calibrated parameter.  The guarantee therefore holds
as long as one aggregator is honest (the others may know, and subtract, their own
noise).  The price is utility: the released sum carries K independent draws, so
its noise variance is K times that of one draw; `NoisePlan.total_variance` and
`NoisePlan.error_bound` state it so a controller can print honest error bars.

Task DP block (``task.dp``), parsed by `DpParams.from_dict`; keys outside this
set are rejected with `mpc.errors.InvalidTask`::

    {"algo": "none"}
    {"algo": "discrete-laplace",  "epsilon": 1}                       pure eps-DP
    {"algo": "discrete-gaussian", "epsilon": 1, "delta": 1e-9}        rho-zCDP, shown as (eps, delta)
    optional on either: "budget": {"epsilon": 10, "delta": 1e-8}      total per task (mpc.privacy_ledger)

Numbers may be ints, decimal floats (read by their shortest repr, so 1e-9 is
exactly 10^-9) or exact strings such as "1/3"; they are stored as `Fraction`.

Calibration (sensitivities are integers in the encoded domain, from the caller):

* discrete-laplace: scale ``t = L1 / epsilon`` per coordinate; eps-DP
  (CKS20 / Ghosh-Roughgarden-Sundararajan), charged as ``rho = eps^2/2``.
* discrete-gaussian: the largest ``rho`` whose (epsilon, delta) conversion (CKS20
  Corollary 13, `mpc.privacy_ledger.rho_from_epsilon_delta`) is within the
  target, then ``sigma^2 = L2^2 / (2 rho)`` rounded *up* to a dyadic rational
  (relative excess below 2^-20), so the exact rho charged never exceeds the target (CKS20 Theorem 14: multivariate, L2 sensitivity).

Noise is added to an aggregate share in its own ring or field (`add_noise`); a
count of 0 plus noise -3 then arrives as 2^64 - 3 and the measurement type's
decode maps it back to -3. Clamping and rounding a released result are the task's
output policy (`mpc.output_policy`), applied by the collector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping

import numpy as np

from twinmpc.crypto import dp_noise
from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.privacy_ledger import (
    Budget,
    Charge,
    epsilon_from_rho_cks20,
    parse_fraction,
    rho_from_epsilon_delta,
    rho_from_pure_epsilon,
)

__all__ = [
    "ALGORITHMS",
    "DpParams",
    "NoisePlan",
    "calibrate",
    "add_noise",
]

NONE = "none"
LAPLACE = "discrete-laplace"
GAUSSIAN = "discrete-gaussian"
ALGORITHMS = (NONE, LAPLACE, GAUSSIAN)
_KEYS = {"algo", "epsilon", "delta", "budget"}
MAX_EPSILON = Fraction(100)  # beyond this "privacy" is meaningless; reject as a typo
# sigma^2 is rounded up by this relative margin before the dyadic ceiling, so that
# float error in the sqrt/log of the calibration can only add noise.
_SIGMA2_MARGIN = Fraction(1, 1 << 28)
_SIGMA2_PRECISION_BITS = 20


@dataclass(frozen=True)
class DpParams:
    """A validated task DP block: algorithm, per-collection epsilon/delta, optional total budget."""

    algo: str = NONE
    epsilon: Fraction | None = None
    delta: Fraction = Fraction(0)
    budget: Budget | None = None

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise InvalidTask(f"dp.algo must be one of {list(ALGORITHMS)}, got {self.algo!r}")
        if self.epsilon is not None and not isinstance(self.epsilon, Fraction):
            raise TypeError("epsilon must be a fractions.Fraction")
        if not isinstance(self.delta, Fraction):
            raise TypeError("delta must be a fractions.Fraction")
        if self.algo == NONE:
            if self.epsilon is not None or self.delta != 0 or self.budget is not None:
                raise InvalidTask("dp.algo 'none' takes no epsilon, delta or budget")
            return
        if self.epsilon is None:
            raise InvalidTask(f"dp.algo {self.algo!r} needs 'epsilon'")
        if not 0 < self.epsilon <= MAX_EPSILON:
            raise InvalidTask(f"dp.epsilon must lie in (0, {MAX_EPSILON}], got {self.epsilon}")
        if self.algo == LAPLACE and self.delta != 0:
            raise InvalidTask("dp.algo 'discrete-laplace' is pure DP: 'delta' must be 0 or absent")
        if self.algo == GAUSSIAN and not 0 < self.delta < 1:
            raise InvalidTask(f"dp.algo 'discrete-gaussian' needs 0 < delta < 1, got {self.delta}")
        if self.budget is not None:
            if not isinstance(self.budget, Budget):
                raise TypeError("budget must be a privacy_ledger.Budget")
            if self.algo == GAUSSIAN and self.budget.delta == 0:
                raise InvalidTask("dp.budget.delta must be > 0 for 'discrete-gaussian' collections")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DpParams:
        """Parse a task's ``dp`` table; unknown keys raise InvalidTask naming the key."""
        if not isinstance(doc, Mapping):
            raise InvalidTask("dp must be a table such as {\"algo\": \"discrete-gaussian\", \"epsilon\": 1}")
        unknown = sorted(set(doc) - _KEYS)
        if unknown:
            raise InvalidTask(f"dp: unknown key {unknown[0]!r} (allowed: {sorted(_KEYS)})")
        algo = doc.get("algo", NONE)
        if not isinstance(algo, str):
            raise InvalidTask("dp.algo must be a string")
        return cls(
            algo=algo,
            epsilon=parse_fraction(doc["epsilon"], "dp.epsilon") if "epsilon" in doc else None,
            delta=parse_fraction(doc.get("delta", 0), "dp.delta"),
            budget=Budget.from_dict(doc["budget"], "dp.budget") if "budget" in doc else None,
        )


@dataclass(frozen=True)
class NoisePlan:
    """The calibrated noise one aggregator adds, and what the sum of K of them costs and means.

    ``parameter`` is the calibrated value (Laplace scale, or Gaussian sigma^2) and
    ``per_aggregator_parameter`` what each aggregator samples with: the same, by
    design (full noise at each aggregator, so one honest aggregator suffices).
    ``rho`` is the exact zCDP cost of one collection; ``epsilon_pure`` is set for
    pure-DP plans.
    """

    distribution: str
    parameter: Fraction
    per_aggregator_parameter: Fraction
    num_aggregators: int
    dimension: int
    rho: Fraction
    epsilon_pure: Fraction | None
    delta: Fraction

    def __post_init__(self) -> None:
        if self.distribution not in ALGORITHMS:
            raise ValueError(f"unknown distribution {self.distribution!r}")
        if self.num_aggregators < 1 or self.dimension < 1:
            raise ValueError("num_aggregators and dimension must be >= 1")
        if self.distribution != NONE and self.per_aggregator_parameter <= 0:
            raise ValueError("noise parameter must be > 0")

    def sample(self, shape: int | tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
        """One aggregator's noise (int64) of the given shape; OS CSPRNG unless a test passes `rng`."""
        shape_t = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        n = math.prod(shape_t)
        if self.distribution == LAPLACE:
            flat = dp_noise.discrete_laplace_batch(self.per_aggregator_parameter, n, rng)
        elif self.distribution == GAUSSIAN:
            flat = dp_noise.discrete_gaussian_batch(self.per_aggregator_parameter, n, rng)
        else:
            flat = np.zeros(n, dtype=np.int64)
        return flat.reshape(shape_t)

    # -- utility statements (floats: for display, not for privacy decisions)
    @property
    def variance_per_aggregator(self) -> float:
        """Per-coordinate variance of one aggregator's noise.

        Discrete Laplace: exactly ``2p/(1-p)^2`` with ``p = e^(-1/t)``.
        Discrete Gaussian: the upper bound sigma^2 (CKS20 shows Var <= sigma^2).
        """
        if self.distribution == LAPLACE:
            p = math.exp(-1.0 / float(self.per_aggregator_parameter))
            return 2.0 * p / (1.0 - p) ** 2
        if self.distribution == GAUSSIAN:
            return float(self.per_aggregator_parameter)
        return 0.0

    @property
    def total_variance(self) -> float:
        """Per-coordinate variance of the released sum: K independent draws add up."""
        return self.num_aggregators * self.variance_per_aggregator

    @property
    def total_stddev(self) -> float:
        """Per-coordinate standard deviation of the released sum; also bounds E|noise| (Jensen)."""
        return math.sqrt(self.total_variance)

    def error_bound(self, beta: float, *, all_coordinates: bool = False) -> float:
        """A bound b with P(|noise| > b) <= beta per coordinate (or for all coordinates at once).

        Gaussian: each draw is sigma^2-subgaussian (CKS20, utility analysis), so the sum of K
        is K sigma^2-subgaussian: ``b = sqrt(2 K sigma^2 ln(2/beta))``.
        Laplace: the smaller of Chebyshev ``sqrt(Var/beta)`` and a union bound over
        the K draws with ``P(|X| >= m) = 2 p^m / (1 + p)``.
        """
        if not 0 < beta < 1:
            raise ValueError("beta must lie in (0, 1)")
        if all_coordinates:
            beta = beta / self.dimension
        k = self.num_aggregators
        if self.distribution == GAUSSIAN:
            return math.sqrt(2.0 * k * float(self.per_aggregator_parameter) * math.log(2.0 / beta))
        if self.distribution == LAPLACE:
            p = math.exp(-1.0 / float(self.per_aggregator_parameter))
            m = math.ceil(math.log(beta * (1.0 + p) / (2.0 * k)) / math.log(p))
            return float(min(math.sqrt(self.total_variance / beta), k * max(m - 1, 0)))
        return 0.0

    def epsilon(self, delta: Fraction | float | None = None) -> float:
        """(epsilon, delta) statement of one collection, for display (CKS20 conversion)."""
        if self.epsilon_pure is not None:
            return float(self.epsilon_pure)
        if self.distribution == NONE:
            return math.inf
        return epsilon_from_rho_cks20(self.rho, self.delta if delta is None else delta)

    def charge(self, collection_id: str, task_id: str, groups: tuple[str, ...] = ()) -> Charge:
        """The privacy-ledger charge for one collection under this plan."""
        return Charge(collection_id, task_id, self.rho, self.epsilon_pure, groups)

    def describe(self) -> dict[str, Any]:
        """What a demo or CLI prints: exact parameters and stated error."""
        return {
            "distribution": self.distribution,
            "parameter": str(self.parameter),
            "per_aggregator_parameter": str(self.per_aggregator_parameter),
            "num_aggregators": self.num_aggregators,
            "rho": str(self.rho),
            "epsilon": self.epsilon() if self.distribution != NONE else None,
            "delta": float(self.delta),
            "total_variance": self.total_variance,
            "total_stddev": self.total_stddev,
            "error_bound_95": self.error_bound(0.05) if self.distribution != NONE else 0.0,
        }


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _ceil_dyadic(value: Fraction) -> Fraction:
    """Round up to a multiple of 2^-k keeping 20+ significant bits (small exact numbers for the sampler)."""
    # value >= 2^(bits(num) - bits(den) - 1), so value * 2^k >= 2^PRECISION: relative excess <= 2^-PRECISION
    k = max(0, _SIGMA2_PRECISION_BITS + 1 - (value.numerator.bit_length() - value.denominator.bit_length()))
    scale = 1 << k
    return Fraction(-((-value.numerator * scale) // value.denominator), scale)


def calibrate(
    params: DpParams,
    *,
    l1_sensitivity: int,
    l2_sensitivity: int,
    dimension: int,
    num_aggregators: int,
) -> NoisePlan:
    """Noise for one collection of a `dimension`-coordinate aggregate, added by each of K aggregators.

    Sensitivities are integers in the encoded domain: how much one report can
    change the aggregate, in L1 (for Laplace) and L2 (for Gaussian).
    """
    if not isinstance(params, DpParams):
        raise TypeError("params must be DpParams")
    l1 = _positive_int(l1_sensitivity, "l1_sensitivity")
    l2 = _positive_int(l2_sensitivity, "l2_sensitivity")
    d = _positive_int(dimension, "dimension")
    k = _positive_int(num_aggregators, "num_aggregators")
    if params.algo == NONE:
        return NoisePlan(NONE, Fraction(0), Fraction(0), k, d, Fraction(0), None, Fraction(0))
    eps = params.epsilon
    if eps is None:  # guarded by DpParams validation; keeps the type checker honest
        raise InvalidTask("dp.epsilon missing")
    if params.algo == LAPLACE:
        scale = Fraction(l1) / eps
        return NoisePlan(LAPLACE, scale, scale, k, d, rho_from_pure_epsilon(eps), eps, Fraction(0))
    rho_target = rho_from_epsilon_delta(eps, params.delta)
    sigma2 = _ceil_dyadic(Fraction(l2 * l2) / (2 * rho_target) * (1 + _SIGMA2_MARGIN))
    rho = Fraction(l2 * l2) / (2 * sigma2)
    return NoisePlan(GAUSSIAN, sigma2, sigma2, k, d, rho, None, params.delta)


# ------------------------------------------------------------------ applying noise
def add_noise(agg_share: np.ndarray, noise: np.ndarray, modulus: int | None = None) -> np.ndarray:
    """Add signed noise to an aggregate share: in Z/2^64 (modulus None, uint64) or mod a prime p.

    For p < 2^64 on uint64 arrays the sum is reduced without overflow
    (``a + b >= p  <=>  a >= p - b``); object arrays use Python ints.
    """
    noise = np.asarray(noise)
    if noise.dtype != np.int64:
        raise TypeError("noise must be an int64 array")
    if agg_share.shape != noise.shape:
        raise ValueError(f"shape mismatch: share {agg_share.shape} vs noise {noise.shape}")
    if modulus is None:
        if agg_share.dtype != np.uint64:
            raise TypeError("a Z/2^64 aggregate share must be uint64")
        return agg_share + noise.view(np.uint64)  # two's complement: wraps mod 2^64
    if isinstance(modulus, bool) or not isinstance(modulus, int) or modulus < 3 or modulus % 2 == 0:
        raise ValueError("modulus must be an odd prime")
    if agg_share.dtype == object:
        return (agg_share + noise.astype(object)) % modulus
    if agg_share.dtype != np.uint64 or modulus >= 1 << 64:
        raise TypeError("a prime-field share must be uint64 (p < 2^64) or an object array")
    p = np.uint64(modulus)
    if agg_share.size and bool((agg_share >= p).any()):
        raise ValueError("aggregate share holds values >= p (not canonical field elements)")
    mag = np.abs(noise).astype(np.uint64) % p
    b = np.where((noise < 0) & (mag != 0), p - mag, mag)
    gap = p - b
    return np.where(agg_share >= gap, agg_share - gap, agg_share + b)

