"""Z/2^64 vectors (crypto.ring): wraparound, signed view, canonical encoding,
and the scalar twin (Python big ints mod 2^64) against the numpy array ops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinmpc.crypto import ring
from twinmpc.crypto.errors import DecodeError

M = ring.MODULUS
TOP = M - 1
u64 = st.integers(min_value=0, max_value=TOP)


def vec(*values: int) -> np.ndarray:
    return np.array(values, dtype=ring.DTYPE)


def test_add_wraps_at_2_64() -> None:
    assert ring.add(vec(TOP, TOP), vec(1, TOP)).tolist() == [0, TOP - 1]


def test_sub_wraps_below_zero() -> None:
    assert ring.sub(vec(0, 5), vec(1, 7)).tolist() == [TOP, M - 2]


def test_neg_is_additive_inverse() -> None:
    a = vec(0, 1, TOP, 1 << 63)
    assert ring.neg(a).tolist() == [0, TOP, 1, 1 << 63]
    assert ring.add(a, ring.neg(a)).tolist() == [0, 0, 0, 0]


def test_mul_wraps() -> None:
    assert ring.mul(vec(1 << 32, TOP), vec(1 << 32, TOP)).tolist() == [0, 1]


def test_inner_wraps_without_float() -> None:
    # sum of two (2^63)*(1) products is 2^64 = 0; a float accumulator would give 1.8e19
    assert ring.inner(vec(1 << 63, 1 << 63), vec(1, 1)) == 0
    assert ring.inner(vec(TOP, 3), vec(TOP, 5)) == (TOP * TOP + 15) % M


def test_signed_view() -> None:
    assert ring.to_signed(vec(TOP, 1 << 63, (1 << 63) - 1, 0)).tolist() == [-1, -(1 << 63), (1 << 63) - 1, 0]


def test_from_ints_reduces_any_sign_and_size() -> None:
    assert ring.from_ints([-1, -(1 << 63), 5]).tolist() == [TOP, 1 << 63, 5]
    assert ring.from_ints([1 << 64, (1 << 70) + 3, -(1 << 65) - 1]).tolist() == [0, 3, TOP]
    assert ring.from_ints(np.array([-2], dtype=np.int32)).tolist() == [M - 2]


@pytest.mark.parametrize("bad", [[1.5], np.array([1.0]), ["1"], np.array([True])])
def test_from_ints_rejects_non_integers(bad) -> None:
    with pytest.raises(TypeError):
        ring.from_ints(bad)


def test_encode_is_little_endian_8_bytes() -> None:
    assert ring.encode(vec(1, TOP, 0x0102030405060708)).hex() == (
        "0100000000000000" "ffffffffffffffff" "0807060504030201"
    )


def test_encode_of_non_contiguous_view() -> None:
    a = vec(1, 2, 3, 4)[::2]
    assert ring.decode(ring.encode(a)).tolist() == [1, 3]


@pytest.mark.parametrize("n", [1, 7, 9, 15])
def test_decode_rejects_ragged(n: int) -> None:
    with pytest.raises(DecodeError, match="multiple of 8"):
        ring.decode(bytes(n))


@pytest.mark.parametrize(("nbytes", "length"), [(0, 1), (8, 2), (24, 2), (16, 0)])
def test_decode_rejects_wrong_length(nbytes: int, length: int) -> None:
    with pytest.raises(DecodeError, match="expected"):
        ring.decode(bytes(nbytes), length)


def test_decode_returns_writable_copy() -> None:
    data = bytearray(ring.encode(vec(1, 2)))
    out = ring.decode(bytes(data), 2)
    out += 1  # must not raise (read-only frombuffer view) and must not alias the input
    assert out.tolist() == [2, 3]
    assert out.dtype == ring.DTYPE


pairs = st.integers(min_value=1, max_value=40).flatmap(
    lambda n: st.tuples(st.lists(u64, min_size=n, max_size=n), st.lists(u64, min_size=n, max_size=n))
)


@given(pairs)
def test_array_ops_match_scalar_twin(ab: tuple[list[int], list[int]]) -> None:
    a_list, b_list = ab
    a, b = ring.from_ints(a_list), ring.from_ints(b_list)
    assert ring.add(a, b).tolist() == [(x + y) % M for x, y in zip(a_list, b_list)]
    assert ring.sub(a, b).tolist() == [(x - y) % M for x, y in zip(a_list, b_list)]
    assert ring.mul(a, b).tolist() == [(x * y) % M for x, y in zip(a_list, b_list)]
    assert ring.neg(a).tolist() == [(-x) % M for x in a_list]
    assert ring.inner(a, b) == sum(x * y for x, y in zip(a_list, b_list)) % M
    assert ring.to_signed(a).tolist() == [x - M if x >= 1 << 63 else x for x in a_list]


@given(st.lists(st.integers(min_value=-(1 << 80), max_value=1 << 80), min_size=1, max_size=30))
def test_from_ints_matches_python_mod(values: list[int]) -> None:
    assert ring.from_ints(values).tolist() == [v % M for v in values]


@given(st.lists(u64, max_size=50))
def test_encode_decode_round_trip(values: list[int]) -> None:
    a = ring.from_ints(values) if values else ring.zeros(0)
    data = ring.encode(a)
    assert len(data) == 8 * len(values)
    assert data == b"".join(v.to_bytes(8, "little") for v in values)
    assert ring.decode(data, len(values)).tolist() == values


def test_from_ints_keeps_mixed_int64_uint64_lists_exact() -> None:
    # numpy alone turns [0, 2^63] into float64 and 2^64-1 into 2^64
    assert ring.from_ints([0, 1 << 63, TOP, -1]).tolist() == [0, 1 << 63, TOP, TOP]


@pytest.mark.parametrize("bad", [[1.5, 1 << 70], [True, 1 << 70], [0.5, 1 << 63]])
def test_from_ints_rejects_non_integers_in_big_lists(bad) -> None:
    with pytest.raises(TypeError):
        ring.from_ints(bad)
