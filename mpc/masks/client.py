"""Client side of one masks round (SecAgg+, Bell et al. 2020, with the Bonawitz et al. 2017 consistency round).

Who calls what, and what crosses the wire (all bytes are `mpc.masks.messages`)::

    client                                   server
    advertise()            -> Advertise      (round 0: identity, credential, mask key)
    share_keys(Roster)     -> ShareKeys      (round 1: Shamir shares sealed to each neighbour)
    masked_input(Forward)  -> MaskedInput    (round 2: x + noise + self mask + pairwise masks)
    confirm(Survivors)     -> Confirm        (round 3: MAC of the survivor set to each neighbour)
    unmask(UnmaskRequest)  -> Unmask         (round 4: one share per peer, never both kinds)

Each step validates the server's message against what this client knows and
refuses with a precise `mpc.masks.errors` error; the checks that protect
privacy against an active server:

* neighbours come from the public graph, their channel keys from the directory;
* the survivor set must be at least the round's release floor (DP and min batch);
* before revealing anything, at least t of the neighbourhood (this client
  included) must have MACed the same survivor set this client saw;
* per peer, only the self-mask share (peer survived) or only the mask-key share
  (peer dropped), consistent with that set, and never the other kind later.

A step repeated with the same input returns the same bytes (a retry after a
lost reply); a step repeated with a different input is refused.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Callable, MutableMapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from twinmpc.crypto import ring, shamir
from twinmpc.crypto.field import Field64
from twinmpc.mpc.masks import channel, messages as m
from twinmpc.mpc.masks.directory import ClientKeys, PeerDirectory
from twinmpc.mpc.masks.errors import (
    ConsistencyFailure,
    DoubleRevealRefused,
    ForgedMessage,
    IdentityMismatch,
    NotAParticipant,
    OutOfOrder,
    RoundAborted,
    WrongSession,
)
from twinmpc.mpc.masks.graph import NeighbourGraph
from twinmpc.mpc.masks.plan import RoundConfig, RoundPlan

SHARE_ROUND = 1
_COMMIT_DST = b"twinmpc/v1/masks/self-mask-commitment\x00"


class Stage(enum.IntEnum):
    NEW = 0
    ADVERTISED = 1
    SHARED = 2
    MASKED = 3
    CONFIRMED = 4
    REVEALED = 5


def self_mask_commitment(session_digest: bytes, seed: bytes) -> bytes:
    """Binds the self-mask seed in the advertisement so the server can check its reconstruction."""
    return hashlib.sha256(_COMMIT_DST + session_digest + seed).digest()


def survivors_digest(session_digest: bytes, n: int, members: frozenset[int]) -> bytes:
    return hashlib.sha256(b"twinmpc/v1/masks/survivors\x00" + session_digest + m.encode_bitmap(n, members)).digest()


class MasksClient:
    """One client in one round.  `value` is the measurement already encoded in Z/2^64 (length d).

    `pair_secrets` may be shared across rounds: it caches the X25519 agreement of
    this client's channel key with each verified peer credential.
    """

    def __init__(
        self,
        config: RoundConfig,
        keys: ClientKeys,
        directory: PeerDirectory,
        value: np.ndarray,
        *,
        rand: Callable[[int], bytes] = os.urandom,
        noise_rng: np.random.Generator | None = None,
        pair_secrets: MutableMapping[tuple[str, bytes], bytes] | None = None,
    ) -> None:
        value = np.asarray(value)
        if value.dtype != ring.DTYPE or value.shape != (config.length,):
            raise ValueError(f"value must be a uint64 vector of length {config.length}")
        self.config = config
        self.session = config.session
        self.keys = keys
        self._directory = directory
        self._value = value
        self._rand = rand
        self._noise_rng = noise_rng
        self._pairs = {} if pair_secrets is None else pair_secrets
        self.stage = Stage.NEW
        self._replies: dict[Stage, tuple[bytes, bytes]] = {}
        self._revealed: dict[int, int] = {}
        self._mask_key: X25519PrivateKey | None = None
        self._seed = b""
        # learnt round by round: roster (plan, index, graph, pair secrets), forwarded shares, survivor set
        self._plan: RoundPlan | None = None
        self._index = 0
        self._graph: NeighbourGraph | None = None
        self._neighbours: dict[int, bytes] = {}
        self._held: dict[int, shamir.ShamirShare] = {}
        self._members: frozenset[int] = frozenset()
        self._digest = b""

    def __repr__(self) -> str:
        return f"MasksClient({self.keys.identity!r}, {self.session.name}, stage={self.stage.name})"

    # ------------------------------------------------------------ helpers ---
    def _once(self, stage: Stage, request: bytes, step: Callable[[], bytes]) -> bytes:
        """Run `step` to reach `stage` once; the same request again returns the same reply."""
        done = self._replies.get(stage)
        if done is not None:
            if not hmac.compare_digest(done[0], request):
                raise ConsistencyFailure(f"the server sent a different message for a round this client already answered ({stage.name})")
            return done[1]
        if self.stage != stage - 1:
            raise OutOfOrder(f"client is at stage {self.stage.name}; this message needs stage {Stage(stage - 1).name}")
        reply = step()
        self._replies[stage] = (request, reply)
        self.stage = stage
        return reply

    def _check_session(self, msg: m.Message) -> None:
        if msg.session != self.session:
            raise WrongSession(f"message is for round {msg.session.name}, this client is in {self.session.name}")

    def _pair_secret(self, identity: str, credential: bytes) -> bytes:
        key = (identity, hashlib.sha256(credential).digest())
        secret = self._pairs.get(key)
        if secret is None:
            secret = channel.exchange(self.keys.channel_key, self._directory.channel_key(identity, credential))
            self._pairs[key] = secret
        return secret

    # ------------------------------------------------------------- rounds ---
    def advertise(self) -> bytes:
        """Round 0: a fresh mask key and self-mask seed; the advertisement binds both."""

        def step() -> bytes:
            self._mask_key = X25519PrivateKey.from_private_bytes(self._rand(32))
            self._seed = self._rand(32)
            msg = m.Advertise(
                self.session, self.keys.identity, self.keys.credential,
                channel.public_bytes(self._mask_key), self_mask_commitment(self.session.digest, self._seed),
            )
            return msg.encode()

        return self._once(Stage.ADVERTISED, b"", step)

    def share_keys(self, roster: bytes) -> bytes:
        """Round 1: Shamir-share (self-mask seed || mask key) t-of-k, one sealed share per neighbour."""

        def step() -> bytes:
            r = m.Roster.decode(roster)
            self._check_session(r)
            if not 2 <= r.n <= self.config.params.max_clients:
                raise ForgedMessage(f"roster names {r.n} clients; the task allows 2..{self.config.params.max_clients}")
            plan = self.config.plan(r.n)
            if not 1 <= r.index <= r.n:
                raise ForgedMessage(f"roster index {r.index} outside 1..{r.n}")
            self._graph = NeighbourGraph(self.session.graph_seed, r.n, plan.k)
            expected = self._graph.row(r.index)
            if tuple(e.index for e in r.neighbours) != expected:
                raise ForgedMessage("roster neighbours are not this client's neighbours in the public graph")
            names = [e.identity for e in r.neighbours]
            if len(set(names)) != len(names) or self.keys.identity in names:
                raise ForgedMessage("roster repeats an identity or lists this client as its own neighbour")
            self._plan, self._index = plan, r.index
            self._neighbours = {e.index: self._pair_secret(e.identity, e.credential) for e in r.neighbours}
            secret = np.concatenate((channel.secret_to_field(self._seed), channel.secret_to_field(self._mask_key.private_bytes_raw())))
            shares = shamir.share(Field64, secret, plan.t, plan.k, rand=self._rand(32))
            mask_public = channel.public_bytes(self._mask_key)
            sealed = tuple(
                (j, channel.seal_share(self._neighbours[j], self.session, SHARE_ROUND, r.index, j,
                                       mask_public + share.encode(Field64), self._rand(channel.NONCE_SIZE)))
                for j, share in zip(expected, shares, strict=True)
            )
            return m.ShareKeys(self.session, r.index, sealed).encode()

        return self._once(Stage.SHARED, roster, step)

    def masked_input(self, forward: bytes) -> bytes:
        """Round 2: open the neighbours' shares, then send x + noise + self mask + pairwise masks (mod 2^64)."""

        def step() -> bytes:
            f = m.Forward.decode(forward)
            self._check_session(f)
            if f.receiver != self._index:
                raise IdentityMismatch(f"forwarded shares are for client {f.receiver}, this is client {self._index}")
            plan, me, d = self._plan, self._index, self.config.length
            self._held = {}
            mask_publics: dict[int, bytes] = {}
            for v, sealed in f.sealed:
                secret = self._neighbours.get(v)
                if secret is None:
                    raise ForgedMessage(f"forwarded share from client {v}, who is not a neighbour")
                plain = channel.open_share(secret, self.session, SHARE_ROUND, v, me, sealed)
                share = shamir.ShamirShare.decode(Field64, plain[32:], 2 * channel.SECRET_ELEMENTS)
                if share.index != self._graph.point(v, me):
                    raise ForgedMessage(f"share from client {v} is at the wrong evaluation point")
                mask_publics[v], self._held[v] = plain[:32], share
            if len(self._held) < plan.t:
                raise RoundAborted(f"only {len(self._held)} of {plan.k} neighbours shared keys; threshold is {plan.t}")
            y = ring.add(self._value, plan.noise.sample(d, self._noise_rng).view(ring.DTYPE))
            np.add(y, channel.self_mask(self._seed, self.session, me, d), out=y)
            for v, public in mask_publics.items():
                mask = channel.pairwise_mask(channel.exchange(self._mask_key, public), self.session, min(me, v), max(me, v), d)
                (np.add if me < v else np.subtract)(y, mask, out=y)
            return m.MaskedInput(self.session, me, y).encode()

        return self._once(Stage.MASKED, forward, step)

    def confirm(self, survivors: bytes) -> bytes:
        """Round 3 (consistency): check the survivor set, then MAC it to each surviving neighbour."""

        def step() -> bytes:
            s = m.Survivors.decode(survivors)
            self._check_session(s)
            plan, me = self._plan, self._index
            if s.n != plan.n:
                raise ForgedMessage(f"survivor set is over {s.n} clients, the round has {plan.n}")
            if me not in s.members:
                raise NotAParticipant("the survivor set does not include this client")
            if len(s.members) < plan.min_survivors:
                raise RoundAborted(f"survivor set has {len(s.members)} clients, fewer than the round's floor {plan.min_survivors} (DP calibration / min_batch_size)")
            alive = {v for v in self._neighbours if v in s.members}
            if not alive <= self._held.keys():
                raise ConsistencyFailure(f"survivor set names neighbour(s) {sorted(alive - self._held.keys())} whose shares never reached this client")
            self._members = s.members
            self._digest = survivors_digest(self.session.digest, s.n, s.members)
            tags = tuple((w, channel.confirm_tag(self._neighbours[w], self.session, me, w, self._digest)) for w in sorted(alive))
            return m.Confirm(self.session, me, tags).encode()

        return self._once(Stage.CONFIRMED, survivors, step)

    def unmask(self, request: bytes) -> bytes:
        """Round 4: after t confirmations of the same set, one share per peer: seed if it survived, mask key if not."""
        q = m.UnmaskRequest.decode(request)
        self._check_session(q)
        if self.stage < Stage.CONFIRMED:
            raise OutOfOrder(f"client is at stage {self.stage.name}; an unmask request needs CONFIRMED")
        plan, me = self._plan, self._index
        if q.receiver != me:
            raise IdentityMismatch(f"unmask request is for client {q.receiver}, this is client {me}")
        if q.n != plan.n or survivors_digest(self.session.digest, q.n, q.members) != self._digest:
            raise ConsistencyFailure("the unmask request carries a different survivor set than the one this client confirmed")
        confirmed = 1  # this client
        for w, tag in q.tags:
            if w not in self._neighbours or w not in self._members:
                raise ForgedMessage(f"confirmation from client {w}, who is not a surviving neighbour")
            if not hmac.compare_digest(tag, channel.confirm_tag(self._neighbours[w], self.session, w, me, self._digest)):
                raise ForgedMessage(f"confirmation from client {w} does not verify")
            confirmed += 1
        if confirmed < plan.t:
            raise RoundAborted(f"only {confirmed} clients of this neighbourhood confirmed the survivor set; threshold is {plan.t}")
        wanted = [(v, m.SELF_MASK_SEED) for v in q.survivors] + [(v, m.MASK_KEY) for v in q.dropped]
        kinds: dict[int, int] = {}
        for v, kind in wanted:
            if v in kinds or self._revealed.get(v, kind) != kind:
                raise DoubleRevealRefused(f"asked for both the self-mask share and the mask-key share of client {v}")
            kinds[v] = kind
            if v not in self._held:
                raise ForgedMessage(f"asked for a share of client {v}, which this client does not hold")
            if (kind == m.SELF_MASK_SEED) != (v in self._members):
                side = "dropped" if kind == m.SELF_MASK_SEED else "survived"
                raise DoubleRevealRefused(
                    f"asked for the {'self-mask' if kind == m.SELF_MASK_SEED else 'mask-key'} share of client {v}, "
                    f"which the confirmed survivor set says {side}"
                )
        self._revealed.update(kinds)
        n_el = channel.SECRET_ELEMENTS
        shares = tuple(
            m.RevealedShare(v, kind, self._held[v].index.to_bytes(2, "big")
                            + Field64.encode_vec(self._held[v].values[:n_el] if kind == m.SELF_MASK_SEED else self._held[v].values[n_el:]))
            for v, kind in sorted(kinds.items())
        )
        self.stage = Stage.REVEALED
        return m.Unmask(self.session, me, shares).encode()


__all__ = ["MasksClient", "Stage", "self_mask_commitment", "survivors_digest"]
