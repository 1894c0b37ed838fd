"""Canonical encodings: round trips (hypothesis), and strict decoders."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinmpc.mpc.masks import messages as m
from twinmpc.mpc.masks.errors import MalformedMessage
from twinmpc.mpc.masks.session import Session

sessions = st.builds(Session, st.binary(min_size=32, max_size=32), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
indices = st.lists(st.integers(1, 2**32 - 1), max_size=6, unique=True).map(lambda xs: tuple(sorted(xs)))
identities = st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 255)


def _pairs(size: int):
    return indices.flatmap(lambda ix: st.tuples(*(st.binary(min_size=size, max_size=size) for _ in ix)).map(lambda bs: tuple(zip(ix, bs))))


def _members(draw_n: int):
    return st.sets(st.integers(1, max(draw_n, 1)), max_size=draw_n).map(frozenset)


messages = st.one_of(
    st.builds(m.Advertise, sessions, identities, st.binary(max_size=300), st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
    st.builds(
        m.Roster, sessions, st.integers(0, 1000), st.integers(0, 1000),
        indices.flatmap(lambda ix: st.tuples(*(st.builds(m.RosterEntry, st.just(i), identities, st.binary(max_size=50)) for i in ix))),
    ),
    st.builds(m.ShareKeys, sessions, st.integers(0, 2**32 - 1), _pairs(m.SEALED_SHARE_SIZE)),
    st.builds(m.Forward, sessions, st.integers(0, 2**32 - 1), _pairs(m.SEALED_SHARE_SIZE)),
    st.builds(m.Confirm, sessions, st.integers(0, 2**32 - 1), _pairs(32)),
    st.integers(0, 40).flatmap(lambda n: st.builds(m.Survivors, sessions, st.just(n), _members(n))),
    st.integers(0, 40).flatmap(lambda n: st.builds(
        m.UnmaskRequest, sessions, st.integers(0, 2**32 - 1), st.just(n), _members(n), _pairs(32), indices, indices)),
    st.builds(
        m.Unmask, sessions, st.integers(0, 2**32 - 1),
        indices.flatmap(lambda ix: st.tuples(*(st.builds(m.RevealedShare, st.just(i), st.sampled_from([1, 2]),
                                                        st.binary(min_size=42, max_size=42)) for i in ix))),
    ),
)


@given(messages)
def test_encode_decode_round_trip(msg: m.Message) -> None:
    data = msg.encode()
    assert type(msg).decode(data) == msg
    assert type(msg).decode(data).encode() == data
    with pytest.raises(MalformedMessage):
        type(msg).decode(data + b"\x00")
    with pytest.raises(MalformedMessage):
        type(msg).decode(data[:-1])


@given(sessions, st.integers(0, 2**32 - 1), st.lists(st.integers(0, 2**64 - 1), max_size=20))
def test_masked_input_round_trip(session: Session, sender: int, values: list[int]) -> None:
    vector = np.array(values, dtype=np.uint64)
    back = m.MaskedInput.decode(m.MaskedInput(session, sender, vector).encode())
    assert (back.session, back.sender) == (session, sender)
    assert np.array_equal(back.vector, vector)


def test_annotated_encoding_of_a_survivor_set() -> None:
    session = Session(bytes(32), 60, 1)
    data = m.Survivors(session, 10, frozenset({1, 2, 10})).encode()
    assert data.hex() == (
        "01" "06"                                   # version 1, kind 6 (Survivors)
        + "00" * 32 + "000000000000003c" "00000001"  # session: task id, window 60, attempt 1
        + "0000000a"                               # n = 10
        + "03" "02"                                # bits 1, 2 | bit 10 (LSB first)
    )


def test_decoders_reject_wrong_kind_version_order_and_stray_bits() -> None:
    session = Session(bytes(32), 0, 0)
    data = m.Survivors(session, 10, frozenset({1})).encode()
    with pytest.raises(MalformedMessage, match="expected a Forward"):
        m.Forward.decode(data)
    with pytest.raises(MalformedMessage, match="version 2"):
        m.Survivors.decode(b"\x02" + data[1:])
    with pytest.raises(MalformedMessage, match="beyond n"):
        m.Survivors.decode(data[:-1] + b"\x80")
    confirm = m.Confirm(session, 1, ((3, bytes(32)), (2, bytes(32))))
    with pytest.raises(MalformedMessage, match="strictly increasing"):
        m.Confirm.decode(confirm.encode())
    huge = m.Confirm(session, 1, ()).encode()[:-4] + (2**32 - 1).to_bytes(4, "big")
    with pytest.raises(MalformedMessage, match="exceeds"):
        m.Confirm.decode(huge)
    with pytest.raises(MalformedMessage, match="unknown share kind"):
        m.Unmask.decode(m.Unmask(session, 1, (m.RevealedShare(2, 3, bytes(42)),)).encode())
