"""Parameters of a masks-mode task, and the plan of one round derived from them.

Task block (``task.masks``), parsed by `MasksParams.from_dict`; unknown keys are
`InvalidTask`::

    {"dropout": 0.2,        tolerated fraction of the cohort that may drop out, 0 <= dropout < 1/2
     "neighbours": 40,      optional: even neighbour count k; default: the O(log n) rule below
     "max_clients": 1000,   cohort cap of one round
     "round_seconds": 10,   deadline of each round
     "idle_seconds": 2}     optional: a round also closes after this long without a new message

Threshold: every secret is Shamir-shared t-of-k with ``t = floor(k/2) + 1``.
A strict majority of each neighbourhood is needed because the server may be
active: an honest client reveals at most one of a peer's two secrets, so two
disjoint groups of t holders -- one told the peer survived, one told it dropped
-- cannot both exist in k neighbours (Bell et al. 2020, Sec. 4, honest-majority
neighbourhoods).  The neighbours of a client may therefore lose at most
``k - t = ceil(k/2) - 1`` members before its round aborts.

Neighbour count (Bell et al. 2020, k = O(log n)): the smallest even k such that,
if every client independently drops with probability ``dropout``, some
neighbourhood keeps fewer than t members with probability at most 2^-20
(union bound over the n clients, exact integer binomial tail).  When that k
reaches n - 1 the graph is complete (the Bonawitz et al. 2017 protocol).
Both sides compute it from public values, exactly, so they always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import comb
from typing import Any, Mapping

from twinmpc.mpc.errors import InvalidTask
from twinmpc.mpc.privacy_ledger import parse_fraction

_KEYS = {"dropout", "neighbours", "max_clients", "round_seconds", "idle_seconds"}
DEFAULT_DROPOUT = Fraction(1, 5)
DEFAULT_MAX_CLIENTS = 1000
DEFAULT_ROUND_SECONDS = 10
MAX_CLIENTS = 100_000
MAX_NEIGHBOURS = 1000
FAILURE_BITS = 20  # a neighbourhood falls below threshold with probability <= 2^-20 per round


@dataclass(frozen=True)
class MasksParams:
    """A validated ``masks`` block of a task."""

    dropout: Fraction = DEFAULT_DROPOUT
    neighbours: int | None = None
    max_clients: int = DEFAULT_MAX_CLIENTS
    round_seconds: int = DEFAULT_ROUND_SECONDS
    idle_seconds: int | None = None  # None: wait for the deadline (or every expected client)

    def __post_init__(self) -> None:
        if not isinstance(self.dropout, Fraction) or not 0 <= self.dropout < Fraction(1, 2):
            raise InvalidTask(f"masks.dropout must lie in [0, 1/2), got {self.dropout}")
        k = self.neighbours
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2 or k % 2 or k > MAX_NEIGHBOURS):
            raise InvalidTask(f"masks.neighbours must be an even integer in 2..{MAX_NEIGHBOURS}, got {k!r}")
        for name, low, high in (("max_clients", 2, MAX_CLIENTS), ("round_seconds", 1, 3600)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidTask(f"masks.{name} must be an integer in {low}..{high}, got {value!r}")
        idle = self.idle_seconds
        if idle is not None and (isinstance(idle, bool) or not isinstance(idle, int) or not 1 <= idle <= self.round_seconds):
            raise InvalidTask(f"masks.idle_seconds must be an integer in 1..round_seconds ({self.round_seconds}), got {idle!r}")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> MasksParams:
        if not isinstance(doc, Mapping):
            raise InvalidTask('masks must be a table such as {"dropout": 0.2}')
        unknown = sorted(set(doc) - _KEYS)
        if unknown:
            raise InvalidTask(f"masks: unknown key {unknown[0]!r} (allowed: {sorted(_KEYS)})")
        return cls(
            dropout=parse_fraction(doc.get("dropout", DEFAULT_DROPOUT), "masks.dropout"),
            neighbours=doc.get("neighbours"),
            max_clients=doc.get("max_clients", DEFAULT_MAX_CLIENTS),
            round_seconds=doc.get("round_seconds", DEFAULT_ROUND_SECONDS),
            idle_seconds=doc.get("idle_seconds"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dropout": str(self.dropout), "max_clients": self.max_clients, "round_seconds": self.round_seconds}
        if self.neighbours is not None:
            out["neighbours"] = self.neighbours
        if self.idle_seconds is not None:
            out["idle_seconds"] = self.idle_seconds
        return out

    def degree(self, n: int) -> int:
        """Neighbour count k for a cohort of n clients (n - 1: complete graph)."""
        if n < 2:
            raise ValueError("a cohort needs at least 2 clients")
        k = self.neighbours if self.neighbours is not None else _log_degree(n, self.dropout)
        return min(k, n - 1)

    def min_survivors(self, n: int) -> int:
        """Fewest clients whose noise must reach the sum: ceil((1 - dropout) n)."""
        return math.ceil((1 - self.dropout) * n)


MEASUREMENTS = ("count", "sum", "mean", "sumvec", "fixedpointvec")


def check_measurement(name: str) -> None:
    """Masks mode offers plain sums (their clipping bounds what an honest client adds); one-hot types need Prio3's proofs."""
    if name not in MEASUREMENTS:
        raise InvalidTask(f"mode 'masks' supports measurements {list(MEASUREMENTS)}, not {name!r} (use mode 'shares' with Prio3)")


def threshold(k: int) -> int:
    """Shares needed to reconstruct a secret dealt to k neighbours: a strict majority."""
    return k // 2 + 1


@lru_cache(maxsize=256)
def _log_degree(n: int, dropout: Fraction) -> int:
    a, b = dropout.numerator, dropout.denominator  # P(drop) = a / b
    k = 2
    while k < n - 1:
        t = threshold(k)
        # b^k * P(Bin(k, 1 - a/b) < t) = sum_{s < t} C(k, s) (b - a)^s a^(k - s), exactly
        tail = sum(comb(k, s) * (b - a) ** s * a ** (k - s) for s in range(t))
        if n * tail << FAILURE_BITS <= b**k:
            return k
        k += 2
    return n - 1


__all__ = ["MEASUREMENTS", "MasksParams", "check_measurement", "threshold"]
