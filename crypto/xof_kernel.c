/* TurboSHAKE128 (RFC 9861: Keccak-p[1600, 12 rounds], rate 168 bytes) for the
 * XOFs of draft-irtf-cfrg-vdaf-18 (crypto/xof.py), compiled with the field
 * kernel (appended to crypto/field_kernel.c by crypto/_field_kernel_build.py).
 *
 * Why our own: Prio3's long reports run several independent TurboSHAKE
 * streams at once (a helper's share squeezed while it is hashed into its
 * joint-randomness part, and the leader's share hashed beside them).  One
 * stream is sequential, but independent streams can share one permutation
 * call on SIMD lanes: `keccak_lanes` permutes up to four states together
 * (AVX-512VL or AVX2 when the CPU has them, chosen at run time; plain C
 * otherwise).  Measured on this machine: one stream ~14 ms per 12.8 MB (as
 * xoflib), four streams on AVX-512VL lanes ~12 ms together.  `ts_run` drives
 * squeezing and absorbing jobs of several streams in lock step.  Nothing here
 * calls back into Python, so the bindings release the GIL.
 *
 * The same bytes as xoflib and pycryptodome (tests/crypto/test_xof.py: RFC
 * 9861 test vectors, the draft's XOF vectors and random framings and read
 * patterns through every lane count).  Not constant time with respect to
 * lengths; the data paths have no secret-dependent branches.
 */

#define TS_RATE 168

/* A TurboSHAKE128 instance: the Keccak state (lanes little endian, byte i of
 * the state is byte i % 8 of lane i / 8), the position in the current block
 * and whether the padding was applied (squeezing). */
typedef struct {
    u64 s[25];
    i64 pos;
    i64 squeezing;
    i64 domain;
} ts128;

static const u64 KECCAK_RC[12] = {
    0x000000008000808BULL, 0x800000000000008BULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800AULL, 0x800000008000000AULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL};
/* rho offsets of lane x + 5y */
static const int KECCAK_ROT[25] = {0,  1,  62, 28, 27, 36, 44, 6,  55, 20, 3,  10, 43,
                                   25, 39, 41, 45, 15, 21, 8,  18, 2,  61, 56, 14};

#define KROL(x, n) ((n) ? (((x) << (n)) | ((x) >> (64 - (n)))) : (x))

/* The twelve rounds of Keccak-p[1600, 12] on lanes of type T (u64, or GCC
 * vectors of u64 holding one state per element); loops have constant bounds
 * and unroll fully, so the arrays live in registers. */
#define KECCAK_P12(NAME, T, ATTR)                                                              \
    ATTR static void NAME(T *st) {                                                             \
        T A[25], B[25], C[5], D[5];                                                            \
        for (int i = 0; i < 25; i++) A[i] = st[i];                                             \
        for (int r = 0; r < 12; r++) {                                                         \
            _Pragma("GCC unroll 5") for (int x = 0; x < 5; x++) C[x] =                         \
                A[x] ^ A[x + 5] ^ A[x + 10] ^ A[x + 15] ^ A[x + 20];                           \
            _Pragma("GCC unroll 5") for (int x = 0; x < 5; x++) D[x] =                         \
                C[(x + 4) % 5] ^ KROL(C[(x + 1) % 5], 1);                                      \
            _Pragma("GCC unroll 5") for (int y = 0; y < 5; y++)                                \
                _Pragma("GCC unroll 5") for (int x = 0; x < 5; x++) {                          \
                T a = A[x + 5 * y] ^ D[x];                                                     \
                B[y + 5 * ((2 * x + 3 * y) % 5)] = KROL(a, KECCAK_ROT[x + 5 * y]);             \
            }                                                                                  \
            _Pragma("GCC unroll 5") for (int y = 0; y < 5; y++)                                \
                _Pragma("GCC unroll 5") for (int x = 0; x < 5; x++) A[x + 5 * y] =             \
                    B[x + 5 * y] ^ (~B[(x + 1) % 5 + 5 * y] & B[(x + 2) % 5 + 5 * y]);         \
            A[0] ^= KECCAK_RC[r];                                                              \
        }                                                                                      \
        for (int i = 0; i < 25; i++) st[i] = A[i];                                             \
    }

