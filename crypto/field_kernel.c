/* Native kernels for the two draft-irtf-cfrg-vdaf-18 fields (crypto/field.py, crypto/poly.py).
 *
 * Field64:  p = 2^64 - 2^32 + 1, one uint64 per element.
 * Field128: p = 2^128 - 28*2^64 + 1, two uint64 per element (lo, hi): the
 *           memory layout of crypto.field.F128_DTYPE and of the draft's
 *           little-endian encoding.
 *
 * Every function reads canonical elements (< p) and writes canonical
 * elements, so results are the same residues, byte for byte, as the numpy
 * reference path.  Binary operations walk a 3-D strided iteration space
 * (strides in elements, 0 = broadcast) and write a contiguous output; the
 * Python side folds numpy broadcasting into it.  Only the fused FLP kernels
 * allocate (row-sized scratch); nothing calls back into Python, so the
 * bindings release the GIL.
 *
 * Not constant time (branches on rare carries): not for long-term secrets.
 */
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned __int128 u128;
typedef __int128 i128;
typedef uint64_t u64;
typedef int64_t i64;

/* ------------------------------------------------------------------ Field64 */
#define P64 0xFFFFFFFF00000001ULL
#define EPS64 0xFFFFFFFFULL /* 2^64 mod p */

static inline u64 f64_reduce(u128 x) {
    /* x = hi*2^64 + lo, 2^64 = 2^32 - 1 and 2^96 = -1 (mod p).  Branch-free: the
     * borrow of lo - hh is a coin flip on random data (a mispredicted branch per
     * product cost the transforms about half their time). */
    u64 lo = (u64)x, hi = (u64)(x >> 64);
    u64 hh = hi >> 32, hl = hi & EPS64;
    u64 t0;
    u64 borrow = __builtin_sub_overflow(lo, hh, &t0);
    t0 -= EPS64 & -borrow; /* wrapped below 0: add p = subtract 2^32 - 1 mod 2^64 */
    u64 t1 = hl * EPS64;
    u64 r;
    u64 carry = __builtin_add_overflow(t0, t1, &r);
    r += EPS64 & -carry; /* wrapped past 2^64: add 2^64 mod p */
    return r - (P64 & -(u64)(r >= P64));
}

static inline u64 f64_add1(u64 a, u64 b) {
    u64 s = a + b;
    return s - (P64 & -(u64)((s < a) | (s >= P64)));
}

static inline u64 f64_sub1(u64 a, u64 b) {
    u64 d = a - b;
    return d + (P64 & -(u64)(a < b));
}

static inline u64 f64_mul1(u64 a, u64 b) { return f64_reduce((u128)a * b); }

/* ----------------------------------------------------------------- Field128 */
#define PHI 0xFFFFFFFFFFFFFFE4ULL /* p = PHI*2^64 + 1 */

/* sum_k x_k 2^(64k) mod p, for x4 < 2^63; folds with 2^128 = 28*2^64 - 1,
 * 2^192 = 783*2^64 - 28, 2^256 = 21896*2^64 - 783 (mod p). */
static inline void f128_reduce5(u64 x0, u64 x1, u64 x2, u64 x3, u64 x4, u64 *out) {
    i128 a = (i128)x0 - (i128)x2 - (i128)28 * x3 - (i128)783 * x4;            /* > -2^75 */
    u128 b = (u128)x1 + (u128)28 * x2 + (u128)783 * x3 + (u128)21896 * x4;   /* < 2^79 */
    u64 bh = (u64)(b >> 64), bl = (u64)b;
    a -= bh; /* bh*2^128 = bh*28*2^64 - bh */
    i128 g = (i128)bl + (i128)28 * bh + (a >> 64); /* value = lo(a) + g*2^64 */
    u64 alo = (u64)a;
    u64 rlo, rhi;
    if (__builtin_expect(g < 0, 0)) {
        /* value in (-p, 0): value + p = (alo + 1) + (g - 28)*2^64 + 2^128 */
        u128 t = (u128)alo + 1;
        rlo = (u64)t;
        rhi = (u64)((i128)g - 28 + (i128)(t >> 64) + ((i128)1 << 64));
        out[0] = rlo;
        out[1] = rhi;
        return;
    }
    if (__builtin_expect((g >> 64) != 0, 0)) {
        /* g = 2^64 + e: value = alo - 1 + (e + 28)*2^64 */
        u64 e = (u64)g;
        if (alo == 0) {
            rlo = ~0ULL;
            rhi = e + 27;
        } else {
            rlo = alo - 1;
            rhi = e + 28;
        }
    } else {
        rlo = alo;
        rhi = (u64)g;
    }
    if (rhi > PHI || (rhi == PHI && rlo >= 1)) { /* < 2^128 < 2p: one subtraction */
        rhi -= PHI + (rlo < 1);
        rlo -= 1;
    }
    out[0] = rlo;
    out[1] = rhi;
}

