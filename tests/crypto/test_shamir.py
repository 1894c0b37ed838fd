"""crypto.shamir: reconstruction from any t shares, privacy of t-1 shares, rejection paths."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto.errors import DecodeError
from twinmpc.crypto.field import Field64, Field64Small, Field128
from twinmpc.crypto.field128_limbs import Field128Limbs
from twinmpc.crypto.shamir import ShamirShare, lagrange_at_zero, reconstruct, share

FIELDS = [Field64, Field64Small, Field128, Field128Limbs]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_any_t_shares_reconstruct(field) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=25, deadline=None)
    @given(
        st.integers(1, 5),
        st.integers(0, 3),
        st.lists(st.integers(0, field.MODULUS - 1), min_size=0, max_size=12),
        st.binary(min_size=32, max_size=32),
        st.randoms(use_true_random=False),
    )
    def check(t, extra, secret_ints, seed, rng):  # type: ignore[no-untyped-def]
        n = t + extra
        secret = field.from_ints(secret_ints)
        shares = share(field, secret, t, n, rand=seed)
        assert [s.index for s in shares] == list(range(1, n + 1))
        subset = rng.sample(shares, t)
        assert field.to_ints(reconstruct(field, subset, t)) == secret_ints
        assert field.to_ints(reconstruct(field, shares, t)) == secret_ints  # more than t: first t used

    check()


def test_shares_are_polynomial_evaluations() -> None:
    """Known answer: the share of party i is f(i) for the committed coefficient rows."""
    f = Field64
    secret = f.from_ints([5, 6])
    shares = share(f, secret, 3, 4, rand=bytes(32))
    p = f.MODULUS
    # Recover the degree-2 polynomials from 3 shares and check the 4th party's value.
    xs = [1, 2, 3]
    for j in range(2):
        ys = [int(s.values[j]) for s in shares[:3]]
        val4 = 0
        for i in range(3):
            num = den = 1
            for k in range(3):
                if k != i:
                    num = num * (4 - xs[k]) % p
                    den = den * (xs[i] - xs[k]) % p
            val4 = (val4 + ys[i] * num * pow(den, -1, p)) % p
        assert int(shares[3].values[j]) == val4
    assert lagrange_at_zero(f, [1, 2]).tolist() == [2, p - 1]  # f(0) = 2 f(1) - f(2)


def test_t_minus_one_shares_look_uniform_and_independent_of_secret() -> None:
    """Chi-square on low bits of 2 shares of a 3-of-5 sharing, for two different secrets (fixed seeds)."""
    f = Field64
    bins = 16
    samples = 2000
    crit = 37.7  # chi-square, 15 degrees of freedom, p = 0.001
    histos = []
    for secret_val in (0, 123456789):
        secret = f.from_ints([secret_val])
        h1 = np.zeros(bins)
        joint = np.zeros(bins)
        for i in range(samples):
            s = share(f, secret, 3, 5, rand=i.to_bytes(32, "big"))
            a, b = int(s[0].values[0]), int(s[1].values[0])
            h1[a % bins] += 1
            joint[(a % 4) * 4 + (b % 4)] += 1
        exp = samples / bins
        assert ((h1 - exp) ** 2 / exp).sum() < crit
        assert ((joint - exp) ** 2 / exp).sum() < crit
        histos.append(h1)
    # Two-sample homogeneity between the secrets' share distributions.
    tot = histos[0] + histos[1]
    expected = tot / 2
    chi = (((histos[0] - expected) ** 2 + (histos[1] - expected) ** 2) / expected).sum()
    assert chi < crit


def test_single_share_reveals_secret_when_t_is_one() -> None:
    # Sanity check that the statistical test can fail: with t = 1 each share IS the secret.
    secret = Field128.from_ints([42, 43])
    for s in share(Field128, secret, 1, 3, rand=bytes(32)):
        assert Field128.to_ints(s.values) == [42, 43]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_bad_share_indices_rejected(field) -> None:  # type: ignore[no-untyped-def]
    shares = share(field, field.from_ints([1, 2, 3]), 2, 3, rand=bytes(32))
    with pytest.raises(ValueError):
        reconstruct(field, [shares[0], ShamirShare(1, shares[1].values)], 2)  # duplicate
    with pytest.raises(ValueError):
        reconstruct(field, [shares[0], ShamirShare(0, shares[1].values)], 2)  # index 0
    with pytest.raises(ValueError):
        reconstruct(field, [shares[0], ShamirShare(70000, shares[1].values)], 2)  # out of range
    with pytest.raises(ValueError):
        reconstruct(field, [shares[0], ShamirShare(-2, shares[1].values)], 2)
    with pytest.raises(ValueError):
        reconstruct(field, shares[:1], 2)  # too few
    with pytest.raises(ValueError):
        reconstruct(field, [shares[0], ShamirShare(2, shares[1].values[:2])], 2)  # ragged


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_share_parameter_validation(field) -> None:  # type: ignore[no-untyped-def]
    secret = field.from_ints([1])
    for t, n in [(0, 3), (4, 3), (1, 70000)]:
        with pytest.raises(ValueError):
            share(field, secret, t, n)
    with pytest.raises(ValueError):
        share(field, secret, 2, 3, rand=bytes(31))
    with pytest.raises(ValueError):
        share(field, secret.reshape(1, 1), 2, 3)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.NAME)
def test_share_encoding(field) -> None:  # type: ignore[no-untyped-def]
    shares = share(field, field.from_ints([9, 8]), 2, 2)  # OS randomness path
    enc = shares[1].encode(field)
    assert enc[:2] == b"\x00\x02"
    back = ShamirShare.decode(field, enc, 2)
    assert back.index == 2 and np.array_equal(back.values, shares[1].values)
    assert "redacted" in repr(back) and str(field.to_ints(back.values)[0]) not in repr(back)
    with pytest.raises(DecodeError):
        ShamirShare.decode(field, enc + b"\x00", 2)
    with pytest.raises(DecodeError):
        ShamirShare.decode(field, b"\x00\x00" + enc[2:], 2)
    with pytest.raises(DecodeError):
        ShamirShare.decode(field, enc[:2] + field.MODULUS.to_bytes(field.ENCODED_SIZE, "little") + enc[2 + field.ENCODED_SIZE :], 2)
    assert field.to_ints(reconstruct(field, [ShamirShare.decode(field, s.encode(field), 2) for s in shares], 2)) == [9, 8]


def test_all_subsets_small_case() -> None:
    secret = Field64.from_ints(list(range(10)))
    shares = share(Field64, secret, 3, 6, rand=bytes(range(32)))
    for combo in itertools.combinations(shares, 3):
        assert Field64.to_ints(reconstruct(Field64, list(combo), 3)) == list(range(10))
    rng = random.Random(0)
    two = rng.sample(shares, 2)
    # Two shares of a 3-of-6 sharing interpolated as if t = 2 give garbage, not the secret.
    assert Field64.to_ints(reconstruct(Field64, two, 2)) != list(range(10))
