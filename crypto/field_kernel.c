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

/* ------------------------------------------- FLP prover: ParallelSum(Mul) */
/* wires (rows, 2*pairs, p): rows 2j and 2j+1 are the values of the two input
 * wires of slot j at the p-th roots.  out (rows, 2p) gets the values at all
 * 2p-th roots of sum_j L_j * R_j: index 2k the p-th root alpha^k, index 2k+1
 * the odd coset w_2p * alpha^k, where each wire is extended by an inverse
 * transform (DIF, unscaled), the twist [w_2p^i / p] (given in bit-reversed
 * order) and a forward transform (DIT).  Products are summed lazily, one
 * reduction per output; nothing of size (pairs, 2p) is ever stored.
 * Returns -1 if scratch memory cannot be allocated. */
int f64_pmul_extend(u64 *out, const u64 *wires, i64 rows, i64 pairs, i64 p, const u64 *tw_inv,
                    const u64 *twist_br, const u64 *tw_fwd, int threads) {
    (void)threads; /* Field64 products are cheap enough on one thread */
    u64 *tmp = malloc(2 * p * sizeof(u64));
    u128 *acc = malloc(2 * p * sizeof(u128));
    u64 *over = malloc(2 * p * sizeof(u64));
    if (!tmp || !acc || !over) {
        free(tmp), free(acc), free(over);
        return -1;
    }
    for (i64 r = 0; r < rows; r++) {
        memset(acc, 0, 2 * p * sizeof(u128));
        memset(over, 0, 2 * p * sizeof(u64));
        for (i64 j = 0; j < pairs; j++) {
            const u64 *lw = wires + (r * 2 * pairs + 2 * j) * p, *rw = lw + p;
            for (i64 k = 0; k < p; k++) {
                u128 prod = (u128)lw[k] * rw[k];
                acc[2 * k] += prod;
                over[2 * k] += acc[2 * k] < prod;
            }
            u64 *tl = tmp, *tr = tmp + p;
            memcpy(tl, lw, p * sizeof(u64));
            memcpy(tr, rw, p * sizeof(u64));
            f64_dif(tl, p, tw_inv);
            f64_dif(tr, p, tw_inv);
            for (i64 k = 0; k < p; k++) {
                tl[k] = f64_mul1(tl[k], twist_br[k]);
                tr[k] = f64_mul1(tr[k], twist_br[k]);
            }
            f64_dit(tl, p, tw_fwd);
            f64_dit(tr, p, tw_fwd);
            for (i64 k = 0; k < p; k++) {
                u128 prod = (u128)tl[k] * tr[k];
                acc[2 * k + 1] += prod;
                over[2 * k + 1] += acc[2 * k + 1] < prod;
            }
        }
        u64 *o = out + r * 2 * p;
        for (i64 k = 0; k < 2 * p; k++) {
            u64 v = f64_reduce(acc[k]);
            if (over[k]) v = f64_sub1(v, f64_mul1(over[k] % P64, 1ULL << 32)); /* 2^128 = -2^32 */
            o[k] = v;
        }
    }
    free(tmp), free(acc), free(over);
    return 0;
}

typedef struct {
    const u64 *wires;
    i64 r, j0, j1, pairs, p;
    const u64 *tw_inv, *twist_br, *tw_fwd;
    acc256 *acc; /* 2p accumulators, zeroed by the caller */
    u64 *tmp;    /* 4p words */
} pmul_job;

static void *f128_pmul_part(void *arg) {
    pmul_job *jb = arg;
    i64 p = jb->p;
    acc256 *acc = jb->acc;
    for (i64 j = jb->j0; j < jb->j1; j++) {
        const u64 *lw = jb->wires + 2 * (jb->r * 2 * jb->pairs + 2 * j) * p, *rw = lw + 2 * p;
        for (i64 k = 0; k < p; k++) acc_mul(&acc[2 * k], lw + 2 * k, rw + 2 * k);
        u64 *tl = jb->tmp, *tr = jb->tmp + 2 * p;
        memcpy(tl, lw, 2 * p * sizeof(u64));
        memcpy(tr, rw, 2 * p * sizeof(u64));
        f128_dif(tl, p, jb->tw_inv);
        f128_dif(tr, p, jb->tw_inv);
        for (i64 k = 0; k < p; k++) {
            f128_mul1(tl + 2 * k, jb->twist_br + 2 * k, tl + 2 * k);
            f128_mul1(tr + 2 * k, jb->twist_br + 2 * k, tr + 2 * k);
        }
        f128_dit(tl, p, jb->tw_fwd);
        f128_dit(tr, p, jb->tw_fwd);
        for (i64 k = 0; k < p; k++) acc_mul(&acc[2 * k + 1], tl + 2 * k, tr + 2 * k);
    }
    return NULL;
}