static inline void f128_mul1(const u64 *a, const u64 *b, u64 *out) {
    u128 p00 = (u128)a[0] * b[0], p01 = (u128)a[0] * b[1];
    u128 p10 = (u128)a[1] * b[0], p11 = (u128)a[1] * b[1];
    u128 mid = (p00 >> 64) + (u64)p01 + (u64)p10;
    u128 mid2 = (mid >> 64) + (p01 >> 64) + (p10 >> 64) + (u64)p11;
    u64 x3 = (u64)(p11 >> 64) + (u64)(mid2 >> 64);
    f128_reduce5((u64)p00, (u64)mid, (u64)mid2, x3, 0, out);
}

/* Column sums of a 256-bit product, for lazily reduced sums of products. */
typedef struct {
    u128 c0, c1, c2, c3;
} acc256;

static inline void acc_mul(acc256 *acc, const u64 *a, const u64 *b) {
    u128 p00 = (u128)a[0] * b[0], p01 = (u128)a[0] * b[1];
    u128 p10 = (u128)a[1] * b[0], p11 = (u128)a[1] * b[1];
    acc->c0 += (u64)p00;
    acc->c1 += (u128)(u64)(p00 >> 64) + (u64)p01 + (u64)p10;
    acc->c2 += (u128)(u64)(p01 >> 64) + (u64)(p10 >> 64) + (u64)p11;
    acc->c3 += (u64)(p11 >> 64);
}

/* a times a one-word b (e.g. the weights of a range-checked decoding): two products */
static inline void acc_mul64(acc256 *acc, const u64 *a, u64 b) {
    u128 p0 = (u128)a[0] * b, p1 = (u128)a[1] * b;
    acc->c0 += (u64)p0;
    acc->c1 += (u128)(u64)(p0 >> 64) + (u64)p1;
    acc->c2 += (u64)(p1 >> 64);
}

static inline void acc_add(acc256 *acc, const u64 *a) {
    acc->c0 += a[0];
    acc->c1 += a[1];
}

static inline void acc_done(const acc256 *acc, u64 *out) {
    u128 t = acc->c0;
    u64 x0 = (u64)t;
    t = (t >> 64) + acc->c1;
    u64 x1 = (u64)t;
    t = (t >> 64) + acc->c2;
    u64 x2 = (u64)t;
    t = (t >> 64) + acc->c3;
    f128_reduce5(x0, x1, x2, (u64)t, (u64)(t >> 64), out);
}

/* Branch-free: in transforms the "s >= p" outcome is a coin flip, and a
 * mispredicted branch costs more than computing both candidates. */
static inline void f128_add1(const u64 *a, const u64 *b, u64 *out) {
    u64 s0, s1, s1a, t0, t1, t1a;
    unsigned c0 = __builtin_add_overflow(a[0], b[0], &s0);
    unsigned c1 = __builtin_add_overflow(a[1], b[1], &s1a);
    unsigned c2 = __builtin_add_overflow(s1a, (u64)c0, &s1);
    unsigned b0 = __builtin_sub_overflow(s0, (u64)1, &t0); /* t = s - p */
    unsigned b1 = __builtin_sub_overflow(s1, PHI, &t1a);
    unsigned b2 = __builtin_sub_overflow(t1a, (u64)b0, &t1);
    u64 m = -(u64)((c1 | c2) | !(b1 | b2)); /* overflowed 2^128, or s >= p: take t */
    out[0] = (t0 & m) | (s0 & ~m);
    out[1] = (t1 & m) | (s1 & ~m);
}

