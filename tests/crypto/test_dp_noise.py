"""Exact DP samplers (crypto.dp_noise) against their exact probability mass functions.

Goodness of fit is a chi-square test with fixed seeds at alpha = 1e-4, so each
check is deterministic and fails only if the sampler's law is wrong (or, for a
correct sampler, with a fixed seed it never fails once it passed).
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import dp_noise

ALPHA_Z = 3.719  # one-sided standard-normal quantile for alpha = 1e-4


class SeededRandBelow:
    """Test-only scalar randomness: a seeded random.Random behind the randbelow seam."""

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)

    def randbelow(self, n: int) -> int:
        return self._r.randrange(n)


def chi2_critical(df: int) -> float:
    """Wilson-Hilferty approximation of the chi-square (1 - alpha) quantile."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + ALPHA_Z * math.sqrt(c)) ** 3


def binned(samples: np.ndarray, pmf: dict[int, float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed/expected counts over support points with expected >= 20, tails merged."""
    keys = sorted(k for k, p in pmf.items() if p * n >= 20)
    lo, hi = keys[0], keys[-1]
    obs = [np.count_nonzero(samples <= lo)]
    exp = [sum(p for k, p in pmf.items() if k <= lo)]
    for k in keys[1:-1]:
        obs.append(np.count_nonzero(samples == k))
        exp.append(pmf[k])
    obs.append(np.count_nonzero(samples >= hi))
    exp.append(sum(p for k, p in pmf.items() if k >= hi))
    return np.array(obs, dtype=float), np.array(exp) * n


def assert_fits(samples: np.ndarray, pmf: dict[int, float]) -> None:
    n = samples.size
    obs, exp = binned(samples, pmf, n)
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = obs.size - 1
    assert stat < chi2_critical(df), f"chi2={stat:.1f} df={df} crit={chi2_critical(df):.1f}"


def laplace_pmf(scale: Fraction, radius: int) -> dict[int, float]:
    p = math.exp(-1 / float(scale))
    c = (1 - p) / (1 + p)
    return {x: c * p ** abs(x) for x in range(-radius, radius + 1)}


def gaussian_pmf(sigma2: Fraction, radius: int) -> dict[int, float]:
    w = {x: math.exp(-x * x / (2 * float(sigma2))) for x in range(-radius, radius + 1)}
    z = sum(w.values())
    return {x: v / z for x, v in w.items()}


def assert_homogeneous(a: np.ndarray, b: np.ndarray) -> None:
    """Two-sample chi-square: a and b come from the same law (scalar vs batch twins)."""
    values = np.concatenate((a, b))
    lo, hi = np.quantile(values, [0.02, 0.98])
    edges = np.unique(np.concatenate(([-np.inf], np.arange(np.floor(lo), np.ceil(hi) + 1), [np.inf])))
    ca, _ = np.histogram(a, edges)
    cb, _ = np.histogram(b, edges)
    keep = (ca + cb) > 0
    ca, cb = ca[keep].astype(float), cb[keep].astype(float)
    na, nb = ca.sum(), cb.sum()
    tot = ca + cb
    ea, eb = tot * na / (na + nb), tot * nb / (na + nb)
    stat = float(((ca - ea) ** 2 / ea).sum() + ((cb - eb) ** 2 / eb).sum())
    df = ca.size - 1
    assert stat < chi2_critical(df), f"chi2={stat:.1f} df={df}"


# ---------------------------------------------------------------- batch laws
@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(1), Fraction(10, 3), Fraction(7)])
def test_discrete_laplace_batch_matches_pmf(scale: Fraction) -> None:
    x = dp_noise.discrete_laplace_batch(scale, 200_000, rng=np.random.default_rng(11))
    assert x.dtype == np.int64 and x.shape == (200_000,)
    assert_fits(x, laplace_pmf(scale, 200))


@pytest.mark.parametrize("sigma2", [Fraction(1, 4), Fraction(1), Fraction(43), Fraction(1000, 7)])
def test_discrete_gaussian_batch_matches_pmf(sigma2: Fraction) -> None:
    x = dp_noise.discrete_gaussian_batch(sigma2, 200_000, rng=np.random.default_rng(12))
    assert x.dtype == np.int64
    assert_fits(x, gaussian_pmf(sigma2, 200))


def test_discrete_gaussian_batch_large_sigma_uses_exact_big_integers() -> None:
    """sigma^2 = 2^70: thresholds exceed 64 bits; the law is N(0, sigma^2) to within e^-(2 pi^2 sigma^2)."""
    sigma2 = Fraction(1 << 70)
    n = 100_000
    x = dp_noise.discrete_gaussian_batch(sigma2, n, rng=np.random.default_rng(13))
    sigma = math.sqrt(float(sigma2))
    # 20 equiprobable bins of the normal law; bin edges are far from integers' granularity.
    qs = [sigma * math.sqrt(2) * _erfinv(2 * k / 20 - 1) for k in range(1, 20)]
    counts = np.histogram(x.astype(float), [-np.inf, *qs, np.inf])[0]
    exp = n / 20
    stat = float(((counts - exp) ** 2 / exp).sum())
    assert stat < chi2_critical(19)


def _erfinv(y: float) -> float:
    """Inverse error function by bisection on math.erf (tests only)."""
    lo, hi = -6.0, 6.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if math.erf(mid) < y:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def test_discrete_laplace_batch_large_scale() -> None:
    scale = Fraction(1 << 40, 3)
    x = dp_noise.discrete_laplace_batch(scale, 50_000, rng=np.random.default_rng(14))
    # |X| is geometric-like: P(|X| >= m) = 2 p^m / (1 + p); check the median of |X| ~ scale * ln 2.
    med = float(np.median(np.abs(x)))
    assert abs(med / (float(scale) * math.log(2)) - 1) < 0.03


# --------------------------------------------------------------- scalar laws
def test_discrete_laplace_scalar_matches_pmf() -> None:
    rng = SeededRandBelow(1)
    scale = Fraction(5, 2)
    x = np.array([dp_noise.discrete_laplace(scale, rng) for _ in range(30_000)])
    assert_fits(x, laplace_pmf(scale, 100))


def test_discrete_gaussian_scalar_matches_pmf() -> None:
    rng = SeededRandBelow(2)
    sigma2 = Fraction(9, 2)
    x = np.array([dp_noise.discrete_gaussian(sigma2, rng) for _ in range(30_000)])
    assert_fits(x, gaussian_pmf(sigma2, 100))


@pytest.mark.parametrize(
    ("scalar", "batch", "param"),
    [
        (dp_noise.discrete_gaussian, dp_noise.discrete_gaussian_batch, Fraction(30, 7)),
        (dp_noise.discrete_laplace, dp_noise.discrete_laplace_batch, Fraction(3, 2)),
    ],
)
def test_scalar_and_batch_agree_in_distribution(scalar, batch, param) -> None:
    rng = SeededRandBelow(3)
    a = np.array([scalar(param, rng) for _ in range(20_000)])
    b = batch(param, 60_000, rng=np.random.default_rng(15))
    assert_homogeneous(a, b)


def test_scalar_default_randomness_is_os_csprng() -> None:
    x = np.array([dp_noise.discrete_gaussian(Fraction(4)) for _ in range(5_000)])
    assert_fits(x, gaussian_pmf(Fraction(4), 60))


def test_batch_default_randomness_is_os_csprng() -> None:
    x = dp_noise.discrete_gaussian_batch(Fraction(20), 100_000)
    assert_fits(x, gaussian_pmf(Fraction(20), 100))


def test_batch_is_reproducible_under_a_seed() -> None:
    a = dp_noise.discrete_gaussian_batch(Fraction(10), 1000, rng=np.random.default_rng(5))
    b = dp_noise.discrete_gaussian_batch(Fraction(10), 1000, rng=np.random.default_rng(5))
    c = dp_noise.discrete_gaussian_batch(Fraction(10), 1000, rng=np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_zero_samples() -> None:
    assert dp_noise.discrete_gaussian_batch(Fraction(3), 0).shape == (0,)
    assert dp_noise.discrete_laplace_batch(Fraction(3), 0).shape == (0,)


# ------------------------------------------------------------- Bernoullis
def _binomial_ok(hits: int, n: int, p: float) -> bool:
    sd = math.sqrt(n * p * (1 - p)) or 1e-9
    return abs(hits - n * p) <= ALPHA_Z * 1.2 * sd + 1e-9


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(1, 3), Fraction(1), Fraction(5, 2), Fraction(4)])
def test_bernoulli_exp_scalar_and_batch(gamma: Fraction) -> None:
    p = math.exp(-float(gamma))
    rng = SeededRandBelow(4)
    n_scalar = 20_000
    hits = sum(dp_noise.bernoulli_exp(gamma, rng) for _ in range(n_scalar))
    assert _binomial_ok(hits, n_scalar, p)
    n = 200_000
    b = dp_noise.bernoulli_exp_batch(
        np.full(n, gamma.numerator, dtype=np.int64), gamma.denominator, rng=np.random.default_rng(16)
    )
    assert b.dtype == bool
    assert _binomial_ok(int(b.sum()), n, p)


def test_bernoulli_exp_batch_mixed_gammas_and_big_denominator() -> None:
    """Per-element gammas with a denominator beyond 2^64 (multi-word uniform path)."""
    den = 3 << 70
    gammas = [Fraction(0), Fraction(1, 2), Fraction(2), Fraction(7, 3)]
    n_each = 50_000
    num = np.array([int(g * den) for g in gammas for _ in range(n_each)], dtype=object)
    b = dp_noise.bernoulli_exp_batch(num, den, rng=np.random.default_rng(17))
    for i, g in enumerate(gammas):
        assert _binomial_ok(int(b[i * n_each : (i + 1) * n_each].sum()), n_each, math.exp(-float(g)))


def test_bernoulli_exp_batch_unsigned_input() -> None:
    b = dp_noise.bernoulli_exp_batch(np.zeros(10, dtype=np.uint64), 1, rng=np.random.default_rng(1))
    assert b.all()


def test_bernoulli_rational() -> None:
    rng = SeededRandBelow(5)
    n = 20_000
    hits = sum(dp_noise.bernoulli(Fraction(2, 7), rng) for _ in range(n))
    assert _binomial_ok(hits, n, 2 / 7)
    assert dp_noise.bernoulli(Fraction(1), rng) == 1
    assert dp_noise.bernoulli(Fraction(0), rng) == 0


# -------------------------------------------------------------- uniforms
@pytest.mark.parametrize("bound", [6, 7, (1 << 63) + 5])
def test_uniform_below_native_is_uniform(bound: int) -> None:
    n = 120_000
    u = dp_noise.uniform_below_batch(bound, n, rng=np.random.default_rng(18))
    assert u.dtype == np.uint64 and int(u.max()) < bound
    cells = 6
    obs = np.bincount((u.astype(object) * cells // bound).astype(np.int64), minlength=cells)
    # cell k covers ceil/floor of bound*k/cells values; near-uniform for these bounds
    exp = np.array([(-(-bound * (k + 1) // cells)) - (-(-bound * k // cells)) for k in range(cells)]) / bound * n
    assert float(((obs - exp) ** 2 / exp).sum()) < chi2_critical(cells - 1)


def test_uniform_below_full_word_and_one() -> None:
    g = np.random.default_rng(1)
    assert dp_noise.uniform_below_batch(1 << 64, 5, rng=g).dtype == np.uint64
    assert not dp_noise.uniform_below_batch(1, 5, rng=g).any()


def test_uniform_below_multiword_is_uniform() -> None:
    bound = 3 * (1 << 64) + 1
    n = 60_000
    u = dp_noise.uniform_below_batch(bound, n, rng=np.random.default_rng(19))
    assert u.dtype == object
    top = np.array([int(v) * 3 // bound for v in u])
    obs = np.bincount(top, minlength=3)
    assert float(((obs - n / 3) ** 2 / (n / 3)).sum()) < chi2_critical(2)


@settings(max_examples=60, deadline=None)
@given(bound=st.integers(min_value=1, max_value=1 << 200), seed=st.integers(0, 2**32 - 1))
def test_uniform_below_stays_in_range(bound: int, seed: int) -> None:
    u = dp_noise.uniform_below_batch(bound, 64, rng=np.random.default_rng(seed))
    assert all(0 <= int(v) < bound for v in u)


@settings(max_examples=40, deadline=None)
@given(
    num=st.integers(1, 10**6),
    den=st.integers(1, 10**6),
    seed=st.integers(0, 2**32 - 1),
)
def test_laplace_batch_any_rational_scale_returns_int64(num: int, den: int, seed: int) -> None:
    x = dp_noise.discrete_laplace_batch(Fraction(num, den), 50, rng=np.random.default_rng(seed))
    assert x.dtype == np.int64 and x.shape == (50,)


# ------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [1.0, 0.5, "1", True, None])
def test_parameters_must_be_exact_rationals(bad) -> None:
    with pytest.raises(TypeError):
        dp_noise.discrete_gaussian_batch(bad, 3)
    with pytest.raises(TypeError):
        dp_noise.discrete_laplace(bad)
    with pytest.raises(TypeError):
        dp_noise.bernoulli_exp(bad)


@pytest.mark.parametrize("bad", [Fraction(0), Fraction(-1, 2), -3])
def test_parameters_must_be_positive(bad) -> None:
    with pytest.raises(ValueError, match="> 0"):
        dp_noise.discrete_gaussian(bad)
    with pytest.raises(ValueError, match="> 0"):
        dp_noise.discrete_laplace_batch(bad, 3)


def test_parameters_outside_supported_range() -> None:
    with pytest.raises(ValueError, match="range"):
        dp_noise.discrete_laplace_batch(Fraction(1 << 48), 1)
    with pytest.raises(ValueError, match="range"):
        dp_noise.discrete_laplace(Fraction(1, 1 << 62))
    with pytest.raises(ValueError, match="2\\^94"):
        dp_noise.discrete_gaussian_batch(Fraction(1 << 94), 1)


def test_bernoulli_validation() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dp_noise.bernoulli(Fraction(3, 2))
    with pytest.raises(ValueError, match=">= 0"):
        dp_noise.bernoulli_exp(Fraction(-1, 2))
    with pytest.raises(ValueError, match=">= 0"):
        dp_noise.bernoulli_exp_batch(np.array([1, -1]), 2)
    with pytest.raises(ValueError, match="1-D"):
        dp_noise.bernoulli_exp_batch(np.ones((2, 2), dtype=np.int64), 2)
    with pytest.raises(ValueError, match="1-D"):
        dp_noise.bernoulli_exp_batch(np.ones(2), 2)
    with pytest.raises(ValueError, match="denominator"):
        dp_noise.bernoulli_exp_batch(np.ones(2, dtype=np.int64), 0)


def test_count_bound_and_rng_validation() -> None:
    with pytest.raises(ValueError, match="count"):
        dp_noise.discrete_gaussian_batch(Fraction(2), -1)
    with pytest.raises(ValueError, match="count"):
        dp_noise.discrete_laplace_batch(Fraction(2), True)
    with pytest.raises(ValueError, match="bound"):
        dp_noise.uniform_below_batch(0, 3)
    with pytest.raises(TypeError, match="Generator"):
        dp_noise.discrete_gaussian_batch(Fraction(2), 3, rng=random.Random(1))


@pytest.mark.parametrize("den", [(1 << 63) - 1, 1 << 63, (1 << 63) + 1, (1 << 64) - 1, 1 << 64])
def test_bernoulli_exp_batch_denominators_around_the_word_size(den: int) -> None:
    """den * K crosses 2^64 inside Algorithm 1's loop: native and big-integer comparisons must agree."""
    n = 100_000
    num = np.full(n, den // 2 + 1, dtype=object)
    b = dp_noise.bernoulli_exp_batch(num, den, rng=np.random.default_rng(23))
    assert _binomial_ok(int(b.sum()), n, math.exp(-(den // 2 + 1) / den))
