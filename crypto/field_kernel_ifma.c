/* Field128 on AVX-512 IFMA: eight elements per vector, three 52-bit limbs each,
 * Montgomery products with R = 2^156 (compiled after crypto/field_kernel.c,
 * whose scalar kernels stay the reference and the fallback).
 *
 * Why: a scalar Field128 product costs ~21 cycles here (four 64x64 products and
 * a fold of 2^128 = 28*2^64 - 1); vpmadd52lo/hi give eight 52x52-bit partial
 * products per instruction.  p = 2^128 - 28*2^64 + 1 is 1 modulo 2^52, so a
 * Montgomery step needs no multiplication for its quotient digit
 * (m = -t mod 2^52), and its limbs are P0 = 1, P1 = 2^52 - 114688, P2 = 2^24 - 1.
 * Values are kept below 2p (lazily reduced; 2p < 2^129 fits three limbs), and
 * every result leaves through a scalar reduction to the canonical residue, so
 * outputs are the same bytes as the scalar kernels' (tests compare them).
 *
 * Selected at run time (__builtin_cpu_supports("avx512ifma")); `f128_set_ifma`
 * forces the scalar path for tests.
 */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define IFMA_DISPATCH 1
#include <immintrin.h>

#define IFMA __attribute__((target("avx512f,avx512vl,avx512ifma")))
#define M52 ((1ULL << 52) - 1)

typedef struct {
    __m512i l0, l1, l2;
} v3;

static int ifma_level = -1; /* 1: IFMA kernels in use */

static int ifma_on(void) {
    if (ifma_level < 0) {
        __builtin_cpu_init();
        ifma_level = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                     __builtin_cpu_supports("avx512ifma");
    }
    return ifma_level;
}

IFMA static inline v3 v3_from_words(__m512i lo, __m512i hi) {
    const __m512i m = _mm512_set1_epi64(M52);
    v3 r = {_mm512_and_si512(lo, m),
            _mm512_and_si512(_mm512_or_si512(_mm512_srli_epi64(lo, 52), _mm512_slli_epi64(hi, 12)), m),
            _mm512_srli_epi64(hi, 40)};
    return r;
}

/* a * b / 2^156 mod p, for a < 2p and b < p (limbs < 2^52): the result is < 2p. */
IFMA static inline v3 v3_mont(v3 a, v3 b) {
    const __m512i z = _mm512_setzero_si512(), m52 = _mm512_set1_epi64(M52);
    const __m512i p1 = _mm512_set1_epi64((1LL << 52) - 114688), p2 = _mm512_set1_epi64((1LL << 24) - 1);
    __m512i t0 = _mm512_madd52lo_epu64(z, a.l0, b.l0);
    __m512i t1 = _mm512_madd52hi_epu64(z, a.l0, b.l0);
    t1 = _mm512_madd52lo_epu64(t1, a.l0, b.l1);
    t1 = _mm512_madd52lo_epu64(t1, a.l1, b.l0);
    __m512i t2 = _mm512_madd52hi_epu64(z, a.l0, b.l1);
    t2 = _mm512_madd52hi_epu64(t2, a.l1, b.l0);
    t2 = _mm512_madd52lo_epu64(t2, a.l0, b.l2);
    t2 = _mm512_madd52lo_epu64(t2, a.l1, b.l1);
    t2 = _mm512_madd52lo_epu64(t2, a.l2, b.l0);
    __m512i t3 = _mm512_madd52hi_epu64(z, a.l0, b.l2);
    t3 = _mm512_madd52hi_epu64(t3, a.l1, b.l1);
    t3 = _mm512_madd52hi_epu64(t3, a.l2, b.l0);
    t3 = _mm512_madd52lo_epu64(t3, a.l1, b.l2);
    t3 = _mm512_madd52lo_epu64(t3, a.l2, b.l1);
    __m512i t4 = _mm512_madd52hi_epu64(z, a.l1, b.l2);
    t4 = _mm512_madd52hi_epu64(t4, a.l2, b.l1);
    t4 = _mm512_madd52lo_epu64(t4, a.l2, b.l2);
    __m512i t5 = _mm512_madd52hi_epu64(z, a.l2, b.l2);
    /* three Montgomery steps: m = -t_k mod 2^52 (P0 = 1), t += m * p * 2^(52k) */
#define MONT_STEP(tk, tk1, tk2, tk3)                                              \
    {                                                                             \
        __m512i m = _mm512_and_si512(_mm512_sub_epi64(z, tk), m52);               \
        tk1 = _mm512_add_epi64(tk1, _mm512_srli_epi64(_mm512_add_epi64(tk, m), 52)); \
        tk1 = _mm512_madd52lo_epu64(tk1, m, p1);                                  \
        tk2 = _mm512_madd52hi_epu64(tk2, m, p1);                                  \
        tk2 = _mm512_madd52lo_epu64(tk2, m, p2);                                  \
        tk3 = _mm512_madd52hi_epu64(tk3, m, p2);                                  \
    }
    MONT_STEP(t0, t1, t2, t3)
    MONT_STEP(t1, t2, t3, t4)
    MONT_STEP(t2, t3, t4, t5)
#undef MONT_STEP
    t4 = _mm512_add_epi64(t4, _mm512_srli_epi64(t3, 52));
    t5 = _mm512_add_epi64(t5, _mm512_srli_epi64(t4, 52));
    v3 r = {_mm512_and_si512(t3, m52), _mm512_and_si512(t4, m52), t5};
    return r;
}