static inline void f128_sub1(const u64 *a, const u64 *b, u64 *out) {
    u64 d0, d1, d1a, e0, e1;
    unsigned b0 = __builtin_sub_overflow(a[0], b[0], &d0);
    unsigned b1 = __builtin_sub_overflow(a[1], b[1], &d1a);
    unsigned b2 = __builtin_sub_overflow(d1a, (u64)b0, &d1);
    u64 m = -(u64)(b1 | b2); /* negative: add p back */
    unsigned c = __builtin_add_overflow(d0, (u64)1 & m, &e0);
    e1 = d1 + (PHI & m) + c;
    out[0] = e0;
    out[1] = e1;
}

/* ------------------------------------------------- strided element-wise ops */
/* out (n0, n1, n2) contiguous; a, b strided in elements (0 broadcasts). */
#define BINARY_LOOP(W, BODY)                                                      \
    for (i64 i = 0; i < n0; i++)                                                  \
        for (i64 j = 0; j < n1; j++) {                                            \
            const u64 *pa = a + (i * sa0 + j * sa1) * W;                          \
            const u64 *pb = b + (i * sb0 + j * sb1) * W;                          \
            u64 *po = out + ((i * n1 + j) * n2) * W;                              \
            for (i64 k = 0; k < n2; k++, pa += sa2 * W, pb += sb2 * W, po += W) { \
                BODY;                                                             \
            }                                                                     \
        }

#define BINARY_OP(NAME, W, BODY)                                                                    \
    void NAME(u64 *out, const u64 *a, const u64 *b, i64 n0, i64 n1, i64 n2, i64 sa0, i64 sa1, \
              i64 sa2, i64 sb0, i64 sb1, i64 sb2) {                                              \
        BINARY_LOOP(W, BODY)                                                                        \
    }

BINARY_OP(f64_add, 1, po[0] = f64_add1(pa[0], pb[0]))
BINARY_OP(f64_sub, 1, po[0] = f64_sub1(pa[0], pb[0]))
BINARY_OP(f64_mul, 1, po[0] = f64_mul1(pa[0], pb[0]))
BINARY_OP(f128_add, 2, f128_add1(pa, pb, po))
BINARY_OP(f128_sub, 2, f128_sub1(pa, pb, po))
BINARY_OP(f128_mul, 2, f128_mul1(pa, pb, po))

/* ------------------------------------------------------------- reductions */
/* out[o, i] = sum_r a[o, r, i] * b[o, r, i] (or sum_r a[o, r, i] when b is NULL);
 * a, b strided in elements; out contiguous (n_outer, n_inner). */
void f64_mul_sum(u64 *out, const u64 *a, const u64 *b, i64 n_outer, i64 n_red, i64 n_inner, i64 sa0,
                 i64 sa1, i64 sa2, i64 sb0, i64 sb1, i64 sb2) {
    for (i64 o = 0; o < n_outer; o++)
        for (i64 i = 0; i < n_inner; i++) {
            const u64 *pa = a + o * sa0 + i * sa2;
            u128 lo = 0; /* sum of the low 128 bits; `over` counts wraps of 2^128 */
            u64 over = 0;
            if (b) {
                const u64 *pb = b + o * sb0 + i * sb2;
                for (i64 r = 0; r < n_red; r++, pa += sa1, pb += sb1) {
                    u128 prod = (u128)pa[0] * pb[0];
                    lo += prod;
                    over += lo < prod;
                }
            } else {
                for (i64 r = 0; r < n_red; r++, pa += sa1) lo += pa[0]; /* < 2^128 for n_red < 2^64 */
            }
            /* 2^128 = -2^32 (mod p) */
            u64 r = f64_reduce(lo);
            if (over) r = f64_sub1(r, f64_mul1(over % P64, 1ULL << 32));
            out[o * n_inner + i] = r;
        }
}

