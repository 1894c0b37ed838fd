"""Additive secret sharing over Z/2^64 with seed-compressed helper shares.

A vector x is split into K >= 2 shares: helpers j = 1..K-1 get a 32-byte seed
that expands (PRG bound to the report and to j) into a uniform vector, the
leader (j = 0) gets ``x - sum(expansions)``.  Any K-1 shares are uniformly
random and independent of x.

Not for: threshold reconstruction (see `crypto.shamir`) or field-valued data.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from twinmpc.crypto import prg, ring

SHARE_DST = prg.dst("additive-share")


def helper_binder(binder: bytes, agg_index: int) -> bytes:
    """PRG binder for helper `agg_index`'s share of the report `binder` names."""
    if not 1 <= agg_index <= 255:
        raise ValueError("helper index must be in 1..255")
    return binder + bytes([agg_index])


def expand_helper_share(seed: bytes, binder: bytes, agg_index: int, length: int) -> np.ndarray:
    """The vector a helper's seed stands for."""
    return prg.expand_ring(seed, SHARE_DST, helper_binder(binder, agg_index), length)


def split(
    x: np.ndarray,
    num_shares: int,
    binder: bytes,
    rand: Callable[[int], bytes] = os.urandom,
) -> tuple[np.ndarray, list[bytes]]:
    """Split x into the leader's explicit share and K-1 helper seeds."""
    if num_shares < 2:
        raise ValueError("additive sharing needs at least 2 shares")
    x = np.asarray(x, dtype=ring.DTYPE)
    seeds = [rand(prg.SEED_SIZE) for _ in range(num_shares - 1)]
    leader = x.copy()
    for j, seed in enumerate(seeds, start=1):
        np.subtract(leader, expand_helper_share(seed, binder, j, x.size), out=leader)
    return leader, seeds


def combine(shares: list[np.ndarray]) -> np.ndarray:
    """Sum of explicit shares (leader share plus expanded helper shares)."""
    total = ring.zeros(shares[0].size)
    for share in shares:
        np.add(total, share, out=total)
    return total
