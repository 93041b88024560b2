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
/* OpenBLAS's kernels ("Haswell", "SkylakeX" ...: picked by cpuid, or OPENBLAS_CORETYPE) and
 * its build configuration. */
const char *ft_blas_core(void);
const char *ft_blas_config(void);

/* One global generator (xoshiro256**): same seed + same calls = same numbers. */
void ft_manual_seed(uint64_t seed);
uint64_t ft_rng_next(void);        /* 64 random bits */
double ft_rng_uniform(void);       /* [0, 1), 53 bits */
double ft_rng_normal(void);        /* N(0, 1), Box-Muller in double */
/* Bulk fills, for tensors: each takes two words a, b from the generator, then element i comes
 * from i alone (Philox4x32-10 at counter (i / 4, b) under key a), computed on all threads: the
 * same numbers on any number of threads, and a fill of m <= n elements is the prefix of a fill
 * of n from the same state. ft_rng_fill_normal gives float N(0, 1) draws, Box-Muller of word
 * pairs with float polynomials for ln, sin and cos (|z| <= 6.66); ft_rng_fill_uniform gives
 * floats in [0, 1) with 24 random bits. Not the numbers of n ft_rng_normal/uniform calls. */
void ft_rng_fill_normal(float *p, int64_t n);
void ft_rng_fill_uniform(float *p, int64_t n);
/* The pieces the fills are made of, for tests: one Philox4x32-10 block (Random123's
 * philox4x32 with 10 rounds), and the Box-Muller pair of two words (the first word sets the
 * radius, u = (a / 2 + 1/2) 2^-31, the second the angle, 2 pi b 2^-32). */
void ft_philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);
void ft_normal_pair_of_bits(uint32_t a, uint32_t b, float z[2]);
/* Saves/restores the generator state (for resumable checkpoints): 4 words. */
void ft_rng_get_state(uint64_t state[4]);
void ft_rng_set_state(const uint64_t state[4]);

#endif
