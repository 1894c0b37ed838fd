"""The masks protocol end to end in memory: exact sums under dropouts, aborts, and every refusal."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinmpc.mpc.masks import messages as m
from twinmpc.mpc.masks.directory import ClientKeys, PinnedDirectory
from twinmpc.mpc.masks.client import MasksClient
from twinmpc.mpc.masks.errors import (
    ConflictingMessage,
    ConsistencyFailure,
    DoubleRevealRefused,
    ForgedMessage,
    IdentityMismatch,
    MalformedMessage,
    NotAParticipant,
    OutOfOrder,
    RoundAborted,
    UntrustedPeer,
    WrongSession,
)
from twinmpc.mpc.masks.server import Phase
from tests.mpc.masks.rounds import idents, make_round


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("drop_round", [0, 1, 2, 3, 4])
def test_sum_is_exact_when_clients_drop_out_at_any_round(drop_round: int, fraction: float) -> None:
    rnd = make_round(20, d=4)
    dropped = idents(rnd, int(fraction * 20), start=3)
    result = rnd.run({drop_round: dropped})
    summed = set(rnd.clients) - dropped if drop_round <= 2 else set(rnd.clients)  # from round 3 on, their input is in
    assert result.count == len(summed)
    assert np.array_equal(result.vector, rnd.expected(summed))


def test_sparse_graph_sum_is_exact() -> None:
    rnd = make_round(40, d=2, neighbours=16, dropout=Fraction(1, 10))
    dropped = idents(rnd, 4, start=10)
    result = rnd.run({2: dropped})
    assert result.plan.k == 16 and result.plan.t == 9
    assert np.array_equal(result.vector, rnd.expected(set(rnd.clients) - dropped))


def test_client_noise_reaches_the_sum_and_stays_within_its_bound() -> None:
    rnd = make_round(12, d=50, dp={"algo": "discrete-gaussian", "epsilon": 1, "delta": 1e-9}, l2=100)
    result = rnd.run()
    noise = (result.vector - rnd.expected(set(rnd.clients))).view(np.int64)
    sigma = math.sqrt(float(result.plan.noise.sigma2) * result.count)
    assert np.any(noise != 0)
    assert np.all(np.abs(noise) < 8 * sigma)


# ----------------------------------------------------------------- aborts ---
def test_too_few_masked_inputs_abort_and_release_nothing() -> None:
    rnd = make_round(10)  # dropout 3/10: the floor is 7 masked inputs
    with pytest.raises(RoundAborted, match="fewer than the release floor 7"):
        rnd.run({2: idents(rnd, 4)})
    assert rnd.server.phase == Phase.ABORTED
    with pytest.raises(RoundAborted):
        rnd.server.reply(sorted(rnd.clients)[-1])
    with pytest.raises(OutOfOrder):
        rnd.server.result  # noqa: B018


def test_too_few_unmasking_clients_abort() -> None:
    rnd = make_round(10)  # complete graph: k = 9, t = 5
    with pytest.raises(RoundAborted, match="fewer than the threshold t = 5"):
        rnd.run({4: idents(rnd, 6)})


def test_cohort_below_min_batch_size_aborts_at_once() -> None:
    rnd = make_round(5, min_batch_size=6)
    with pytest.raises(RoundAborted, match="5 clients advertised, fewer than 6"):
        rnd.step(0)


def test_client_refuses_to_confirm_a_survivor_set_below_the_floor() -> None:
    rnd = make_round(10)
    for r in range(3):
        rnd.step(r)
    ident = sorted(rnd.clients)[0]
    index = rnd.server.index_of(ident)
    small = m.Survivors(rnd.config.session, 10, frozenset({index, 2, 3})).encode()
    with pytest.raises(RoundAborted, match="fewer than the round's floor 7"):
        rnd.clients[ident].confirm(small)


# ----------------------------------------------------- the privacy checks ---
def _ready_to_unmask(n: int = 10):
    rnd = make_round(n)
    for r in range(4):
        rnd.step(r)
    ident = sorted(rnd.clients)[0]
    request = m.UnmaskRequest.decode(rnd.server.reply(ident))
    return rnd, ident, request


def test_request_for_both_shares_of_one_peer_is_refused() -> None:
    rnd, ident, request = _ready_to_unmask()
    peer = request.survivors[0]
    both = dataclasses.replace(request, dropped=tuple(sorted({*request.dropped, peer})))
    with pytest.raises(DoubleRevealRefused, match=f"both the self-mask share and the mask-key share of client {peer}"):
        rnd.clients[ident].unmask(both.encode())


def test_mask_key_of_a_survivor_is_refused() -> None:
    rnd, ident, request = _ready_to_unmask()
    peer = request.survivors[0]
    moved = dataclasses.replace(request, survivors=request.survivors[1:], dropped=(peer,))
    with pytest.raises(DoubleRevealRefused, match=f"mask-key share of client {peer}"):
        rnd.clients[ident].unmask(moved.encode())


def test_second_request_cannot_get_the_other_share() -> None:
    rnd, ident, request = _ready_to_unmask()
    client = rnd.clients[ident]
    first = m.Unmask.decode(client.unmask(request.encode()))
    assert {s.kind for s in first.shares} == {m.SELF_MASK_SEED}
    assert client.unmask(request.encode()) == first.encode()  # a retry gets the same bytes
    peer = request.survivors[0]
    again = dataclasses.replace(request, survivors=(), dropped=(peer,))
    with pytest.raises(DoubleRevealRefused):
        client.unmask(again.encode())


def test_unmask_request_with_another_survivor_set_is_refused() -> None:
    rnd, ident, request = _ready_to_unmask()
    other = dataclasses.replace(request, members=request.members - {max(request.members)})
    with pytest.raises(ConsistencyFailure, match="different survivor set"):
        rnd.clients[ident].unmask(other.encode())


def test_unmask_without_enough_confirmations_is_refused() -> None:
    rnd, ident, request = _ready_to_unmask()
    starved = dataclasses.replace(request, tags=request.tags[:2])
    with pytest.raises(RoundAborted, match="only 3 clients of this neighbourhood confirmed"):
        rnd.clients[ident].unmask(starved.encode())


def test_forged_confirmation_is_refused() -> None:
    rnd, ident, request = _ready_to_unmask()
    sender, tag = request.tags[0]
    forged = dataclasses.replace(request, tags=((sender, bytes(32)),) + request.tags[1:])
    with pytest.raises(ForgedMessage, match=f"confirmation from client {sender} does not verify"):
        rnd.clients[ident].unmask(forged.encode())


# -------------------------------------------------- forged and replayed ---
def test_tampered_sealed_share_is_refused() -> None:
    rnd = make_round(6)
    for r in range(2):
        rnd.step(r)
    ident = sorted(rnd.clients)[0]
    fwd = m.Forward.decode(rnd.server.reply(ident))
    sender, sealed = fwd.sealed[0]
    bad = dataclasses.replace(fwd, sealed=((sender, sealed[:-1] + bytes([sealed[-1] ^ 1])),) + fwd.sealed[1:])
    with pytest.raises(ForgedMessage, match=f"share from client {sender} does not open"):
        rnd.clients[ident].masked_input(bad.encode())


def test_share_moved_to_another_receiver_does_not_open() -> None:
    rnd = make_round(6)
    for r in range(2):
        rnd.step(r)
    a, b = sorted(rnd.clients)[:2]
    fwd_a, fwd_b = m.Forward.decode(rnd.server.reply(a)), m.Forward.decode(rnd.server.reply(b))
    stolen = dict(fwd_a.sealed)[3]  # client 3 sealed this to client 1 (a)
    moved = dataclasses.replace(fwd_b, sealed=tuple((s, stolen if s == 3 else c) for s, c in fwd_b.sealed))
    with pytest.raises(ForgedMessage, match="share from client 3"):
        rnd.clients[b].masked_input(moved.encode())


def test_roster_with_other_neighbours_is_refused() -> None:
    rnd = make_round(30, neighbours=6)
    rnd.step(0)
    ident = sorted(rnd.clients)[0]
    roster = m.Roster.decode(rnd.server.reply(ident))
    wrong = dataclasses.replace(roster, index=roster.index % 30 + 1)
    with pytest.raises(ForgedMessage, match="not this client's neighbours"):
        rnd.clients[ident].share_keys(wrong.encode())


def test_substituted_channel_key_is_refused() -> None:
    rnd = make_round(6)
    rnd.step(0)
    ident = sorted(rnd.clients)[0]
    roster = m.Roster.decode(rnd.server.reply(ident))
    fake = ClientKeys.pinned(roster.neighbours[0].identity)
    entries = (dataclasses.replace(roster.neighbours[0], credential=fake.credential),) + roster.neighbours[1:]
    with pytest.raises(UntrustedPeer, match="not the enrolled one"):
        rnd.clients[ident].share_keys(dataclasses.replace(roster, neighbours=entries).encode())


def test_server_refuses_replays_impostors_and_out_of_order_messages() -> None:
    rnd = make_round(6)
    a, b = sorted(rnd.clients)[:2]
    advert = rnd.clients[a].advertise()
    assert rnd.server.submit(a, advert) is True
    assert rnd.server.submit(a, advert) is False  # a retry is idempotent
    with pytest.raises(IdentityMismatch, match="advertisement names"):
        rnd.server.submit(b, advert)
    other = make_round(6, task_id=rnd.config.session.task_id[::-1])
    with pytest.raises(WrongSession, match="bound to round"):
        rnd.server.submit(b, other.clients[b].advertise())
    with pytest.raises(MalformedMessage, match="trailing bytes"):
        rnd.server.submit(b, rnd.clients[b].advertise() + b"\x00")
    rnd.step(0)  # closes the cohort with everyone
    with pytest.raises(ConflictingMessage):
        rnd.server.submit(a, m.Advertise.decode(advert).__class__(
            rnd.config.session, a, rnd.clients[a].keys.credential, bytes(32), bytes(32)).encode())
    shares_b = rnd.clients[b].share_keys(rnd.server.reply(b))
    with pytest.raises(IdentityMismatch, match="claims client 2, the caller is client 1"):
        rnd.server.submit(a, shares_b)
    with pytest.raises(OutOfOrder, match="phase SHARE_KEYS; got a MASKED_INPUT message"):
        rnd.server.submit(a, m.MaskedInput(rnd.config.session, 1, np.zeros(3, dtype=np.uint64)).encode())
    with pytest.raises(NotAParticipant):
        rnd.server.submit("stranger", shares_b)


def test_client_steps_out_of_order_or_changed_are_refused() -> None:
    rnd = make_round(6)
    ident = sorted(rnd.clients)[0]
    client = rnd.clients[ident]
    with pytest.raises(OutOfOrder):
        client.confirm(b"")
    rnd.step(0)
    roster = rnd.server.reply(ident)
    out = client.share_keys(roster)
    assert client.share_keys(roster) == out
    other = m.Roster.decode(roster)
    with pytest.raises(ConsistencyFailure):
        client.share_keys(dataclasses.replace(other, neighbours=other.neighbours[:-1]).encode())


def test_client_value_must_be_an_encoded_vector() -> None:
    rnd = make_round(3)
    keys = ClientKeys.pinned("x")
    with pytest.raises(ValueError, match="uint64 vector of length 3"):
        MasksClient(rnd.config, keys, PinnedDirectory({}), np.zeros(2, dtype=np.uint64))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 7),
    d=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    drop_round=st.integers(0, 4),
    drop_mask=st.integers(0, 127),
)
def test_property_sum_is_exact_or_the_round_aborts(n: int, d: int, seed: int, drop_round: int, drop_mask: int) -> None:
    rnd = make_round(n, d=d, seed=seed, dropout=Fraction(2, 5))
    names = sorted(rnd.clients)
    dropped = {names[i] for i in range(n) if drop_mask >> i & 1}
    try:
        result = rnd.run({drop_round: dropped})
    except RoundAborted:
        assert dropped  # with everyone present a round never aborts
        return
    summed = set(names) - dropped if drop_round <= 2 else set(names)
    assert result.count == len(summed)
    assert np.array_equal(result.vector, rnd.expected(summed))
