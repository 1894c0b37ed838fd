"""Field128 of draft-irtf-cfrg-vdaf-18 on (lo, hi) uint64 limbs: the long-vector backend.

`Field128Limbs` is the same field as `crypto.field.Field128` (p = 2^128 -
28*2^64 + 1) and the same bytes, stored as (lo, hi) uint64 pairs: the
structured dtype `F128_DTYPE`, whose bytes are exactly the draft's
little-endian encoding.  Products split both operands into 32-bit limbs;
the eight column sums of the 16 limb products fold straight into four with
2^128 = 28*2^64 - 1 (mod p): ~150 numpy passes per product, faster than
Python ints from about a hundred elements.  Shorter products go through
`Field128`'s Python ints, which is also this backend's ``SMALL``; importing
this module makes it `Field128.LARGE`.

It lives apart from crypto/field.py because it is one job of its own (the
limb kernel) and builds on that module's generic field (`_PrimeField`) and
object backend; crypto/field.py does not import it back.

Must not be used for: constant-time arithmetic on long-term secrets, or any
other modulus (the fold constants are this p's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from twinmpc.crypto.field import (
    _M32,
    _M64,
    _S32,
    F128_DTYPE,
    Field128,
    _Field128Params,
    _PrimeField,
    _limbs_to_objects,
)

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


def _pack_ints(obj: np.ndarray) -> np.ndarray:
    """Limb pairs of an object array of canonical Python ints."""
    return _pack((obj & _M64).astype(np.uint64), (obj >> 64).astype(np.uint64))


def _canonical(lo: np.ndarray, hi: np.ndarray, carry: np.ndarray | bool) -> np.ndarray:
    """carry*2^128 + hi*2^64 + lo (< 2p) -> its residue, packed."""
    ge = carry | (hi > _P_HI) | ((hi == _P_HI) & (lo >= 1))
    new_lo = lo - ge  # subtract p = P_HI*2^64 + 1 where ge (wrapping arithmetic mod 2^128)
    borrow = lo < ge
    new_hi = hi - ge * _P_HI - borrow
    return _pack(new_lo, new_hi)


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


def _carry_canonical(z0: np.ndarray, z1: np.ndarray, z2: np.ndarray, z3: np.ndarray) -> np.ndarray:
    """Signed 32-bit-limb columns of a value in [0, 2p) -> its residue, packed (z0..z3 are consumed)."""
    top = _carry4(z0, z1, z2, z3)  # 0 or 1, as the value is below 2p < 2^129
    lo = z0.view(np.uint64) | (z1.view(np.uint64) << _S32)
    hi = z2.view(np.uint64) | (z3.view(np.uint64) << _S32)
    return _canonical(lo, hi, top != 0)


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
    return _carry_canonical(z0, z1, z2, z3)  # value in [0, 2^128 + 2^83) < 2p


class Field128Limbs(_Field128Params, _PrimeField):
    """The same field on (lo, hi) uint64 pairs; see the module docstring."""

    SMALL = Field128
    DTYPE = F128_DTYPE

    @classmethod
    def from_ints(cls, values: Iterable[int]) -> np.ndarray:
        return _pack_ints(Field128.from_ints(values))

    @classmethod
    def from_backend(cls, other: type[_PrimeField], vec: np.ndarray) -> np.ndarray:
        if other is Field128 and vec.dtype == object:  # canonical Python ints: no reduction needed
            return _pack_ints(vec)
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
            return super().to_ints(vec)
        return _limbs_to_objects(vec).tolist()

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
    def all_canonical(cls, vec: np.ndarray) -> bool:
        hi, lo = vec["hi"], vec["lo"]
        return bool(((hi < _P_HI) | ((hi == _P_HI) & (lo == 0))).all())

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
        # fold top * 2^128 = top * (28*2^64 - 1): the value is then below 2^128 + 2^101 < 2p
        return _carry_canonical(x[0] - top, x[1], x[2] + _C28 * top, x[3])


Field128Limbs.LARGE = Field128Limbs
Field128.LARGE = Field128Limbs  # the object backend hands long vectors to this one

__all__ = ["Field128Limbs"]
