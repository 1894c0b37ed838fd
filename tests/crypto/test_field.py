"""crypto.field: exact arithmetic against Python big ints, scalar/vector twins, encoding."""

from __future__ import annotations

import functools
import operator
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto.field import Field64, Field64Small, Field128
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.mpc.errors import DecodeError

FIELDS = [Field64, Field64Small, Field128, Field128Limbs]


def elems(field):  # type: ignore[no-untyped-def]
    p = field.MODULUS
    edge = st.sampled_from([0, 1, 2, p - 1, p - 2, 2**32 - 1, 2**32, 2**63, (p - 1) // 2])
    return st.one_of(edge, st.integers(0, p - 1))


def test_parameters_match_draft_table() -> None:
    """draft-irtf-cfrg-vdaf-18 Section 6.1.3, Table: moduli, sizes, generator orders."""
    assert Field64.MODULUS == 2**32 * 4294967295 + 1 == 2**64 - 2**32 + 1
    assert Field128.MODULUS == 2**66 * 4611686018427387897 + 1
    assert (Field64.ENCODED_SIZE, Field128.ENCODED_SIZE) == (8, 16)
    for f in FIELDS:
        p = f.MODULUS
        assert pow(f.GENERATOR, f.GEN_ORDER, p) == 1
        assert pow(f.GENERATOR, f.GEN_ORDER // 2, p) == p - 1  # order is exactly GEN_ORDER
    assert Field64.GENERATOR == pow(7, 4294967295, Field64.MODULUS)
    assert Field128.GENERATOR == pow(7, 4611686018427387897, Field128.MODULUS)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_vector_ops_match_scalar_twins(field) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(elems(field), elems(field)), min_size=1, max_size=40))
    def check(pairs):  # type: ignore[no-untyped-def]
        p = field.MODULUS
        xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
        a, b = field.from_ints(xs), field.from_ints(ys)
        assert field.to_ints(field.add(a, b)) == [field.s_add(x, y) for x, y in pairs] == [(x + y) % p for x, y in pairs]
        assert field.to_ints(field.sub(a, b)) == [field.s_sub(x, y) for x, y in pairs] == [(x - y) % p for x, y in pairs]
        assert field.to_ints(field.mul(a, b)) == [field.s_mul(x, y) for x, y in pairs] == [x * y % p for x, y in pairs]
        assert field.to_ints(field.neg(a)) == [field.s_neg(x) for x in xs] == [(-x) % p for x in xs]
        assert field.to_ints(field.pow(a, 5)) == [field.s_pow(x, 5) for x in xs]
        assert field.to_ints(field.sum(a)) == [sum(xs) % p]
        assert field.inner(a, b) == sum(x * y for x, y in pairs) % p
        nz = [x or 1 for x in xs]
        assert field.to_ints(field.inv(field.from_ints(nz))) == [field.s_inv(x) for x in nz] == [pow(x, -1, p) for x in nz]
        prefix = list(accumulate(xs, lambda acc, x: acc * x % p))
        assert field.to_ints(field.cumprod(a)) == prefix

    check()


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_two_dimensional_ops_and_axis_sums(field) -> None:  # type: ignore[no-untyped-def]
    p = field.MODULUS
    rows = [[(i * 7919 + j * 104729) * (p // 97) % p for j in range(6)] for i in range(4)]
    m = field.from_ints(functools.reduce(operator.iadd, rows, [])).reshape(4, 6)
    assert field.to_ints(field.sum(m, axis=0)) == [sum(r[j] for r in rows) % p for j in range(6)]
    assert field.to_ints(field.sum(m, axis=-1)) == [sum(r) % p for r in rows]
    sq = field.mul(m, m)
    assert field.to_ints(sq) == [x * x % p for r in rows for x in r]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_inverse_of_zero_raises(field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ZeroDivisionError):
        field.inv(field.from_ints([3, 0, 5]))
    with pytest.raises(ZeroDivisionError):
        field.s_inv(0)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_powers_and_bits(field) -> None:  # type: ignore[no-untyped-def]
    p = field.MODULUS
    assert field.to_ints(field.powers(3, 37)) == [pow(3, i, p) for i in range(37)]
    assert field.to_ints(field.encode_into_bit_vec([5, 2], 4)) == [1, 0, 1, 0, 0, 1, 0, 0]
    with pytest.raises(ValueError):
        field.encode_into_bit_vec([16], 4)
    assert field.to_ints(field.from_ints([-1])) == [p - 1]  # negative integers are negations (Section 6.1)


def test_known_answer_encodings() -> None:
    # Field64: 1 -> 01 00..00, p-1 -> 00 00 00 00 ff ff ff ff (little-endian 2^64 - 2^32)
    for f64 in (Field64, Field64Small):
        enc = f64.encode_vec(f64.from_ints([1, f64.MODULUS - 1]))
        assert enc.hex() == "0100000000000000" + "00000000ffffffff"
    # Field128: p-1 = 2^128 - 28*2^64 -> low 8 bytes 0, high 8 bytes 2^64 - 28 = e4 ff .. ff
    for f in (Field128, Field128Limbs):
        enc = f.encode_vec(f.from_ints([2, f.MODULUS - 1]))
        assert enc.hex() == "02" + "00" * 15 + "00" * 8 + "e4" + "ff" * 7


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_encode_decode_roundtrip(field) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=40, deadline=None)
    @given(st.lists(elems(field), max_size=30))
    def check(xs):  # type: ignore[no-untyped-def]
        enc = field.encode_vec(field.from_ints(xs))
        assert len(enc) == field.ENCODED_SIZE * len(xs)
        assert enc == b"".join(x.to_bytes(field.ENCODED_SIZE, "little") for x in xs)
        assert field.to_ints(field.decode_vec(enc)) == xs

    check()


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_decode_rejects_non_canonical_and_bad_lengths(field) -> None:  # type: ignore[no-untyped-def]
    size = field.ENCODED_SIZE
    with pytest.raises(DecodeError):
        field.decode_vec(field.MODULUS.to_bytes(size, "little"))
    with pytest.raises(DecodeError):
        field.decode_vec((2 ** (8 * size) - 1).to_bytes(size, "little"))
    with pytest.raises(DecodeError):
        field.decode_vec(bytes(size + 1))
    with pytest.raises(DecodeError):
        field.decode_vec(bytes(size - 1))
    assert field.decode_vec(b"").shape == (0,)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_root_of_unity(field) -> None:  # type: ignore[no-untyped-def]
    w = field.root_of_unity(16)
    assert pow(w, 16, field.MODULUS) == 1 and pow(w, 8, field.MODULUS) != 1
    with pytest.raises(ValueError):
        field.root_of_unity(12)
    with pytest.raises(ValueError):
        field.root_of_unity(2 * field.GEN_ORDER)


def test_field64_backends_agree() -> None:
    import random

    p = Field64.MODULUS
    rng = random.Random(6)
    xs = [rng.randrange(p) for _ in range(3000)] + [p - 1, 0, 1, 2**32]
    ys = [rng.randrange(p) for _ in range(3000)] + [p - 1, 1, 0, 2**32]
    for op in ("add", "sub", "mul"):
        got = Field64.to_ints(getattr(Field64, op)(Field64.from_ints(xs), Field64.from_ints(ys)))
        assert got == Field64Small.to_ints(getattr(Field64Small, op)(Field64Small.from_ints(xs), Field64Small.from_ints(ys)))
    assert Field64.encode_vec(Field64.from_ints(xs)) == Field64Small.encode_vec(Field64Small.from_ints(xs))


def test_field128_backends_agree_on_long_vectors() -> None:
    """Object and limb backends give identical results, including across limb-kernel blocks."""
    import random

    p = Field128.MODULUS
    rng = random.Random(5)
    xs = [rng.randrange(p) for _ in range(5000)] + [p - 1] * 100 + [0] * 10
    ys = [rng.randrange(p) for _ in range(5000)] + [p - 1] * 100 + [1] * 10
    o = (Field128.from_ints(xs), Field128.from_ints(ys))
    lb = (Field128Limbs.from_ints(xs), Field128Limbs.from_ints(ys))
    for op in ("add", "sub", "mul"):
        assert Field128.to_ints(getattr(Field128, op)(*o)) == Field128Limbs.to_ints(getattr(Field128Limbs, op)(*lb))
    assert Field128.encode_vec(o[0]) == Field128Limbs.encode_vec(lb[0])
    m = lb[0][:5100].reshape(51, 100)
    assert Field128Limbs.to_ints(Field128Limbs.sum(m, axis=0)) == Field128.to_ints(Field128.sum(o[0][:5100].reshape(51, 100), axis=0))
    assert Field128Limbs.from_backend(Field128, o[1]).tobytes() == lb[1].tobytes()
