"""Exact discrete noise samplers for differential privacy, from integers only.

Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential Privacy"
(NeurIPS 2020, arXiv:2004.00010), Section 5:

* Algorithm 1: Bernoulli(exp(-gamma)) for a rational gamma >= 0,
* Algorithm 2: discrete Laplace ``P(x) ~ exp(-|x| / scale)`` for a rational scale,
* Algorithm 3: discrete Gaussian ``P(x) ~ exp(-x^2 / (2 sigma^2))`` for a rational sigma^2.

Every decision is an integer comparison ``U < num`` with ``U`` uniform in
``[0, den)``; there is no floating point anywhere, so the output distribution is
exactly the stated one (floating-point Laplace leaks through its rounding,
Mironov 2012, "On significance of the least significant bits for DP").

Two forms with the same algorithm:

* scalar (``discrete_gaussian``, ...): Python ints, randomness from an object
  with ``randbelow(n)``; production default is the `secrets` module (OS CSPRNG).
* batch (``discrete_gaussian_batch``, ...): numpy ``int64`` arrays, every
  rejection loop run over the still-active samples with masks; uniform integers
  are drawn in bulk from ``os.urandom`` (64-bit words, unbiased by rejection).
  Tests may pass a seeded ``numpy.random.Generator`` instead, and only tests.

Parameter limits (checked, `ValueError` otherwise): a Laplace scale ``t/s`` needs
``t < 2^48`` and ``s < 2^62``; a Gaussian ``sigma^2`` below ``2^94``.  Inside
those limits native ``uint64`` arithmetic is used where every value provably
fits, and exact Python integers (numpy ``object`` arrays) where it may not.

Not for: anything but DP noise; the samplers are not constant time (their
running time depends on the sample, which CKS20 Section 5.2 discusses).
"""

from __future__ import annotations

import os
import secrets
from fractions import Fraction
from math import isqrt
from typing import Protocol

import numpy as np

__all__ = [
    "RandBelow",
    "bernoulli",
    "bernoulli_exp",
    "discrete_laplace",
    "discrete_gaussian",
    "bernoulli_exp_batch",
    "discrete_laplace_batch",
    "discrete_gaussian_batch",
    "uniform_below_batch",
    "MAX_LAPLACE_NUMERATOR",
    "MAX_LAPLACE_DENOMINATOR",
    "MAX_GAUSSIAN_SIGMA2",
]

MAX_LAPLACE_NUMERATOR = 1 << 48
MAX_LAPLACE_DENOMINATOR = 1 << 62
MAX_GAUSSIAN_SIGMA2 = 1 << 94
_TWO64 = 1 << 64
_INT64_LIMIT = 1 << 63


class RandBelow(Protocol):
    """Scalar randomness seam: ``randbelow(n)`` uniform in ``[0, n)``."""

    def randbelow(self, n: int, /) -> int: ...


# --------------------------------------------------------------------------
# parameter validation
# --------------------------------------------------------------------------
def _rational(value: Fraction | int, name: str) -> Fraction:
    """Accept only exact rationals: a float parameter would reintroduce rounding."""
    if isinstance(value, bool) or not isinstance(value, (Fraction, int)):
        raise TypeError(f"{name} must be a fractions.Fraction or int, got {type(value).__name__}")
    return Fraction(value)


def _check_laplace_scale(scale: Fraction | int) -> tuple[int, int]:
    """Return (t, s) with scale = t / s as in CKS20 Algorithm 2."""
    q = _rational(scale, "scale")
    if q <= 0:
        raise ValueError(f"discrete Laplace scale must be > 0, got {q}")
    if q.numerator >= MAX_LAPLACE_NUMERATOR or q.denominator >= MAX_LAPLACE_DENOMINATOR:
        raise ValueError(f"discrete Laplace scale {q} outside the supported range (t < 2^48, s < 2^62)")
    return q.numerator, q.denominator


def _check_sigma2(sigma2: Fraction | int) -> Fraction:
    q = _rational(sigma2, "sigma2")
    if q <= 0:
        raise ValueError(f"discrete Gaussian sigma^2 must be > 0, got {q}")
    if q >= MAX_GAUSSIAN_SIGMA2:
        raise ValueError(f"discrete Gaussian sigma^2 = {q} is >= 2^94, outside the supported range")
    return q


def _check_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample count must be a non-negative int, got {n!r}")
    return int(n)


# --------------------------------------------------------------------------
# scalar samplers (CKS20 Algorithms 1-3 verbatim, Python ints)
# --------------------------------------------------------------------------
def bernoulli(p: Fraction, rng: RandBelow | None = None) -> int:
    """Bernoulli(p) for a rational p in [0, 1]: ``randbelow(den) < num``."""
    p = _rational(p, "p")
    if not 0 <= p <= 1:
        raise ValueError(f"Bernoulli probability must lie in [0, 1], got {p}")
    source = secrets if rng is None else rng
    return int(source.randbelow(p.denominator) < p.numerator)


