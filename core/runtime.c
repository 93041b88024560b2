/* Threads and the global random generator. */
#include <math.h>
#include <omp.h>

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

/* Box-Muller on (0, 1] so log never sees 0. No cached second value: the generator's
 * state alone then determines the sequence, which makes checkpoints resumable. */
double ft_rng_normal(void) {
    double u1 = 1.0 - ft_rng_uniform(), u2 = ft_rng_uniform();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void ft_rng_get_state(uint64_t state[4]) {
    for (int i = 0; i < 4; i++) state[i] = rng_state[i];
}

void ft_rng_set_state(const uint64_t state[4]) {
    for (int i = 0; i < 4; i++) rng_state[i] = state[i];
}
