"""Server side of one masks round: collect each round's messages, close it, answer the next.

The service feeds `submit(identity, bytes)` with each authenticated client's
message, calls `close()` when the round's deadline passes or everyone expected
has answered, and hands each client `reply(identity)` -- its input for the next
round.  Transport-free and deterministic: the same submissions and closes give
the same state, which is how a restarted aggregator rebuilds a round from its
stored messages (`services.aggregator.masks_rounds`).

Rounds and the sets they produce (Bonawitz et al. 2017 names, our numbering)::

    0 advertise    -> cohort of n, indices 1..n by identity, plan (k, t, floor)
    1 share keys   -> U1: dealt their secrets; each needs >= t neighbours in U1
    2 masked input -> U3 (subset of U1): their inputs are summed; |U3| >= floor
    3 confirm      -> U4 (subset of U3): MACed U3 to their neighbours
    4 unmask       -> U5 (subset of U4): revealed shares; the sum is unmasked

Thresholds are checked at every close: every client of U1 must keep at least
t neighbours in each later set (their shares are needed), and U3 must reach
the release floor (the DP calibration and min_batch_size).  Otherwise
`RoundAborted` with the precise reason; an aborted round releases nothing.
A reconstructed secret is checked against what its owner bound in round 0
(self-mask commitment, mask public key): inconsistent shares abort the round
rather than unmask a wrong sum.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Container
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from twinmpc.crypto import ring, shamir
from twinmpc.crypto.field import Field64
from twinmpc.mpc.masks import channel, messages as m
from twinmpc.mpc.masks.client import self_mask_commitment
from twinmpc.mpc.masks.errors import (
    ConflictingMessage,
    ForgedMessage,
    IdentityMismatch,
    MalformedMessage,
    NotAParticipant,
    OutOfOrder,
    RoundAborted,
    WrongSession,
)
from twinmpc.mpc.masks.graph import NeighbourGraph
from twinmpc.mpc.masks.plan import RoundConfig, RoundPlan


class Phase(enum.IntEnum):
    ADVERTISE = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CONFIRM = 3
    UNMASK = 4
    DONE = 5
    ABORTED = 6


_KIND_PHASE = {
    m.Advertise.KIND: Phase.ADVERTISE,
    m.ShareKeys.KIND: Phase.SHARE_KEYS,
    m.MaskedInput.KIND: Phase.MASKED_INPUT,
    m.Confirm.KIND: Phase.CONFIRM,
    m.Unmask.KIND: Phase.UNMASK,
}


@dataclass(frozen=True)
class RoundResult:
    """The unmasked sum of U3's inputs, their noise included, how many clients it holds and whose
    inputs they are (a client that retries after the round ended learns whether it was counted)."""

    config: RoundConfig
    plan: RoundPlan
    count: int
    vector: np.ndarray = field(repr=False, compare=False)
    summed: frozenset[str] = field(default=frozenset(), repr=False)


class MasksServer:
    """The aggregator's state for one round (one session)."""

    def __init__(self, config: RoundConfig) -> None:
        self.config = config
        self.session = config.session
        self.phase = Phase.ADVERTISE
        self.abort_reason = ""
        self._digests: dict[tuple[Phase, str], bytes] = {}
        self._adverts: dict[str, m.Advertise] = {}
        self._shares: dict[int, dict[int, bytes]] = {}
        self._sum = ring.zeros(config.length)
        self._u3: set[int] = set()
        self._confirms: dict[int, dict[int, bytes]] = {}
        self._unmasks: dict[int, tuple[m.RevealedShare, ...]] = {}
        self._result: RoundResult | None = None

    def __repr__(self) -> str:
        return f"MasksServer({self.session.name}, phase={self.phase.name})"

    # ----------------------------------------------------------- queries ---
    @property
    def n(self) -> int:
        return len(self._ids) if self.phase > Phase.ADVERTISE else len(self._adverts)

    def index_of(self, identity: str) -> int:
        index = self._index.get(identity) if self.phase > Phase.ADVERTISE else None
        if index is None:
            raise NotAParticipant(f"{identity!r} is not in the cohort of round {self.session.name}")
        return index

    def submitted(self) -> int:
        """How many messages the open round has."""
        return sum(1 for (phase, _) in self._digests if phase == self.phase)

    def expected(self) -> int | None:
        """How many messages the open round can get at most (None while the cohort is forming)."""
        return {
            Phase.ADVERTISE: self.config.params.max_clients,
            Phase.SHARE_KEYS: self.n,
            Phase.MASKED_INPUT: len(self._u1) if self.phase > Phase.SHARE_KEYS else 0,
            Phase.CONFIRM: len(self._u3),
            Phase.UNMASK: len(self._confirms),
        }.get(self.phase, 0)

    def complete(self) -> bool:
        """Everyone who can still answer the open round has answered: it may close before its deadline."""
        return self.phase < Phase.DONE and self.submitted() >= (self.expected() or 0)

    @property
    def result(self) -> RoundResult:
        if self._result is None:
            raise OutOfOrder(f"round {self.session.name} has no result (phase {self.phase.name})")
        return self._result

    # ------------------------------------------------------------ submit ---
    def submit(self, identity: str, data: bytes) -> bool:
        """Accept one authenticated client's message for the open round; False if it is a repeat."""
        if len(data) < 2:
            raise MalformedMessage("message is truncated")
        phase = _KIND_PHASE.get(data[1])
        if phase is None:
            raise MalformedMessage(f"kind {data[1]} is not a client message")
        if self.phase == Phase.ABORTED:
            raise RoundAborted(self.abort_reason)
        key = (phase, identity)
        digest = hashlib.sha256(data).digest()
        seen = self._digests.get(key)
        if seen is not None:
            if hmac.compare_digest(seen, digest):
                return False
            raise ConflictingMessage(f"{identity!r} already sent a different {phase.name.lower()} message in this round")
        if phase != self.phase:
            raise OutOfOrder(f"round {self.session.name} is in phase {self.phase.name}; got a {phase.name} message")
        msg = m.CLIENT_MESSAGES[data[1]].decode(data)
        if msg.session != self.session:
            raise WrongSession(f"message is bound to round {msg.session.name}, not {self.session.name}")
        getattr(self, f"_submit_{phase.name.lower()}")(identity, msg)
        self._digests[key] = digest
        return True

    def _sender(self, identity: str, claimed: int, allowed: Container[int], what: str) -> int:
        index = self.index_of(identity)
        if claimed != index:
            raise IdentityMismatch(f"message claims client {claimed}, the caller is client {index}")
        if index not in allowed:
            raise NotAParticipant(f"client {index} did not complete the {what} round")
        return index

    def _submit_advertise(self, identity: str, msg: m.Advertise) -> None:
        if msg.identity != identity:
            raise IdentityMismatch(f"advertisement names {msg.identity!r}, the caller is {identity!r}")
        if len(self._adverts) >= self.config.params.max_clients:
            raise NotAParticipant(f"the cohort of round {self.session.name} is full ({self.config.params.max_clients} clients)")
        self._adverts[identity] = msg

    def _submit_share_keys(self, identity: str, msg: m.ShareKeys) -> None:
        index = self._sender(identity, msg.sender, range(1, self.n + 1), "advertise")
        if tuple(j for j, _ in msg.sealed) != self._graph.row(index):
            raise ForgedMessage("sealed shares must go to exactly the sender's neighbours")
        self._shares[index] = dict(msg.sealed)

    def _submit_masked_input(self, identity: str, msg: m.MaskedInput) -> None:
        index = self._sender(identity, msg.sender, self._u1, "share-keys")
        if msg.vector.shape != (self.config.length,):
            raise MalformedMessage(f"masked input has {msg.vector.shape[0]} elements, the task has {self.config.length}")
        np.add(self._sum, msg.vector, out=self._sum)
        self._u3.add(index)

    def _submit_confirm(self, identity: str, msg: m.Confirm) -> None:
        index = self._sender(identity, msg.sender, self._u3, "masked-input")
        expected = tuple(w for w in self._graph.row(index) if w in self._u3)
        if tuple(w for w, _ in msg.tags) != expected:
            raise ForgedMessage("confirmations must go to exactly the sender's surviving neighbours")
        self._confirms[index] = dict(msg.tags)

    def _submit_unmask(self, identity: str, msg: m.Unmask) -> None:
        index = self._sender(identity, msg.sender, self._confirms, "confirm")
        survivors, dropped = self._request_lists(index)
        wanted = sorted([(v, m.SELF_MASK_SEED) for v in survivors] + [(v, m.MASK_KEY) for v in dropped])
        if [(s.peer, s.kind) for s in msg.shares] != wanted:
            raise ForgedMessage("revealed shares do not answer this client's unmask request")
        for s in msg.shares:
            if int.from_bytes(s.share[:2], "big") != self._graph.point(s.peer, index):
                raise ForgedMessage(f"share of client {s.peer} is at the wrong evaluation point")
        self._unmasks[index] = msg.shares

    # ------------------------------------------------------------- close ---
    def close(self) -> None:
        """End the open round with what arrived; `RoundAborted` (and nothing released) below a threshold."""
        if self.phase >= Phase.DONE:
            raise OutOfOrder(f"round {self.session.name} already ended ({self.phase.name})")
        try:
            getattr(self, f"_close_{self.phase.name.lower()}")()
        except RoundAborted as exc:
            self.phase, self.abort_reason = Phase.ABORTED, str(exc)
            self._sum = ring.zeros(0)
            raise
        self.phase = Phase(self.phase + 1)

    def abort(self, reason: str) -> None:
        """End the round from outside (e.g. its messages could not be stored): nothing is released."""
        if self.phase < Phase.DONE:
            self.phase, self.abort_reason = Phase.ABORTED, f"round {self.session.name}: {reason}"
            self._sum = ring.zeros(0)

    def _abort(self, reason: str) -> None:
        raise RoundAborted(f"round {self.session.name}: {reason}")

    def _close_advertise(self) -> None:
        n = len(self._adverts)
        floor = max(2, self.config.min_batch_size)
        if n < floor:
            self._abort(f"{n} clients advertised, fewer than {floor} (min_batch_size)")
        self._ids = sorted(self._adverts)
        self._index = {ident: i for i, ident in enumerate(self._ids, start=1)}
        self._plan = self.config.plan(n)
        self._graph = NeighbourGraph(self.session.graph_seed, n, self._plan.k)
        self._rows = self._graph.rows()

    def _neighbourhood_check(self, alive: set[int], round_name: str) -> None:
        """Every dealer of U1 needs at least t neighbours still in `alive` to hold its shares."""
        if not alive:
            self._abort(f"no client completed the {round_name} round")
        member = np.zeros(self.n + 1, dtype=bool)
        member[list(alive)] = True
        dealers = np.array(sorted(self._u1), dtype=np.int64)
        counts = member[self._rows[dealers - 1]].sum(axis=1)
        low = np.flatnonzero(counts < self._plan.t)
        if low.size:
            worst = int(dealers[low[np.argmin(counts[low])]])
            self._abort(
                f"after the {round_name} round, client {worst} keeps {int(counts.min())} of {self._plan.k} neighbours, "
                f"fewer than the threshold t = {self._plan.t} ({low.size} client(s) below threshold)"
            )

    def _close_share_keys(self) -> None:
        self._u1 = set(self._shares)
        if len(self._u1) < self._plan.min_survivors:
            self._abort(f"{len(self._u1)} clients shared keys, fewer than the release floor {self._plan.min_survivors}")
        self._neighbourhood_check(self._u1, "share-keys")

    def _close_masked_input(self) -> None:
        if len(self._u3) < self._plan.min_survivors:
            self._abort(f"{len(self._u3)} masked inputs arrived, fewer than the release floor {self._plan.min_survivors} (DP calibration / min_batch_size)")
        self._neighbourhood_check(self._u3, "masked-input")

    def _close_confirm(self) -> None:
        self._neighbourhood_check(set(self._confirms), "consistency")

    def _close_unmask(self) -> None:
        self._neighbourhood_check(set(self._unmasks), "unmasking")
        shares: dict[int, list[shamir.ShamirShare]] = {}
        for holder in sorted(self._unmasks):
            for s in self._unmasks[holder]:
                shares.setdefault(s.peer, []).append(shamir.ShamirShare(int.from_bytes(s.share[:2], "big"), Field64.decode_vec(s.share[2:])))
        total = self._sum.copy()
        d, t = self.config.length, self._plan.t
        for u in sorted(self._u1):
            got = shares.get(u, [])
            if len(got) < t:
                self._abort(f"{len(got)} shares of client {u} were revealed, fewer than the threshold {t}")
            try:
                secret = channel.field_to_secret(shamir.reconstruct(Field64, got, t))
            except ForgedMessage as exc:
                self._abort(f"client {u}: {exc}")
            advert = self._adverts[self._ids[u - 1]]
            if u in self._u3:
                if not hmac.compare_digest(self_mask_commitment(self.session.digest, secret), advert.self_mask_commitment):
                    self._abort(f"reconstructed self-mask seed of client {u} does not match its commitment")
                np.subtract(total, channel.self_mask(secret, self.session, u, d), out=total)
                continue
            mask_key = X25519PrivateKey.from_private_bytes(secret)
            if not hmac.compare_digest(channel.public_bytes(mask_key), advert.mask_public_key):
                self._abort(f"reconstructed mask key of client {u} does not match its advertised public key")
            for v in self._rows[u - 1]:
                v = int(v)
                if v not in self._u3:
                    continue
                public = self._adverts[self._ids[v - 1]].mask_public_key
                mask = channel.pairwise_mask(channel.exchange(mask_key, public), self.session, min(u, v), max(u, v), d)
                (np.subtract if v < u else np.add)(total, mask, out=total)  # v's input carries +mask iff v < u
        summed = frozenset(self._ids[u - 1] for u in self._u3)
        self._result = RoundResult(self.config, self._plan, len(self._u3), total, summed)

    # ------------------------------------------------------------- reply ---
    def reply(self, identity: str) -> bytes:
        """This client's input for the round now open (after the previous one closed)."""
        if self.phase == Phase.ABORTED:
            raise RoundAborted(self.abort_reason)
        index = self.index_of(identity)
        if self.phase == Phase.SHARE_KEYS:
            entries = tuple(
                m.RosterEntry(j, self._ids[j - 1], self._adverts[self._ids[j - 1]].credential) for j in self._graph.row(index)
            )
            return m.Roster(self.session, self.n, index, entries).encode()
        if self.phase == Phase.MASKED_INPUT:
            self._need(index, self._u1, "share-keys")
            sealed = tuple((v, self._shares[v][index]) for v in self._graph.row(index) if v in self._u1)
            return m.Forward(self.session, index, sealed).encode()
        if self.phase == Phase.CONFIRM:
            self._need(index, self._u3, "masked-input")
            return m.Survivors(self.session, self.n, frozenset(self._u3)).encode()
        if self.phase == Phase.UNMASK:
            self._need(index, self._confirms, "consistency")
            tags = tuple((w, self._confirms[w][index]) for w in self._graph.row(index) if index in self._confirms.get(w, {}))
            survivors, dropped = self._request_lists(index)
            return m.UnmaskRequest(self.session, index, self.n, frozenset(self._u3), tags, survivors, dropped).encode()
        raise OutOfOrder(f"round {self.session.name} has no reply in phase {self.phase.name}")

    def _need(self, index: int, members, round_name: str) -> None:
        if index not in members:
            raise NotAParticipant(f"client {index} did not complete the {round_name} round")

    def _request_lists(self, index: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Whose shares this holder must reveal: self-mask seeds of survivors, mask keys of U1 dropouts."""
        row = [v for v in self._graph.row(index) if v in self._u1]
        return tuple(v for v in row if v in self._u3), tuple(v for v in row if v not in self._u3)


__all__ = ["MasksServer", "Phase", "RoundResult"]
