"""The draft-18 fields with their arithmetic in compiled code (crypto/field_kernel.c via cffi).

`Field64Native` and `Field128Native` store elements exactly as `Field64`
(uint64) and `Field128Limbs` (the (lo, hi) structured dtype) do, and inherit
everything that is not arithmetic (encoding, decoding, conversions); their
add, sub, mul, sums of products and the NTT (`ntt_rows`, used by
`crypto.poly.ntt`) run in C.  Results are the same canonical residues, so
the bytes are identical to the numpy reference path (tests replay every
official vector through both).

Why compiled code: numpy has no 64x64->128-bit product, so the reference
emulates each Field128 product with ~150 passes over 32-bit limbs; the C
kernel does one product in a few nanoseconds, and one call costs about a
microsecond, which also helps the many tiny operations of one small report.
Measured alternatives are in docs/prio3.md (numba: ~0.3-0.5 s import plus
0.25-0.7 s first call per process, even with cache=True; python-flint:
1.5 s to convert 1.8M Field128 elements through Python ints).

Selection: ``TWINMPC_FIELD_KERNEL=numpy`` forces the reference path in a
process, ``native`` requires the compiled one; unset means native when it is
built (``pip install`` builds it; a bare source checkout without it falls back).
Prio3 reads the choice when a VDAF is constructed (`kernel_enabled`).

Must not be used for: constant-time arithmetic on long-term secrets (the C
code branches on rare carries), or for any other modulus.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from twinmpc.crypto.field import F128_DTYPE, Field64, Field128Limbs, _PrimeField

try:
    from twinmpc.crypto._field_kernel import ffi as _ffi
    from twinmpc.crypto._field_kernel import lib as _lib
except ImportError:  # not compiled (a source tree used without `pip install`)
    _ffi = _lib = None

KERNEL_ENV = "TWINMPC_FIELD_KERNEL"
THREADS_ENV = "TWINMPC_KERNEL_THREADS"


def prover_threads() -> int:
    """Threads of the FLP prover's fused Field128 kernel (``TWINMPC_KERNEL_THREADS``, default:
    min(2, cores)); only long circuits use more than one, and the proof is the same either way."""
    value = os.environ.get(THREADS_ENV, "")
    if value:
        threads = int(value)
        if not 1 <= threads <= 8:
            raise ValueError(f"{THREADS_ENV} must be in [1, 8]")
        return threads
    return min(2, os.cpu_count() or 1)


def native_built() -> bool:
    """Whether the compiled kernel is importable in this installation."""
    return _lib is not None


def kernel_enabled() -> bool:
    """Whether Prio3 should use the native fields (see the module docstring)."""
    choice = os.environ.get(KERNEL_ENV, "")
    if choice == "numpy":
        return False
    if choice == "native" and _lib is None:
        raise RuntimeError(f"{KERNEL_ENV}=native but twinmpc.crypto._field_kernel is not built (pip install -e .)")
    if choice not in ("", "native"):
        raise ValueError(f"{KERNEL_ENV} must be 'native' or 'numpy', not {choice!r}")
    return _lib is not None


# From this many wire values per report (ARITY * P) the prover's fused kernel uses
# prover_threads(): below it a thread start (~20-50 us) costs more than it saves.
PMUL_THREADS_MIN = 1 << 16


def _ptr(arr: np.ndarray) -> Any:
    """uint64_t* to arr's first element (any strides; arr must outlive the call)."""
    if arr.flags.c_contiguous and arr.size:
        return _ffi.from_buffer("uint64_t[]", arr, require_writable=False)
    return _ffi.cast("uint64_t *", arr.__array_interface__["data"][0])


