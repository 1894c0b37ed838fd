"""Prime fields of draft-irtf-cfrg-vdaf-18, Section 6.1, as numpy vectors.

The two NTT-friendly fields of the draft (Section 6.1.3, table "Parameters for
the finite fields"):

* `Field64`:  p = 2^32 * 4294967295 + 1 (Goldilocks), ENCODED_SIZE 8, 2-adicity 32.
  Vectors are ``uint64`` arrays; products use 32-bit limbs and the Goldilocks
  reduction 2^64 = 2^32 - 1, 2^96 = -1 (mod p).
* `Field128`: p = 2^66 * 4611686018427387897 + 1 = 2^128 - 28*2^64 + 1,
  ENCODED_SIZE 16, 2-adicity 66, in two interchangeable backends:

  - `Field128` stores vectors as ``object`` arrays of Python ints: the
    lowest per-call overhead, best for short vectors (<~1000 elements);
  - `Field128Limbs` stores them as (lo, hi) uint64 pairs (a structured
    dtype whose bytes are exactly the draft's little-endian encoding) and
    multiplies with 32-bit limbs whose eight product columns fold straight
    into four with 2^128 = 28*2^64 - 1: ~150 numpy passes per product,
    faster than Python ints from about a hundred elements (shorter products
    go through Python ints).

  Both agree bit for bit (tests); Prio3 picks one by circuit size, and
  `LARGE` / `SMALL` name the other backend for one-off big or tiny work.

`Field64Small` is Field64 on object arrays, for the same reason: numpy's
per-call overhead dominates the 25-pass uint64 product on vectors of a few
elements (Count, Sum).

Every class has scalar twins on Python ints (``s_add``, ``s_mul``, ...).
``mul_sum`` / ``matmul`` (sums of products) and ``lazy_add`` / ``lazy_sub`` /
``canonical`` let object backends reduce once per output instead of once
per operation; on machine-word backends they are the exact operations.
Decoding rejects wrong lengths and values >= p with `mpc.errors.DecodeError`.

Must not be used for: constant-time arithmetic on long-term secrets (Python
ints and numpy's early-outs are not constant time), or for any modulus
other than these two.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from twinmpc.crypto.errors import DecodeError

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_M64 = (1 << 64) - 1


class _PrimeField:
    """Backend-independent API; subclasses provide storage and the kernels."""

    MODULUS: int
    ENCODED_SIZE: int
    GEN_ORDER: int
    GENERATOR: int  # element of order GEN_ORDER (draft Field.gen())
    NAME: str
    SMALL: type[_PrimeField]  # backend for short vectors (itself unless overridden)
    LARGE: type[_PrimeField]  # backend for long vectors (itself unless overridden)
    CHEAP_DOT = False  # True where exact dot products cost one reduction per output (object arrays)
    NATIVE = False  # True where arithmetic and `ntt_rows` run in compiled code (crypto.field_native)

    @classmethod
    def from_backend(cls, other: type[_PrimeField], vec: np.ndarray) -> np.ndarray:
        """The same elements (and shape), moved from another backend of this field."""
        if other is cls:
            return vec
        return cls.from_ints(other.to_ints(vec)).reshape(np.shape(vec))

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

    # ---- storage primitives (per backend) ----
    @classmethod
    def from_ints(cls, values: Iterable[int]) -> np.ndarray:
        """Vector from integers (negative values are negations, Section 6.1)."""
        raise NotImplementedError

    @classmethod
    def to_ints(cls, vec: np.ndarray) -> list[int]:
        raise NotImplementedError

    @classmethod
    def zeros_shape(cls, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def from_u64(cls, small: np.ndarray) -> np.ndarray:
        """Field elements from a uint64 array of values < p (e.g. bits)."""
        raise NotImplementedError

    @classmethod
    def is_zero(cls, vec: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def decode_unchecked(cls, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(elements, mask of elements < p) from little-endian bytes, for rejection sampling."""
        raise NotImplementedError

    @classmethod
    def encode_vec(cls, vec: np.ndarray) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_vec(cls, data: bytes) -> np.ndarray:
        if len(data) % cls.ENCODED_SIZE:
            raise DecodeError(f"{cls.NAME}: length {len(data)} is not a multiple of {cls.ENCODED_SIZE}")
        vec, ok = cls.decode_unchecked(data)
        if not np.all(ok):
            raise DecodeError(f"{cls.NAME}: element >= modulus")
        return vec

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
        """Sum along `axis`; the result has at least one dimension."""
        raise NotImplementedError

    @classmethod
    def mul_sum(cls, a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        """sum(a * b) along `axis` (a and b broadcast), reduced; at least one dimension."""
        return cls.sum(cls.mul(a, b), axis=axis)

    @classmethod
    def matmul(cls, a: np.ndarray, m: np.ndarray) -> np.ndarray:
        """a (..., k) times the matrix m (k, j), reduced."""
        return cls.mul_sum(a[..., :, None], m, axis=-2)

    @classmethod
    def concat(cls, arrays: list[np.ndarray], axis: int = -1) -> np.ndarray:
        """np.concatenate for this backend's arrays (limb arrays have a cheaper path)."""
        return np.concatenate(arrays, axis=axis)

    @classmethod
    def stack(cls, arrays: list[np.ndarray], axis: int = 0) -> np.ndarray:
        """np.stack for this backend's arrays (limb arrays have a cheaper path)."""
        return np.stack(arrays, axis=axis)

    # ---- lazy reduction (for transforms that only add, subtract and multiply) ----
    # Backends whose elements are bounded machine words must stay canonical, so
    # by default these are the ordinary operations; the object backends
    # override them to skip the modulus until `canonical` (or a product).
    @classmethod
    def lazy_add(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a + b, possibly unreduced; valid input to mul, lazy_* and canonical."""
        return cls.add(a, b)

    @classmethod
    def lazy_sub(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a - b, possibly unreduced (even negative on object backends)."""
        return cls.sub(a, b)

    @classmethod
    def canonical(cls, a: np.ndarray) -> np.ndarray:
        """Canonical representatives of lazily reduced elements."""
        return a

    # ---- generic helpers ----
    @classmethod
    def zeros(cls, n: int) -> np.ndarray:
        return cls.zeros_shape((n,))

    @classmethod
    def full(cls, n: int, value: int) -> np.ndarray:
        return np.repeat(cls.const(value), n)

    @classmethod
    def const(cls, x: int) -> np.ndarray:
        """Shape-(1,) vector holding x, for broadcasting against vectors."""
        return cls.from_ints([x])

    @classmethod
    def root_of_unity(cls, n: int) -> int:
        """Primitive n-th root of unity, n a power of two dividing GEN_ORDER."""
        if n <= 0 or n & (n - 1) or cls.GEN_ORDER % n:
            raise ValueError(f"no root of unity of order {n} in {cls.NAME}")
        return pow(cls.GENERATOR, cls.GEN_ORDER // n, cls.MODULUS)

    @classmethod
    def inner(cls, a: np.ndarray, b: np.ndarray) -> int:
        """Inner product <a, b> as a Python int."""
        return cls.to_ints(cls.sum(cls.mul(a, b), axis=-1))[0]

    @classmethod
    def pow(cls, a: np.ndarray, e: int) -> np.ndarray:
        """Element-wise a^e by square-and-multiply over the whole vector."""
        if e < 0:
            return cls.pow(cls.inv(a), -e)
        result = np.broadcast_to(cls.const(1), a.shape).copy()
        base = a
        while e:
            if e & 1:
                result = cls.mul(result, base)
            e >>= 1
            if e:
                base = cls.mul(base, base)
        return result

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
        """Batch inversion of a 1-D vector: Montgomery's trick with vectorised prefix/suffix scans.

        Raises ZeroDivisionError if any element is 0.
        """
        if a.ndim != 1:
            raise ValueError("inv expects a 1-D vector")
        n = a.shape[0]
        if n == 0:
            return a.copy()
        if np.any(cls.is_zero(a)):
            raise ZeroDivisionError("0 has no inverse")
        prefix = cls.cumprod(a)
        suffix = cls.cumprod(a[::-1])[::-1]
        t_inv = cls.s_inv(cls.to_ints(prefix[-1:])[0])
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
        vals = [int(v) for v in values]
        if any(v < 0 or v >> bits for v in vals):
            raise ValueError("value does not fit in the requested number of bits")
        if bits == 0 or not vals:
            return cls.zeros(0)
        obj = np.array(vals, dtype=object)
        shifts = np.arange(bits, dtype=object)
        digits = ((obj[:, None] >> shifts[None, :]) & 1).reshape(-1)
        return cls.from_u64(digits.astype(np.uint64))


class Field64(_PrimeField):
    """GF(2^64 - 2^32 + 1) on uint64 vectors."""

    MODULUS = 2**32 * 4294967295 + 1
    ENCODED_SIZE = 8
    GEN_ORDER = 2**32
    GENERATOR = pow(7, 4294967295, MODULUS)
    NAME = "Field64"

    _P = np.uint64(MODULUS)
    _EPS = np.uint64(0xFFFFFFFF)  # 2^64 mod p

    @classmethod
    def from_ints(cls, values: Iterable[int]) -> np.ndarray:
        return np.array([int(v) % cls.MODULUS for v in values], dtype=np.uint64)

    @classmethod
    def from_backend(cls, other: type[_PrimeField], vec: np.ndarray) -> np.ndarray:
        if vec.dtype == np.uint64:  # canonical words (this layout or a twin's): nothing to convert
            return vec
        return super().from_backend(other, vec)

    @classmethod
    def to_ints(cls, vec: np.ndarray) -> list[int]:
        return [int(v) for v in np.asarray(vec).reshape(-1)]

    @classmethod
    def zeros_shape(cls, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.uint64)

    @classmethod
    def from_u64(cls, small: np.ndarray) -> np.ndarray:
        return small.astype(np.uint64)

    @classmethod
    def is_zero(cls, vec: np.ndarray) -> np.ndarray:
        return vec == 0

    @classmethod
    def decode_unchecked(cls, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        vec = np.frombuffer(data, dtype="<u8").astype(np.uint64)
        return vec, vec < cls._P

    @classmethod
    def encode_vec(cls, vec: np.ndarray) -> bytes:
        return np.ascontiguousarray(vec, dtype="<u8").tobytes()

    # Conditional corrections are "x - flag * P" (bool * uint64): several times
    # faster than np.where here.
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
        lo = np.atleast_1d(np.sum(a & _M32, axis=axis, dtype=np.uint64))
        hi = np.atleast_1d(np.sum(a >> _S32, axis=axis, dtype=np.uint64))
        hi = hi - (hi >= cls._P) * cls._P
        lo = lo - (lo >= cls._P) * cls._P
        return cls.add(lo, cls.mul(hi, np.uint64(1 << 32)))


class _ObjectField(_PrimeField):
    """Object arrays of Python ints: lowest per-call overhead, for short vectors."""

    CHEAP_DOT = True

    @classmethod
    def from_ints(cls, values: Iterable[int]) -> np.ndarray:
        p = cls.MODULUS
        ints = [int(v) % p for v in values]
        out = np.empty(len(ints), dtype=object)
        out[:] = ints
        return out

    @classmethod
    def to_ints(cls, vec: np.ndarray) -> list[int]:
        return [int(v) for v in np.asarray(vec).reshape(-1)]

    @classmethod
    def zeros_shape(cls, shape: tuple[int, ...]) -> np.ndarray:
        out = np.empty(shape, dtype=object)
        out.fill(0)
        return out

    @classmethod
    def from_u64(cls, small: np.ndarray) -> np.ndarray:
        return small.astype(object)

    @classmethod
    def is_zero(cls, vec: np.ndarray) -> np.ndarray:
        return (vec == 0).astype(bool)

    @classmethod
    def decode_unchecked(cls, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        if cls.ENCODED_SIZE == 8:
            vec = np.frombuffer(data, dtype="<u8").astype(object)
        else:
            pairs = np.frombuffer(data, dtype="<u8").reshape(-1, 2)
            vec = (pairs[:, 1].astype(object) << 64) | pairs[:, 0].astype(object)
        return vec, (vec < cls.MODULUS).astype(bool)

    @classmethod
    def encode_vec(cls, vec: np.ndarray) -> bytes:
        vec = np.asarray(vec, dtype=object)
        if cls.ENCODED_SIZE == 8:
            return vec.astype("<u8").tobytes()
        pairs = np.empty((vec.shape[0], 2), dtype="<u8")
        pairs[:, 0] = (vec & _M64).astype(np.uint64)
        pairs[:, 1] = (vec >> 64).astype(np.uint64)
        return pairs.tobytes()

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
    def mul_sum(cls, a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        # One modulus per output instead of one per product and one per sum:
        # the exact integer sum is formed first (Python ints do not overflow).
        if axis in (-1, a.ndim - 1) and b.ndim == 1 and a.ndim >= 1 and a.shape[-1] == b.shape[0]:
            total = np.matmul(a, b)
        else:
            total = np.sum(a * b, axis=axis)
        return np.atleast_1d(total % cls.MODULUS).astype(object)

    @classmethod
    def matmul(cls, a: np.ndarray, m: np.ndarray) -> np.ndarray:
        return np.matmul(a, m) % cls.MODULUS

    @classmethod
    def lazy_add(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    @classmethod
    def lazy_sub(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a - b

    @classmethod
    def canonical(cls, a: np.ndarray) -> np.ndarray:
        return a % cls.MODULUS


class Field64Small(_ObjectField):
    """Field64 on object arrays: the same field and bytes, for short vectors (Count, Sum)."""

    MODULUS = Field64.MODULUS
    ENCODED_SIZE = 8
    GEN_ORDER = Field64.GEN_ORDER
    GENERATOR = Field64.GENERATOR
    NAME = "Field64"

    @classmethod
    def from_backend(cls, other: type[_PrimeField], vec: np.ndarray) -> np.ndarray:
        if vec.dtype == np.uint64:  # canonical words (Field64 or its native twin): no reduction needed
            return vec.astype(object)
        return super().from_backend(other, vec)


class _Field128Params:
    """GF(2^66 * 4611686018427387897 + 1): the constants both Field128 backends share."""

    MODULUS = 2**66 * 4611686018427387897 + 1
    ENCODED_SIZE = 16
    GEN_ORDER = 2**66
    GENERATOR = pow(7, 4611686018427387897, MODULUS)
    NAME = "Field128"


class Field128(_Field128Params, _ObjectField):
    """Field128 on object vectors of Python ints (short vectors)."""

    @classmethod
    def from_backend(cls, other: type[_PrimeField], vec: np.ndarray) -> np.ndarray:
        if vec.dtype == F128_DTYPE:  # canonical pairs (any limb backend): no reduction needed
            return (vec["hi"].astype(object) << 64) | vec["lo"].astype(object)
        return super().from_backend(other, vec)


F128_DTYPE = np.dtype([("lo", "<u8"), ("hi", "<u8")])
_P_HI = np.uint64(2**64 - 28)  # p = P_HI * 2^64 + 1
_I32 = np.int64(0xFFFFFFFF)
_SH = np.int64(32)
_C28 = np.int64(28)
_C783 = np.int64(783)  # 28^2 - 1
_BLOCK = 4096  # elements per limb-kernel block (temporaries stay small and cache-resident)
_LIMB_MUL_MIN = 100  # shorter products go through Python ints (measured crossover ~100-128)


def _pack(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = np.empty(np.broadcast_shapes(lo.shape, hi.shape), dtype=F128_DTYPE)
    out["lo"] = lo
    out["hi"] = hi
    return out


def _canonical(lo: np.ndarray, hi: np.ndarray, carry: np.ndarray | bool) -> np.ndarray:
    """carry*2^128 + hi*2^64 + lo (< 2p) -> its residue, packed."""
    ge = carry | (hi > _P_HI) | ((hi == _P_HI) & (lo >= 1))
    new_lo = lo - ge  # subtract p = P_HI*2^64 + 1 where ge (wrapping arithmetic mod 2^128)
    borrow = lo < ge
    new_hi = hi - ge * _P_HI - borrow
    return _pack(new_lo, new_hi)


def _mul_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Product of two flat F128 vectors (one row array per limb, no 2-D temporaries).

    x_k, k < 8, are the column sums of the 32-bit halves of the 16 limb
    products (each < 2^35, so the exact product is sum x_k 2^(32k)).  The
    high columns fold straight into the low four with 2^128 = 28*2^64 - 1
    (mod p), i.e. x4 -> (-1, 0, 28, 0), x5 -> (0, -1, 0, 28),
    x6 -> (-28, 0, 783, 0), x7 -> (0, -28, 0, 783) on limbs 0..3; the signed
    result (|limb| < 2^45) is carried, its top (< 2^14 in size) folded once
    more, carried again, and brought into [0, p) by at most one subtraction of p.
    The folded value is never negative: a negative term from x4..x7 in limb
    0 or 1 comes with a far larger positive one in limb 2 or 3.
    """
    lo_a, hi_a, lo_b, hi_b = a["lo"], a["hi"], b["lo"], b["hi"]
    al = (lo_a & _M32, lo_a >> _S32, hi_a & _M32, hi_a >> _S32)
    bl = (lo_b & _M32, lo_b >> _S32, hi_b & _M32, hi_b >> _S32)
    cols: list[Any] = [None] * 8
    for i in range(4):
        for j in range(4):
            prod = al[i] * bl[j]  # < 2^64
            low = prod & _M32
            prod >>= _S32
            k = i + j
            if cols[k] is None:
                cols[k] = low
            else:
                cols[k] += low
            if cols[k + 1] is None:
                cols[k + 1] = prod
            else:
                cols[k + 1] += prod
    x0, x1, x2, x3, x4, x5, x6, x7 = (c.view(np.int64) for c in cols)
    z0 = x0 - x4 - _C28 * x6
    z1 = x1 - x5 - _C28 * x7
    z2 = x2 + _C28 * x4 + _C783 * x6
    z3 = x3 + _C28 * x5 + _C783 * x7
    top = _carry4(z0, z1, z2, z3)  # value = z + top * 2^128 with 0 <= top < 2^14
    z0 -= top
    z2 += _C28 * top
    top = _carry4(z0, z1, z2, z3)  # value in [0, 2^128 + 2^83) < 2p: top is 0 or 1
    lo = z0.view(np.uint64) | (z1.view(np.uint64) << _S32)
    hi = z2.view(np.uint64) | (z3.view(np.uint64) << _S32)
    return _canonical(lo, hi, top != 0)


def _carry4(z0: np.ndarray, z1: np.ndarray, z2: np.ndarray, z3: np.ndarray) -> np.ndarray:
    """In place: signed carries so z0..z3 are in [0, 2^32); returns what overflows 2^128 (signed)."""
    z1 += z0 >> _SH
    z0 &= _I32
    z2 += z1 >> _SH
    z1 &= _I32
    z3 += z2 >> _SH
    z2 &= _I32
    top = z3 >> _SH
    z3 &= _I32
    return top


def _norm_signed(limbs: list[np.ndarray]) -> list[np.ndarray]:
    """Propagate signed carries so every limb but the last is in [0, 2^32)."""
    out = []
    carry: Any = 0
    for i, x in enumerate(limbs):
        x = x + carry
        if i == len(limbs) - 1:
            out.append(x)
            break
        carry = x >> _SH
        out.append(x & _I32)
    return out


class Field128Limbs(_Field128Params, _PrimeField):
    """The same field on (lo, hi) uint64 pairs; see the module docstring."""

    SMALL = Field128

    @classmethod
    def from_ints(cls, values: Iterable[int]) -> np.ndarray:
        ints = [int(v) % cls.MODULUS for v in values]
        obj = np.empty(len(ints), dtype=object)
        obj[:] = ints
        return _pack((obj & _M64).astype(np.uint64), (obj >> 64).astype(np.uint64))

    @classmethod
    def from_backend(cls, other: type[_PrimeField], vec: np.ndarray) -> np.ndarray:
        if other is Field128 and vec.dtype == object:  # canonical Python ints: no reduction needed
            return _pack((vec & _M64).astype(np.uint64), (vec >> 64).astype(np.uint64))
        if vec.dtype == F128_DTYPE:  # the same layout (this backend or its native twin)
            return vec
        return super().from_backend(other, vec)

    # numpy joins structured arrays through Python-level dtype promotion (~5-15 us a
    # call); as plain uint64 words the same join is a memcpy.
    @classmethod
    def concat(cls, arrays: list[np.ndarray], axis: int = -1) -> np.ndarray:
        nd = arrays[0].ndim
        ax = axis % nd if nd else 0
        try:
            words = [a.view(np.uint64).reshape(a.shape + (2,)) for a in arrays]
        except ValueError:  # a strided last axis cannot be viewed as words
            return np.concatenate(arrays, axis=axis)
        out = np.concatenate(words, axis=ax)
        return out.view(F128_DTYPE).reshape(out.shape[:-1])

    @classmethod
    def stack(cls, arrays: list[np.ndarray], axis: int = 0) -> np.ndarray:
        nd = arrays[0].ndim + 1
        ax = axis % nd
        return cls.concat([a.reshape(a.shape[:ax] + (1,) + a.shape[ax:]) for a in arrays], axis=ax)

    @classmethod
    def to_ints(cls, vec: np.ndarray) -> list[int]:
        vec = np.asarray(vec).reshape(-1)
        if vec.dtype == object:  # output/aggregate shares travel as object arrays
            return [int(v) for v in vec]
        return ((vec["hi"].astype(object) << 64) | vec["lo"].astype(object)).tolist()

    @classmethod
    def zeros_shape(cls, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=F128_DTYPE)

    @classmethod
    def from_u64(cls, small: np.ndarray) -> np.ndarray:
        return _pack(small.astype(np.uint64), np.zeros(small.shape, dtype=np.uint64))

    @classmethod
    def is_zero(cls, vec: np.ndarray) -> np.ndarray:
        return (vec["lo"] == 0) & (vec["hi"] == 0)

    @classmethod
    def decode_unchecked(cls, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        words = np.frombuffer(data, dtype="<u8")  # plain words: cheaper than the structured fields
        hi = words[1::2]
        return words.view(F128_DTYPE).copy(), (hi < _P_HI) | ((hi == _P_HI) & (words[0::2] == 0))

    @classmethod
    def encode_vec(cls, vec: np.ndarray) -> bytes:
        return np.ascontiguousarray(vec, dtype=F128_DTYPE).tobytes()

    @classmethod
    def add(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        alo, ahi, blo, bhi = a["lo"], a["hi"], b["lo"], b["hi"]
        lo = alo + blo
        c = lo < alo
        hs = ahi + bhi
        hi = hs + c
        carry = (hs < ahi) | (hi < hs)
        return _canonical(lo, hi, carry)

    @classmethod
    def sub(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        alo, ahi, blo, bhi = a["lo"], a["hi"], b["lo"], b["hi"]
        lo = alo - blo
        bw = alo < blo
        hi = ahi - bhi - bw
        neg = (ahi < bhi) | ((ahi == bhi) & bw)
        # add p back where the difference went negative (mod 2^128)
        lo2 = lo + neg
        c = lo2 < lo
        hi2 = hi + neg * _P_HI + c
        return _pack(lo2, hi2)

    @classmethod
    def neg(cls, a: np.ndarray) -> np.ndarray:
        return cls.sub(np.zeros(a.shape, dtype=F128_DTYPE), a)

    @classmethod
    def mul(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Limb product: 4x4 products of 32-bit limbs into column sums, then three
        exact folds of 2^128 = 28*2^64 - 1 (mod p); long vectors go in blocks."""
        a, b = np.broadcast_arrays(a, b)
        shape = a.shape
        a = a.reshape(-1)
        b = b.reshape(-1)
        n = a.shape[0]
        if n < _LIMB_MUL_MIN:  # the kernel's ~150 numpy calls cost more than Python ints here
            return cls.from_backend(Field128, Field128.mul(Field128.from_backend(cls, a), Field128.from_backend(cls, b))).reshape(shape)
        if n <= _BLOCK:
            return _mul_block(a, b).reshape(shape)
        out = np.empty(n, dtype=F128_DTYPE)  # blocks keep every temporary small and cache-resident
        for s in range(0, n, _BLOCK):
            out[s : s + _BLOCK] = _mul_block(a[s : s + _BLOCK], b[s : s + _BLOCK])
        return out.reshape(shape)

    @classmethod
    def sum(cls, a: np.ndarray, axis: int = -1) -> np.ndarray:
        lo, hi = a["lo"], a["hi"]
        s = [np.atleast_1d(np.sum(v, axis=axis, dtype=np.uint64)) for v in (lo & _M32, lo >> _S32, hi & _M32, hi >> _S32)]
        x: list[np.ndarray] = []
        carry: Any = 0
        for k in range(4):
            v = s[k] + carry
            carry = v >> _S32
            x.append((v & _M32).astype(np.int64))
        top = carry.astype(np.int64)  # < 2^32 for fewer than 2^32 terms
        w = _norm_signed([x[0] - top, x[1], x[2] + _C28 * top, x[3], np.zeros_like(top)])
        u = [v.astype(np.uint64) for v in w]
        return _canonical(u[0] | (u[1] << _S32), u[2] | (u[3] << _S32), u[4] != 0)


Field64.SMALL = Field64Small
Field64Small.SMALL = Field64Small
Field128.SMALL = Field128
Field64.LARGE = Field64
Field64Small.LARGE = Field64
Field128.LARGE = Field128Limbs
Field128Limbs.LARGE = Field128Limbs

FIELDS: dict[str, type[_PrimeField]] = {"Field64": Field64, "Field128": Field128}

__all__ = ["F128_DTYPE", "FIELDS", "Field64", "Field64Small", "Field128", "Field128Limbs"]
