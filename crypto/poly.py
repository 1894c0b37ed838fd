"""Polynomials over the VDAF fields: NTT, interpolation and evaluation.

The FLP of draft-irtf-cfrg-vdaf-18 (Section 7.3) interpolates wire polynomials
at the powers of a primitive n-th root of unity ``alpha`` (natural order
``alpha^0, alpha^1, ...``) and evaluates them at a random point.  Interpolation
through those points is exactly the inverse NTT, so everything here is radix-2
NTT on arrays whose last axis holds the coefficients (or values); leading axes
are batches that are transformed together.

Coefficients are little-endian (index i is the coefficient of x^i).
Must not be used with sizes that are not powers of two.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from twinmpc.crypto.field import _PrimeField


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (n >= 1), as in the draft's next_power_of_2."""
    if n < 1:
        raise ValueError("n must be positive")
    return 1 << (n - 1).bit_length()


@cache
def _twiddles(field: type[_PrimeField], n: int, inverse: bool) -> tuple[np.ndarray | None, ...]:
    """Per Stockham level (sub-length n' = n, n/2, ..., 2): [w^1 .. w^(n'/2 - 1)] as a
    column, w a primitive n'-th root (inverted for the inverse transform); None when n' = 2."""
    stages: list[np.ndarray | None] = []
    sub = n
    while sub > 1:
        half = sub // 2
        w = field.root_of_unity(sub)
        if inverse:
            w = field.s_inv(w)
        stages.append(field.powers(w, half)[1:].reshape(-1, 1) if half > 1 else None)
        sub = half
    return tuple(stages)


def ntt(field: type[_PrimeField], a: np.ndarray, inverse: bool = False, scale: bool = True) -> np.ndarray:
    """Evaluate (or, with inverse=True, interpolate) along the last axis.

    Forward: out[..., k] = sum_j a[..., j] * alpha^(j*k) with alpha = root_of_unity(n).
    Inverse: the coefficients of the unique polynomial of degree < n with
    values a[..., k] at alpha^k (times n when scale=False, for callers that
    fold 1/n into a later multiplication).

    Radix-2 Stockham (decimation in frequency, self-sorting): each level
    reads the two contiguous halves (a, b) of the (m, s) blocks and writes
    a + b and (a - b) * w^p interleaved, so no bit reversal and every
    product runs on contiguous operands.
    """
    n = a.shape[-1]
    if n & (n - 1) or n == 0:
        raise ValueError("NTT size must be a power of two")
    if field.NATIVE:  # compiled radix-2 transform of every row (crypto.field_native)
        return field.ntt_rows(a, *_native_plan(field, n, inverse, scale))  # type: ignore[attr-defined]
    if field.CHEAP_DOT and 1 < n and a.size * n <= SMALL_NTT_MAX_PRODUCTS:
        # Tiny transforms: one exact integer product with the cached DFT
        # matrix instead of log2(n) stages of per-call overhead.
        return field.matmul(a, _dft_matrix(field, n, inverse, scale))
    lead = a.shape[:-1]
    x = a
    s = 1
    # Butterflies add and subtract lazily (object backends skip the modulus;
    # values grow by one bit per level); products and the end reduce.
    for tw in _twiddles(field, n, inverse):
        m = n // (2 * s)
        halves = x.reshape(lead + (2, m, s))
        u = halves[..., 0, :, :]
        v = halves[..., 1, :, :]
        out = np.empty(lead + (m, 2, s), dtype=x.dtype)
        out[..., 0, :] = field.lazy_add(u, v)
        d = field.lazy_sub(u, v)
        if tw is not None:  # p = 0 has twiddle 1: no product
            d[..., 1:, :] = field.mul(d[..., 1:, :], tw)
        out[..., 1, :] = d
        x = out.reshape(lead + (n,))
        s *= 2
    if inverse and scale and n > 1:
        return field.mul(x, field.const(field.s_inv(n)))
    return field.canonical(x)