/* acc (six 52-bit columns) += a * b, unreduced (a, b limbs < 2^52). */
IFMA static inline void v3_acc_mul(__m512i *c, v3 a, v3 b) {
    c[0] = _mm512_madd52lo_epu64(c[0], a.l0, b.l0);
    c[1] = _mm512_madd52hi_epu64(c[1], a.l0, b.l0);
    c[1] = _mm512_madd52lo_epu64(c[1], a.l0, b.l1);
    c[1] = _mm512_madd52lo_epu64(c[1], a.l1, b.l0);
    c[2] = _mm512_madd52hi_epu64(c[2], a.l0, b.l1);
    c[2] = _mm512_madd52hi_epu64(c[2], a.l1, b.l0);
    c[2] = _mm512_madd52lo_epu64(c[2], a.l0, b.l2);
    c[2] = _mm512_madd52lo_epu64(c[2], a.l1, b.l1);
    c[2] = _mm512_madd52lo_epu64(c[2], a.l2, b.l0);
    c[3] = _mm512_madd52hi_epu64(c[3], a.l0, b.l2);
    c[3] = _mm512_madd52hi_epu64(c[3], a.l1, b.l1);
    c[3] = _mm512_madd52hi_epu64(c[3], a.l2, b.l0);
    c[3] = _mm512_madd52lo_epu64(c[3], a.l1, b.l2);
    c[3] = _mm512_madd52lo_epu64(c[3], a.l2, b.l1);
    c[4] = _mm512_madd52hi_epu64(c[4], a.l1, b.l2);
    c[4] = _mm512_madd52hi_epu64(c[4], a.l2, b.l1);
    c[4] = _mm512_madd52lo_epu64(c[4], a.l2, b.l2);
    c[5] = _mm512_madd52hi_epu64(c[5], a.l2, b.l2);
}

/* Carries of the columns moved up: c0..c4 < 2^52 afterwards. */
IFMA static inline void cols_normalize(__m512i *c) {
    const __m512i m52 = _mm512_set1_epi64(M52);
    for (int k = 0; k < 5; k++) {
        c[k + 1] = _mm512_add_epi64(c[k + 1], _mm512_srli_epi64(c[k], 52));
        c[k] = _mm512_and_si512(c[k], m52);
    }
}

/* 2^(52k) mod p, k < 6 (lo, hi) */
static const u64 COL_WEIGHT[6][2] = {
    {0x1ULL, 0x0ULL}, {0x10000000000000ULL, 0x0ULL}, {0x0ULL, 0x10000000000ULL},
    {0xfffffffff0000000ULL, 0x1bfffffffULL}, {0xffffffffffe40000ULL, 0x30effffULL},
    {0xffffffffffffcf10ULL, 0x5587fULL}};

/* The canonical element sum over lanes and columns of c (normalized first). */
IFMA static void cols_done(__m512i *c, u64 *out) {
    cols_normalize(c); /* lane sums: eight values < 2^52 (c5 < 2^60) cannot wrap 64 bits */
    acc256 acc = {0, 0, 0, 0};
    for (int k = 0; k < 6; k++) {
        u64 s[2] = {(u64)_mm512_reduce_add_epi64(c[k]), 0}; /* < 2^63 < p: canonical */
        acc_mul(&acc, s, COL_WEIGHT[k]);
    }
    acc_done(&acc, out);
}