def bernoulli_exp(gamma: Fraction | int, rng: RandBelow | None = None) -> int:
    """Bernoulli(exp(-gamma)) for a rational gamma >= 0 (CKS20 Algorithm 1)."""
    gamma = _rational(gamma, "gamma")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    source = secrets if rng is None else rng
    whole = gamma.numerator // gamma.denominator
    for _ in range(whole):  # exp(-gamma) = exp(-1)^floor(gamma) * exp(-frac(gamma))
        if not _bernoulli_exp_unit(Fraction(1), source):
            return 0
    return _bernoulli_exp_unit(gamma - whole, source)


def _bernoulli_exp_unit(gamma: Fraction, source: RandBelow) -> int:
    """Algorithm 1 for gamma in [0, 1]: K stops at the first failing Bern(gamma/K); exp(-gamma) = P(K odd)."""
    k = 1
    while source.randbelow(gamma.denominator * k) < gamma.numerator:
        k += 1
    return k & 1


def discrete_laplace(scale: Fraction | int, rng: RandBelow | None = None) -> int:
    """One sample with ``P(x) = (e^(1/scale) - 1) / (e^(1/scale) + 1) * e^(-|x|/scale)`` (CKS20 Algorithm 2)."""
    t, s = _check_laplace_scale(scale)
    source = secrets if rng is None else rng
    return _discrete_laplace_ts(t, s, source)


def _discrete_laplace_ts(t: int, s: int, source: RandBelow) -> int:
    while True:
        u = source.randbelow(t)
        if not _bernoulli_exp_unit(Fraction(u, t), source):
            continue
        v = 0
        while _bernoulli_exp_unit(Fraction(1), source):
            v += 1
        y = (u + t * v) // s
        negative = source.randbelow(2)
        if negative and y == 0:
            continue
        return -y if negative else y


def discrete_gaussian(sigma2: Fraction | int, rng: RandBelow | None = None) -> int:
    """One sample with ``P(x) ~ exp(-x^2 / (2 sigma2))`` over the integers (CKS20 Algorithm 3)."""
    sigma2 = _check_sigma2(sigma2)
    source = secrets if rng is None else rng
    t = _gaussian_proposal_scale(sigma2)
    while True:
        y = _discrete_laplace_ts(t, 1, source)
        gamma = (abs(y) - sigma2 / t) ** 2 / (2 * sigma2)
        if bernoulli_exp(gamma, source):
            return y