def _coalesce(shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 axes and merge neighbours that every operand walks as one (numpy-style)."""
    dims: list[int] = []
    st: list[list[int]] = [[] for _ in strides]
    for ax, n in enumerate(shape):
        if n == 1:
            continue
        if dims and all(s[-1] == t[ax] * n for s, t in zip(st, strides)):
            dims[-1] *= n
            for s, t in zip(st, strides):
                s[-1] = t[ax]
            continue
        dims.append(n)
        for s, t in zip(st, strides):
            s.append(t[ax])
    return dims, st


class _NativeOps:
    """Arithmetic of a native field: the C function names, the element width and dtype."""

    NATIVE = True
    _WIDTH: int  # uint64 words per element
    _DTYPE: np.dtype
    _ADD: str
    _SUB: str
    _MUL: str
    _MUL_SUM: str
    _NTT: str
    _PMUL: str
    _RANGE_WIRES: str
    _RANGE_EVALS: str

    @classmethod
    def _binary(cls, fname: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        fn = getattr(_lib, fname)
        if a.shape == b.shape and a.flags.c_contiguous and b.flags.c_contiguous:
            out = np.empty(a.shape, dtype=cls._DTYPE)
            if a.size:
                fn(_ptr(out), _ptr(a), _ptr(b), 1, 1, a.size, 0, 0, 1, 0, 0, 1)
            return out
        a, b = np.broadcast_arrays(np.asarray(a, dtype=cls._DTYPE), np.asarray(b, dtype=cls._DTYPE))
        out = np.empty(a.shape, dtype=cls._DTYPE)
        if not a.size:
            return out
        size = cls._DTYPE.itemsize
        dims, (sa, sb) = _coalesce(a.shape, [tuple(s // size for s in a.strides), tuple(s // size for s in b.strides)])
        if len(dims) > 3:
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
            dims, sa, sb = [a.size], [1], [1]
        pad = 3 - len(dims)
        dims, sa, sb = [1] * pad + dims, [0] * pad + sa, [0] * pad + sb
        fn(_ptr(out), _ptr(a), _ptr(b), *dims, *sa, *sb)
        return out

    @classmethod
    def _reduce(cls, a: np.ndarray, b: np.ndarray | None, axis: int) -> np.ndarray:
        """sum(a * b) (or sum(a)) along axis, in one pass with one reduction per output."""
        if b is not None:
            a, b = np.broadcast_arrays(a, b)
        nd = a.ndim
        axis = axis + nd if axis < 0 else axis
        if not 0 <= axis < nd:
            raise np.exceptions.AxisError(axis, nd)
        shape = a.shape
        out_shape = shape[:axis] + shape[axis + 1 :]
        out = np.empty(out_shape or (1,), dtype=cls._DTYPE)
        if not out.size:
            return out
        ops = [a] if b is None else [a, b]
        size = cls._DTYPE.itemsize
        groups = []
        for part in (range(axis), range(axis + 1, nd)):
            dims, st = _coalesce(tuple(shape[i] for i in part), [tuple(x.strides[i] // size for i in part) for x in ops])
            groups.append((dims, st))
        if len(groups[0][0]) > 1 or len(groups[1][0]) > 1:  # not expressible as (outer, red, inner): copy
            ops = [np.ascontiguousarray(x) for x in ops]
            a = ops[0]
            b = ops[1] if b is not None else None
            return cls._reduce(a, b, axis)
        n_outer = groups[0][0][0] if groups[0][0] else 1
        n_inner = groups[1][0][0] if groups[1][0] else 1
        strides = []
        for k, x in enumerate(ops):
            s_outer = groups[0][1][k][0] if groups[0][0] else 0
            s_inner = groups[1][1][k][0] if groups[1][0] else 0
            strides.append((s_outer, x.strides[axis] // size, s_inner))
        sb = strides[1] if b is not None else (0, 0, 0)
        getattr(_lib, cls._MUL_SUM)(
            _ptr(out), _ptr(a), _ptr(b) if b is not None else _ffi.NULL, n_outer, shape[axis], n_inner, *strides[0], *sb
        )
        return out

    @classmethod
    def add(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cls._binary(cls._ADD, a, b)

    @classmethod
    def sub(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cls._binary(cls._SUB, a, b)

    @classmethod
    def neg(cls, a: np.ndarray) -> np.ndarray:
        return cls._binary(cls._SUB, np.zeros(1, dtype=cls._DTYPE), a)

    @classmethod
    def mul(cls, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cls._binary(cls._MUL, a, b)

    @classmethod
    def sum(cls, a: np.ndarray, axis: int = -1) -> np.ndarray:
        return cls._reduce(a, None, axis)

    @classmethod
    def mul_sum(cls, a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return cls._reduce(a, b, axis)

    @classmethod
    def matmul(cls, a: np.ndarray, m: np.ndarray) -> np.ndarray:
        return cls._reduce(a[..., :, None], m, -2)

    @classmethod
    def ntt_rows(cls, a: np.ndarray, twiddles: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
        """Radix-2 transform of every row (last axis, length n): twiddles = [w^j, j < n/2];
        each output is multiplied by scale[0] when given (the 1/n of an inverse)."""
        out = np.array(a, dtype=cls._DTYPE, order="C", copy=True)
        n = out.shape[-1]
        if out.size:
            getattr(_lib, cls._NTT)(
                _ptr(out), out.size // n, n, _ptr(twiddles), _ptr(scale) if scale is not None else _ffi.NULL
            )
        return out


    # ---- fused FLP steps (called by crypto.poly and the range-check circuits) ----
    @classmethod
    def pmul_extend(cls, wires: np.ndarray, tw_inv: np.ndarray, twist_br: np.ndarray, tw_fwd: np.ndarray) -> np.ndarray:
        """wires (B, 2*pairs, p) -> (B, 2p): sum_j L_j * R_j at all 2p-th roots (see field_kernel.c)."""
        wires = np.ascontiguousarray(wires, dtype=cls._DTYPE)
        b, arity, p = wires.shape
        out = np.empty((b, 2 * p), dtype=cls._DTYPE)
        threads = prover_threads() if arity * p >= PMUL_THREADS_MIN else 1
        if b and getattr(_lib, cls._PMUL)(
            _ptr(out), _ptr(wires), b, arity // 2, p, _ptr(tw_inv), _ptr(twist_br), _ptr(tw_fwd), threads
        ):
            raise MemoryError("field kernel scratch")
        return out

    @classmethod
    def range_wires(cls, x: np.ndarray, r: np.ndarray, chunk: int, calls: int, c: np.ndarray) -> np.ndarray:
        """Range-check wires (B, 2*chunk, calls) of x (B, n) with joint randomness r (B, calls)."""
        x = np.ascontiguousarray(x, dtype=cls._DTYPE)
        r = np.ascontiguousarray(r, dtype=cls._DTYPE)
        out = np.empty((x.shape[0], 2 * chunk, calls), dtype=cls._DTYPE)
        if out.size:
            getattr(_lib, cls._RANGE_WIRES)(_ptr(out), _ptr(x), x.shape[0], x.shape[1], _ptr(r), chunk, calls, _ptr(c))
        return out

    @classmethod
    def range_evals(cls, x: np.ndarray, r: np.ndarray, lam: np.ndarray, chunk: int, calls: int) -> np.ndarray:
        """(B, 2*chunk) interleaved: sum_i lam_i r_i^(j+1) x[i*chunk+j] and sum_i lam_i x[i*chunk+j]."""
        x = np.ascontiguousarray(x, dtype=cls._DTYPE)
        r = np.ascontiguousarray(r, dtype=cls._DTYPE)
        lam = np.ascontiguousarray(lam, dtype=cls._DTYPE)
        out = np.empty((x.shape[0], 2 * chunk), dtype=cls._DTYPE)
        if x.shape[0] and getattr(_lib, cls._RANGE_EVALS)(
            _ptr(out), _ptr(x), x.shape[0], x.shape[1], _ptr(r), _ptr(lam), chunk, calls
        ):
            raise MemoryError("field kernel scratch")
        return out


class Field64Native(_NativeOps, Field64):
    """`Field64` (same uint64 vectors, same bytes) with compiled arithmetic."""

    _WIDTH = 1
    _DTYPE = np.dtype(np.uint64)
    _ADD, _SUB, _MUL, _MUL_SUM, _NTT = "f64_add", "f64_sub", "f64_mul", "f64_mul_sum", "f64_ntt"
    _PMUL, _RANGE_WIRES, _RANGE_EVALS = "f64_pmul_extend", "f64_range_wires", "f64_range_evals"


class Field128Native(_NativeOps, Field128Limbs):
    """`Field128Limbs` (same (lo, hi) vectors, same bytes) with compiled arithmetic."""

    _WIDTH = 2
    _DTYPE = F128_DTYPE
    _ADD, _SUB, _MUL, _MUL_SUM, _NTT = "f128_add", "f128_sub", "f128_mul", "f128_mul_sum", "f128_ntt"
    _PMUL, _RANGE_WIRES, _RANGE_EVALS = "f128_pmul_extend", "f128_range_wires", "f128_range_evals"


for _cls in (Field64Native, Field128Native):
    _cls.SMALL = _cls
    _cls.LARGE = _cls


def native_field(field: type[_PrimeField]) -> type[_PrimeField]:
    """The native twin of a field backend (Field64* -> Field64Native, Field128* -> Field128Native)."""
    return Field64Native if field.ENCODED_SIZE == 8 else Field128Native


__all__ = ["KERNEL_ENV", "THREADS_ENV", "prover_threads", "Field64Native", "Field128Native", "kernel_enabled", "native_built", "native_field"]