/* f128_range_evals for slots [j0, j1) of one row on IFMA lanes: lane l of group g is call 8g + l;
 * the running weights lam_i r_i^(j+1) live in w (groups x 3 limbs), the sums of slot j in registers. */
typedef struct {
    const u64 *x, *r, *lam;
    i64 n, chunk, calls, j0, j1;
    u64 *out; /* (2*chunk) elements: left/right interleaved, before the right's correction */
} ifma_evals_job;

static const u64 R156[2] = {0xfffffffff0000000ULL, 0x1bfffffffULL}; /* 2^156 mod p: r -> r * R */

IFMA static void *f128_range_evals_ifma_part(void *arg) {
    ifma_evals_job *jb = arg;
    i64 groups = (jb->calls + 7) / 8, chunk = jb->chunk;
    v3 *w = aligned_alloc(64, (size_t)groups * sizeof(v3) * 3);
    if (!w) return (void *)1;
    v3 *rm = w + groups, *lm = w + 2 * groups;
    for (i64 g = 0; g < groups; g++) { /* lane words, then limbs */
        u64 wl[8], wh[8], rl[8], rh[8], ll[8], lh[8];
        for (int l = 0; l < 8; l++) {
            i64 i = 8 * g + l;
            u64 wv[2] = {0, 0}, rv[2] = {0, 0}, lv[2] = {0, 0};
            if (i < jb->calls) {
                u64 e = (u64)jb->j0 + 1, base[2] = {jb->r[2 * i], jb->r[2 * i + 1]}, pw[2] = {1, 0};
                for (; e; e >>= 1) { /* r_i^(j0+1) */
                    if (e & 1) f128_mul1(pw, base, pw);
                    f128_mul1(base, base, base);
                }
                f128_mul1(jb->lam + 2 * i, pw, wv);
                f128_mul1(jb->r + 2 * i, R156, rv);
                lv[0] = jb->lam[2 * i], lv[1] = jb->lam[2 * i + 1];
            }
            wl[l] = wv[0], wh[l] = wv[1], rl[l] = rv[0], rh[l] = rv[1], ll[l] = lv[0], lh[l] = lv[1];
        }
        w[g] = v3_from_words(_mm512_loadu_si512(wl), _mm512_loadu_si512(wh));
        rm[g] = v3_from_words(_mm512_loadu_si512(rl), _mm512_loadu_si512(rh));
        lm[g] = v3_from_words(_mm512_loadu_si512(ll), _mm512_loadu_si512(lh));
    }
    const __m512i lane_at = _mm512_set_epi64(7 * chunk, 6 * chunk, 5 * chunk, 4 * chunk, 3 * chunk, 2 * chunk, chunk, 0);
    for (i64 j = jb->j0; j < jb->j1; j++) {
        __m512i cl[6], cr[6];
        for (int k = 0; k < 6; k++) cl[k] = cr[k] = _mm512_setzero_si512();
        for (i64 g = 0; g < groups; g++) {
            /* element index of lane l: (8g + l) * chunk + j, valid below n */
            __m512i at = _mm512_add_epi64(lane_at, _mm512_set1_epi64(8 * g * chunk + j));
            __mmask8 ok = _mm512_cmplt_epi64_mask(at, _mm512_set1_epi64(jb->n));
            __m512i i2 = _mm512_slli_epi64(at, 1);
            __m512i lo = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), ok, i2, (const long long *)jb->x, 8);
            __m512i hi = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), ok, _mm512_add_epi64(i2, _mm512_set1_epi64(1)),
                                                     (const long long *)jb->x, 8);
            v3 xv = v3_from_words(lo, hi);
            v3_acc_mul(cl, w[g], xv);
            v3_acc_mul(cr, lm[g], xv);
            w[g] = v3_mont(w[g], rm[g]);
            if ((g & 127) == 127) cols_normalize(cl), cols_normalize(cr); /* keep the columns below 2^63 */
        }
        cols_done(cl, jb->out + 2 * (2 * j));
        cols_done(cr, jb->out + 2 * (2 * j + 1));
    }
    free(w);
    return NULL;
}