void f128_mul_sum(u64 *out, const u64 *a, const u64 *b, i64 n_outer, i64 n_red, i64 n_inner, i64 sa0,
                  i64 sa1, i64 sa2, i64 sb0, i64 sb1, i64 sb2) {
    /* column sums stay below 2^128 for n_red < 2^62 terms */
    for (i64 o = 0; o < n_outer; o++)
        for (i64 i = 0; i < n_inner; i++) {
            const u64 *pa = a + 2 * (o * sa0 + i * sa2);
            acc256 acc = {0, 0, 0, 0};
            if (b) {
                const u64 *pb = b + 2 * (o * sb0 + i * sb2);
                for (i64 r = 0; r < n_red; r++, pa += 2 * sa1, pb += 2 * sb1) {
                    if (pb[1]) /* predictable: small weights (range-check decoding) skip half the products */
                        acc_mul(&acc, pa, pb);
                    else
                        acc_mul64(&acc, pa, pb[0]);
                }
            } else {
                for (i64 r = 0; r < n_red; r++, pa += 2 * sa1) acc_add(&acc, pa);
            }
            acc_done(&acc, out + 2 * (o * n_inner + i));
        }
}

/* out (m) = a (m, k, contiguous) times b (k), the rows split over threads (the
 * range-checked decodings of long measurements: truncate). */
typedef struct {
    void (*fn)(u64 *, const u64 *, const u64 *, i64, i64, i64, i64, i64, i64, i64, i64, i64);
    u64 *out;
    const u64 *a, *b;
    i64 rows, k, width;
} matvec_job;

static void *matvec_part(void *arg) {
    matvec_job *jb = arg;
    if (jb->rows) jb->fn(jb->out, jb->a, jb->b, jb->rows, jb->k, 1, jb->k, 1, 0, 0, 1, 0);
    return NULL;
}

static void run_parts(void *(*part)(void *), void *jobs, size_t job_size, int threads);

#define MATVEC(NAME, FN, W)                                                                     \
    void NAME(u64 *out, const u64 *a, const u64 *b, i64 m, i64 k, int threads) {              \
        if (threads < 1) threads = 1;                                                           \
        if (threads > 8) threads = 8;                                                           \
        matvec_job jobs[8];                                                                     \
        for (int t = 0; t < threads; t++) {                                                     \
            i64 r0 = m * t / threads, r1 = m * (t + 1) / threads;                               \
            jobs[t] = (matvec_job){FN, out + r0 * W, a + r0 * k * W, b, r1 - r0, k, W};          \
        }                                                                                       \
        run_parts(matvec_part, jobs, sizeof(matvec_job), threads);                              \
    }

MATVEC(f64_matvec, f64_mul_sum, 1)
MATVEC(f128_matvec, f128_mul_sum, 2)

/* ------------------------------------------------------------------- NTT */
/* Radix-2 passes on one row of n elements (a power of two), tw[j] = w^j for
 * j < n/2.  DIF: natural order in, bit-reversed out; DIT: bit-reversed in,
 * natural out; both compute out[k] = sum_j x[j] w^(jk) up to that order. */
static void bitrev_perm(u64 *x, i64 n, int w) {
    for (i64 i = 1, j = 0; i < n; i++) {
        i64 bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) {
            for (int t = 0; t < w; t++) {
                u64 tmp = x[i * w + t];
                x[i * w + t] = x[j * w + t];
                x[j * w + t] = tmp;
            }
        }
    }
}

static void f64_dif(u64 *x, i64 n, const u64 *tw) {
    for (i64 h = n >> 1, step = 1; h >= 1; h >>= 1, step <<= 1)
        for (i64 s = 0; s < n; s += 2 * h) {
            u64 *u = x + s, *v = x + s + h;
            u64 a0 = u[0], b0 = v[0];
            u[0] = f64_add1(a0, b0);
            v[0] = f64_sub1(a0, b0);
            for (i64 j = 1; j < h; j++) {
                u64 a = u[j], b = v[j];
                u[j] = f64_add1(a, b);
                v[j] = f64_mul1(f64_sub1(a, b), tw[j * step]);
            }
        }
}

