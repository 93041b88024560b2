/* Threads and the global random generator. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "ft/runtime.h"
#include "ft/tensor.h"

/* OpenBLAS's own setter; declared here so the core does not depend on its headers. */
extern void openblas_set_num_threads(int num_threads);

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

/* Draws per chunk of ft_rng_fill_normal: 1 MiB of raw bits, small enough to stay in cache. */
#define NORMAL_CHUNK (1 << 16)

void ft_rng_fill_normal(float *p, int64_t n) {
    uint64_t *raw = n >= 4096 ? malloc(2 * NORMAL_CHUNK * sizeof *raw) : NULL;
    if (!raw) {   /* small, or no memory for the buffer: one draw at a time */
        for (int64_t i = 0; i < n; i++) p[i] = (float)ft_rng_normal();
        return;
    }
    for (int64_t start = 0; start < n; start += NORMAL_CHUNK) {
        int64_t m = n - start < NORMAL_CHUNK ? n - start : NORMAL_CHUNK;
        /* The generator is sequential; the transform, where the time goes, is not. */
        for (int64_t i = 0; i < 2 * m; i++) raw[i] = ft_rng_next();
        float *out = p + start;
        #pragma omp parallel for if (m >= 4096) schedule(static)
        for (int64_t i = 0; i < m; i++) out[i] = (float)normal_of(raw[2 * i], raw[2 * i + 1]);
    }
    free(raw);
}

void ft_rng_get_state(uint64_t state[4]) {
    for (int i = 0; i < 4; i++) state[i] = rng_state[i];
}

void ft_rng_set_state(const uint64_t state[4]) {
    for (int i = 0; i < 4; i++) rng_state[i] = state[i];
}