def _gaussian_proposal_scale(sigma2: Fraction) -> int:
    """t = floor(sigma) + 1, computed exactly: floor(sqrt(a/b)) = isqrt(floor(a/b))."""
    return isqrt(sigma2.numerator // sigma2.denominator) + 1


# --------------------------------------------------------------------------
# bulk uniform integers
# --------------------------------------------------------------------------
class _Words:
    """64-bit uniform words: os.urandom in production, a numpy Generator in tests."""

    __slots__ = ("_gen",)

    def __init__(self, rng: np.random.Generator | None) -> None:
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
        self._gen = rng

    def draw(self, n: int) -> np.ndarray:
        if self._gen is None:
            return np.frombuffer(os.urandom(8 * n), dtype="<u8").astype(np.uint64)
        return self._gen.integers(0, _TWO64, size=n, dtype=np.uint64)


def _uniform_below(bound: int, n: int, words: _Words) -> np.ndarray:
    """n exact uniform integers in [0, bound): uint64 if bound <= 2^64, else object (multi-word)."""
    if bound <= _TWO64:
        out = words.draw(n)
        if bound == _TWO64:
            return out
        limit = _TWO64 - _TWO64 % bound  # accept w < limit so that w % bound is unbiased
        if limit < _TWO64:
            lim = np.uint64(limit)
            bad = np.flatnonzero(out >= lim)
            while bad.size:
                out[bad] = words.draw(bad.size)
                bad = bad[out[bad] >= lim]
        return out % np.uint64(bound)
    k = -(-bound.bit_length() // 64)
    span = 1 << (64 * k)
    limit = span - span % bound
    out = np.empty(n, dtype=object)
    todo = np.arange(n)
    while todo.size:
        acc = np.zeros(todo.size, dtype=object)
        for j in range(k):  # k is the word count of the bound, not a per-element loop
            acc = acc + (words.draw(todo.size).astype(object) << (64 * j))
        ok = acc < limit
        out[todo[ok]] = acc[ok] % bound
        todo = todo[~ok]
    return out


def uniform_below_batch(bound: int, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """n uniform integers in [0, bound) (uint64 array, or object array for bound > 2^64)."""
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
        raise ValueError(f"bound must be a positive int, got {bound!r}")
    return _uniform_below(bound, _check_count(n), _Words(rng))


# --------------------------------------------------------------------------
# batch samplers (same algorithms, loops over rounds, masks over samples)
# --------------------------------------------------------------------------
def _bern_exp_unit_batch(num: np.ndarray, den: int, words: _Words) -> np.ndarray:
    """Bernoulli(exp(-num_i/den)) for 0 <= num_i <= den (Algorithm 1, gamma <= 1), per element."""
    n = num.shape[0]
    result = np.zeros(n, dtype=bool)
    active = np.arange(n)
    num_u64 = num.astype(np.uint64) if den < _TWO64 else None
    num_obj: np.ndarray | None = None
    k = 1
    while active.size:
        bound = den * k
        draws = _uniform_below(bound, active.size, words)
        if bound <= _TWO64 and num_u64 is not None:
            cont = draws < num_u64[active]
        else:
            if num_obj is None:
                num_obj = num.astype(object)
            cont = (draws.astype(object) < num_obj[active]).astype(bool)
        result[active[~cont]] = bool(k & 1)
        active = active[cont]
        k += 1
    return result


def _bern_exp_one_batch(n: int, words: _Words) -> np.ndarray:
    """n independent Bernoulli(exp(-1)) draws."""
    return _bern_exp_unit_batch(np.ones(n, dtype=np.uint64), 1, words)


def _bern_exp_rational_batch(num: np.ndarray, den: int, words: _Words) -> np.ndarray:
    """Bernoulli(exp(-num_i/den)) for any num_i >= 0 (int64 or object array), Algorithm 1."""
    if num.dtype == np.int64 and den < _INT64_LIMIT:
        whole, frac = np.divmod(num, np.int64(den))
    else:
        num = num.astype(object)
        whole = num // den
        frac = num - whole * den
    result = np.ones(num.shape[0], dtype=bool)
    # exp(-gamma) = exp(-1)^floor(gamma) * exp(-frac): stop each sample at its first failure.
    remaining = whole.copy()
    active = np.flatnonzero((remaining > 0).astype(bool))
    while active.size:
        ok = _bern_exp_one_batch(active.size, words)
        result[active[~ok]] = False
        remaining[active] -= 1
        active = active[ok & (remaining[active] > 0).astype(bool)]
    alive = np.flatnonzero(result)
    if alive.size:
        result[alive] = _bern_exp_unit_batch(frac[alive], den, words)
    return result


def bernoulli_exp_batch(
    numerators: np.ndarray, denominator: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Bernoulli(exp(-numerators[i] / denominator)) per element, as a bool array."""
    if isinstance(denominator, bool) or not isinstance(denominator, int) or denominator < 1:
        raise ValueError(f"denominator must be a positive int, got {denominator!r}")
    num = np.asarray(numerators)
    if num.ndim != 1 or num.dtype.kind not in "iuO":
        raise ValueError("numerators must be a 1-D integer array")
    if num.size and bool((num < 0).any()):
        raise ValueError("numerators must be >= 0")
    if num.dtype.kind == "u":
        num = num.astype(object) if num.size and int(num.max()) >= _INT64_LIMIT else num.astype(np.int64)
    return _bern_exp_rational_batch(num, denominator, _Words(rng))


def _discrete_laplace_batch_ts(t: int, s: int, n: int, words: _Words) -> np.ndarray:
    """Algorithm 2 over n samples: each round redraws only the rejected positions."""
    out = np.empty(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        u = _uniform_below(t, pending.size, words).astype(np.int64)
        keep = _bern_exp_unit_batch(u, t, words)  # Bern(exp(-U/t)), reject on 0
        rejected = pending[~keep]
        idx = pending[keep]
        u = u[keep]
        v = np.zeros(idx.size, dtype=np.int64)  # geometric: count successes of Bern(exp(-1))
        going = np.arange(idx.size)
        while going.size:
            ok = _bern_exp_one_batch(going.size, words)
            going = going[ok]
            v[going] += 1
        if v.size and int(v.max()) >= (_INT64_LIMIT - t) // t:
            raise OverflowError("discrete Laplace draw exceeds int64 (probability below e^-32000)")
        y = (u + t * v) // s
        negative = (words.draw(idx.size) & np.uint64(1)).astype(bool)
        bad = negative & (y == 0)
        good = ~bad
        out[idx[good]] = np.where(negative[good], -y[good], y[good])
        pending = np.concatenate((rejected, idx[bad]))
    return out


def discrete_laplace_batch(scale: Fraction | int, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """n independent discrete Laplace samples (int64), same law as `discrete_laplace`."""
    t, s = _check_laplace_scale(scale)
    return _discrete_laplace_batch_ts(t, s, _check_count(n), _Words(rng))


def discrete_gaussian_batch(sigma2: Fraction | int, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """n independent discrete Gaussian samples (int64), same law as `discrete_gaussian`."""
    sigma2 = _check_sigma2(sigma2)
    n = _check_count(n)
    words = _Words(rng)
    a, b = sigma2.numerator, sigma2.denominator
    t = _gaussian_proposal_scale(sigma2)
    # gamma = (|y| - sigma2/t)^2 / (2 sigma2) = (b t |y| - a)^2 / (2 a b t^2)
    bt = b * t
    den = 2 * a * b * t * t
    out = np.empty(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        y = _discrete_laplace_batch_ts(t, 1, pending.size, words)
        mag = np.abs(y)
        top = bt * int(mag.max()) + a
        if top * top < _INT64_LIMIT:
            num = (bt * mag - a) ** 2
        else:
            num = (mag.astype(object) * bt - a) ** 2
        accept = _bern_exp_rational_batch(num, den, words)
        out[pending[accept]] = y[accept]
        pending = pending[~accept]
    return out
