"""Fixed-point encoding (crypto.fixedpoint): round-trip error bound, clipping,
non-finite input, signed sums and the `max_summands` headroom."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.crypto import fixedpoint, ring
from twinmpc.crypto.errors import NonFiniteValue


@given(
    frac_bits=st.integers(min_value=1, max_value=fixedpoint.MAX_FRAC_BITS),
    data=st.data(),
)
@settings(max_examples=150)
def test_round_trip_error_bound(frac_bits: int, data) -> None:
    clip = data.draw(st.floats(min_value=2.0**-10, max_value=min(1e6, 2.0 ** (61 - frac_bits))))
    values = data.draw(st.lists(st.floats(min_value=-clip, max_value=clip), min_size=1, max_size=20))
    enc = fixedpoint.encode(np.array(values), frac_bits, clip)
    assert enc.dtype == ring.DTYPE
    dec = fixedpoint.decode(enc, frac_bits)
    err = np.abs(dec - np.array(values))
    assert float(err.max()) <= 2.0 ** -(frac_bits + 1)


def test_known_encodings() -> None:
    enc = fixedpoint.encode(np.array([1.0, -1.0, 0.5, -0.25, 0.0]), 8, 4.0)
    assert enc.tolist() == [256, ring.MODULUS - 256, 128, ring.MODULUS - 64, 0]


def test_rounding_is_to_nearest() -> None:
    # 2^-3 steps: 0.3 -> 0.25 (2), 0.33 -> 0.375 (3); ties go to even (np.rint)
    assert fixedpoint.encode(np.array([0.3, 0.33, 0.0625, 0.1875]), 3, 1.0).tolist() == [2, 3, 0, 2]


def test_clipping() -> None:
    enc = fixedpoint.encode(np.array([10.0, -10.0, 1.5, -1.5]), 4, 1.5)
    assert fixedpoint.decode(enc, 4).tolist() == [1.5, -1.5, 1.5, -1.5]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected(bad: float) -> None:
    with pytest.raises(NonFiniteValue, match="NaN or infinity"):
        fixedpoint.encode(np.array([0.0, bad]), 8, 1.0)


@pytest.mark.parametrize(
    ("frac_bits", "clip"),
    [(0, 1.0), (fixedpoint.MAX_FRAC_BITS + 1, 1.0), (8, 0.0), (8, -1.0), (8, math.nan), (8, math.inf), (20, 2.0**42)],
)
def test_bad_parameters_rejected(frac_bits: int, clip: float) -> None:
    with pytest.raises(ValueError):
        fixedpoint.encode(np.zeros(1), frac_bits, clip)
    with pytest.raises(ValueError):
        fixedpoint.max_summands(frac_bits, clip)


def test_signed_sum_of_many_values() -> None:
    values = np.array([[0.75, -2.0], [-1.25, -0.5], [0.125, 1.0]])
    total = ring.zeros(2)
    for row in values:
        total = ring.add(total, fixedpoint.encode(row, 10, 2.0))
    assert fixedpoint.decode(total, 10).tolist() == [-0.375, -1.5]


@pytest.mark.parametrize(("frac_bits", "clip"), [(16, 1.0), (30, 4.0), (40, 1.0)])
def test_max_summands_is_safe_and_tight(frac_bits: int, clip: float) -> None:
    n = fixedpoint.max_summands(frac_bits, clip)
    top = int(math.ceil(clip * 2**frac_bits))
    assert n * top < 2**63  # n clipped values never leave the signed range
    assert (2 * n + 2) * top >= 2**63  # and the bound is not wildly conservative
    # n copies of +clip (and of -clip) decode exactly; computed as n * enc in the ring
    for sign in (1.0, -1.0):
        enc = fixedpoint.encode(np.array([sign * clip]), frac_bits, clip)
        total = ring.mul(enc, np.array([n], dtype=ring.DTYPE))
        assert int(ring.to_signed(total)[0]) == int(sign) * n * top
    # one overflow past 2^63 / top wraps to the wrong sign: that is what the bound prevents
    over = (2**63 // top) + 1
    total = ring.mul(fixedpoint.encode(np.array([clip]), frac_bits, clip), np.array([over], dtype=ring.DTYPE))
    assert int(ring.to_signed(total)[0]) < 0