static void f64_dit(u64 *x, i64 n, const u64 *tw) {
    for (i64 h = 1, step = n >> 1; h < n; h <<= 1, step >>= 1)
        for (i64 s = 0; s < n; s += 2 * h) {
            u64 *u = x + s, *v = x + s + h;
            u64 a0 = u[0], b0 = v[0];
            u[0] = f64_add1(a0, b0);
            v[0] = f64_sub1(a0, b0);
            for (i64 j = 1; j < h; j++) {
                u64 a = u[j], b = f64_mul1(v[j], tw[j * step]);
                u[j] = f64_add1(a, b);
                v[j] = f64_sub1(a, b);
            }
        }
}

static void f128_dif(u64 *x, i64 n, const u64 *tw) {
    u64 d[2];
    for (i64 h = n >> 1, step = 1; h >= 1; h >>= 1, step <<= 1)
        for (i64 s = 0; s < n; s += 2 * h) {
            u64 *u = x + 2 * s, *v = x + 2 * (s + h);
            f128_sub1(u, v, d);
            f128_add1(u, v, u);
            v[0] = d[0];
            v[1] = d[1];
            for (i64 j = 1; j < h; j++) {
                f128_sub1(u + 2 * j, v + 2 * j, d);
                f128_add1(u + 2 * j, v + 2 * j, u + 2 * j);
                f128_mul1(d, tw + 2 * j * step, v + 2 * j);
            }
        }
}

static void f128_dit(u64 *x, i64 n, const u64 *tw) {
    u64 b[2];
    for (i64 h = 1, step = n >> 1; h < n; h <<= 1, step >>= 1)
        for (i64 s = 0; s < n; s += 2 * h) {
            u64 *u = x + 2 * s, *v = x + 2 * (s + h);
            b[0] = v[0];
            b[1] = v[1];
            f128_sub1(u, b, v);
            f128_add1(u, b, u);
            for (i64 j = 1; j < h; j++) {
                f128_mul1(v + 2 * j, tw + 2 * j * step, b);
                f128_sub1(u + 2 * j, b, v + 2 * j);
                f128_add1(u + 2 * j, b, u + 2 * j);
            }
        }
}

/* In place on `rows` rows, natural order in and out; every output times
 * scale[0] when scale is not NULL (the 1/n of an inverse transform). */
void f64_ntt(u64 *x, i64 rows, i64 n, const u64 *tw, const u64 *scale) {
    for (i64 r = 0; r < rows; r++, x += n) {
        f64_dif(x, n, tw);
        bitrev_perm(x, n, 1);
        if (scale)
            for (i64 k = 0; k < n; k++) x[k] = f64_mul1(x[k], scale[0]);
    }
}

void f128_ntt(u64 *x, i64 rows, i64 n, const u64 *tw, const u64 *scale) {
    for (i64 r = 0; r < rows; r++, x += 2 * n) {
        f128_dif(x, n, tw);
        bitrev_perm(x, n, 2);
        if (scale)
            for (i64 k = 0; k < n; k++) f128_mul1(x + 2 * k, scale, x + 2 * k);
    }
}

/* ------------------------------------------------ barycentric weights (FLP) */
/* lam[k] = (t^n - 1)/n * w^k / (t - w^k) for the n-th roots roots[k] = w^k, with
 * one inversion for all k (Montgomery's batch trick; the inverse by Fermat).
 * Returns 1 without writing when t is itself an n-th root (the caller then
 * uses the indicator of that root). */
static void f128_pow1(const u64 *x, u64 ehi, u64 elo, u64 *out) {
    u64 acc[2] = {1, 0}, base[2] = {x[0], x[1]};
    for (int i = 0; i < 128; i++) {
        u64 bit = i < 64 ? (elo >> i) & 1 : (ehi >> (i - 64)) & 1;
        if (bit) f128_mul1(acc, base, acc);
        f128_mul1(base, base, base);
    }
    out[0] = acc[0], out[1] = acc[1];
}

