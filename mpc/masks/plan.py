"""What both sides of one round agree on before it starts, and what follows from the cohort size."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from twinmpc.mpc.dp import DpParams
from twinmpc.mpc.masks.noise import ClientNoise, client_noise
from twinmpc.mpc.masks.params import MasksParams, threshold
from twinmpc.mpc.masks.session import Session


@dataclass(frozen=True)
class RoundConfig:
    """Public inputs of a round: built from the task (`mpc.masks.mode.round_config`) by server and clients alike."""

    session: Session
    length: int  # d: ring elements per input
    params: MasksParams
    dp: DpParams
    l2_sensitivity: int
    min_batch_size: int

    def plan(self, n: int) -> RoundPlan:
        return _plan(self, n)


@dataclass(frozen=True)
class RoundPlan:
    """Neighbour count k, threshold t, the release floor and each client's noise, for n clients."""

    n: int
    k: int
    t: int
    min_survivors: int  # fewest masked inputs a release may carry: DP floor and min_batch_size
    noise: ClientNoise


@lru_cache(maxsize=64)
def _plan(config: RoundConfig, n: int) -> RoundPlan:
    k = config.params.degree(n)
    dp_floor = config.params.min_survivors(n)
    noise = client_noise(config.dp, l2_sensitivity=config.l2_sensitivity, dimension=config.length, min_clients=dp_floor, cohort=n)
    return RoundPlan(n, k, threshold(k), max(dp_floor, config.min_batch_size), noise)


__all__ = ["RoundConfig", "RoundPlan"]
