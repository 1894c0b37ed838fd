"""Prime fields of draft-irtf-cfrg-vdaf-18, Section 6.1, as numpy vectors.

Two NTT-friendly fields (Section 6.1.3, Table "Parameters for the finite fields"):

* `Field64`:  p = 2^32 * 4294967295 + 1 (Goldilocks), ENCODED_SIZE 8, 2-adicity 32.
  Vectors are ``uint64`` arrays; products use 32-bit limbs and the Goldilocks
  reduction 2^64 = 2^32 - 1, 2^96 = -1 (mod p).
* `Field128`: p = 2^66 * 4611686018427387897 + 1, ENCODED_SIZE 16, 2-adicity 66.
  Vectors are ``object`` arrays of Python ints (exact; numpy dispatches the
  element loop in C).  A two-limb uint64 variant was not faster below ~10^4
  elements once reductions were counted, so the simple exact form is kept.

Every array routine has a scalar twin on Python ints (``s_add``, ``s_mul``, ...);
tests check they agree.  Encoding is little-endian, fixed width; decoding
rejects wrong lengths and values >= p with `mpc.errors.DecodeError`.

Must not be used for: constant-time arithmetic on long-term secrets (numpy
branches on data through ``np.where``), or for anything but these two moduli.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from mpc.errors import DecodeError

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


class _PrimeField:
    """Shared API of the two fields; subclasses set the constants and kernels."""

    MODULUS: int
    ENCODED_SIZE: int
    GEN_ORDER: int
    GENERATOR: int  # element of order GEN_ORDER (Section 6.1.3, Field.gen())
    NAME: str
    dtype: Any

    # ---- scalar twins (Python ints, canonical representatives) ----
    @classmethod
    def s_add(cls, x: int, y: int) -> int:
        return (x + y) % cls.MODULUS

    @classmethod
    def s_sub(cls, x: int, y: int) -> int:
        return (x - y) % cls.MODULUS

    @classmethod
    def s_neg(cls, x: int) -> int:
        return (-x) % cls.MODULUS

    @classmethod
    def s_mul(cls, x: int, y: int) -> int:
        return (x * y) % cls.MODULUS

    @classmethod
    def s_pow(cls, x: int, e: int) -> int:
        return pow(x, e, cls.MODULUS)

    @classmethod
    def s_inv(cls, x: int) -> int:
        if x % cls.MODULUS == 0:
            raise ZeroDivisionError("0 has no inverse")
        return pow(x, -1, cls.MODULUS)

    # ---- construction / conversion ----
    @classmethod
    def from_ints(cls, values: Iterable[int] | np.ndarray) -> np.ndarray:
        """Vector of field elements from integers (negative values are negated, Section 6.1)."""
        ints = [int(v) % cls.MODULUS for v in values]
        return np.array(ints, dtype=cls.dtype).reshape(len(ints))

    @classmethod
    def to_ints(cls, vec: np.ndarray) -> list[int]:
        return [int(v) for v in np.asarray(vec).reshape(-1)]

    @classmethod
    def zeros(cls, n: int) -> np.ndarray:
        return cls.from_ints([0] * n) if cls.dtype is object else np.zeros(n, dtype=np.uint64)

    @classmethod
    def full(cls, n: int, value: int) -> np.ndarray:
        return cls.from_ints([value % cls.MODULUS] * n)

    @classmethod
    def root_of_unity(cls, n: int) -> int:
        """Primitive n-th root of unity, n a power of two dividing GEN_ORDER."""
        if n <= 0 or n & (n - 1) or cls.GEN_ORDER % n:
            raise ValueError(f"no root of unity of order {n} in {cls.NAME}")
        return pow(cls.GENERATOR, cls.GEN_ORDER // n, cls.MODULUS)

    # ---- encoding (Section 6.1.2, encode_vec / decode_vec) ----
    @classmethod
    def decode_vec(cls, data: bytes) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def encode_vec(cls, vec: np.ndarray) -> bytes:
        raise NotImplementedError

    # ---- generic vector ops built on add/mul ----
    @classmethod
    def add(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def sub(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def neg(cls, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def mul(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def sum(cls, a: np.ndarray, axis: int = -1) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def const(cls, x: int) -> np.ndarray:
        """Shape-(1,) vector holding x, for broadcasting against vectors."""
        return cls.from_ints([x])

    @classmethod
    def inner(cls, a: np.ndarray, b: np.ndarray) -> int:
        """Inner product <a, b> as a Python int."""
        return int(cls.sum(cls.mul(a, b), axis=-1)[0])

    @classmethod
    def pow(cls, a: np.ndarray, e: int) -> np.ndarray:
        """Element-wise a^e by square-and-multiply over the whole vector."""
        if e < 0:
            return cls.pow(cls.inv(a), -e)
        result = cls._ones_like(a)
        base = a
        while e:
            if e & 1:
                result = cls.mul(result, base)
            e >>= 1
            if e:
                base = cls.mul(base, base)
        return result

    @classmethod
    def _ones_like(cls, a: np.ndarray) -> np.ndarray:
        if cls.dtype is not object:
            return np.ones(a.shape, dtype=np.uint64)
        out = np.empty(a.shape, dtype=object)
        out.fill(1)
        return out

    @classmethod
    def cumprod(cls, a: np.ndarray) -> np.ndarray:
        """Prefix products along the last axis in log2(n) vectorised steps (Hillis-Steele)."""
        out = a.copy()
        n = out.shape[-1]
        shift = 1
        while shift < n:
            upd = cls.mul(out[..., shift:], out[..., :-shift])
            out = out.copy()
            out[..., shift:] = upd
            shift <<= 1
        return out

    @classmethod
    def inv(cls, a: np.ndarray) -> np.ndarray:
        """Batch inversion (Montgomery's trick with vectorised prefix/suffix scans).

        Raises ZeroDivisionError if any element is 0.
        """
        a = np.asarray(a)
        n = a.shape[-1]
        if n == 0:
            return a.copy()
        if np.any(a == 0):
            raise ZeroDivisionError("0 has no inverse")
        prefix = cls.cumprod(a)
        suffix = cls.cumprod(a[..., ::-1])[..., ::-1]
        total = int(prefix[-1]) if a.ndim == 1 else None
        if total is None:
            raise ValueError("inv expects a 1-D vector")
        t_inv = cls.s_inv(total)
        one = cls.const(1)
        left = np.concatenate([one, prefix[:-1]])
        right = np.concatenate([suffix[1:], one])
        return cls.mul(cls.mul(left, right), cls.const(t_inv))

    @classmethod
    def powers(cls, x: int, n: int) -> np.ndarray:
        """[1, x, x^2, ..., x^(n-1)] in log2(n) vectorised doublings."""
        out = cls.const(1)
        xk = x % cls.MODULUS  # x^len(out)
        while out.shape[0] < n:
            out = np.concatenate([out, cls.mul(out, cls.const(xk))])
            xk = cls.s_mul(xk, xk)
        return out[:n]

    @classmethod
    def encode_into_bit_vec(cls, values: np.ndarray | list[int], bits: int) -> np.ndarray:
        """Little-endian bit decomposition of each value (Section 6.1.2), flattened."""
        vals = np.asarray([int(v) for v in values], dtype=object)
        if bits == 0:
            return cls.zeros(0)
        if any(v < 0 or v >> bits for v in vals):
            raise ValueError("value does not fit in the requested number of bits")
        if bits <= 63:
            u = vals.astype(np.uint64)
            shifts = np.arange(bits, dtype=np.uint64)
            out = (u[:, None] >> shifts[None, :]) & np.uint64(1)
        else:
            shifts = np.arange(bits, dtype=object)
            out = (vals[:, None] >> shifts[None, :]) & 1
        flat = out.reshape(-1)
        return flat.astype(np.uint64) if cls.dtype is not object else flat.astype(object)


class Field64(_PrimeField):
    """GF(2^64 - 2^32 + 1) on uint64 vectors."""

    MODULUS = 2**32 * 4294967295 + 1
    ENCODED_SIZE = 8
    GEN_ORDER = 2**32
    GENERATOR = pow(7, 4294967295, MODULUS)
    NAME = "Field64"
    dtype = np.uint64

    _P = np.uint64(MODULUS)
    _EPS = np.uint64(0xFFFFFFFF)  # 2^64 mod p

    @classmethod
    def from_ints(cls, values: Iterable[int] | np.ndarray) -> np.ndarray:
        if isinstance(values, np.ndarray) and values.dtype == np.uint64:
            return values - (values >= cls._P) * cls._P
        return np.array([int(v) % cls.MODULUS for v in values], dtype=np.uint64)

    # Conditional corrections are "x - flag * P" (bool * uint64): several times
    # faster than np.where on this numpy.
    @classmethod
    def add(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        s = a + b
        return s - ((s < a) | (s >= cls._P)) * cls._P

    @classmethod
    def sub(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a - b) + (a < b) * cls._P

    @classmethod
    def neg(cls, a: np.ndarray) -> np.ndarray:
        return (cls._P - a) - (a == 0) * cls._P

    @classmethod
    def _reduce128(cls, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """hi*2^64 + lo mod p, using 2^64 = 2^32-1 and 2^96 = -1 (mod p)."""
        h_hi = hi >> _S32
        h_lo = hi & _M32
        t0 = (lo - h_hi) - (lo < h_hi) * cls._EPS
        t1 = h_lo * cls._EPS
        r = t0 + t1
        r = r + (r < t1) * cls._EPS
        return r - (r >= cls._P) * cls._P

    @classmethod
    def mul(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a0 = a & _M32
        a1 = a >> _S32
        b0 = b & _M32
        b1 = b >> _S32
        ll = a0 * b0
        lh = a0 * b1
        hl = a1 * b0
        hh = a1 * b1
        mid = lh + hl
        mid_carry = (mid < lh) * np.uint64(1 << 32)
        lo = ll + (mid << _S32)
        hi = hh + (mid >> _S32) + mid_carry + (lo < ll)
        return cls._reduce128(hi, lo)

    @classmethod
    def sum(cls, a: np.ndarray, axis: int = -1) -> np.ndarray:
        lo = np.sum(a & _M32, axis=axis, dtype=np.uint64)
        hi = np.sum(a >> _S32, axis=axis, dtype=np.uint64)
        lo = np.atleast_1d(lo)
        hi = np.atleast_1d(hi)
        hi = hi - (hi >= cls._P) * cls._P
        lo = lo - (lo >= cls._P) * cls._P
        two32 = np.full(hi.shape, 1 << 32, dtype=np.uint64)
        return cls.add(lo, cls.mul(hi, two32))

    @classmethod
    def encode_vec(cls, vec: np.ndarray) -> bytes:
        return np.ascontiguousarray(vec, dtype="<u8").tobytes()

    @classmethod
    def decode_vec(cls, data: bytes) -> np.ndarray:
        if len(data) % 8:
            raise DecodeError(f"{cls.NAME}: length {len(data)} is not a multiple of 8")
        vec = np.frombuffer(data, dtype="<u8").astype(np.uint64)
        if np.any(vec >= cls._P):
            raise DecodeError(f"{cls.NAME}: element >= modulus")
        return vec


class Field128(_PrimeField):
    """GF(2^66 * 4611686018427387897 + 1) on object vectors of Python ints."""

    MODULUS = 2**66 * 4611686018427387897 + 1
    ENCODED_SIZE = 16
    GEN_ORDER = 2**66
    GENERATOR = pow(7, 4611686018427387897, MODULUS)
    NAME = "Field128"
    dtype = object

    _M64 = (1 << 64) - 1

    @classmethod
    def from_ints(cls, values: Iterable[int] | np.ndarray) -> np.ndarray:
        p = cls.MODULUS
        ints = [int(v) % p for v in values]
        out = np.empty(len(ints), dtype=object)
        out[:] = ints
        return out

    @classmethod
    def zeros(cls, n: int) -> np.ndarray:
        out = np.empty(n, dtype=object)
        out.fill(0)
        return out

    @classmethod
    def add(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b) % cls.MODULUS

    @classmethod
    def sub(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a - b) % cls.MODULUS

    @classmethod
    def neg(cls, a: np.ndarray) -> np.ndarray:
        return (-a) % cls.MODULUS

    @classmethod
    def mul(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b) % cls.MODULUS

    @classmethod
    def sum(cls, a: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.atleast_1d(np.sum(a, axis=axis) % cls.MODULUS).astype(object)

    @classmethod
    def encode_vec(cls, vec: np.ndarray) -> bytes:
        vec = np.asarray(vec, dtype=object)
        pairs = np.empty((vec.shape[0], 2), dtype="<u8")
        pairs[:, 0] = (vec & cls._M64).astype(np.uint64)
        pairs[:, 1] = (vec >> 64).astype(np.uint64)
        return pairs.tobytes()

    @classmethod
    def decode_vec(cls, data: bytes) -> np.ndarray:
        if len(data) % 16:
            raise DecodeError(f"{cls.NAME}: length {len(data)} is not a multiple of 16")
        pairs = np.frombuffer(data, dtype="<u8").reshape(-1, 2)
        vec = (pairs[:, 1].astype(object) << 64) | pairs[:, 0].astype(object)
        if np.any(vec >= cls.MODULUS):
            raise DecodeError(f"{cls.NAME}: element >= modulus")
        return vec


FIELDS: dict[str, type[_PrimeField]] = {"Field64": Field64, "Field128": Field128}

__all__ = ["Field64", "Field128", "FIELDS"]
