/* Process-wide settings: threads and the seeded random generator. */
#ifndef FT_RUNTIME_H
#define FT_RUNTIME_H

#include <stdint.h>

/* The most threads ft_set_num_threads accepts. */
#define FT_MAX_THREADS 256
/* Sets OpenMP and OpenBLAS threads together; n <= 0 means all cores. Returns 0, or -1 with an
 * error (and no change) for n > FT_MAX_THREADS. */
int ft_set_num_threads(int n);
int ft_get_num_threads(void);

/* One global generator (xoshiro256**): same seed + same calls = same numbers. */
void ft_manual_seed(uint64_t seed);
uint64_t ft_rng_next(void);        /* 64 random bits */
double ft_rng_uniform(void);       /* [0, 1) */
double ft_rng_normal(void);        /* N(0, 1) */
/* Fills p[0..n) with float N(0, 1) draws, the same numbers as n calls of ft_rng_normal,
 * computed on all threads. */
void ft_rng_fill_normal(float *p, int64_t n);
/* Saves/restores the generator state (for resumable checkpoints): 4 words. */
void ft_rng_get_state(uint64_t state[4]);
void ft_rng_set_state(const uint64_t state[4]);

#endif
