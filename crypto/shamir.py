"""t-of-n Shamir secret sharing of whole field vectors (Field64 / Field128).

A secret vector s (length m) is hidden in the constant terms of m random
polynomials of degree t-1; party i (1 <= i <= n) gets their values at x = i.
Any t shares reconstruct s by Lagrange interpolation at 0; any t-1 shares are
uniformly distributed and independent of s.

Randomness for the t-1 random coefficient rows is expanded from a 32-byte seed
with XofTurboShake128 (domain-separated); the seed is ``rand`` when given
(tests) or ``os.urandom(32)``.

Share wire format: index (2 bytes, big-endian) || encode_vec(values).

Must not be used for: verifiable sharing (no commitments: a malicious dealer
or share holder is not detected), or with n >= p.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np

from twinmpc.crypto.errors import DecodeError
from twinmpc.crypto.field import _PrimeField
from twinmpc.crypto.xof import XofTurboShake128

_DST = b"twinmpc/v1/shamir/coefficients"
MAX_PARTIES = 65535


@dataclass(frozen=True)
class ShamirShare:
    """Party `index`'s share: the vector of evaluations at x = index (redacted in repr)."""

    index: int
    values: np.ndarray = dc_field(repr=False)

    def __repr__(self) -> str:
        return f"ShamirShare(index={self.index}, values=<redacted {self.values.shape[0]} elements>)"

    def encode(self, field: type[_PrimeField]) -> bytes:
        return self.index.to_bytes(2, "big") + field.encode_vec(self.values)

    @classmethod
    def decode(cls, field: type[_PrimeField], data: bytes, length: int) -> ShamirShare:
        """Parse an untrusted share of a `length`-element vector; DecodeError on any defect."""
        if len(data) != 2 + field.ENCODED_SIZE * length:
            raise DecodeError("Shamir share has the wrong length")
        index = int.from_bytes(data[:2], "big")
        if index == 0:
            raise DecodeError("Shamir share index 0 is the secret's position")
        return cls(index, field.decode_vec(data[2:]))


def share(
    field: type[_PrimeField], secret: np.ndarray, t: int, n: int, rand: bytes | None = None
) -> list[ShamirShare]:
    """Split `secret` into n shares, any t of which reconstruct it."""
    if not 1 <= t <= n:
        raise ValueError("need 1 <= t <= n")
    if n > MAX_PARTIES or n >= field.MODULUS:
        raise ValueError("too many parties")
    secret = np.asarray(secret)
    if secret.ndim != 1:
        raise ValueError("secret must be a 1-D field vector")
    m = secret.shape[0]
    seed = os.urandom(32) if rand is None else rand
    if len(seed) != 32:
        raise ValueError("rand must be 32 bytes")
    rows = [secret]
    if t > 1 and m > 0:
        random_part = XofTurboShake128(seed, _DST + field.NAME.encode(), t.to_bytes(2, "big")).next_vec(
            field, (t - 1) * m
        )
        rows += [random_part[k * m : (k + 1) * m] for k in range(t - 1)]
    elif t > 1:
        rows += [field.zeros(0)] * (t - 1)
    xs = field.from_ints(range(1, n + 1)).reshape(n, 1)
    # Horner over the t coefficient rows, each step vectorised over (n, m).
    acc = np.repeat(rows[-1].reshape(1, m), n, axis=0)
    for coeff in reversed(rows[:-1]):
        acc = field.add(field.mul(acc, xs), coeff.reshape(1, m))
    return [ShamirShare(i + 1, acc[i].copy()) for i in range(n)]


def lagrange_at_zero(field: type[_PrimeField], indices: Sequence[int]) -> np.ndarray:
    """lam_i = prod_{j != i} x_j / (x_j - x_i), so that f(0) = sum_i lam_i f(x_i)."""
    k = len(indices)
    xs = field.from_ints(indices)
    diff = field.sub(xs.reshape(1, k), xs.reshape(k, 1))  # diff[i, j] = x_j - x_i
    eye = np.eye(k, dtype=bool)
    one = field.from_ints([1] * (k * k)).reshape(k, k)
    den_terms = np.where(eye, one, diff)
    num_terms = np.where(eye, one, np.repeat(xs.reshape(1, k), k, axis=0))
    num = field.cumprod(num_terms)[:, -1]
    den = field.cumprod(den_terms)[:, -1]
    return field.mul(num, field.inv(den))


def reconstruct(field: type[_PrimeField], shares: Sequence[ShamirShare], t: int) -> np.ndarray:
    """Recover the secret from at least t shares (the first t are used)."""
    if t < 1:
        raise ValueError("t must be positive")
    if len(shares) < t:
        raise ValueError(f"need at least {t} shares, got {len(shares)}")
    chosen = list(shares[:t])
    indices = [s.index for s in chosen]
    if any(not isinstance(i, int) or not 1 <= i <= MAX_PARTIES or i >= field.MODULUS for i in indices):
        raise ValueError("share index out of range")
    if len(set(indices)) != t:
        raise ValueError("duplicate share index")
    lengths = {s.values.shape for s in chosen}
    if len(lengths) != 1:
        raise ValueError("shares have different lengths")
    lam = lagrange_at_zero(field, indices)
    stacked = np.stack([s.values for s in chosen])  # (t, m)
    if stacked.shape[1] == 0:
        return field.zeros(0)
    return field.sum(field.mul(stacked, lam.reshape(t, 1)), axis=0)


__all__ = ["ShamirShare", "lagrange_at_zero", "reconstruct", "share"]