/* threads > 1 splits the wire pairs of each row between that many threads
 * (each with its own accumulators, added at the end: the same sums). */
int f128_pmul_extend(u64 *out, const u64 *wires, i64 rows, i64 pairs, i64 p, const u64 *tw_inv,
                     const u64 *twist_br, const u64 *tw_fwd, int threads) {
    if (threads < 1) threads = 1;
    if (threads > 8) threads = 8;
    if (pairs < 2 * threads) threads = 1;
    pmul_job jobs[8];
    pthread_t tids[8];
    u64 *tmp = malloc((size_t)threads * 4 * p * sizeof(u64));
    acc256 *acc = malloc((size_t)threads * 2 * p * sizeof(acc256));
    if (!tmp || !acc) {
        free(tmp), free(acc);
        return -1;
    }
    for (i64 r = 0; r < rows; r++) {
        memset(acc, 0, (size_t)threads * 2 * p * sizeof(acc256));
        int started = 0;
        for (int t = 0; t < threads; t++) {
            jobs[t] = (pmul_job){wires, r, pairs * t / threads, pairs * (t + 1) / threads, pairs, p,
                                 tw_inv, twist_br, tw_fwd, acc + t * 2 * p, tmp + t * 4 * p};
            if (t == 0) continue;
            if (pthread_create(&tids[t], NULL, f128_pmul_part, &jobs[t]))
                f128_pmul_part(&jobs[t]); /* no thread: do its share here (same sums) */
            else
                started |= 1 << t;
        }
        f128_pmul_part(&jobs[0]);
        for (int t = 1; t < threads; t++) {
            if (started & (1 << t)) pthread_join(tids[t], NULL);
            for (i64 k = 0; k < 2 * p; k++) {
                acc256 *a = &acc[k], *b = &acc[t * 2 * p + k];
                a->c0 += b->c0, a->c1 += b->c1, a->c2 += b->c2, a->c3 += b->c3;
            }
        }
        u64 *o = out + r * 4 * p;
        for (i64 k = 0; k < 2 * p; k++) acc_done(&acc[k], o + 2 * k);
    }
    free(tmp), free(acc);
    return 0;
}

/* ------------------------------------------------ range-check wires (FLP) */
/* The draft's bit check ParallelSum(Mul, chunk) over x (rows, n), zero-padded
 * to calls*chunk, with joint randomness r (rows, calls):
 *   range_wires: wires (rows, 2*chunk, calls): slot j of call i gets
 *     (r_i^(j+1) * x[i*chunk+j], x[i*chunk+j] - c), c = 1/num_shares;
 *   range_evals: the verifier's weighted sums over the calls with weights
 *     lam (rows, calls), out (rows, 2*chunk) interleaved:
 *     left_j = sum_i lam_i r_i^(j+1) x[i*chunk+j],
 *     right_j = sum_i lam_i x[i*chunk+j] - (sum_i lam_i) * c. */
void f128_range_wires(u64 *wires, const u64 *x, i64 rows, i64 n, const u64 *r, i64 chunk, i64 calls,
                      const u64 *c) {
    static const u64 zero[2] = {0, 0};
    for (i64 b = 0; b < rows; b++) {
        const u64 *xb = x + 2 * b * n, *rb = r + 2 * b * calls;
        u64 *wb = wires + 2 * b * 2 * chunk * calls;
        for (i64 i0 = 0; i0 < calls; i0 += 4) { /* four calls at once: independent power chains */
            i64 m = calls - i0 < 4 ? calls - i0 : 4;
            u64 w[4][2];
            for (i64 t = 0; t < m; t++) w[t][0] = rb[2 * (i0 + t)], w[t][1] = rb[2 * (i0 + t) + 1];
            for (i64 j = 0; j < chunk; j++)
                for (i64 t = 0; t < m; t++) {
                    i64 i = i0 + t, at = i * chunk + j;
                    const u64 *xv = at < n ? xb + 2 * at : zero;
                    f128_mul1(w[t], xv, wb + 2 * ((2 * j) * calls + i));
                    f128_sub1(xv, c, wb + 2 * ((2 * j + 1) * calls + i));
                    f128_mul1(w[t], rb + 2 * i, w[t]);
                }
        }
    }
}

