"""crypto.poly fast paths against the general ones: subsampled Lagrange weights (FLP query)
and the matrix form of extend_values used for small transforms."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import poly
from twinmpc.crypto.field import Field64, Field64Small, Field128
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.poly import (
    _coset_values_ntt,
    extend_values,
    lagrange_weights,
    subsample_lagrange_weights,
)

FIELDS = [Field64, Field64Small, Field128, Field128Limbs]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.__name__)
def test_subsampled_weights_equal_direct_weights(field) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=25, deadline=None)
    @given(st.integers(0, field.MODULUS - 1), st.sampled_from([(1, 2), (2, 4), (4, 8), (8, 16), (4, 16), (16, 32), (1, 8)]))
    def check(t, sizes):  # type: ignore[no-untyped-def]
        p, n = sizes
        if pow(t, p, field.MODULUS) == 1:  # the FLP rejects these points before asking
            return
        got = subsample_lagrange_weights(field, lagrange_weights(field, t, n), t, p)
        assert field.to_ints(got) == field.to_ints(lagrange_weights(field, t, p))

    check()


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.__name__)
def test_subsample_at_an_nth_root_that_is_not_a_pth_root(field) -> None:  # type: ignore[no-untyped-def]
    """There sum_i t^(ip) = 0 and the rescaling is undefined: fall back to direct weights."""
    q = field.MODULUS
    n, p = 16, 4
    t = field.root_of_unity(n)  # t^4 != 1
    got = field.to_ints(subsample_lagrange_weights(field, lagrange_weights(field, t, n), t, p))
    direct = field.to_ints(lagrange_weights(field, t, p))
    assert got == direct
    # f(t) for f = x^3 from its values on the 4th roots: the weights really evaluate.
    w4 = field.root_of_unity(p)
    assert sum(pow(w4, 3 * k, q) * lam for k, lam in enumerate(got)) % q == pow(t, 3, q)


def test_subsample_rejects_a_size_that_does_not_divide() -> None:
    lam = lagrange_weights(Field128, 12345, 8)
    with pytest.raises(ValueError):
        subsample_lagrange_weights(Field128, lam, 12345, 3)
    assert subsample_lagrange_weights(Field128, lam, 12345, 8) is lam


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape, n", [((2, 2), 4), ((1, 16), 32), ((6, 8), 16), ((3, 4), 16), ((2, 1), 2), ((32,), 64)])
def test_small_extend_values_match_the_ntt_path(field, shape, n) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(n * shape[-1])
    p = shape[-1]
    vals = field.from_ints([rng.randrange(field.MODULUS) for _ in range(int(np.prod(shape)))]).reshape(shape)
    expected = np.stack(_coset_values_ntt(field, vals, n), axis=-1).reshape(shape[:-1] + (n,))
    assert field.to_ints(extend_values(field, vals, n)) == field.to_ints(expected)
    rows = vals.size // p
    assert field.CHEAP_DOT == (field in (Field64Small, Field128))
    if field.CHEAP_DOT:  # these shapes are small enough for the matrix path
        assert rows * p * (n - p) <= poly.SMALL_EXTEND_MAX_PRODUCTS


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(2,), (1, 4), (3, 8), (1, 16), (20, 4)])
@pytest.mark.parametrize("inverse, scale", [(False, True), (True, True), (True, False)])
def test_small_ntt_matrix_path_matches_butterflies(field, shape, inverse, scale, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(shape[-1] * 3 + inverse)
    a = field.from_ints([rng.randrange(field.MODULUS) for _ in range(int(np.prod(shape)))]).reshape(shape)
    if field.CHEAP_DOT:
        assert a.size * shape[-1] <= poly.SMALL_NTT_MAX_PRODUCTS  # the matrix path is taken
    fast = field.to_ints(poly.ntt(field, a, inverse=inverse, scale=scale))
    monkeypatch.setattr(poly, "SMALL_NTT_MAX_PRODUCTS", 0)
    assert fast == field.to_ints(poly.ntt(field, a, inverse=inverse, scale=scale))


@settings(max_examples=60, deadline=None)
@given(log_n=st.integers(0, 10), seed=st.integers(0, 2**32), on_root=st.booleans(),
       field=st.sampled_from([Field64Small, Field128]))
def test_direct_lagrange_weights_equal_the_ntt_form(log_n: int, seed: int, on_root: bool, field) -> None:  # type: ignore[no-untyped-def]
    """The batch-inversion barycentric weights (n <= DIRECT_WEIGHTS_MAX_N) equal the inversion-free
    NTT form, also at the n-th roots themselves (where they are an indicator vector)."""
    n = 1 << log_n
    rng = random.Random(seed)
    t = pow(field.root_of_unity(n), rng.randrange(n), field.MODULUS) if on_root else rng.randrange(field.MODULUS)
    via_ntt = poly.ntt(field, field.powers(t, n), inverse=True)
    assert field.to_ints(lagrange_weights(field, t, n)) == field.to_ints(via_ntt)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(FIELDS), rows=st.integers(1, 20), log_p=st.integers(1, 5), log_r=st.integers(1, 2),
       data=st.data())
def test_extend_values_with_trailing_zeros_and_small_values(field, rows: int, log_p: int, log_r: int, data) -> None:  # type: ignore[no-untyped-def]
    """FLP wire matrices: zero past `length`, entries often 0, 1 or -1 (= q - 1).  The matrix
    path (centred values, only the first `length` columns) equals the NTT path."""
    p, n = 1 << log_p, 1 << (log_p + log_r)
    length = data.draw(st.integers(1, p))
    q = field.MODULUS
    pick = st.one_of(st.sampled_from([0, 1, q - 1, q - 2, q // 2, q // 2 + 1]), st.integers(0, q - 1))
    ints = [data.draw(pick) if c < length else 0 for _ in range(rows) for c in range(p)]
    vals = field.from_ints(ints).reshape(rows, p)
    expected = np.stack(_coset_values_ntt(field, vals, n), axis=-1).reshape(rows, n)
    assert field.to_ints(extend_values(field, vals, n, length=length)) == field.to_ints(expected)