/* ------------------------------------------------ prover: the fused range check on IFMA lanes */
/* f128_range_prove with eight slots j per vector (lane l: slot j0 + l).  Per
 * group of slots, the two wire rows are built at the p-th roots, extended by an
 * inverse DIF transform, the twist and a forward DIT transform (eight
 * transforms at once, the same twiddle in every lane), and the products
 * L * R summed per point.  Bounds (limbs below 2^62 throughout): rows < 2p;
 * DIF sums double per stage (< 2^10 p after ten) while its differences
 * u - v + 2^12 p go through a Montgomery product (< 2p); twist and DIT
 * products are Montgomery products too (the tables hold w * 2^156), DIT values
 * stay below 42p; sums of products are Montgomery products (L * R / 2^156),
 * so the final sums are multiplied back by 2^156 in the scalar reduction. */

static const u64 COL_WEIGHT_R[3][2] = {/* 2^(52k) * 2^156 mod p */
                                       {0xfffffffff0000000ULL, 0x1bfffffffULL},
                                       {0xffffffffffe40000ULL, 0x30effffULL},
                                       {0xffffffffffffcf10ULL, 0x5587fULL}};

IFMA static inline v3 v3_add(v3 a, v3 b) {
    v3 r = {_mm512_add_epi64(a.l0, b.l0), _mm512_add_epi64(a.l1, b.l1), _mm512_add_epi64(a.l2, b.l2)};
    return r;
}

/* a + k - b for a constant k given in borrow-proof limbs (each limb >= b's) */
IFMA static inline v3 v3_sub_plus(v3 a, v3 b, v3 k) {
    v3 r = {_mm512_sub_epi64(_mm512_add_epi64(a.l0, k.l0), b.l0),
            _mm512_sub_epi64(_mm512_add_epi64(a.l1, k.l1), b.l1),
            _mm512_sub_epi64(_mm512_add_epi64(a.l2, k.l2), b.l2)};
    return r;
}

IFMA static inline v3 v3_norm(v3 a) {
    const __m512i m52 = _mm512_set1_epi64(M52);
    a.l1 = _mm512_add_epi64(a.l1, _mm512_srli_epi64(a.l0, 52));
    a.l0 = _mm512_and_si512(a.l0, m52);
    a.l2 = _mm512_add_epi64(a.l2, _mm512_srli_epi64(a.l1, 52));
    a.l1 = _mm512_and_si512(a.l1, m52);
    return a;
}

IFMA static inline v3 v3_bcast(const u64 *limbs) {
    v3 r = {_mm512_set1_epi64((long long)limbs[0]), _mm512_set1_epi64((long long)limbs[1]),
            _mm512_set1_epi64((long long)limbs[2])};
    return r;
}

static void limbs_of(const u64 *x, u64 *l) {
    l[0] = x[0] & M52, l[1] = ((x[0] >> 52) | (x[1] << 12)) & M52, l[2] = x[1] >> 40;
}

typedef struct {
    const u64 *x, *r, *seeds, *c;
    const unsigned char *x8;
    i64 n, chunk, calls, p, g0, g1; /* groups [g0, g1) of eight slots */
    const u64 *twi, *twist, *twf;   /* Montgomery-form tables as limbs (3 words per entry) */
    v3 *acc;                        /* 2p sums, zeroed by the caller */
    int failed;
} ifma_prove_job;

IFMA static void ifma_dif(v3 *x, i64 n, const u64 *tw) {
    const u64 kl[3] = {4096ULL + (1ULL << 62), 4503599157608448ULL + (1ULL << 62) - 1024, 68719476735ULL - 1024};
    const v3 k = v3_bcast(kl); /* 2^12 p */
    for (i64 h = n >> 1, step = 1; h >= 1; h >>= 1, step <<= 1)
        for (i64 s = 0; s < n; s += 2 * h)
            for (i64 j = 0; j < h; j++) {
                v3 u = x[s + j], v = x[s + j + h];
                x[s + j] = v3_add(u, v);
                x[s + j + h] = v3_mont(v3_norm(v3_sub_plus(u, v, k)), v3_bcast(tw + 3 * j * step));
            }
}

