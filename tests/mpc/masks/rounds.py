"""Drive one masks round in memory: n real clients and the real server state machine.

Dropouts are given per round: a client listed for round r sends nothing from
round r on (round 0 = advertise ... 4 = unmask), as a node that loses power does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from twinmpc.mpc.dp import DpParams
from twinmpc.mpc.masks.client import MasksClient
from twinmpc.mpc.masks.directory import ClientKeys, PinnedDirectory
from twinmpc.mpc.masks.params import MasksParams
from twinmpc.mpc.masks.plan import RoundConfig
from twinmpc.mpc.masks.server import MasksServer, RoundResult
from twinmpc.mpc.masks.session import Session

STEPS = ("advertise", "share_keys", "masked_input", "confirm", "unmask")


@dataclass
class Round:
    config: RoundConfig
    clients: dict[str, MasksClient]
    server: MasksServer
    values: dict[str, np.ndarray]
    gone: set[str] = field(default_factory=set)

    def step(self, r: int, drop: set[str] = frozenset()) -> None:
        """Every client still here answers round r (those in `drop` leave now), then the server closes it."""
        self.gone |= set(drop)
        for ident, client in self.clients.items():
            if ident in self.gone:
                continue
            args = () if r == 0 else (self.server.reply(ident),)
            self.server.submit(ident, getattr(client, STEPS[r])(*args))
        self.server.close()

    def run(self, drops: dict[int, set[str]] | None = None) -> RoundResult:
        drops = drops or {}
        for r in range(5):
            self.step(r, drops.get(r, set()))
        return self.server.result

    def expected(self, survivors: set[str]) -> np.ndarray:
        return np.sum([self.values[i] for i in survivors], axis=0, dtype=np.uint64)


def make_round(
    n: int,
    d: int = 3,
    *,
    dropout: Fraction = Fraction(3, 10),
    neighbours: int | None = None,
    dp: dict | None = None,
    min_batch_size: int = 1,
    l2: int = 1,
    seed: int = 0,
    task_id: bytes | None = None,
) -> Round:
    config = RoundConfig(
        Session(task_id or os.urandom(32), 1_700_000_000, 0), d,
        MasksParams(dropout=dropout, neighbours=neighbours), DpParams.from_dict(dp or {"algo": "none"}), l2, min_batch_size,
    )
    keys = [ClientKeys.pinned(f"edge-{i:03d}") for i in range(n)]
    directory = PinnedDirectory({k.identity: k.credential for k in keys})
    rng = np.random.default_rng(seed)
    values = {k.identity: rng.integers(0, 1 << 16, size=d).astype(np.uint64) for k in keys}
    clients = {k.identity: MasksClient(config, k, directory, values[k.identity]) for k in keys}
    return Round(config, clients, MasksServer(config), values)


def idents(rnd: Round, count: int, start: int = 0) -> set[str]:
    return set(sorted(rnd.clients)[start : start + count])
