"""crypto.poly: NTT, interpolation and evaluation against naive big-int formulas."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto.field import Field64, Field64Small, Field128
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.poly import (
    evaluate_roots,
    extend_lagrange,
    extend_values,
    interpolate_roots,
    lagrange_weights,
    next_power_of_2,
    ntt,
    poly_eval,
    poly_mul,
)

FIELDS = [Field64, Field64Small, Field128, Field128Limbs]


def naive_eval(coeffs: list[int], x: int, p: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % p
    return acc


def naive_interp(xs: list[int], ys: list[int], p: int) -> list[int]:
    """Lagrange interpolation with Python ints, coefficients low to high."""
    n = len(xs)
    out = [0] * n
    for i in range(n):
        basis = [1]
        denom = 1
        for j in range(n):
            if j == i:
                continue
            basis = [(a - xs[j] * b) % p for a, b in zip([0] + basis, basis + [0])]
            denom = denom * (xs[i] - xs[j]) % p
        scale = ys[i] * pow(denom, -1, p) % p
        out = [(o + scale * b) % p for o, b in zip(out, basis)]
    return out


def test_next_power_of_2() -> None:
    assert [next_power_of_2(n) for n in (1, 2, 3, 4, 5, 9, 1024, 1025)] == [1, 2, 4, 4, 8, 16, 1024, 2048]
    with pytest.raises(ValueError):
        next_power_of_2(0)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
@pytest.mark.parametrize("n", [1, 2, 4, 8, 32])
def test_interpolation_matches_naive_lagrange(field, n: int) -> None:  # type: ignore[no-untyped-def]
    p = field.MODULUS
    rng = random.Random(n)
    ys = [rng.randrange(p) for _ in range(n)]
    w = field.root_of_unity(n)
    xs = [pow(w, k, p) for k in range(n)]
    coeffs = field.to_ints(interpolate_roots(field, field.from_ints(ys)))
    assert coeffs == naive_interp(xs, ys, p)
    assert field.to_ints(ntt(field, field.from_ints(coeffs))) == ys


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_batched_ntt_roundtrip(field) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=20, deadline=None)
    @given(st.integers(0, 5), st.integers(1, 4), st.randoms(use_true_random=False))
    def check(log_n, rows, rng):  # type: ignore[no-untyped-def]
        n = 1 << log_n
        m = field.from_ints([rng.randrange(field.MODULUS) for _ in range(rows * n)]).reshape(rows, n)
        back = ntt(field, ntt(field, m), inverse=True)
        assert np.array_equal(back, m)
        for r in range(rows):  # rows are independent transforms
            assert np.array_equal(ntt(field, m[r]), ntt(field, m)[r])

    check()


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_ntt_rejects_non_power_of_two(field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        ntt(field, field.zeros(6))


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_poly_eval_and_mul(field) -> None:  # type: ignore[no-untyped-def]
    p = field.MODULUS
    rng = random.Random(7)
    a = [rng.randrange(p) for _ in range(5)]
    b = [rng.randrange(p) for _ in range(9)]
    x = rng.randrange(p)
    assert field.to_ints(poly_eval(field, field.from_ints(a), x)) == [naive_eval(a, x, p)]
    prod = [0] * 13
    for i, u in enumerate(a):
        for j, v in enumerate(b):
            prod[i + j] = (prod[i + j] + u * v) % p
    assert field.to_ints(poly_mul(field, field.from_ints(a), field.from_ints(b))) == prod


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_evaluate_and_extend_on_roots(field) -> None:  # type: ignore[no-untyped-def]
    p = field.MODULUS
    rng = random.Random(11)
    coeffs = [rng.randrange(p) for _ in range(8)]
    for n in (8, 16, 32):
        w = field.root_of_unity(n)
        expected = [naive_eval(coeffs, pow(w, k, p), p) for k in range(n)]
        assert field.to_ints(evaluate_roots(field, field.from_ints(coeffs), n)) == expected
        # From values at the 8th roots to values at all n-th roots (coset NTTs).
        vals8 = field.from_ints(expected[:: n // 8])
        assert field.to_ints(extend_values(field, vals8, n)) == expected
    long_coeffs = [rng.randrange(p) for _ in range(20)]  # folded modulo x^4 - 1
    w4 = field.root_of_unity(4)
    assert field.to_ints(evaluate_roots(field, field.from_ints(long_coeffs), 4)) == [
        naive_eval(long_coeffs, pow(w4, k, p), p) for k in range(4)
    ]
    with pytest.raises(ValueError):
        extend_values(field, field.zeros(4), 6)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
@pytest.mark.parametrize("degree_plus_one, n", [(3, 4), (7, 8), (5, 8), (8, 8), (1, 2)])
def test_extend_lagrange_completes_values(field, degree_plus_one: int, n: int) -> None:  # type: ignore[no-untyped-def]
    p = field.MODULUS
    rng = random.Random(degree_plus_one * n)
    coeffs = [rng.randrange(p) for _ in range(degree_plus_one)]
    w = field.root_of_unity(n)
    full = [naive_eval(coeffs, pow(w, k, p), p) for k in range(n)]
    got = extend_lagrange(field, field.from_ints(full[:degree_plus_one]), n)
    assert field.to_ints(got) == full
    with pytest.raises(ValueError):
        extend_lagrange(field, field.zeros(n + 1), n)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_lagrange_weights_barycentric(field) -> None:  # type: ignore[no-untyped-def]
    p = field.MODULUS
    rng = random.Random(3)
    n = 16
    coeffs = [rng.randrange(p) for _ in range(n)]
    w = field.root_of_unity(n)
    values = field.from_ints([naive_eval(coeffs, pow(w, k, p), p) for k in range(n)])
    for t in [rng.randrange(p) for _ in range(3)] + [pow(w, 5, p), 1]:  # includes points on the domain
        lam = lagrange_weights(field, t, n)
        assert field.inner(values, lam) == naive_eval(coeffs, t, p)