int f128_lagrange(u64 *out, const u64 *t, i64 n, const u64 *roots, const u64 *n_inv) {
    static const u64 one[2] = {1, 0};
    u64 tn[2] = {t[0], t[1]}, scale[2], acc[2] = {1, 0}, inv[2], d[2];
    for (i64 m = n; m > 1; m >>= 1) f128_mul1(tn, tn, tn);
    f128_sub1(tn, one, scale);
    if (!scale[0] && !scale[1]) return 1;
    f128_mul1(scale, n_inv, scale);
    for (i64 k = 0; k < n; k++) { /* out[k] = prod_{i<k} (t - w^i) */
        out[2 * k] = acc[0], out[2 * k + 1] = acc[1];
        f128_sub1(t, roots + 2 * k, d);
        f128_mul1(acc, d, acc);
    }
    f128_pow1(acc, PHI - 1, ~0ULL, inv); /* 1 / prod (t - w^i), exponent p - 2 */
    for (i64 k = n - 1; k >= 0; k--) {
        u64 lam[2];
        f128_sub1(t, roots + 2 * k, d);
        f128_mul1(inv, out + 2 * k, lam);
        f128_mul1(inv, d, inv);
        f128_mul1(lam, roots + 2 * k, lam);
        f128_mul1(lam, scale, out + 2 * k);
    }
    return 0;
}

static u64 f64_pow1(u64 x, u64 e) {
    u64 acc = 1;
    for (; e; e >>= 1, x = f64_mul1(x, x))
        if (e & 1) acc = f64_mul1(acc, x);
    return acc;
}

int f64_lagrange(u64 *out, const u64 *t, i64 n, const u64 *roots, const u64 *n_inv) {
    u64 tn = t[0], acc = 1;
    for (i64 m = n; m > 1; m >>= 1) tn = f64_mul1(tn, tn);
    u64 scale = f64_sub1(tn, 1);
    if (!scale) return 1;
    scale = f64_mul1(scale, n_inv[0]);
    for (i64 k = 0; k < n; k++) {
        out[k] = acc;
        acc = f64_mul1(acc, f64_sub1(t[0], roots[k]));
    }
    u64 inv = f64_pow1(acc, P64 - 2);
    for (i64 k = n - 1; k >= 0; k--) {
        u64 lam = f64_mul1(inv, out[k]);
        inv = f64_mul1(inv, f64_sub1(t[0], roots[k]));
        out[k] = f64_mul1(f64_mul1(lam, roots[k]), scale);
    }
    return 0;
}

/* ---------------------------------------------------------------- decoding */
/* Little-endian words to elements: out gets every candidate, ok[k] = 1 iff it
 * is canonical (< p), as the draft's rejection sampling needs. */
void f64_decode(u64 *out, const u64 *in, i64 n, unsigned char *ok) {
    for (i64 k = 0; k < n; k++) {
        out[k] = in[k];
        ok[k] = in[k] < P64;
    }
}

void f128_decode(u64 *out, const u64 *in, i64 n, unsigned char *ok) {
    for (i64 k = 0; k < n; k++) {
        u64 lo = in[2 * k], hi = in[2 * k + 1];
        out[2 * k] = lo;
        out[2 * k + 1] = hi;
        ok[k] = hi < PHI || (hi == PHI && lo == 0);
    }
}

/* Number of non-canonical elements (>= p) among n: 0 lets a received or
 * sampled vector be used in place, without a decoded copy. */
i64 f64_count_bad(const u64 *in, i64 n) {
    i64 bad = 0;
    for (i64 k = 0; k < n; k++) bad += in[k] >= P64;
    return bad;
}

i64 f128_count_bad(const u64 *in, i64 n) {
    i64 bad = 0;
    for (i64 k = 0; k < n; k++) {
        u64 lo = in[2 * k], hi = in[2 * k + 1];
        bad += hi > PHI || (hi == PHI && lo != 0);
    }
    return bad;
}
