"""The neighbour graph of one round: who shares secrets and masks with whom.

Clients are numbered 1..n (server-assigned, in the order of their identities).
The graph is a Harary graph -- a ring where each client is joined to k/2
clients on each side -- laid over a pseudorandom permutation of 1..n expanded
from the round's public seed (`crypto.prg`, full 256-bit seed), the
construction SecAgg+ deployments use (Bell et al. 2020, Sec. 3.1: any k-regular
graph works for correctness; randomness keeps a neighbourhood's dropouts close
to the average).  Every client gets exactly k neighbours; ``k >= n - 1`` gives
the complete graph.  Rows are sorted; a neighbour's position in a dealer's row
(plus one) is its Shamir evaluation point for that dealer's secrets.
"""

from __future__ import annotations

import numpy as np

from twinmpc.crypto import prg

GRAPH_DST = prg.dst("masks/neighbour-graph")


class NeighbourGraph:
    """The k-regular graph on 1..n for one seed: O(n) to build, O(k) per row."""

    def __init__(self, seed: bytes, n: int, k: int) -> None:
        if n < 2 or k < 1 or (k < n - 1 and k % 2):
            raise ValueError(f"need n >= 2 and an even k (or k >= n - 1), got n={n}, k={k}")
        self.n, self.k = n, min(k, n - 1)
        self.complete = k >= n - 1
        self._rows: dict[int, tuple[int, ...]] = {}
        if not self.complete:
            keys = prg.expand_ring(seed, GRAPH_DST, n.to_bytes(4, "big"), n)
            self._order = np.argsort(keys, kind="stable").astype(np.int64) + 1  # ties: by index
            self._pos = np.empty(n, dtype=np.int64)
            self._pos[self._order - 1] = np.arange(n)
            half = k // 2
            self._offsets = np.concatenate((np.arange(1, half + 1), -np.arange(1, half + 1)))

    def row(self, index: int) -> tuple[int, ...]:
        """Sorted neighbours of client `index` (1-based)."""
        row = self._rows.get(index)
        if row is None:
            if not 1 <= index <= self.n:
                raise ValueError(f"client index {index} outside 1..{self.n}")
            if self.complete:
                row = tuple(i for i in range(1, self.n + 1) if i != index)
            else:
                row = tuple(sorted(int(v) for v in self._order[(self._pos[index - 1] + self._offsets) % self.n]))
            self._rows[index] = row
        return row

    def rows(self) -> np.ndarray:
        """Every row at once: row i-1 holds the sorted neighbours of client i, an (n, k) int64 array."""
        if self.complete:
            full = np.tile(np.arange(1, self.n + 1), (self.n, 1))
            return full[~np.eye(self.n, dtype=bool)].reshape(self.n, self.n - 1)
        return np.sort(self._order[(self._pos[:, None] + self._offsets[None, :]) % self.n], axis=1)

    def point(self, dealer: int, holder: int) -> int:
        """Shamir evaluation point of `holder` for `dealer`'s secrets: its position in the dealer's row, plus one."""
        if self.complete:  # the dealer's row skips the dealer itself
            return holder if holder < dealer else holder - 1
        return self.row(dealer).index(holder) + 1


__all__ = ["NeighbourGraph"]
