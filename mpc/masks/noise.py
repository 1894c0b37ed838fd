"""Distributed DP for masks mode: each client adds its part of discrete Gaussian noise.

No one in this mode adds noise after the fact: the server only ever sees the
masked inputs and their sum, so the noise must be in the inputs.  Each client
adds ``N_Z(0, sigma_i^2)`` per coordinate (exact integer sampler,
`crypto.dp_noise.discrete_gaussian_batch`, OS CSPRNG), and the released sum
carries the sum of the survivors' draws.

Calibration (Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian
Mechanism for Federated Learning with Secure Aggregation", ICML 2021,
Theorem 1, first branch of the bound): the sum of m independent
``N_Z(0, sigma^2)^d`` vectors masks an L2-sensitivity-Delta change with
``rho = Delta^2 / (2 m sigma^2) + tau d / 4``-zCDP, where
``tau = 10 sum_{k=1}^{m-1} exp(-2 pi^2 sigma^2 k / (k + 1))``.

We calibrate to the *threshold*: ``m = min_clients = ceil((1 - dropout) n)``,
the fewest contributions the round can release with (clients themselves
refuse to confirm a smaller survivor set), and bound tau at m = n, so the
guarantee holds for every survivor count the round accepts.  The target is the
rho of the central mechanism for the task's (epsilon, delta) (`mpc.dp.calibrate`).

Accuracy cost: the released noise has variance ``|U3| sigma_i^2``, between
``sigma_central^2`` (exactly ``min_clients`` survive) and
``sigma_central^2 / (1 - dropout)`` (nobody drops), plus the rounding of
sigma_i^2 up to 1/1024 and the floor sigma_i >= 1/2 the theorem needs; for
low-sensitivity queries with many clients that floor dominates
(`ClientNoise.describe` states the numbers).

Only discrete Gaussian noise composes like this; a task asking for discrete
Laplace is refused in masks mode (a sum of Laplace draws is not Laplace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from twinmpc.crypto import dp_noise
from twinmpc.mpc import dp
from twinmpc.mpc.errors import InvalidTask

_STEP = 1024  # sigma_i^2 is a multiple of 1/1024: small exact rationals for the sampler
_MIN_SIGMA2 = Fraction(1, 4)  # KLS21 Theorem 1 needs sigma >= 1/2


def check_dp(params: dp.DpParams) -> None:
    """Refuse DP blocks masks mode cannot honour."""
    if params.algo == dp.LAPLACE:
        raise InvalidTask("mode 'masks' needs dp.algo 'discrete-gaussian' (or 'none'): a sum of discrete Laplace draws is not a Laplace mechanism")


def kls21_rho(sigma2: float, m: int, l2: int, d: int, tau_clients: int | None = None) -> float:
    """zCDP bound of a sum of m clients' N_Z(0, sigma2)^d noise for an L2-sensitivity-l2 change."""
    top = m if tau_clients is None else tau_clients
    ks = np.arange(1, max(top, 1), dtype=np.float64)
    tau = 10.0 * float(np.sum(np.exp(-2.0 * math.pi**2 * sigma2 * ks / (ks + 1.0))))
    return l2 * l2 / (2.0 * m * sigma2) + tau * d / 4.0


@dataclass(frozen=True)
class ClientNoise:
    """What one client adds, and what the sum of at least `min_clients` of them guarantees."""

    sigma2: Fraction  # per client and coordinate; 0 when the task has no DP
    min_clients: int
    rho: Fraction  # zCDP of the released sum, <= the task's per-collection target
    delta: Fraction
    central_sigma2: Fraction  # what one trusted curator would add for the same rho

    def sample(self, d: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """This client's noise vector (int64); OS CSPRNG unless a test passes `rng`."""
        if self.sigma2 == 0:
            return np.zeros(d, dtype=np.int64)
        return dp_noise.discrete_gaussian_batch(self.sigma2, d, rng)

    def describe(self, survivors: int | None = None) -> dict[str, Any]:
        """Exact parameters and the accuracy cost against the central mechanism, for the task card."""
        if self.sigma2 == 0:
            return {"distribution": "none"}
        worst = float(self.sigma2) * (survivors if survivors is not None else self.min_clients)
        return {
            "distribution": dp.GAUSSIAN,
            "per_client_sigma2": str(self.sigma2),
            "min_clients": self.min_clients,
            "rho": str(self.rho),
            "delta": float(self.delta),
            "central_sigma2": str(self.central_sigma2),
            "released_variance": worst,
            "variance_vs_central": worst / float(self.central_sigma2),
        }


def client_noise(params: dp.DpParams, *, l2_sensitivity: int, dimension: int, min_clients: int, cohort: int) -> ClientNoise:
    """Per-client noise for a cohort of `cohort` clients that releases with >= `min_clients`."""
    check_dp(params)
    if not 1 <= min_clients <= cohort:
        raise ValueError("need 1 <= min_clients <= cohort")
    central = dp.calibrate(params, l1_sensitivity=1, l2_sensitivity=l2_sensitivity, dimension=dimension, num_aggregators=1)
    if central.distribution == dp.NONE:
        return ClientNoise(Fraction(0), min_clients, Fraction(0), Fraction(0), Fraction(0))
    target = float(central.rho)
    sigma2 = max(_MIN_SIGMA2, Fraction(math.ceil(central.parameter * _STEP / min_clients), _STEP))
    while kls21_rho(float(sigma2), min_clients, l2_sensitivity, dimension, tau_clients=cohort) > target:
        sigma2 += Fraction(max(1, math.ceil(sigma2 * _STEP / 4096)), _STEP)  # +1/4096 relative, at least 1/1024
    return ClientNoise(sigma2, min_clients, central.rho, params.delta, central.parameter)


__all__ = ["ClientNoise", "check_dp", "client_noise", "kls21_rho"]
