/* Threads and the global random generator. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ft/runtime.h"
#include "ft/tensor.h"

/* OpenBLAS's own setter and queries; declared here so the core does not depend on its headers. */
extern void openblas_set_num_threads(int num_threads);
extern char *openblas_get_corename(void);
extern char *openblas_get_config(void);

const char *ft_blas_core(void) { return openblas_get_corename(); }
const char *ft_blas_config(void) { return openblas_get_config(); }

static int num_threads = 0;

int ft_set_num_threads(int n) {
    if (n > FT_MAX_THREADS) {
        ft_set_error("set_num_threads: %d threads requested, at most %d supported", n, FT_MAX_THREADS);
        return -1;
    }
    if (n <= 0) n = omp_get_num_procs();
    num_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return 0;
}

int ft_get_num_threads(void) { return num_threads > 0 ? num_threads : omp_get_max_threads(); }

/* xoshiro256** seeded through splitmix64. */
static uint64_t rng_state[4] = {0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL, 0x94d049bb133111ebULL, 42};

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void ft_manual_seed(uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng_state[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ft_rng_next(void) {
    uint64_t *s = rng_state;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ft_rng_uniform(void) { return (double)(ft_rng_next() >> 11) * 0x1.0p-53; }

/* Box-Muller of two draws a, b: u1 = 1 - U(a) on (0, 1] so log never sees 0, u2 = U(b). */
static inline double normal_of(uint64_t a, uint64_t b) {
    double u1 = 1.0 - (double)(a >> 11) * 0x1.0p-53, u2 = (double)(b >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* No cached second value: the generator's state alone then determines the sequence, which
 * makes checkpoints resumable. */
double ft_rng_normal(void) {
    uint64_t a = ft_rng_next();
    return normal_of(a, ft_rng_next());
}

/* ---- bulk fills: Philox4x32-10 and a float32 Box-Muller -------------------------------
 *
 * A fill takes two words a, b from the generator above (so seeds and saved states fix it too)
 * and then computes element i from i alone: the 4-word block of Philox4x32-10 (Salmon et al.,
 * "Parallel random numbers: as easy as 1, 2, 3", SC 2011; a keyed bijection of 128-bit
 * counters that passes BigCrush) at counter (g, b) under key a, g = i / 4, holds the bits of
 * elements 4g..4g+3. The result is the same on any number of threads, and a shorter fill is a
 * prefix of a longer one from the same state. The float code gives the same bits on every
 * build with FMA (the default -mavx2 -mfma and -march=native); one without FMA differs in the
 * last bit or two of about 1% of the normals. */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u   /* key schedule: the golden ratio and sqrt(3) - 1, as 32-bit fractions */
#define PHILOX_W1 0xBB67AE85u

void ft_philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        c0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        c1 = (uint32_t)p1;
        c2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c3 = (uint32_t)p0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* Counters per block: one block is 4 * FILL_BLOCK outputs, computed lane-parallel (the loops
 * below vectorise) in arrays that stay in L1, one block per thread at a time. */
#define FILL_BLOCK 256

#ifdef __AVX2__
/* The high and low 32-bit halves of m * x in each of the 8 lanes of x: vpmuludq multiplies
 * the even lanes, so the odd ones are shifted down for a second multiply. */
static inline void mulhilo8(__m256i m, __m256i x, __m256i *hi, __m256i *lo) {
    __m256i even = _mm256_mul_epu32(x, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}
#endif

/* w[k][j] = word k of the Philox block at counter (g0 + j, nonce) under key, j < FILL_BLOCK:
 * ft_philox4x32_10 lane-parallel, 8 lanes at a time with AVX2 (the compiler's own
 * vectorisation of the loop below shuffles between 32- and 64-bit lanes at every multiply). */
static void philox_block(uint32_t w[4][FILL_BLOCK], uint64_t g0, const uint32_t key[2],
                         const uint32_t nonce[2]) {
    uint32_t *c0 = w[0], *c1 = w[1], *c2 = w[2], *c3 = w[3];
    for (int j = 0; j < FILL_BLOCK; j++) {
        uint64_t g = g0 + (uint64_t)j;
        c0[j] = (uint32_t)g, c1[j] = (uint32_t)(g >> 32), c2[j] = nonce[0], c3[j] = nonce[1];
    }
#ifdef __AVX2__
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    for (int j = 0; j < FILL_BLOCK; j += 8) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(c0 + j)), x1 = _mm256_loadu_si256((const __m256i *)(c1 + j));
        __m256i x2 = _mm256_loadu_si256((const __m256i *)(c2 + j)), x3 = _mm256_loadu_si256((const __m256i *)(c3 + j));
        uint32_t k0 = key[0], k1 = key[1];
        for (int r = 0; r < 10; r++) {
            __m256i hi0, lo0, hi1, lo1;
            mulhilo8(m0, x0, &hi0, &lo0);
            mulhilo8(m1, x2, &hi1, &lo1);
            x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), _mm256_set1_epi32((int)k0));
            x1 = lo1;
            x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32((int)k1));
            x3 = lo0;
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        _mm256_storeu_si256((__m256i *)(c0 + j), x0), _mm256_storeu_si256((__m256i *)(c1 + j), x1);
        _mm256_storeu_si256((__m256i *)(c2 + j), x2), _mm256_storeu_si256((__m256i *)(c3 + j), x3);
    }
#else
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        for (int j = 0; j < FILL_BLOCK; j++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * c0[j], p1 = (uint64_t)PHILOX_M1 * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ k1;
            c1[j] = (uint32_t)p1, c3[j] = (uint32_t)p0, c0[j] = n0, c2[j] = n2;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
#endif
}

static inline uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float float_of(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* ln x for a normal float x > 0 without libm (Cephes' logf): x = 2^e m with m in
 * [sqrt(1/2), sqrt(2)) (musl's bit trick, no branch), then ln(1 + f), f = m - 1, as
 * f - f^2/2 + f^3 P(f) and e ln 2 split into a short high part and a correction. Against
 * double log over every float in [2^-32, 1): relative error below 8.1e-8, under one ulp. */
static inline float log_f32(float x) {
    uint32_t ix = bits_of(x) - 0x3f3504f3u;   /* the bits of sqrt(1/2) */
    float e = (float)((int32_t)ix >> 23);
    float f = float_of((ix & 0x007fffffu) + 0x3f3504f3u) - 1.0f;
    float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = p * f * z + e * -2.12194440e-4f - 0.5f * z;
    return f + y + e * 0.693359375f;
}

/* Box-Muller of two 32-bit words a, b: u = (a / 2 + 1/2) 2^-31, rounded once to float, in
 * [2^-32, 1) (never 0, so |z| <= sqrt(64 ln 2) = 6.66, a cut at probability 3e-11),
 * theta = 2 pi b 2^-32, z = sqrt(-2 ln u) (cos theta, sin theta). theta = q pi/2 + t with the
 * quadrant q from b's top bits and |t| <= pi/4, where Cephes' sinf/cosf polynomials are within
 * 1.1e-7 (with t's own rounding). Against the same formula in double (from the same float u), z is within
 * 1.7e-7 of the radius (1.4 float ulps; tests/c/test_rng.c sweeps it), far below what a sample
 * of any size that fits memory could detect. u as a float keeps the tails (small u) exact and
 * only bunches radii below ~3e-4 (u within 2^-24 of 1), probability 6e-8, as every float
 * Box-Muller does (PyTorch's too). */

/* -2 ln u, the squared radius, from a: u is exact in double, so rounding it to float is the
 * one rounding (two, through a float sum, would give neighbouring floats unequal weights). */
static inline float radius_sq(uint32_t a) {
    float u = (float)((double)(int32_t)(a >> 1) * 0x1.0p-31 + 0x1.0p-32);
    return -2.0f * log_f32(u);
}

/* (cos theta, sin theta) from b. */
static inline void turn(uint32_t b, float *cos_theta, float *sin_theta) {
    uint32_t q = (b + 0x20000000u) >> 30;                                 /* nearest multiple of pi/2 */
    float t = (float)(int32_t)(b - (q << 30)) * 1.46291807926715968e-9f;  /* 2 pi / 2^32 */
    float t2 = t * t;
    float s = ((-1.9515295891e-4f * t2 + 8.3321608736e-3f) * t2 - 1.6666654611e-1f) * t2 * t + t;
    float c = ((2.443315711809948e-5f * t2 - 1.388731625493765e-3f) * t2 + 4.166664568298827e-2f) * t2 * t2
              - 0.5f * t2 + 1.0f;
    /* rotate (c, s) by q quarter turns: q = 1 gives (-s, c), q = 2 (-c, -s), q = 3 (s, -c) */
    uint32_t odd = q & 1u;
    float x = odd ? s : c, y = odd ? c : s;
    *cos_theta = float_of(bits_of(x) ^ (((q + 1u) & 2u) << 30));
    *sin_theta = float_of(bits_of(y) ^ ((q & 2u) << 30));
}

void ft_normal_pair_of_bits(uint32_t a, uint32_t b, float z[2]) {
    float r = sqrtf(radius_sq(a)), c, s;
    turn(b, &c, &s);
    z[0] = r * c, z[1] = r * s;
}

/* x[i] = sqrt(x[i]) for x[i] >= 0. Its own loop: sqrtf keeps a branch to libm for errno, which
 * stops the loops around it from vectorising; the AVX square root is IEEE too (correctly
 * rounded), so both give the same floats. */
static void sqrt_all(float *x, int n) {
    int i = 0;
#ifdef __AVX__
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
#endif
    for (; i < n; i++) x[i] = sqrtf(x[i]);
}

/* Elements 4g..4g+3 of a normal fill from the block words (w0, w1, w2, w3): the Box-Muller
 * pairs of (w0, w1) and of (w2, w3). */
static void block_normals(float *out, uint32_t w[4][FILL_BLOCK]) {
    float r[2][FILL_BLOCK];
    for (int j = 0; j < FILL_BLOCK; j++) r[0][j] = radius_sq(w[0][j]), r[1][j] = radius_sq(w[2][j]);
    sqrt_all(&r[0][0], 2 * FILL_BLOCK);
    for (int j = 0; j < FILL_BLOCK; j++) {
        float c0, s0, c1, s1;
        turn(w[1][j], &c0, &s0);
        turn(w[3][j], &c1, &s1);
        out[4 * j] = r[0][j] * c0, out[4 * j + 1] = r[0][j] * s0;
        out[4 * j + 2] = r[1][j] * c1, out[4 * j + 3] = r[1][j] * s1;
    }
}

/* A uniform fill: each word to (w >> 8) 2^-24, a float in [0, 1). */
static void block_uniforms(float *out, uint32_t w[4][FILL_BLOCK]) {
    for (int j = 0; j < FILL_BLOCK; j++)
        for (int k = 0; k < 4; k++) out[4 * j + k] = (float)(w[k][j] >> 8) * 0x1.0p-24f;
}

static void fill(float *p, int64_t n, bool normal) {
    if (n <= 0) return;
    uint64_t a = ft_rng_next(), b = ft_rng_next();
    const uint32_t key[2] = {(uint32_t)a, (uint32_t)(a >> 32)}, nonce[2] = {(uint32_t)b, (uint32_t)(b >> 32)};
    const int64_t per_block = 4 * FILL_BLOCK, nblocks = (n + per_block - 1) / per_block;
    #pragma omp parallel for if (nblocks >= 4) schedule(static)   /* from 16K elements */
    for (int64_t blk = 0; blk < nblocks; blk++) {
        uint32_t w[4][FILL_BLOCK];
        float vals[4 * FILL_BLOCK];
        int64_t start = blk * per_block, m = n - start < per_block ? n - start : per_block;
        philox_block(w, (uint64_t)blk * FILL_BLOCK, key, nonce);
        /* whole blocks straight into p; the last one's tail through vals */
        float *out = m == per_block ? p + start : vals;
        if (normal) block_normals(out, w);
        else block_uniforms(out, w);
        if (out == vals) memcpy(p + start, vals, (size_t)m * sizeof *vals);
    }
}

void ft_rng_fill_normal(float *p, int64_t n) { fill(p, n, true); }

void ft_rng_fill_uniform(float *p, int64_t n) { fill(p, n, false); }

void ft_rng_get_state(uint64_t state[4]) {
    for (int i = 0; i < 4; i++) state[i] = rng_state[i];
}

void ft_rng_set_state(const uint64_t state[4]) {
    for (int i = 0; i < 4; i++) rng_state[i] = state[i];
}