KECCAK_P12(keccak_p12, u64, )

typedef u64 kv2 __attribute__((vector_size(16)));
typedef u64 kv4 __attribute__((vector_size(32)));

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KECCAK_DISPATCH 1
KECCAK_P12(keccak_p12_x2_avx512, kv2, __attribute__((target("avx512f,avx512vl"))))
KECCAK_P12(keccak_p12_x4_avx512, kv4, __attribute__((target("avx512f,avx512vl"))))
KECCAK_P12(keccak_p12_x4_avx2, kv4, __attribute__((target("avx2"))))
#endif

/* 0: one state at a time, 1: AVX2 lanes, 2: AVX-512VL lanes (set on first use). */
static int keccak_simd = -1;

static int keccak_simd_level(void) {
    if (keccak_simd < 0) {
        int level = 0;
#ifdef KECCAK_DISPATCH
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
            level = 2;
        else if (__builtin_cpu_supports("avx2"))
            level = 1;
#endif
        keccak_simd = level;
    }
    return keccak_simd;
}

/* Permute n <= 4 states; independent states share SIMD lanes when available.  One
 * state also goes through the AVX-512VL kernel (one lane idle): rotations and
 * three-input logic take fewer instructions than plain C (12.8 MB absorbed in
 * ~11 ms instead of ~14 ms here). */
static void keccak_lanes(u64 **states, int n) {
    int level = keccak_simd_level();
#ifdef KECCAK_DISPATCH
    if (level == 2 && n <= 2) {
        kv2 v[25];
        for (int i = 0; i < 25; i++) v[i] = (kv2){states[0][i], n == 2 ? states[1][i] : 0};
        keccak_p12_x2_avx512(v);
        for (int i = 0; i < 25; i++) {
            states[0][i] = v[i][0];
            if (n == 2) states[1][i] = v[i][1];
        }
        return;
    }
    if (n == 1) level = 0; /* AVX2 lacks rotations: plain C is faster for one state */
    if (level >= 1) {
        kv4 v[25];
        for (int i = 0; i < 25; i++)
            for (int k = 0; k < 4; k++) v[i][k] = k < n ? states[k][i] : 0;
        if (level == 2)
            keccak_p12_x4_avx512(v);
        else
            keccak_p12_x4_avx2(v);
        for (int i = 0; i < 25; i++)
            for (int k = 0; k < n; k++) states[k][i] = v[i][k];
        return;
    }
#endif
    (void)level;
    for (int k = 0; k < n; k++) keccak_p12(states[k]);
}

/* Whole blocks of one instance whose block is due for a permutation: k times
 * "permute, then XOR in (absorbing) or copy out (squeezing) 168 bytes", with the
 * state kept in registers between blocks. */
#ifdef KECCAK_DISPATCH
__attribute__((target("avx512f,avx512vl"))) static void ts_blocks_avx512(u64 *st, const unsigned char *in,
                                                                         unsigned char *out, i64 k) {
    kv2 v[25];
    for (int i = 0; i < 25; i++) v[i] = (kv2){st[i], 0};
    for (i64 b = 0; b < k; b++) {
        keccak_p12_x2_avx512(v);
        if (in) {
            u64 w[TS_RATE / 8];
            memcpy(w, in + b * TS_RATE, TS_RATE);
            for (int i = 0; i < TS_RATE / 8; i++) v[i][0] ^= w[i];
        } else {
            u64 w[TS_RATE / 8];
            for (int i = 0; i < TS_RATE / 8; i++) w[i] = v[i][0];
            memcpy(out + b * TS_RATE, w, TS_RATE);
        }
    }
    for (int i = 0; i < 25; i++) st[i] = v[i][0];
}
#endif