IFMA static void ifma_dit(v3 *x, i64 n, const u64 *tw) {
    const u64 kl[3] = {4ULL + (1ULL << 52), 4503599626911744ULL + (1ULL << 52) - 1, 67108863ULL - 1};
    const v3 k = v3_bcast(kl); /* 4p */
    for (i64 h = 1, step = n >> 1; h < n; h <<= 1, step >>= 1)
        for (i64 s = 0; s < n; s += 2 * h)
            for (i64 j = 0; j < h; j++) {
                v3 u = x[s + j], b = v3_mont(v3_norm(x[s + j + h]), v3_bcast(tw + 3 * j * step));
                x[s + j] = v3_add(u, b);
                x[s + j + h] = v3_sub_plus(u, b, k);
            }
}

IFMA static void *f128_range_prove_ifma_part(void *arg) {
    ifma_prove_job *jb = arg;
    i64 p = jb->p, calls = jb->calls, chunk = jb->chunk, n = jb->n;
    v3 *rows = aligned_alloc(64, (size_t)(2 * p + calls) * sizeof(v3));
    u64 *r8 = malloc((size_t)calls * 3 * sizeof(u64));
    if (!rows || !r8) {
        free(rows), free(r8);
        jb->failed = 1;
        return NULL;
    }
    v3 *L = rows, *R = rows + p, *pw = rows + 2 * p; /* pw[i]: r_i^(j+1) * 2^156 for the group's slots */
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    u64 pcl[3], cm[2];
    f128_sub1((const u64[2]){1, PHI}, jb->c, cm); /* p - c (p itself for c = 0: fine as limbs) */
    limbs_of(cm, pcl);
    for (i64 i = 0; i < calls; i++) { /* r_i^8 * 2^156, and r_i^(8 g0 + 1 + l) * 2^156 per lane */
        u64 base[2] = {jb->r[2 * i], jb->r[2 * i + 1]}, e8[2], t[2], wl[8], wh[8];
        f128_mul1(base, base, e8), f128_mul1(e8, e8, e8), f128_mul1(e8, e8, e8); /* r^8 */
        f128_mul1(e8, R156, t);
        limbs_of(t, r8 + 3 * i);
        u64 e = (u64)(8 * jb->g0) + 1, b2[2] = {base[0], base[1]}, acc[2] = {1, 0};
        for (; e; e >>= 1) {
            if (e & 1) f128_mul1(acc, b2, acc);
            f128_mul1(b2, b2, b2);
        }
        f128_mul1(acc, R156, acc);
        for (int l = 0; l < 8; l++) {
            wl[l] = acc[0], wh[l] = acc[1];
            f128_mul1(acc, base, acc);
        }
        pw[i] = v3_from_words(_mm512_loadu_si512(wl), _mm512_loadu_si512(wh));
    }
    for (i64 g = jb->g0; g < jb->g1; g++) {
        i64 j0 = 8 * g;
        __mmask8 live = (__mmask8)(j0 + 8 <= chunk ? 0xFF : (1u << (chunk - j0)) - 1);
        u64 sl[8] = {0}, sh[8] = {0}, tl[8] = {0}, th[8] = {0};
        for (int l = 0; l < 8; l++)
            if (j0 + l < chunk) {
                const u64 *sd = jb->seeds + 4 * (j0 + l);
                sl[l] = sd[0], sh[l] = sd[1], tl[l] = sd[2], th[l] = sd[3];
            }
        L[0] = v3_from_words(_mm512_loadu_si512(sl), _mm512_loadu_si512(sh));
        R[0] = v3_from_words(_mm512_loadu_si512(tl), _mm512_loadu_si512(th));
        for (i64 i = 0; i < calls; i++) {
            i64 at0 = i * chunk + j0;
            __mmask8 in = live & (__mmask8)_mm512_cmplt_epi64_mask(_mm512_add_epi64(lane, _mm512_set1_epi64(at0)),
                                                                 _mm512_set1_epi64(n));
            v3 xv;
            if (in == 0xFF && jb->x8) { /* eight slots' digits of call i: consecutive bytes */
                xv.l0 = _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)(jb->x8 + at0)));
                xv.l1 = xv.l2 = _mm512_setzero_si512();
            } else if (in == 0xFF) { /* consecutive (lo, hi) pairs, de-interleaved */
                __m512i a = _mm512_loadu_si512(jb->x + 2 * at0), b = _mm512_loadu_si512(jb->x + 2 * at0 + 8);
                __m512i lo = _mm512_permutex2var_epi64(a, _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), b);
                __m512i hi = _mm512_permutex2var_epi64(a, _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1), b);
                xv = v3_from_words(lo, hi);
            } else { /* the last group or the ragged last call: lane by lane */
                u64 lo[8] = {0}, hi[8] = {0};
                for (int l = 0; l < 8; l++)
                    if (in >> l & 1) {
                        lo[l] = jb->x8 ? jb->x8[at0 + l] : jb->x[2 * (at0 + l)];
                        hi[l] = jb->x8 ? 0 : jb->x[2 * (at0 + l) + 1];
                    }
                xv = v3_from_words(_mm512_loadu_si512(lo), _mm512_loadu_si512(hi));
            }
            L[1 + i] = v3_mont(pw[i], xv); /* r_i^(j+1) x, zero where x is */
            pw[i] = v3_mont(pw[i], v3_bcast(r8 + 3 * i));
            v3 rv = v3_norm(v3_add(xv, v3_bcast(pcl))); /* x - c + p */
            rv.l0 = _mm512_maskz_mov_epi64(live, rv.l0);
            rv.l1 = _mm512_maskz_mov_epi64(live, rv.l1);
            rv.l2 = _mm512_maskz_mov_epi64(live, rv.l2);
            R[1 + i] = rv;
        }
        for (i64 k = 1 + calls; k < p; k++) {
            L[k].l0 = L[k].l1 = L[k].l2 = _mm512_setzero_si512();
            R[k] = L[k];
        }
        for (i64 k = 0; k < p; k++) jb->acc[2 * k] = v3_add(jb->acc[2 * k], v3_mont(L[k], R[k]));
        ifma_dif(L, p, jb->twi);
        ifma_dif(R, p, jb->twi);
        for (i64 k = 0; k < p; k++) {
            v3 t = v3_bcast(jb->twist + 3 * k);
            L[k] = v3_mont(v3_norm(L[k]), t);
            R[k] = v3_mont(v3_norm(R[k]), t);
        }
        ifma_dit(L, p, jb->twf);
        ifma_dit(R, p, jb->twf);
        for (i64 k = 0; k < p; k++)
            jb->acc[2 * k + 1] = v3_add(jb->acc[2 * k + 1], v3_mont(v3_norm(L[k]), v3_norm(R[k])));
    }
    free(rows), free(r8);
    return NULL;
}