void f64_range_wires(u64 *wires, const u64 *x, i64 rows, i64 n, const u64 *r, i64 chunk, i64 calls,
                     const u64 *c) {
    for (i64 b = 0; b < rows; b++) {
        const u64 *xb = x + b * n, *rb = r + b * calls;
        u64 *wb = wires + b * 2 * chunk * calls;
        for (i64 i = 0; i < calls; i++) {
            u64 w = rb[i];
            for (i64 j = 0; j < chunk; j++) {
                i64 at = i * chunk + j;
                u64 xv = at < n ? xb[at] : 0;
                wb[(2 * j) * calls + i] = f64_mul1(w, xv);
                wb[(2 * j + 1) * calls + i] = f64_sub1(xv, c[0]);
                w = f64_mul1(w, rb[i]);
            }
        }
    }
}

/* range_evals' sums over the calls [i0, i1) of one row, into zeroed accumulators
 * (threads > 1 split a row's calls; the partial sums are added at the end). */
typedef struct {
    const u64 *x, *r, *lam;
    i64 n, chunk, i0, i1;
    void *acc;
    u64 *over; /* Field64: wraps of the 128-bit sums */
} evals_job;

static void *f128_range_evals_part(void *arg) {
    evals_job *jb = arg;
    const u64 *xb = jb->x, *rb = jb->r, *lb = jb->lam;
    i64 n = jb->n, chunk = jb->chunk;
    acc256 *acc = jb->acc;
    for (i64 i0 = jb->i0; i0 < jb->i1; i0 += 4) { /* four calls at once: independent power chains */
        i64 m = jb->i1 - i0 < 4 ? jb->i1 - i0 : 4;
        u64 w[4][2];
        for (i64 t = 0; t < m; t++) f128_mul1(lb + 2 * (i0 + t), rb + 2 * (i0 + t), w[t]);
        for (i64 j = 0; j < chunk; j++)
            for (i64 t = 0; t < m; t++) {
                i64 i = i0 + t, at = i * chunk + j;
                if (at >= n) continue;
                const u64 *xv = xb + 2 * at;
                acc_mul(&acc[2 * j], w[t], xv);
                acc_mul(&acc[2 * j + 1], lb + 2 * i, xv);
                f128_mul1(w[t], rb + 2 * i, w[t]);
            }
    }
    return NULL;
}

static void *f64_range_evals_part(void *arg) {
    evals_job *jb = arg;
    const u64 *xb = jb->x, *rb = jb->r, *lb = jb->lam;
    i64 n = jb->n, chunk = jb->chunk;
    u128 *acc = jb->acc;
    u64 *over = jb->over;
    for (i64 i = jb->i0; i < jb->i1; i++) {
        u64 w = f64_mul1(lb[i], rb[i]);
        for (i64 j = 0; j < chunk && i * chunk + j < n; j++) {
            u64 xv = xb[i * chunk + j];
            u128 p1 = (u128)w * xv, p2 = (u128)lb[i] * xv;
            acc[2 * j] += p1;
            over[2 * j] += acc[2 * j] < p1;
            acc[2 * j + 1] += p2;
            over[2 * j + 1] += acc[2 * j + 1] < p2;
            w = f64_mul1(w, rb[i]);
        }
    }
    return NULL;
}

/* Run part(jobs[t]) for t < threads, jobs 1.. on new threads (in place if one cannot start). */
static void run_parts(void *(*part)(void *), void *jobs, size_t job_size, int threads) {
    pthread_t tids[8];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        void *jb = (char *)jobs + t * job_size;
        if (pthread_create(&tids[t], NULL, part, jb))
            part(jb);
        else
            started |= 1 << t;
    }
    part(jobs);
    for (int t = 1; t < threads; t++)
        if (started & (1 << t)) pthread_join(tids[t], NULL);
}

static int evals_threads(int threads, i64 calls) {
    if (threads < 1) threads = 1;
    if (threads > 8) threads = 8;
    return calls < 8 * threads ? 1 : threads;
}