/* The same for n <= L instances on the lanes of T: in[l] or out[l] per instance. */
#define TS_BLOCKS_LANES(NAME, T, L, ATTR, PERM)                                                     \
    ATTR static void NAME(u64 **st, const unsigned char **in, unsigned char **out, int n, i64 k) {  \
        T v[25];                                                                                    \
        for (int i = 0; i < 25; i++)                                                                \
            for (int l = 0; l < L; l++) v[i][l] = l < n ? st[l][i] : 0;                             \
        for (i64 b = 0; b < k; b++) {                                                               \
            PERM(v);                                                                                \
            for (int l = 0; l < n; l++) {                                                           \
                u64 w[TS_RATE / 8];                                                                 \
                if (in[l]) {                                                                        \
                    memcpy(w, in[l] + b * TS_RATE, TS_RATE);                                        \
                    for (int i = 0; i < TS_RATE / 8; i++) v[i][l] ^= w[i];                          \
                } else {                                                                            \
                    for (int i = 0; i < TS_RATE / 8; i++) w[i] = v[i][l];                           \
                    memcpy(out[l] + b * TS_RATE, w, TS_RATE);                                       \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        for (int i = 0; i < 25; i++)                                                                \
            for (int l = 0; l < n; l++) st[l][i] = v[i][l];                                         \
    }

#ifdef KECCAK_DISPATCH
TS_BLOCKS_LANES(ts_blocks_x2_avx512, kv2, 2, __attribute__((target("avx512f,avx512vl"))), keccak_p12_x2_avx512)
TS_BLOCKS_LANES(ts_blocks_x4_avx512, kv4, 4, __attribute__((target("avx512f,avx512vl"))), keccak_p12_x4_avx512)
TS_BLOCKS_LANES(ts_blocks_x4_avx2, kv4, 4, __attribute__((target("avx2"))), keccak_p12_x4_avx2)
#endif

/* Whole blocks of n <= 4 instances together; false if this CPU has no lanes for them. */
static int ts_blocks_many(u64 **st, const unsigned char **in, unsigned char **out, int n, i64 k) {
#ifdef KECCAK_DISPATCH
    int level = keccak_simd_level();
    if (level == 2 && n <= 2)
        ts_blocks_x2_avx512(st, in, out, n, k);
    else if (level == 2)
        ts_blocks_x4_avx512(st, in, out, n, k);
    else if (level == 1)
        ts_blocks_x4_avx2(st, in, out, n, k);
    else
        return 0;
    return 1;
#else
    (void)st, (void)in, (void)out, (void)n, (void)k;
    return 0;
#endif
}

static void ts_blocks(u64 *st, const unsigned char *in, unsigned char *out, i64 k) {
#ifdef KECCAK_DISPATCH
    if (keccak_simd_level() == 2) {
        ts_blocks_avx512(st, in, out, k);
        return;
    }
#endif
    for (i64 b = 0; b < k; b++) {
        keccak_p12(st);
        u64 w[TS_RATE / 8];
        if (in) {
            memcpy(w, in + b * TS_RATE, TS_RATE);
            for (int i = 0; i < TS_RATE / 8; i++) st[i] ^= w[i];
        } else {
            memcpy(out + b * TS_RATE, st, TS_RATE);
        }
    }
}

/* Forces the lane implementation (tests): -1 detect, 0 plain, 1 AVX2, 2 AVX-512VL;
 * returns the level in use (a request the CPU cannot run is lowered). */
int ts_set_simd(int level) {
    keccak_simd = -1;
    int best = keccak_simd_level();
    if (level >= 0 && level < best) keccak_simd = level;
    return keccak_simd;
}

static inline void ts_xor_bytes(ts128 *h, const unsigned char *in, i64 len) {
    unsigned char *st = (unsigned char *)h->s; /* little-endian hosts: byte i of the state */
    for (i64 i = 0; i < len; i++) st[h->pos + i] ^= in[i];
    h->pos += len;
}

void ts_init(ts128 *h, i64 domain) {
    memset(h, 0, sizeof *h);
    h->domain = domain;
}

/* A job of `ts_run`: squeeze `len` bytes into `out`, or absorb `len` bytes of `in`. */
typedef struct {
    ts128 *h;
    const unsigned char *in;
    unsigned char *out;
    i64 len, done;
} ts_job;

static void ts_pad(ts128 *h) {
    unsigned char *st = (unsigned char *)h->s;
    st[h->pos] ^= (unsigned char)h->domain;
    st[TS_RATE - 1] ^= 0x80;
    h->squeezing = 1;
    h->pos = TS_RATE; /* the permutation comes first */
}

/* Advance the jobs to their next block boundary (or end); returns how many states
 * need a permutation before they can go on, collected in `need`. */
static int ts_step(ts_job *jobs, int n, u64 **need, ts128 **owners) {
    int k = 0;
    for (int j = 0; j < n; j++) {
        ts_job *jb = &jobs[j];
        ts128 *h = jb->h;
        if (jb->done == jb->len) continue;
        if (jb->out) {
            if (!h->squeezing && h->pos < TS_RATE) ts_pad(h); /* (a full absorbed block is permuted first) */
            if (h->pos == TS_RATE) {
                need[k] = h->s, owners[k++] = h;
                continue;
            }
            i64 take = TS_RATE - h->pos;
            if (take > jb->len - jb->done) take = jb->len - jb->done;
            memcpy(jb->out + jb->done, (unsigned char *)h->s + h->pos, take);
            h->pos += take, jb->done += take;
        } else {
            if (h->pos == TS_RATE) {
                need[k] = h->s, owners[k++] = h;
                continue;
            }
            i64 take = TS_RATE - h->pos;
            if (take > jb->len - jb->done) take = jb->len - jb->done;
            if (take == TS_RATE) { /* a whole block: lane by lane */
                u64 w[TS_RATE / 8];
                memcpy(w, jb->in + jb->done, TS_RATE);
                for (int i = 0; i < TS_RATE / 8; i++) h->s[i] ^= w[i];
                h->pos = TS_RATE;
            } else {
                ts_xor_bytes(h, jb->in + jb->done, take);
            }
            jb->done += take;
        }
    }
    return k;
}

/* Run up to four jobs on distinct instances to completion, permuting the
 * instances that are due together.  Absorbing leaves a full block unpermuted
 * (pos == rate) until more input or the padding needs it. */
static void ts_run(ts_job *jobs, int n) {
    u64 *need[4];
    ts128 *owners[4];
    for (;;) {
        /* Every unfinished job due for a permutation with whole blocks left: run them in one go,
         * the states in registers (one stream alone, or several on lanes). */
        u64 *st[4];
        const unsigned char *in[4];
        unsigned char *out[4];
        int m = 0, ready = 1;
        i64 blocks = -1;
        for (int j = 0; j < n && ready; j++) {
            ts_job *jb = &jobs[j];
            if (jb->done == jb->len) continue;
            i64 k = (jb->len - jb->done) / TS_RATE;
            ready = jb->h->pos == TS_RATE && (jb->in || jb->h->squeezing) && k > 0;
            blocks = blocks < 0 || k < blocks ? k : blocks;
            st[m] = jb->h->s, in[m] = jb->in ? jb->in + jb->done : NULL, out[m++] = jb->out ? jb->out + jb->done : NULL;
        }
        if (ready && m && (m == 1 ? (ts_blocks(st[0], in[0], out[0], blocks), 1) : ts_blocks_many(st, in, out, m, blocks)))
            for (int j = 0; j < n; j++)
                if (jobs[j].done < jobs[j].len) jobs[j].done += blocks * TS_RATE;
        int k = ts_step(jobs, n, need, owners);
        if (!k) {
            int active = 0;
            for (int j = 0; j < n; j++) active |= jobs[j].done < jobs[j].len;
            if (!active) return;
            continue;
        }
        keccak_lanes(need, k);
        for (int i = 0; i < k; i++) owners[i]->pos = 0;
    }
}

void ts_absorb(ts128 *h, const void *in, i64 len) {
    ts_job jb = {h, in, NULL, len, 0};
    if (len) ts_run(&jb, 1);
}

void ts_squeeze(ts128 *h, void *out, i64 len) {
    ts_job jb = {h, NULL, out, len, 0};
    if (len) ts_run(&jb, 1);
}

/* Absorb buffers into several instances at once (lanes): in[k] (len[k] bytes) into h[k]. */
void ts_absorb_many(void **h, const void **in, const i64 *len, int n) {
    ts_job jobs[4];
    for (int k = 0; k < n; k++) jobs[k] = (ts_job){(ts128 *)h[k], in[k], NULL, len[k], 0};
    ts_run(jobs, n);
}

/* ------------------------------------------- fused expansion of a helper's share */
/* The draft's helper measurement share: n elements of the XOF A by rejection
 * sampling (16- or 8-byte little-endian candidates, kept when < p), and in the
 * same pass (every argument but A optional):
 *   out  <- the share;
 *   B    absorbs the share's encoding (the helper's joint-randomness part);
 *   lead <- meas - share (lead may be meas: the leader's share, helper by helper;
 *           with meas_bits, meas is the measurement as 0/1 bytes);
 *   C    absorbs lead's encoding (the leader's joint-randomness part).
 * A is squeezed chunk by chunk; each chunk is checked and subtracted, then the
 * next chunk's squeeze and this chunk's absorptions run as one lock-step job
 * set, so up to three streams share the permutation's lanes.  A reads exactly
 * the candidates the draft's loop reads (n plus the rejected ones).
 * Returns -1 if scratch memory cannot be allocated. */
#define SHARE_CHUNK 4096

static inline int f64_ok(const u64 *x) { return x[0] < P64; }
static inline int f128_ok(const u64 *x) { return x[1] < PHI || (x[1] == PHI && x[0] == 0); }
static inline void f64_sub_el(const u64 *a, const u64 *b, u64 *o) { o[0] = f64_sub1(a[0], b[0]); }

#define EXPAND_SHARE(NAME, W, OK, SUB)                                                            \
    int NAME(ts128 *A, i64 n, u64 *out, ts128 *B, const void *meas, int meas_bits, u64 *lead,     \
             ts128 *C) {                                                                          \
        /* with out, candidates are squeezed into it and compacted in place */                    \
        u64 *raw = out ? NULL : malloc(3 * SHARE_CHUNK * W * sizeof(u64));                        \
        if (!out && !raw) return -1;                                                              \
        u64 *tmp = raw ? raw + 2 * SHARE_CHUNK * W : NULL;                                        \
        const i64 size = 8 * W;                                                                   \
        i64 have = 0, req = n < SHARE_CHUNK ? n : SHARE_CHUNK;                                    \
        int cur = 0;                                                                              \
        ts_squeeze(A, out ? out : raw, req * size);                                               \
        while (have < n) {                                                                        \
            const u64 *cand = out ? out + have * W : raw + cur * SHARE_CHUNK * W;                 \
            u64 *acc = out ? out + have * W : tmp; /* may be cand: compaction only moves down */  \
            i64 m = 0;                                                                            \
            for (i64 k = 0; k < req; k++) {                                                       \
                const u64 *x = cand + k * W;                                                      \
                if (!OK(x)) continue;                                                             \
                if (lead) {                                                                       \
                    u64 mv[W];                                                                    \
                    for (int w = 0; w < W; w++)                                                   \
                        mv[w] = meas_bits ? (w ? 0 : ((const unsigned char *)meas)[have + m])     \
                                          : ((const u64 *)meas)[(have + m) * W + w];              \
                    SUB(mv, x, lead + (have + m) * W);                                            \
                }                                                                                 \
                if (acc + m * W != x)                                                             \
                    for (int w = 0; w < W; w++) acc[m * W + w] = x[w];                            \
                m++;                                                                              \
            }                                                                                     \
            ts_job jobs[3];                                                                       \
            int nj = 0;                                                                           \
            i64 next = n - have - m < SHARE_CHUNK ? n - have - m : SHARE_CHUNK;                   \
            cur ^= 1;                                                                             \
            unsigned char *dest = (unsigned char *)(out ? out + (have + m) * W : raw + cur * SHARE_CHUNK * W); \
            if (next) jobs[nj++] = (ts_job){A, NULL, dest, next * size, 0};                       \
            if (B && m) jobs[nj++] = (ts_job){B, (const unsigned char *)acc, NULL, m * size, 0};  \
            if (C && lead && m) jobs[nj++] = (ts_job){C, (const unsigned char *)(lead + have * W), NULL, m * size, 0}; \
            if (nj) ts_run(jobs, nj);                                                             \
            have += m;                                                                            \
            req = next;                                                                           \
        }                                                                                         \
        free(raw);                                                                                \
        return 0;                                                                                 \
    }

EXPAND_SHARE(f64_expand_share, 1, f64_ok, f64_sub_el)
EXPAND_SHARE(f128_expand_share, 2, f128_ok, f128_sub1)