/* Table t (count entries) times 2^156, as limbs. */
static void mont_limbs(const u64 *t, i64 count, u64 *out) {
    for (i64 k = 0; k < count; k++) {
        u64 v[2];
        f128_mul1(t + 2 * k, R156, v);
        limbs_of(v, out + 3 * k);
    }
}

/* One row of f128_range_prove on IFMA lanes: 0 done, -1 out of memory. */
IFMA static int f128_range_prove_ifma(u64 *out, const u64 *x, const unsigned char *x8, i64 n, const u64 *r,
                                      const u64 *seeds, const u64 *c, i64 chunk, i64 calls, i64 p,
                                      const u64 *tw_inv, const u64 *twist_br, const u64 *tw_fwd, int threads) {
    i64 groups = (chunk + 7) / 8;
    if (threads > groups) threads = (int)groups;
    if (threads < 1) threads = 1;
    u64 *tab = malloc((size_t)(2 * p) * 3 * sizeof(u64));
    v3 *acc = aligned_alloc(64, (size_t)threads * 2 * p * sizeof(v3));
    if (!tab || !acc) {
        free(tab), free(acc);
        return -1;
    }
    memset(acc, 0, (size_t)threads * 2 * p * sizeof(v3));
    mont_limbs(tw_inv, p / 2, tab);
    mont_limbs(twist_br, p, tab + 3 * (p / 2));
    mont_limbs(tw_fwd, p / 2, tab + 3 * (p / 2 + p));
    ifma_prove_job jobs[8];
    for (int t = 0; t < threads; t++)
        jobs[t] = (ifma_prove_job){x, r, seeds, c, x8, n, chunk, calls, p, groups * t / threads,
                                   groups * (t + 1) / threads, tab, tab + 3 * (p / 2), tab + 3 * (p / 2 + p),
                                   acc + t * 2 * p, 0};
    run_parts(f128_range_prove_ifma_part, jobs, sizeof jobs[0], threads); /* crypto/field_kernel_flp.c */
    int failed = 0;
    for (int t = 0; t < threads; t++) failed |= jobs[t].failed;
    if (!failed)
        for (i64 k = 0; k < 2 * p; k++) {
            v3 sum = acc[k];
            for (int t = 1; t < threads; t++) sum = v3_add(sum, acc[t * 2 * p + k]);
            __m512i cols[6] = {sum.l0, sum.l1, sum.l2, _mm512_setzero_si512(), _mm512_setzero_si512(),
                               _mm512_setzero_si512()};
            cols_normalize(cols);
            acc256 a = {0, 0, 0, 0};
            for (int q = 0; q < 3; q++) {
                u64 s[2] = {(u64)_mm512_reduce_add_epi64(cols[q]), 0};
                acc_mul(&a, s, COL_WEIGHT_R[q]);
            }
            u64 s3[2] = {(u64)_mm512_reduce_add_epi64(cols[3]), 0}; /* carries out of the top limb */
            u64 w3[2];
            f128_mul1(COL_WEIGHT[3], R156, w3);
            acc_mul(&a, s3, w3);
            acc_done(&a, out + 2 * k);
        }
    free(tab), free(acc);
    return failed ? -1 : 0;
}