/* The same sums on AVX-512 IFMA lanes (crypto/field_kernel_ifma.c); 1 when unavailable. */
static int f128_range_evals_fast(u64 *out, const u64 *x, i64 n, const u64 *r, const u64 *lam, i64 chunk,
                                 i64 calls, int threads);

int f128_range_evals(u64 *out, const u64 *x, i64 rows, i64 n, const u64 *r, const u64 *lam, i64 chunk,
                     i64 calls, const u64 *c, int threads) {
    int ev_threads = evals_threads(threads, calls);
    acc256 *acc = malloc((size_t)ev_threads * 2 * chunk * sizeof(acc256));
    if (!acc) return -1;
    evals_job jobs[8];
    for (i64 b = 0; b < rows; b++) {
        const u64 *xb = x + 2 * b * n, *rb = r + 2 * b * calls, *lb = lam + 2 * b * calls;
        int fast = f128_range_evals_fast(out + 2 * b * 2 * chunk, xb, n, rb, lb, chunk, calls,
                                         threads < 1 ? 1 : threads > 8 ? 8 : threads);
        if (fast < 0) {
            free(acc);
            return -1;
        }
        if (fast == 1) { /* the scalar kernel */
            memset(acc, 0, (size_t)ev_threads * 2 * chunk * sizeof(acc256));
            for (int t = 0; t < ev_threads; t++) /* call blocks of four, split evenly */
                jobs[t] = (evals_job){xb, rb, lb, n, chunk, 4 * ((calls + 3) / 4 * t / ev_threads),
                                      t + 1 == ev_threads ? calls : 4 * ((calls + 3) / 4 * (t + 1) / ev_threads),
                                      acc + t * 2 * chunk, NULL};
            run_parts(f128_range_evals_part, jobs, sizeof(evals_job), ev_threads);
            for (int t = 1; t < ev_threads; t++)
                for (i64 k = 0; k < 2 * chunk; k++) {
                    acc256 *a = &acc[k], *o = &acc[t * 2 * chunk + k];
                    a->c0 += o->c0, a->c1 += o->c1, a->c2 += o->c2, a->c3 += o->c3;
                }
            for (i64 k = 0; k < 2 * chunk; k++) acc_done(&acc[k], out + 2 * (b * 2 * chunk + k));
        }
        acc256 lam_sum = {0, 0, 0, 0};
        for (i64 i = 0; i < calls; i++) acc_add(&lam_sum, lb + 2 * i);
        u64 corr[2];
        acc_done(&lam_sum, corr);
        f128_mul1(corr, c, corr);
        for (i64 j = 0; j < chunk; j++) {
            u64 *right = out + 2 * (b * 2 * chunk + 2 * j + 1);
            f128_sub1(right, corr, right);
        }
    }
    free(acc);
    return 0;
}

