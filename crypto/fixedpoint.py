"""Fixed-point encoding of real vectors into Z/2^64 (two's complement).

``encode(v) = round(clip(v, -clip, clip) * 2^frac_bits) mod 2^64``: sums of
encoded vectors decode exactly to the sum of the rounded values as long as the
true sum stays within +-2^63 / 2^frac_bits, which `max_summands` states.
Round-trip error per element is at most 2^-(frac_bits+1) for |v| <= clip.

Not for: values that need more than 62 bits after scaling.
"""

from __future__ import annotations

import numpy as np

from twinmpc.crypto import ring
from twinmpc.crypto.errors import NonFiniteValue

MAX_FRAC_BITS = 40


def _check(frac_bits: int, clip: float) -> None:
    if not 1 <= frac_bits <= MAX_FRAC_BITS:
        raise ValueError(f"frac_bits must be in 1..{MAX_FRAC_BITS}")
    if not (np.isfinite(clip) and clip > 0):
        raise ValueError("clip must be a positive finite number")
    if clip * 2.0**frac_bits >= 2.0**62:
        raise ValueError("clip * 2^frac_bits must stay below 2^62")


def encode(values: np.ndarray, frac_bits: int, clip: float) -> np.ndarray:
    """Clip, scale and round floats into ring elements."""
    _check(frac_bits, clip)
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise NonFiniteValue("fixed-point input contains NaN or infinity")
    scaled = np.rint(np.clip(v, -clip, clip) * 2.0**frac_bits).astype(np.int64)
    return scaled.astype(ring.DTYPE)


def decode(encoded: np.ndarray, frac_bits: int) -> np.ndarray:
    """Signed decode of a (summed) fixed-point vector back to floats."""
    return ring.to_signed(np.asarray(encoded, dtype=ring.DTYPE)).astype(np.float64) / 2.0**frac_bits


def max_summands(frac_bits: int, clip: float) -> int:
    """How many clipped values can be summed before the signed range overflows."""
    _check(frac_bits, clip)
    return int(2**63 // (int(np.ceil(clip * 2.0**frac_bits)) + 1))
