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

static int ifma_level = -1; /* 1: IFMA kernels in use */

static int ifma_on(void) {
    if (ifma_level < 0) {
        __builtin_cpu_init();
        ifma_level = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                     __builtin_cpu_supports("avx512ifma");
    }
    return ifma_level;
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
