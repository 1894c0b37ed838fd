"""Prime fields of draft-irtf-cfrg-vdaf-18, Section 6.1, as numpy vectors.

The two NTT-friendly fields of the draft (Section 6.1.3, table "Parameters for
the finite fields"):

* `Field64`:  p = 2^32 * 4294967295 + 1 (Goldilocks), ENCODED_SIZE 8, 2-adicity 32.
  Vectors are ``uint64`` arrays; products use 32-bit limbs and the Goldilocks
  reduction 2^64 = 2^32 - 1, 2^96 = -1 (mod p).
* `Field128`: p = 2^66 * 4611686018427387897 + 1 = 2^128 - 28*2^64 + 1,
  ENCODED_SIZE 16, 2-adicity 66, in two interchangeable backends:

  - `Field128` (here) stores vectors as ``object`` arrays of Python ints: the
    lowest per-call overhead, best for short vectors (<~1000 elements);
  - `Field128Limbs` (crypto/field128_limbs.py) stores them as (lo, hi) uint64
    pairs (`F128_DTYPE`, whose bytes are exactly the draft's little-endian
    encoding) and multiplies with 32-bit limbs: faster than Python ints from
    about a hundred elements.

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
    # Fixed-width storage whose bytes are the draft's encoding (None: object arrays).  Such
    # vectors are read from XOFs and viewed in received shares without a decoding copy.
    DTYPE: np.dtype | None = None

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
        """Python ints of a vector (any shape, flattened); this default serves uint64 and object arrays."""
        return [int(v) for v in np.asarray(vec).reshape(-1)]

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
    def view_vec(cls, data: bytes | memoryview) -> np.ndarray:
        """`decode_vec` without a copy where the storage is the encoding (`DTYPE`): a read-only
        view of `data` (which must outlive it); otherwise the decoded copy."""
        if cls.DTYPE is None:
            return cls.decode_vec(data)
        if len(data) % cls.ENCODED_SIZE:
            raise DecodeError(f"{cls.NAME}: length {len(data)} is not a multiple of {cls.ENCODED_SIZE}")
        vec = np.frombuffer(data, dtype=cls.DTYPE)
        if not cls.all_canonical(vec):
            raise DecodeError(f"{cls.NAME}: element >= modulus")
        return vec

    @classmethod
    def all_canonical(cls, vec: np.ndarray) -> bool:
        """Whether every element of a `DTYPE` vector read from bytes is < p."""
        return bool(np.all(cls.decode_unchecked(np.ascontiguousarray(vec).view(np.uint8))[1]))

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
    DTYPE = np.dtype("<u8")

    @classmethod
    def from_ints(cls, values: Iterable[int]) -> np.ndarray:
        return np.array([int(v) % cls.MODULUS for v in values], dtype=np.uint64)

    @classmethod
    def from_backend(cls, other: type[_PrimeField], vec: np.ndarray) -> np.ndarray:
        if vec.dtype == np.uint64:  # canonical words (this layout or a twin's): nothing to convert
            return vec
        return super().from_backend(other, vec)

    @classmethod
    def zeros_shape(cls, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.uint64)

    @classmethod
    def all_canonical(cls, vec: np.ndarray) -> bool:
        return bool((vec < cls._P).all())

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


F128_DTYPE = np.dtype([("lo", "<u8"), ("hi", "<u8")])  # Field128 as (lo, hi) words: the draft's bytes


def _limbs_to_objects(vec: np.ndarray) -> np.ndarray:
    """Object array of the Python ints held by (lo, hi) pairs of `F128_DTYPE`."""
    return (vec["hi"].astype(object) << 64) | vec["lo"].astype(object)


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
            return _limbs_to_objects(vec)
        return super().from_backend(other, vec)


Field64.SMALL = Field64Small
Field64Small.SMALL = Field64Small
Field128.SMALL = Field128
Field64.LARGE = Field64
Field64Small.LARGE = Field64
# Field128.LARGE is Field128Limbs, set where that backend is defined (crypto.field128_limbs
# imports this module, so this one cannot name it).

__all__ = ["F128_DTYPE", "Field64", "Field64Small", "Field128"]
