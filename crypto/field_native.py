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
from functools import lru_cache
from typing import Any

import numpy as np

from twinmpc.crypto.field import F128_DTYPE, Field64, _PrimeField
from twinmpc.crypto.field128_limbs import Field128Limbs

try:
    from twinmpc.crypto._field_kernel import ffi as _ffi
    from twinmpc.crypto._field_kernel import lib as _lib
    _from_buffer = _ffi.from_buffer  # typeless: the kernel's pointers are void* to cffi
except ImportError:  # not compiled (a source tree used without `pip install`)
    _ffi = _lib = _from_buffer = None

KERNEL_ENV = "TWINMPC_FIELD_KERNEL"
THREADS_ENV = "TWINMPC_KERNEL_THREADS"


def prover_threads() -> int:
    """Threads of the FLP's fused kernels, the prover's and the verifier's range-check sums
    (``TWINMPC_KERNEL_THREADS``, default: min(2, cores)); only long circuits use more than one,
    and the results are the same either way."""
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


# From this many wire values per report (ARITY * P; the verifier: measurement elements)
# the fused kernels use prover_threads(): below it a thread start (~20-50 us) costs more than it saves.
PMUL_THREADS_MIN = 1 << 16


# Non-contiguous operands up to this many elements are copied before a call:
# cheaper than looking up a strided view's address through numpy.
SMALL_COPY = 1 << 14


def is_bits(arr: np.ndarray) -> bool:
    """Whether a measurement is given as uint8 0/1 digits (a client's own encoding, accepted by
    the prover and share kernels in place of field elements; see `Valid.encode_bits`)."""
    return arr.dtype == np.uint8


def _ptr(arr: np.ndarray) -> Any:
    """uint64_t* to arr's first element (any strides; arr must outlive the call)."""
    if arr.flags.c_contiguous and arr.size:
        return _from_buffer(arr)
    return _ffi.cast("void *", arr.__array_interface__["data"][0])


def _prep(x: np.ndarray) -> np.ndarray:
    return x if x.flags.c_contiguous or x.size > SMALL_COPY else np.ascontiguousarray(x)