@cache
def _native_plan(field: type[_PrimeField], n: int, inverse: bool, scale: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """([w^j for j < n/2], 1/n or None) for the compiled transform, w = alpha_n (inverted for inverse)."""
    w = field.root_of_unity(n)
    if inverse:
        w = field.s_inv(w)
    factor = field.const(field.s_inv(n)) if inverse and scale and n > 1 else None
    return field.powers(w, n // 2), factor


# Up to this many products (rows * n * n) ntt uses the DFT matrix on backends
# with cheap exact dot products (measured crossover on object arrays: ~400-500).
SMALL_NTT_MAX_PRODUCTS = 384


@cache
def _dft_matrix(field: type[_PrimeField], n: int, inverse: bool, scale: bool) -> np.ndarray:
    """D (n, n) with ntt(a) = a @ D: D[j, k] = w^(jk), w = alpha_n (or 1/alpha_n, then times 1/n if scale)."""
    q = field.MODULUS
    w = field.root_of_unity(n)
    if inverse:
        w = pow(w, -1, q)
    c = pow(n, -1, q) if inverse and scale else 1
    return field.from_ints([c * pow(w, j * k, q) for j in range(n) for k in range(n)]).reshape(n, n)


def interpolate_roots(field: type[_PrimeField], values: np.ndarray) -> np.ndarray:
    """Coefficients of the polynomial through (alpha^k, values[k]) (draft poly_interp)."""
    return ntt(field, values, inverse=True)


def evaluate_roots(field: type[_PrimeField], coeffs: np.ndarray, n: int) -> np.ndarray:
    """Values of each polynomial at alpha_n^k, k < n, for any coefficient length.

    Coefficients beyond n are folded modulo x^n - 1 (which vanishes on the points).
    """
    length = coeffs.shape[-1]
    chunks = max(1, -(-length // n))
    padded = pad(field, coeffs, chunks * n)
    if chunks > 1:
        padded = field.sum(padded.reshape(coeffs.shape[:-1] + (chunks, n)), axis=-2)
        padded = padded.reshape(coeffs.shape[:-1] + (n,))
    return ntt(field, padded)


def extend_values(field: type[_PrimeField], values: np.ndarray, n: int, length: int | None = None) -> np.ndarray:
    """Values at all n-th roots of the polynomials (degree < p) given by their values at the p-th roots.

    values has shape (..., p), n a multiple of p.  The n/p cosets w_n^s * <alpha_p>
    are each one twisted NTT of size p (coset 0 is the input itself); the result
    is interleaved so index s + (n/p)*k holds the value at w_n^(s + (n/p) k).
    ``length``: the caller guarantees values[..., length:] are zero (an FLP's
    wire matrix is zero past its last gadget call); the matrix form skips them.
    """
    p = values.shape[-1]
    r = n // p
    if r * p != n:
        raise ValueError("n must be a multiple of the input size")
    if r == 1:
        return values
    used = p if length is None else max(1, min(length, p))
    rows = values.size // p
    if field.CHEAP_DOT and rows * used * (n - p) <= SMALL_EXTEND_MAX_PRODUCTS:
        # Small transforms: one exact integer matrix product beats 2 log2(p)
        # vectorised NTT stages, whose cost here is per-call overhead.  Values
        # are centred into (-q/2, q/2] first: wire values such as x - 1 for a
        # 0/1 x become one-digit integers, whose products are cheap.
        half = field.MODULUS // 2
        v = values[..., :used]
        centred = np.where(v > half, v - field.MODULUS, v)
        other = field.matmul(centred, _coset_matrix(field, n, p)[:used])
        cosets = [values] + [other[..., s - 1 :: r - 1] for s in range(1, r)]
    else:
        cosets = _coset_values_ntt(field, values, n)
    return np.stack(cosets, axis=-1).reshape(values.shape[:-1] + (n,))


def parallel_mul_extend(field: type[_PrimeField], wires: np.ndarray, n: int, length: int | None = None) -> np.ndarray:
    """Values at all n-th roots of sum_j L_j * R_j, for wires (B, 2*pairs, p): rows 2j and 2j+1
    hold the values of L_j and R_j at the p-th roots (the FLP's ParallelSum(Mul) gadget).

    Result (B, n).  On native fields with n = 2p this is one fused kernel that
    extends each wire pair in cache and sums the products lazily, so the
    (B, 2*pairs, n) extension is never stored; otherwise `extend_values` then
    one sum of products.  ``length`` as in `extend_values`.
    """
    b, arity, p = wires.shape
    if field.NATIVE and n == 2 * p:
        return field.pmul_extend(wires, *_native_extend_plan(field, p))  # type: ignore[attr-defined]
    values = extend_values(field, wires, n, length=length)  # (B, 2*pairs, n)
    return field.mul_sum(values[:, 0::2], values[:, 1::2], axis=1).reshape(b, n)


def native_extend_plan(field: type[_PrimeField], p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tables a fused native prover kernel needs to extend wires from p to 2p roots (cached)."""
    return _native_extend_plan(field, p)


@cache
def _native_extend_plan(field: type[_PrimeField], p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inverse twiddles, twist [w_2p^i / p] in bit-reversed order, forward twiddles) for pmul_extend."""
    bits = p.bit_length() - 1
    rev = np.array([int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(p)])
    tw_inv, _ = _native_plan(field, p, True, False)
    tw_fwd, _ = _native_plan(field, p, False, False)
    return tw_inv, np.ascontiguousarray(_twist(field, 2 * p, 1, p)[rev]), tw_fwd


def _coset_values_ntt(field: type[_PrimeField], values: np.ndarray, n: int) -> list[np.ndarray]:
    """[values, values on coset 1, ..., coset r-1], each coset one twisted NTT."""
    p = values.shape[-1]
    coeffs_times_p = ntt(field, values, inverse=True, scale=False)  # 1/p is folded into the twist
    cosets = [values]
    for s in range(1, n // p):
        cosets.append(ntt(field, field.mul(coeffs_times_p, _twist(field, n, s, p))))
    return cosets


# Up to this many products (rows * used columns * (n - p)) extend_values multiplies
# by a cached matrix on backends with cheap exact dot products.  Measured on
# Field128 object arrays with FLP wire matrices (zeros and one-digit centred
# values): Histogram(100)'s 20 x 11 x 16 = 3,520 products take ~190 us against
# ~300 us for the NTTs; with 64 x 64 random values the NTTs win by 3x.
SMALL_EXTEND_MAX_PRODUCTS = 4096


@cache
def _coset_matrix(field: type[_PrimeField], n: int, p: int) -> np.ndarray:
    """E (p, p*(r-1)): row k holds the values off the p-th roots, in interleaved
    order (column (k'*(r-1) + s-1) is the point w_n^(s + r k')), of the
    polynomial that is 1 at alpha_p^k and 0 at the other p-th roots."""
    small = field.SMALL
    eye = small.from_ints([int(i == j) for i in range(p) for j in range(p)]).reshape(p, p)
    cosets = _coset_values_ntt(small, eye, n)[1:]  # r-1 arrays (p, p)
    other = np.stack(cosets, axis=-1).reshape(p, n - p)  # column k'*(r-1) + s-1
    return field.from_backend(small, other.reshape(-1)).reshape(p, n - p)


@cache
def _twist(field: type[_PrimeField], n: int, s: int, p: int) -> np.ndarray:
    """[w^(s*j) / p for j < p], w a primitive n-th root."""
    small = field.SMALL
    tw = small.mul(small.powers(small.s_pow(small.root_of_unity(n), s), p), small.const(small.s_inv(p)))
    return field.from_backend(small, tw)


@cache
def _roots(field: type[_PrimeField], n: int) -> np.ndarray:
    return field.powers(field.root_of_unity(n), n)


def lagrange_weights(field: type[_PrimeField], t: int, n: int) -> np.ndarray:
    """lam with f(t) = sum_k f(w^k) lam[k] for every f of degree < n (w a primitive n-th root).

    Barycentric weights lam[k] = (t^n - 1)/n * w^k / (t - w^k).  Up to
    DIRECT_WEIGHTS_MAX_N points they are computed on Python ints with one
    modular inversion for all (t - w^k) (Montgomery's batch trick); when t is
    itself an n-th root the weights are the indicator of that root.  Larger n
    use the inversion-free form: expanding 1/(t - w^k) as a geometric series
    gives lam[k] = (1/n) sum_j t^j w^(-jk), the inverse NTT of [1, t, ..., t^(n-1)].
    """
    if field.NATIVE and n <= DIRECT_WEIGHTS_MAX_N:  # the same formula in one compiled call
        lam = field.lagrange(t, _roots(field, n), field.const(field.s_inv(n)))  # type: ignore[attr-defined]
        if lam is not None:
            return lam
    small = field.SMALL  # n is at most a few thousand: use the low-overhead backend
    if n > DIRECT_WEIGHTS_MAX_N:
        return field.from_backend(small, ntt(small, small.powers(t, n), inverse=True))
    q = field.MODULUS
    t %= q
    roots = _root_ints(small, n)
    scale = (pow(t, n, q) - 1) * pow(n, -1, q) % q
    if scale == 0:  # t = w^k for some k: evaluating there just reads value k
        return field.from_ints([int(r == t) for r in roots])
    diffs = [t - r for r in roots]  # all non-zero mod q
    prefix = [1] * n
    acc = 1
    for i, d in enumerate(diffs):
        prefix[i] = acc
        acc = acc * d % q
    inv = pow(acc, -1, q)  # 1 / prod(diffs)
    lam = [0] * n
    for i in range(n - 1, -1, -1):
        lam[i] = inv * prefix[i] % q * roots[i] % q * scale  # reduced by from_ints
        inv = inv * diffs[i] % q
    return field.from_ints(lam)


# Up to this many points lagrange_weights uses the direct barycentric formula on
# Python ints (measured ~4x faster than the object-array NTT at n = 32).
DIRECT_WEIGHTS_MAX_N = 512


@cache
def _root_ints(field: type[_PrimeField], n: int) -> tuple[int, ...]:
    return tuple(field.to_ints(_roots(field, n)))


def subsample_lagrange_weights(field: type[_PrimeField], lam_n: np.ndarray, t: int, p: int) -> np.ndarray:
    """Weights of size p (dividing n = len(lam_n)) from those of size n at the same point t.

    The p-th roots are every r-th n-th root (r = n/p), and the two barycentric
    factors differ by (t^n - 1)/(t^p - 1) = sum_{i<r} t^(ip) =: S, so
    lam_p[k] = lam_n[r*k] * r / S.  S = 0 only when t is an n-th but not a
    p-th root; then the weights are computed directly.
    """
    n = lam_n.shape[-1]
    r = n // p
    if r * p != n:
        raise ValueError("p must divide the number of weights")
    if r == 1:
        return lam_n
    q = field.MODULUS
    tp = pow(t, p, q)
    s = sum(pow(tp, i, q) for i in range(r)) % q
    if s == 0:
        return lagrange_weights(field, t, p)
    return field.mul(lam_n[::r], field.const(r * pow(s, -1, q)))


def power_rows(field: type[_PrimeField], t: np.ndarray, n: int) -> np.ndarray:
    """Row b is [1, t_b, ..., t_b^(n-1)] for a vector t of B points: shape (B, n), log2(n) doublings."""
    out = field.from_u64(np.ones((t.shape[0], 1), dtype=np.uint64))
    tk = t.reshape(-1, 1)  # t^width
    while out.shape[1] < n:
        out = field.concat([out, field.mul(out, tk)], axis=1)
        if out.shape[1] < n:
            tk = field.mul(tk, tk)
    return out[:, :n]


def lagrange_weights_rows(field: type[_PrimeField], t: np.ndarray, n: int) -> np.ndarray:
    """`lagrange_weights` for a vector t of B points at once: shape (B, n), one batched inverse NTT
    (a few points each get the direct formula instead: fewer, cheaper steps)."""
    if t.shape[0] <= DIRECT_WEIGHTS_MAX_ROWS:
        return _rows(field, [lagrange_weights(field, ti, n) for ti in field.to_ints(t)])
    return ntt(field, power_rows(field, t, n), inverse=True)


def _rows(field: type[_PrimeField], rows: list[np.ndarray]) -> np.ndarray:
    """Stack 1-D rows into (B, n) (one row: a reshape, no copy)."""
    return rows[0].reshape(1, -1) if len(rows) == 1 else field.stack(rows)


# Up to this many points at once, Lagrange weights are computed point by point.
DIRECT_WEIGHTS_MAX_ROWS = 4


def subsample_lagrange_weights_rows(field: type[_PrimeField], lam_n: np.ndarray, t: np.ndarray, p: int) -> np.ndarray:
    """`subsample_lagrange_weights` for B points at once (lam_n: (B, n), t: (B,)) -> (B, p).

    The factors r/S of all rows share one batch inversion; the (negligibly
    rare) rows with S = 0 get their weights directly, as in the scalar twin.
    """
    n = lam_n.shape[-1]
    r = n // p
    if r * p != n:
        raise ValueError("p must divide the number of weights")
    if r == 1:
        return lam_n
    if t.shape[0] <= DIRECT_WEIGHTS_MAX_ROWS:  # point by point, as lagrange_weights_rows
        if field.NATIVE and p <= DIRECT_WEIGHTS_MAX_N:  # the size-p weights at t are unique: one compiled call
            return _rows(field, [lagrange_weights(field, ti, p) for ti in field.to_ints(t)])
        return _rows(field, [subsample_lagrange_weights(field, lam, ti, p) for lam, ti in zip(lam_n, field.to_ints(t))])
    tp = t
    for _ in range(p.bit_length() - 1):  # p is a power of two: t^p by squaring
        tp = field.mul(tp, tp)
    s = field.sum(power_rows(field, tp, r), axis=-1)
    zero = field.is_zero(s)
    if np.any(zero):
        s = s.copy()
        s[zero] = field.const(1)[0]
    factor = field.mul(field.inv(s), field.const(r))
    out = field.mul(lam_n[:, ::r], factor.reshape(-1, 1))
    ts = field.to_ints(t) if np.any(zero) else []
    for i in np.flatnonzero(zero):
        out[i] = lagrange_weights(field, ts[i], p)
    return out


@cache
def _extension_matrix(field: type[_PrimeField], l: int, n: int) -> np.ndarray:
    """C (n - l, l) with [values, C @ values] the values at all n-th roots of the
    polynomial of degree < l through values at w^0 .. w^(l-1).

    The m = n - l missing values solve the m x m system "coefficients l..n-1
    vanish": A u = -B v with A[j][i] = w^(-j*(l+i)), B[j][k] = w^(-j*k),
    j in [l, n).  Solved once per (field, l, n) on Python ints.
    """
    q = field.MODULUS
    small = field.SMALL
    roots = small.to_ints(_roots(small, n))  # w^i, so w^(-j*k) = roots[(-j*k) mod n]
    a = [[roots[(-j * i) % n] for i in range(l, n)] for j in range(l, n)]
    b = [[(-roots[(-j * k) % n]) % q for k in range(l)] for j in range(l, n)]
    rows = _solve_mod(a, b, q)  # A^{-1} (-B), one row per missing value
    return field.from_ints([x for row in rows for x in row]).reshape(n - l, l)


def extend_lagrange(field: type[_PrimeField], values: np.ndarray, n: int) -> np.ndarray:
    """Values at all n-th roots of the unique polynomial of degree < l = values.shape[-1]
    whose values at w_n^0 .. w_n^(l-1) are given (draft-18 Lagrange-basis gadget polynomial);
    leading axes of `values` are independent polynomials.

    The missing n - l values are a fixed linear map of the given ones
    (`_extension_matrix`, cached): one product and one row sum per call.
    """
    l = values.shape[-1]
    if l > n:
        raise ValueError("more values than roots")
    if l == n:
        return values
    c = _extension_matrix(field, l, n)
    if values.ndim == 1:
        return field.concat([values, field.mul_sum(c, values)])
    # Leading axes are batches (one row per report): one matrix product for all.
    return field.concat([values, field.matmul(values, _extension_matrix_t(field, l, n))], axis=-1)


@cache
def _extension_matrix_t(field: type[_PrimeField], l: int, n: int) -> np.ndarray:
    """The transpose of `_extension_matrix`, contiguous (batched extend_lagrange)."""
    return np.ascontiguousarray(_extension_matrix(field, l, n).T)


def _solve_mod(mat: list[list[int]], rhs: list[list[int]], p: int) -> list[list[int]]:
    """Gauss-Jordan elimination mod p on a small non-singular system with several right-hand sides."""
    m = len(rhs)
    a = [row[:] + r[:] for row, r in zip(mat, rhs)]
    for col in range(m):
        piv = next(r for r in range(col, m) if a[r][col] % p)
        a[col], a[piv] = a[piv], a[col]
        inv = pow(a[col][col], -1, p)
        a[col] = [x * inv % p for x in a[col]]
        for r in range(m):
            if r != col and a[r][col]:
                fac = a[r][col]
                a[r] = [(x - fac * y) % p for x, y in zip(a[r], a[col])]
    return [a[r][m:] for r in range(m)]


def pad(field: type[_PrimeField], a: np.ndarray, n: int) -> np.ndarray:
    """Zero-extend the last axis to length n."""
    out = field.zeros_shape(a.shape[:-1] + (n,))
    out[..., : a.shape[-1]] = a
    return out


def poly_eval(field: type[_PrimeField], coeffs: np.ndarray, t: int) -> np.ndarray:
    """Evaluate each polynomial (last axis = coefficients) at the point t."""
    pw = field.powers(t, coeffs.shape[-1])
    return field.mul_sum(coeffs, pw)


def poly_mul(field: type[_PrimeField], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Product of two polynomials via NTT of size next_power_of_2(len(a)+len(b)-1)."""
    out_len = a.shape[-1] + b.shape[-1] - 1
    n = next_power_of_2(out_len)
    prod = field.mul(ntt(field, pad(field, a, n)), ntt(field, pad(field, b, n)))
    return ntt(field, prod, inverse=True)[..., :out_len]


__all__ = [
    "evaluate_roots",
    "extend_lagrange",
    "extend_values",
    "interpolate_roots",
    "lagrange_weights",
    "lagrange_weights_rows",
    "native_extend_plan",
    "next_power_of_2",
    "ntt",
    "pad",
    "parallel_mul_extend",
    "poly_eval",
    "poly_mul",
    "power_rows",
    "subsample_lagrange_weights",
    "subsample_lagrange_weights_rows",
]
