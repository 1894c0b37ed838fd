"""Field128Limbs product kernel (crypto.field128_limbs._mul_block) against Python big ints.

The kernel folds the eight 32-bit product columns with 2^128 = 28*2^64 - 1
(mod p) and carries twice; these properties aim at its edges: limbs that are
all ones (largest column sums), values just below p, powers of two at the
limb and fold boundaries, and vectors longer than one kernel block.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto.field import Field64, Field64Small, Field128
from twinmpc.crypto.field128_limbs import _BLOCK, _LIMB_MUL_MIN, Field128Limbs, _mul_block

P = Field128.MODULUS
_M32 = 2**32 - 1


def _limb_elems() -> st.SearchStrategy[int]:
    """Elements built from extreme 32-bit limbs, plus the usual edges."""
    limb = st.sampled_from([0, 1, 2, 27, 28, 29, _M32 - 28, _M32 - 27, _M32 - 1, _M32])
    composed = st.tuples(limb, limb, limb, limb).map(lambda t: (t[0] | t[1] << 32 | t[2] << 64 | t[3] << 96) % P)
    edge = st.sampled_from([0, 1, P - 1, P - 2, 2**64, 2**64 - 1, 2**96, 2**127, 28 * 2**64 - 1, (P - 1) // 2])
    return st.one_of(composed, edge, st.integers(0, P - 1))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_limb_elems(), _limb_elems()), min_size=1, max_size=64))
def test_limb_product_matches_big_ints(pairs: list[tuple[int, int]]) -> None:
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    a, b = Field128Limbs.from_ints(xs), Field128Limbs.from_ints(ys)
    expected = [x * y % P for x, y in pairs]
    assert Field128Limbs.to_ints(_mul_block(a, b)) == expected == [Field128.s_mul(x, y) for x, y in pairs]
    assert Field128Limbs.to_ints(Field128Limbs.mul(a, b)) == expected  # short: through Python ints
    # padded past the short-vector cut-off, the same pairs go through the kernel via mul
    reps = -(-_LIMB_MUL_MIN // len(pairs))
    long_a, long_b = Field128Limbs.from_ints(xs * reps), Field128Limbs.from_ints(ys * reps)
    assert Field128Limbs.to_ints(Field128Limbs.mul(long_a, long_b)) == expected * reps


@settings(max_examples=50, deadline=None)
@given(_limb_elems(), st.lists(_limb_elems(), min_size=1, max_size=16))
def test_limb_product_broadcasts_a_constant(c: int, xs: list[int]) -> None:
    got = Field128Limbs.mul(Field128Limbs.from_ints(xs).reshape(-1, 1), Field128Limbs.const(c))
    assert Field128Limbs.to_ints(got) == [c * x % P for x in xs]


def test_limb_product_across_blocks_matches_object_backend() -> None:
    rng = random.Random(7)
    n = 2 * _BLOCK + 17  # three blocks, the last one partial
    xs = [rng.choice([P - 1, (2**64 - 29) << 64 | _M32 << 32 | _M32, rng.randrange(P)]) for _ in range(n)]
    ys = [rng.choice([P - 1, 2**127, rng.randrange(P)]) for _ in range(n)]
    limbs = Field128Limbs.mul(Field128Limbs.from_ints(xs), Field128Limbs.from_ints(ys))
    objs = Field128.mul(Field128.from_ints(xs), Field128.from_ints(ys))
    assert Field128Limbs.to_ints(limbs) == Field128.to_ints(objs)
    assert Field128Limbs.encode_vec(limbs) == Field128.encode_vec(objs)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_lazy_add_sub_then_canonical_match_exact_ops(data: st.DataObject) -> None:
    """lazy_add/lazy_sub may leave object-backend values unreduced (even negative);
    products and `canonical` must still give the exact residues."""
    for field in (Field64, Field64Small, Field128, Field128Limbs):
        p = field.MODULUS
        xs = data.draw(st.lists(st.integers(0, p - 1), min_size=1, max_size=12))
        a = field.from_ints(xs)
        b = field.from_ints(xs[::-1])
        lazy = field.lazy_sub(field.lazy_add(field.lazy_add(a, b), a), field.lazy_add(b, b))
        exact = [(2 * x - y) % p for x, y in zip(xs, xs[::-1])]
        assert field.to_ints(field.canonical(lazy)) == exact
        assert field.to_ints(field.mul(lazy, b)) == [e * y % p for e, y in zip(exact, xs[::-1])]


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_mul_sum_matches_sum_of_products(data: st.DataObject) -> None:
    """mul_sum (one reduction per output on object backends) equals sum(mul) on every backend."""
    rows = data.draw(st.integers(1, 5))
    cols = data.draw(st.integers(1, 7))
    for field in (Field64, Field64Small, Field128, Field128Limbs):
        p = field.MODULUS
        elems = st.one_of(st.sampled_from([0, 1, p - 1]), st.integers(0, p - 1))
        m = data.draw(st.lists(elems, min_size=rows * cols, max_size=rows * cols))
        v = data.draw(st.lists(elems, min_size=cols, max_size=cols))
        a = field.from_ints(m).reshape(rows, cols)
        expected_rows = [sum(m[r * cols + k] * v[k] for k in range(cols)) % p for r in range(rows)]
        assert field.to_ints(field.mul_sum(a, field.from_ints(v))) == expected_rows
        b = field.from_ints(m[::-1]).reshape(rows, cols)
        mr = m[::-1]
        expected_cols = [sum(m[r * cols + k] * mr[r * cols + k] for r in range(rows)) % p for k in range(cols)]
        assert field.to_ints(field.mul_sum(a, b, axis=0)) == expected_cols