def _broadcast(ops: list[np.ndarray], itemsize: int) -> tuple[tuple[int, ...], list[list[int]]]:
    """numpy broadcasting without views: the result shape and each operand's element
    strides over it (0 along broadcast axes)."""
    nd = max(x.ndim for x in ops)
    shape = [1] * nd
    strides = []
    for x in ops:
        pad = nd - x.ndim
        st = [0] * pad
        for i, (d, s) in enumerate(zip(x.shape, x.strides)):
            if d != 1:
                if shape[pad + i] not in (1, d):
                    raise ValueError(f"operands could not be broadcast together: {[o.shape for o in ops]}")
                shape[pad + i] = d
                st.append(s // itemsize)
            else:
                st.append(0)
        strides.append(st)
    return tuple(shape), strides


def _coalesce(shape: tuple[int, ...], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
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
    _LAGRANGE: str
    _DECODE: str
    _RANGE_PROVE: str
    _COUNT_BAD: str
    _EXPAND: str
    _MATVEC: str

    @classmethod
    def _binary(cls, fname: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        fn = getattr(_lib, fname)
        if a.shape == b.shape and a.flags.c_contiguous and b.flags.c_contiguous:
            out = np.empty(a.shape, dtype=cls._DTYPE)
            if a.size:
                fn(_ptr(out), _ptr(a), _ptr(b), 1, 1, a.size, 0, 0, 1, 0, 0, 1)
            return out
        if b.size == 1 and a.ndim >= b.ndim and a.flags.c_contiguous:  # times a constant
            out = np.empty(a.shape, dtype=cls._DTYPE)
            if a.size:
                fn(_ptr(out), _ptr(a), _ptr(np.ascontiguousarray(b)), 1, 1, a.size, 0, 0, 1, 0, 0, 0)
            return out
        a, b = _prep(a), _prep(b)
        shape, (sa, sb) = _broadcast([a, b], cls._DTYPE.itemsize)
        out = np.empty(shape, dtype=cls._DTYPE)
        if not out.size:
            return out
        if len(shape) > 3:
            dims, (sa, sb) = _coalesce(shape, [sa, sb])
            if len(dims) > 3:  # rare: materialise both operands
                a = np.ascontiguousarray(np.broadcast_to(a, shape))
                b = np.ascontiguousarray(np.broadcast_to(b, shape))
                dims, sa, sb = [a.size], [1], [1]
        else:
            dims = list(shape)
        pad = 3 - len(dims)
        fn(_ptr(out), _ptr(a), _ptr(b), *([1] * pad + dims), *([0] * pad + sa), *([0] * pad + sb))
        return out

    @classmethod
    def _reduce(cls, a: np.ndarray, b: np.ndarray | None, axis: int) -> np.ndarray:
        """sum(a * b) (or sum(a)) along axis, in one pass with one reduction per output."""
        if a.flags.c_contiguous and (b is None or (b.shape == a.shape and b.flags.c_contiguous)):
            shape = a.shape  # the common case: no broadcasting, plain strides
            nd = len(shape)
            ax = axis + nd if axis < 0 else axis
            if 0 <= ax < nd and a.size:
                inner = 1
                for d in shape[ax + 1 :]:
                    inner *= d
                n_red = shape[ax]
                out = np.empty(shape[:ax] + shape[ax + 1 :] or (1,), dtype=cls._DTYPE)
                pb, sb = (_ffi.NULL, (0, 0, 0)) if b is None else (_ptr(b), (n_red * inner, inner, 1))
                getattr(_lib, cls._MUL_SUM)(
                    _ptr(out), _ptr(a), pb, a.size // (n_red * inner), n_red, inner, n_red * inner, inner, 1, *sb
                )
                return out
        if (b is not None and a.ndim == 2 and b.ndim == 1 and axis in (-1, 1) and a.shape[1] == b.shape[0]
                and a.flags.c_contiguous and b.flags.c_contiguous and a.size):  # matrix times vector
            m, k = a.shape
            out = np.empty(m, dtype=cls._DTYPE)
            threads = prover_threads() if a.size >= PMUL_THREADS_MIN else 1  # e.g. truncate of a long share
            getattr(_lib, cls._MATVEC)(_ptr(out), _ptr(a), _ptr(b), m, k, threads)
            return out
        ops = [_prep(a)] if b is None else [_prep(a), _prep(b)]
        shape, strides = _broadcast(ops, cls._DTYPE.itemsize)
        nd = len(shape)
        axis = axis + nd if axis < 0 else axis
        if not 0 <= axis < nd:
            raise np.exceptions.AxisError(axis, nd)
        out = np.empty(shape[:axis] + shape[axis + 1 :] or (1,), dtype=cls._DTYPE)
        if not out.size:
            return out
        outer, s_out = _coalesce(shape[:axis], [st[:axis] for st in strides])
        inner, s_in = _coalesce(shape[axis + 1 :], [st[axis + 1 :] for st in strides])
        if len(outer) > 1 or len(inner) > 1:  # not expressible as (outer, red, inner): copy
            full = [np.ascontiguousarray(np.broadcast_to(x, shape)) for x in ops]
            return cls._reduce(full[0], full[1] if b is not None else None, axis)
        args = []
        for k in range(len(ops)):
            args.append((s_out[k][0] if outer else 0, strides[k][axis], s_in[k][0] if inner else 0))
        getattr(_lib, cls._MUL_SUM)(
            _ptr(out), _ptr(ops[0]), _ptr(ops[1]) if b is not None else _ffi.NULL,
            outer[0] if outer else 1, shape[axis], inner[0] if inner else 1,
            *args[0], *(args[1] if b is not None else (0, 0, 0)),
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
        if a.ndim == 2 and m.ndim == 2 and a.flags.c_contiguous and m.flags.c_contiguous and a.size and m.size:
            (rows, k), j = a.shape, m.shape[1]  # out[b, c] = sum_r a[b, r] m[r, c], no broadcast views
            out = np.empty((rows, j), dtype=cls._DTYPE)
            getattr(_lib, cls._MUL_SUM)(_ptr(out), _ptr(a), _ptr(m), rows, k, j, k, 1, 0, 0, j, 1)
            return out
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
    def range_prove(
        cls, x: np.ndarray, r: np.ndarray, seeds: np.ndarray, c: np.ndarray, chunk: int, calls: int, p: int,
        plan: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> np.ndarray:
        """Gadget values (B, 2p) of the range check ParallelSum(Mul, chunk) over x (B, n), straight
        from x, r (B, calls) and the wire seeds (B, 2*chunk): range_wires + pmul_extend without
        ever storing the (B, 2*chunk, p) wires.  plan: crypto.poly's extension tables for p.
        x may also be uint8 0/1 digits (`is_bits`): the same values at 1/16 of the memory."""
        x = np.ascontiguousarray(x) if is_bits(x) else np.ascontiguousarray(x, dtype=cls._DTYPE)
        r, seeds = (np.ascontiguousarray(v, dtype=cls._DTYPE) for v in (r, seeds))
        out = np.empty((x.shape[0], 2 * p), dtype=cls._DTYPE)
        threads = prover_threads() if 2 * chunk * p >= PMUL_THREADS_MIN else 1
        if x.shape[0] and getattr(_lib, cls._RANGE_PROVE)(
            _ptr(out), _ptr(x), x.shape[0], x.shape[1], _ptr(r), _ptr(seeds), _ptr(c), chunk, calls, p,
            *(_ptr(t) for t in plan), threads, int(is_bits(x)),
        ):
            raise MemoryError("field kernel scratch")
        return out

    @classmethod
    def range_evals(
        cls, x: np.ndarray, r: np.ndarray, lam: np.ndarray, chunk: int, calls: int, c: np.ndarray
    ) -> np.ndarray:
        """(B, 2*chunk) interleaved: sum_i lam_i r_i^(j+1) x[i*chunk+j] and
        sum_i lam_i x[i*chunk+j] - (sum_i lam_i) * c[0].  Long rows split their calls over
        prover_threads() threads (the same sums)."""
        x = np.ascontiguousarray(x, dtype=cls._DTYPE)
        r = np.ascontiguousarray(r, dtype=cls._DTYPE)
        lam = np.ascontiguousarray(lam, dtype=cls._DTYPE)
        out = np.empty((x.shape[0], 2 * chunk), dtype=cls._DTYPE)
        threads = prover_threads() if x.shape[1] >= PMUL_THREADS_MIN else 1
        if x.shape[0] and getattr(_lib, cls._RANGE_EVALS)(
            _ptr(out), _ptr(x), x.shape[0], x.shape[1], _ptr(r), _ptr(lam), chunk, calls, _ptr(c), threads
        ):
            raise MemoryError("field kernel scratch")
        return out


    @classmethod
    def expand_share(
        cls, xof: Any, n: int, out: np.ndarray | None = None, absorb_share: Any = None,
        meas: np.ndarray | None = None, lead: np.ndarray | None = None, absorb_lead: Any = None,
    ) -> None:
        """The draft's helper measurement share (n elements of `xof` by rejection sampling), fused
        with its uses (all optional): written to `out`; its encoding absorbed by `absorb_share`;
        lead = meas - share (in place when lead is meas; meas may be uint8 0/1 digits, `is_bits`);
        lead's encoding absorbed by `absorb_lead`.  XOF arguments are
        crypto.xof.TurboShake128Native instances; their streams share the permutation's SIMD
        lanes (see crypto/xof_kernel.c)."""
        for arr in (out, meas, lead):
            if arr is not None and (
                (arr.dtype != cls._DTYPE and not (arr is meas and is_bits(arr)))
                or arr.shape != (n,) or not arr.flags.c_contiguous
            ):
                raise ValueError("expand_share: vectors must be contiguous, of this field (or bits) and of length n")
        if lead is not None and (meas is None or not lead.flags.writeable):
            raise ValueError("expand_share: lead needs meas and must be writable")
        if out is not None and not out.flags.writeable:
            raise ValueError("expand_share: out must be writable")
        ptr = lambda a: _ffi.NULL if a is None else _ptr(a)
        st = lambda h: _ffi.NULL if h is None else h.ptr
        bits = meas is not None and is_bits(meas)
        if getattr(_lib, cls._EXPAND)(
            st(xof), n, ptr(out), st(absorb_share), ptr(meas), int(bits), ptr(lead), st(absorb_lead)
        ):
            raise MemoryError("field kernel scratch")

    @classmethod
    def decode_unchecked(cls, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        n = len(data) // cls._DTYPE.itemsize
        out = np.empty(n, dtype=cls._DTYPE)
        ok = np.empty(n, dtype=bool)
        if n:
            getattr(_lib, cls._DECODE)(_ptr(out), _from_buffer(data), n, _ptr(ok))
        return out, ok

    @classmethod
    def all_canonical(cls, vec: np.ndarray) -> bool:
        vec = np.ascontiguousarray(vec)
        return not vec.size or getattr(_lib, cls._COUNT_BAD)(_from_buffer(vec), vec.size) == 0

    @classmethod
    def lagrange(cls, t: int, roots: np.ndarray, n_inv: np.ndarray) -> np.ndarray | None:
        """Barycentric weights at t for the n-th roots (see crypto.poly.lagrange_weights),
        or None when t is itself one of the roots."""
        n = roots.shape[0]
        out = np.empty(n, dtype=cls._DTYPE)
        if getattr(_lib, cls._LAGRANGE)(_ptr(out), _ptr(cls.const(t)), n, _ptr(roots), _ptr(n_inv)):
            return None
        return out

    @classmethod
    def const(cls, x: int) -> np.ndarray:
        """Shape-(1,) read-only vector holding x (cached: the same constants recur per report)."""
        return _native_const(cls, x % cls.MODULUS)


@lru_cache(maxsize=4096)
def _native_const(field: type[_PrimeField], x: int) -> np.ndarray:
    out = field.from_ints([x])
    out.flags.writeable = False
    return out


class Field64Native(_NativeOps, Field64):
    """`Field64` (same uint64 vectors, same bytes) with compiled arithmetic."""

    _WIDTH = 1
    _DTYPE = np.dtype(np.uint64)
    _ADD, _SUB, _MUL, _MUL_SUM, _NTT = "f64_add", "f64_sub", "f64_mul", "f64_mul_sum", "f64_ntt"
    _PMUL, _RANGE_WIRES, _RANGE_EVALS = "f64_pmul_extend", "f64_range_wires", "f64_range_evals"
    _LAGRANGE, _DECODE, _RANGE_PROVE = "f64_lagrange", "f64_decode", "f64_range_prove"
    _COUNT_BAD, _EXPAND, _MATVEC = "f64_count_bad", "f64_expand_share", "f64_matvec"


class Field128Native(_NativeOps, Field128Limbs):
    """`Field128Limbs` (same (lo, hi) vectors, same bytes) with compiled arithmetic."""

    _WIDTH = 2
    _DTYPE = F128_DTYPE
    _ADD, _SUB, _MUL, _MUL_SUM, _NTT = "f128_add", "f128_sub", "f128_mul", "f128_mul_sum", "f128_ntt"
    _PMUL, _RANGE_WIRES, _RANGE_EVALS = "f128_pmul_extend", "f128_range_wires", "f128_range_evals"
    _LAGRANGE, _DECODE, _RANGE_PROVE = "f128_lagrange", "f128_decode", "f128_range_prove"
    _COUNT_BAD, _EXPAND, _MATVEC = "f128_count_bad", "f128_expand_share", "f128_matvec"

    @classmethod
    def from_u64(cls, small: np.ndarray) -> np.ndarray:
        words = np.zeros(small.shape + (2,), dtype=np.uint64)  # one array, filled in place
        words[..., 0] = small
        return words.view(F128_DTYPE).reshape(small.shape)

    @classmethod
    def to_ints(cls, vec: np.ndarray) -> list[int]:
        vec = np.asarray(vec)
        if vec.dtype == cls._DTYPE and vec.size <= 16:  # a few elements: straight from the bytes
            raw = vec.tobytes()
            return [int.from_bytes(raw[i : i + 16], "little") for i in range(0, len(raw), 16)]
        return super().to_ints(vec)


for _cls in (Field64Native, Field128Native):
    _cls.SMALL = _cls
    _cls.LARGE = _cls


def native_field(field: type[_PrimeField]) -> type[_PrimeField]:
    """The native twin of a field backend (Field64* -> Field64Native, Field128* -> Field128Native)."""
    return Field64Native if field.ENCODED_SIZE == 8 else Field128Native


__all__ = [
    "KERNEL_ENV", "THREADS_ENV", "Field64Native", "Field128Native", "is_bits", "kernel_enabled", "native_built",
    "native_field", "prover_threads",
]