int f64_range_evals(u64 *out, const u64 *x, i64 rows, i64 n, const u64 *r, const u64 *lam, i64 chunk,
                    i64 calls, const u64 *c, int threads) {
    threads = evals_threads(threads, calls);
    u128 *acc = malloc((size_t)threads * 2 * chunk * sizeof(u128));
    u64 *over = malloc((size_t)threads * 2 * chunk * sizeof(u64));
    if (!acc || !over) {
        free(acc), free(over);
        return -1;
    }
    evals_job jobs[8];
    for (i64 b = 0; b < rows; b++) {
        const u64 *xb = x + b * n, *rb = r + b * calls, *lb = lam + b * calls;
        memset(acc, 0, (size_t)threads * 2 * chunk * sizeof(u128));
        memset(over, 0, (size_t)threads * 2 * chunk * sizeof(u64));
        for (int t = 0; t < threads; t++)
            jobs[t] = (evals_job){xb, rb, lb, n, chunk, calls * t / threads, calls * (t + 1) / threads,
                                  acc + t * 2 * chunk, over + t * 2 * chunk};
        run_parts(f64_range_evals_part, jobs, sizeof(evals_job), threads);
        for (int t = 1; t < threads; t++)
            for (i64 k = 0; k < 2 * chunk; k++) {
                u128 add = acc[t * 2 * chunk + k];
                acc[k] += add;
                over[k] += over[t * 2 * chunk + k] + (acc[k] < add);
            }
        u64 lam_sum = 0;
        for (i64 i = 0; i < calls; i++) lam_sum = f64_add1(lam_sum, lb[i]);
        u64 corr = f64_mul1(lam_sum, c[0]);
        for (i64 k = 0; k < 2 * chunk; k++) {
            u64 v = f64_reduce(acc[k]);
            if (over[k]) v = f64_sub1(v, f64_mul1(over[k] % P64, 1ULL << 32));
            out[b * 2 * chunk + k] = k & 1 ? f64_sub1(v, corr) : v;
        }
    }
    free(acc), free(over);
    return 0;
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

/* ------------------------------------ FLP prover: fused range-check gadget */
/* The draft's bit check ParallelSum(Mul, chunk) proved without storing its
 * wires: for slot j the two wire rows (seed, then r_i^(j+1) x[i*chunk+j] for
 * the calls i, zero padding) and (seed, then x[i*chunk+j] - c) are built in
 * scratch, extended as in f128_pmul_extend, and their products summed.  The
 * same values as range_wires + pmul_extend, with O(p + calls) memory per
 * thread instead of O(chunk * p).  x (rows, n), r (rows, calls), seeds
 * (rows, 2*chunk), out (rows, 2p); with x_bits, x is (rows, n) bytes 0/1 (a
 * client's measurement as its digits: 1/16 of the memory of field elements). */
typedef struct {
    const u64 *x, *r, *seeds, *c;
    const unsigned char *x8; /* the measurement as 0/1 bytes instead of x (a client's own encoding) */
    i64 n, chunk, calls, p, j0, j1;
    const u64 *tw_inv, *twist_br, *tw_fwd;
    acc256 *acc; /* 2p accumulators, zeroed by the caller */
    u64 *tmp;    /* 4p words */
    u64 *pw;     /* 2*calls words: r_i^(j+1) */
} range_job;

static void *f128_range_prove_part(void *arg) {
    range_job *jb = arg;
    i64 p = jb->p, calls = jb->calls, chunk = jb->chunk, n = jb->n;
    acc256 *acc = jb->acc;
    u64 *tl = jb->tmp, *tr = jb->tmp + 2 * p, *pw = jb->pw;
    for (i64 i = 0; i < calls; i++) { /* pw[i] = r_i^(j0+1) */
        u64 e = (u64)jb->j0 + 1, base[2] = {jb->r[2 * i], jb->r[2 * i + 1]}, res[2] = {1, 0};
        for (; e; e >>= 1) {
            if (e & 1) f128_mul1(res, base, res);
            f128_mul1(base, base, base);
        }
        pw[2 * i] = res[0], pw[2 * i + 1] = res[1];
    }
    for (i64 j = jb->j0; j < jb->j1; j++) {
        tl[0] = jb->seeds[4 * j], tl[1] = jb->seeds[4 * j + 1];
        tr[0] = jb->seeds[4 * j + 2], tr[1] = jb->seeds[4 * j + 3];
        for (i64 i = 0; i < calls; i++) {
            i64 at = i * chunk + j;
            u64 xs[2] = {at < n && jb->x8 ? jb->x8[at] : 0, 0};
            const u64 *xv = at < n && !jb->x8 ? jb->x + 2 * at : xs;
            f128_mul1(pw + 2 * i, xv, tl + 2 * (1 + i));
            f128_sub1(xv, jb->c, tr + 2 * (1 + i));
            f128_mul1(pw + 2 * i, jb->r + 2 * i, pw + 2 * i);
        }
        memset(tl + 2 * (1 + calls), 0, 2 * (p - 1 - calls) * sizeof(u64));
        memset(tr + 2 * (1 + calls), 0, 2 * (p - 1 - calls) * sizeof(u64));
        for (i64 k = 0; k < p; k++) acc_mul(&acc[2 * k], tl + 2 * k, tr + 2 * k);
        f128_dif(tl, p, jb->tw_inv);
        f128_dif(tr, p, jb->tw_inv);
        for (i64 k = 0; k < p; k++) {
            f128_mul1(tl + 2 * k, jb->twist_br + 2 * k, tl + 2 * k);
            f128_mul1(tr + 2 * k, jb->twist_br + 2 * k, tr + 2 * k);
        }
        f128_dit(tl, p, jb->tw_fwd);
        f128_dit(tr, p, jb->tw_fwd);
        for (i64 k = 0; k < p; k++) acc_mul(&acc[2 * k + 1], tl + 2 * k, tr + 2 * k);
    }
    return NULL;
}

/* The same on AVX-512 IFMA lanes (crypto/field_kernel_ifma.c): 0 done, 1 unavailable, -1 no memory. */
static int f128_range_prove_fast(u64 *out, const u64 *x, const unsigned char *x8, i64 n, const u64 *r,
                                 const u64 *seeds, const u64 *c, i64 chunk, i64 calls, i64 p, const u64 *tw_inv,
                                 const u64 *twist_br, const u64 *tw_fwd, int threads);

int f128_range_prove(u64 *out, const u64 *x, i64 rows, i64 n, const u64 *r, const u64 *seeds, const u64 *c,
                     i64 chunk, i64 calls, i64 p, const u64 *tw_inv, const u64 *twist_br, const u64 *tw_fwd,
                     int threads, int x_bits) {
    if (threads < 1) threads = 1;
    if (threads > 8) threads = 8;
    int fast = 1;
    for (i64 b = 0; b < rows; b++) {
        fast = f128_range_prove_fast(out + 2 * b * 2 * p, x_bits ? NULL : x + 2 * b * n,
                                     x_bits ? (const unsigned char *)x + b * n : NULL, n, r + 2 * b * calls,
                                     seeds + 2 * b * 2 * chunk, c, chunk, calls, p, tw_inv, twist_br, tw_fwd, threads);
        if (fast) break; /* unavailable (the same for every row) or out of memory */
    }
    if (fast < 0) return -1;
    if (fast == 0) return 0;
    if (chunk < 2 * threads) threads = 1;
    range_job jobs[8];
    pthread_t tids[8];
    u64 *tmp = malloc((size_t)threads * 4 * p * sizeof(u64));
    u64 *pw = malloc((size_t)threads * 2 * calls * sizeof(u64));
    acc256 *acc = malloc((size_t)threads * 2 * p * sizeof(acc256));
    if (!tmp || !pw || !acc) {
        free(tmp), free(pw), free(acc);
        return -1;
    }
    for (i64 b = 0; b < rows; b++) {
        memset(acc, 0, (size_t)threads * 2 * p * sizeof(acc256));
        int started = 0;
        for (int t = 0; t < threads; t++) {
            jobs[t] = (range_job){x_bits ? NULL : x + 2 * b * n, r + 2 * b * calls, seeds + 2 * b * 2 * chunk, c,
                                  x_bits ? (const unsigned char *)x + b * n : NULL, n, chunk, calls, p,
                                  chunk * t / threads, chunk * (t + 1) / threads, tw_inv, twist_br, tw_fwd,
                                  acc + t * 2 * p, tmp + t * 4 * p, pw + t * 2 * calls};
            if (t == 0) continue;
            if (pthread_create(&tids[t], NULL, f128_range_prove_part, &jobs[t]))
                f128_range_prove_part(&jobs[t]);
            else
                started |= 1 << t;
        }
        f128_range_prove_part(&jobs[0]);
        for (int t = 1; t < threads; t++) {
            if (started & (1 << t)) pthread_join(tids[t], NULL);
            for (i64 k = 0; k < 2 * p; k++) {
                acc256 *a = &acc[k], *o = &acc[t * 2 * p + k];
                a->c0 += o->c0, a->c1 += o->c1, a->c2 += o->c2, a->c3 += o->c3;
            }
        }
        for (i64 k = 0; k < 2 * p; k++) acc_done(&acc[k], out + 2 * (b * 2 * p + k));
    }
    free(tmp), free(pw), free(acc);
    return 0;
}

typedef struct {
    const u64 *x, *r, *seeds, *c;
    const unsigned char *x8; /* as in range_job */
    i64 n, chunk, calls, p, j0, j1;
    const u64 *tw_inv, *twist_br, *tw_fwd;
    u128 *acc;  /* 2p accumulators and their 2^128 wrap counts, zeroed by the caller */
    u64 *over;
    u64 *tmp;   /* 2p words */
    u64 *pw;    /* calls words: r_i^(j+1) */
} range_job64;

static void *f64_range_prove_part(void *arg) {
    range_job64 *jb = arg;
    i64 p = jb->p, calls = jb->calls, chunk = jb->chunk, n = jb->n;
    u64 *tl = jb->tmp, *tr = jb->tmp + p, *pw = jb->pw;
    u128 *acc = jb->acc;
    u64 *over = jb->over;
    for (i64 i = 0; i < calls; i++) pw[i] = f64_pow1(jb->r[i], (u64)jb->j0 + 1);
    for (i64 j = jb->j0; j < jb->j1; j++) {
        tl[0] = jb->seeds[2 * j], tr[0] = jb->seeds[2 * j + 1];
        for (i64 i = 0; i < calls; i++) {
            i64 at = i * chunk + j;
            u64 xv = at < n ? (jb->x8 ? jb->x8[at] : jb->x[at]) : 0;
            tl[1 + i] = f64_mul1(pw[i], xv);
            tr[1 + i] = f64_sub1(xv, jb->c[0]);
            pw[i] = f64_mul1(pw[i], jb->r[i]);
        }
        for (i64 k = 1 + calls; k < p; k++) tl[k] = tr[k] = 0;
        for (i64 k = 0; k < p; k++) {
            u128 prod = (u128)tl[k] * tr[k];
            acc[2 * k] += prod;
            over[2 * k] += acc[2 * k] < prod;
        }
        f64_dif(tl, p, jb->tw_inv);
        f64_dif(tr, p, jb->tw_inv);
        for (i64 k = 0; k < p; k++) {
            tl[k] = f64_mul1(tl[k], jb->twist_br[k]);
            tr[k] = f64_mul1(tr[k], jb->twist_br[k]);
        }
        f64_dit(tl, p, jb->tw_fwd);
        f64_dit(tr, p, jb->tw_fwd);
        for (i64 k = 0; k < p; k++) {
            u128 prod = (u128)tl[k] * tr[k];
            acc[2 * k + 1] += prod;
            over[2 * k + 1] += acc[2 * k + 1] < prod;
        }
    }
    return NULL;
}

/* As f128_range_prove (threads split the slots; the sums are the same). */
int f64_range_prove(u64 *out, const u64 *x, i64 rows, i64 n, const u64 *r, const u64 *seeds, const u64 *c,
                    i64 chunk, i64 calls, i64 p, const u64 *tw_inv, const u64 *twist_br, const u64 *tw_fwd,
                    int threads, int x_bits) {
    if (threads < 1) threads = 1;
    if (threads > 8) threads = 8;
    if (chunk < 2 * threads) threads = 1;
    range_job64 jobs[8];
    pthread_t tids[8];
    u64 *tmp = malloc((size_t)threads * 2 * p * sizeof(u64));
    u64 *pw = malloc((size_t)threads * calls * sizeof(u64) + 8);
    u128 *acc = malloc((size_t)threads * 2 * p * sizeof(u128));
    u64 *over = malloc((size_t)threads * 2 * p * sizeof(u64));
    if (!tmp || !pw || !acc || !over) {
        free(tmp), free(pw), free(acc), free(over);
        return -1;
    }
    for (i64 b = 0; b < rows; b++) {
        memset(acc, 0, (size_t)threads * 2 * p * sizeof(u128));
        memset(over, 0, (size_t)threads * 2 * p * sizeof(u64));
        int started = 0;
        for (int t = 0; t < threads; t++) {
            jobs[t] = (range_job64){x_bits ? NULL : x + b * n, r + b * calls, seeds + b * 2 * chunk, c,
                                    x_bits ? (const unsigned char *)x + b * n : NULL, n, chunk, calls, p,
                                    chunk * t / threads, chunk * (t + 1) / threads, tw_inv, twist_br, tw_fwd,
                                    acc + t * 2 * p, over + t * 2 * p, tmp + t * 2 * p, pw + t * calls};
            if (t == 0) continue;
            if (pthread_create(&tids[t], NULL, f64_range_prove_part, &jobs[t]))
                f64_range_prove_part(&jobs[t]);
            else
                started |= 1 << t;
        }
        f64_range_prove_part(&jobs[0]);
        for (int t = 1; t < threads; t++) {
            if (started & (1 << t)) pthread_join(tids[t], NULL);
            for (i64 k = 0; k < 2 * p; k++) {
                u128 add = acc[t * 2 * p + k];
                acc[k] += add;
                over[k] += over[t * 2 * p + k] + (acc[k] < add);
            }
        }
        u64 *o = out + b * 2 * p;
        for (i64 k = 0; k < 2 * p; k++) {
            u64 v = f64_reduce(acc[k]);
            if (over[k]) v = f64_sub1(v, f64_mul1(over[k] % P64, 1ULL << 32)); /* 2^128 = -2^32 */
            o[k] = v;
        }
    }
    free(tmp), free(pw), free(acc), free(over);
    return 0;
}
