"""Vectors over the ring Z/2^64 on numpy uint64.

numpy's uint64 arithmetic wraps modulo 2^64, which is exactly ring arithmetic;
this module pins the dtype, gives the canonical little-endian byte encoding,
and converts to and from signed values (two's complement) for decoding
aggregates that carry negative DP noise.

Not for: anything that needs division or a field (use `crypto.field`).
"""

from __future__ import annotations

import numpy as np

from twinmpc.crypto.errors import DecodeError

DTYPE = np.dtype("<u8")
ELEMENT_SIZE = 8
MODULUS = 1 << 64


def zeros(n: int) -> np.ndarray:
    """A zero vector of length n."""
    return np.zeros(n, dtype=DTYPE)


def from_ints(values) -> np.ndarray:
    """Reduce Python/numpy integers (any sign, any size) into the ring."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f" and not isinstance(values, np.ndarray):
        # numpy promotes a list mixing int64- and uint64-sized ints to float64: keep them exact
        arr = np.asarray(values, dtype=object)
    if arr.dtype.kind in "iu":
        return arr.astype(DTYPE)  # C cast: two's complement for negatives
    if arr.dtype.kind != "O":
        raise TypeError(f"ring elements must be integers, got dtype {arr.dtype}")
    flat = arr.ravel()
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in flat):
        raise TypeError("ring elements must be integers")
    return np.array([int(v) % MODULUS for v in flat], dtype=DTYPE).reshape(arr.shape)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.add(a, b, dtype=DTYPE)


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.subtract(a, b, dtype=DTYPE)


def neg(a: np.ndarray) -> np.ndarray:
    return np.subtract(np.uint64(0), a, dtype=DTYPE)


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.multiply(a, b, dtype=DTYPE)


def inner(a: np.ndarray, b: np.ndarray) -> int:
    """Inner product modulo 2^64 (wrapping multiply-add, no overflow to float)."""
    return int(np.sum(np.multiply(a, b, dtype=DTYPE), dtype=DTYPE))


def to_signed(a: np.ndarray) -> np.ndarray:
    """Two's complement view: values >= 2^63 become negative int64."""
    return np.asarray(a, dtype=DTYPE).view(np.int64)


def encode(a: np.ndarray) -> bytes:
    """Canonical encoding: little-endian 8 bytes per element."""
    return np.ascontiguousarray(a, dtype=DTYPE).tobytes()


def decode(data: bytes, length: int | None = None) -> np.ndarray:
    """Decode the canonical encoding; rejects a ragged or wrong-length input."""
    if len(data) % ELEMENT_SIZE:
        raise DecodeError(f"ring vector encoding has {len(data)} bytes, not a multiple of {ELEMENT_SIZE}")
    if length is not None and len(data) != length * ELEMENT_SIZE:
        raise DecodeError(f"ring vector has {len(data) // ELEMENT_SIZE} elements, expected {length}")
    return np.frombuffer(data, dtype=DTYPE).copy()
