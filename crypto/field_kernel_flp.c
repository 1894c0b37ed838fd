/* The FLP kernels over crypto/field_kernel.c's element helpers (compiled after it, as one unit):
 * the ParallelSum(Mul) prover extension, the range-check wires and weighted sums the verifier
 * reads, and the fused range-check prover.  Same conventions as field_kernel.c: canonical
 * elements in and out, byte for byte the numpy reference path's residues.
 */

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