/* 1 where IFMA is unavailable (the caller runs the scalar kernel). */
static int f128_range_prove_fast(u64 *out, const u64 *x, const unsigned char *x8, i64 n, const u64 *r,
                                 const u64 *seeds, const u64 *c, i64 chunk, i64 calls, i64 p, const u64 *tw_inv,
                                 const u64 *twist_br, const u64 *tw_fwd, int threads) {
    if (!ifma_on() || p < 2) return 1;
    return f128_range_prove_ifma(out, x, x8, n, r, seeds, c, chunk, calls, p, tw_inv, twist_br, tw_fwd, threads);
}


/* One row of f128_range_evals on IFMA lanes, the slots split over threads (out: before the
 * right sums' correction); 0 on success, 1 without IFMA, -1 without memory. */
static int f128_range_evals_fast(u64 *out, const u64 *x, i64 n, const u64 *r, const u64 *lam, i64 chunk,
                                 i64 calls, int threads) {
    if (!ifma_on()) return 1;
    if (threads > chunk) threads = 1;
    ifma_evals_job jobs[8];
    for (int t = 0; t < threads; t++)
        jobs[t] = (ifma_evals_job){x, r, lam, n, chunk, calls, chunk * t / threads, chunk * (t + 1) / threads, out};
    int failed = 0;
    pthread_t tids[8];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tids[t], NULL, f128_range_evals_ifma_part, &jobs[t]))
            failed |= f128_range_evals_ifma_part(&jobs[t]) != NULL;
        else
            started |= 1 << t;
    }
    failed |= f128_range_evals_ifma_part(&jobs[0]) != NULL;
    for (int t = 1; t < threads; t++) {
        void *res = NULL;
        if (started & (1 << t)) pthread_join(tids[t], &res);
        failed |= res != NULL;
    }
    return failed ? -1 : 0;
}
#else
static int f128_range_prove_fast(u64 *out, const u64 *x, const unsigned char *x8, i64 n, const u64 *r,
                                 const u64 *seeds, const u64 *c, i64 chunk, i64 calls, i64 p, const u64 *tw_inv,
                                 const u64 *twist_br, const u64 *tw_fwd, int threads) {
    (void)out, (void)x, (void)x8, (void)n, (void)r, (void)seeds, (void)c, (void)chunk, (void)calls, (void)p;
    (void)tw_inv, (void)twist_br, (void)tw_fwd, (void)threads;
    return 1;
}

static int f128_range_evals_fast(u64 *out, const u64 *x, i64 n, const u64 *r, const u64 *lam, i64 chunk,
                                 i64 calls, int threads) {
    (void)out, (void)x, (void)n, (void)r, (void)lam, (void)chunk, (void)calls, (void)threads;
    return 1;
}
#endif

/* -1 detect, 0 scalar kernels only, 1 IFMA where the CPU has it; returns the level in use. */
int f128_set_ifma(int level) {
#ifdef IFMA_DISPATCH
    ifma_level = -1;
    int best = ifma_on();
    if (level >= 0 && level < best) ifma_level = level;
    return ifma_level;
#else
    (void)level;
    return 0;
#endif
}
