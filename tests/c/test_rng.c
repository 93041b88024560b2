/* The random fills: Philox4x32-10 against Random123's known answers, the fills against their
 * definition (Philox blocks through the Box-Muller pair), the float Box-Muller against the same
 * formula in double, the same numbers on any number of threads, and the statistics of a few
 * million draws within bounds computed from the sample size, bounds that deliberately biased
 * streams must break. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---- Philox4x32-10 -------------------------------------------------------------- */

/* Random123's kat_vectors, "philox4x32 10" lines: counter (4 words), key (2), output (4). */
static void test_philox_known_answers(void) {
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        ft_philox4x32_10(out, kat[v], kat[v] + 4);
        for (int k = 0; k < 4; k++)
            CHECK(out[k] == kat[v][6 + k], "philox vector %d word %d: %08x, want %08x", v, k, out[k], kat[v][6 + k]);
    }
}

/* ---- the fills against their definition ------------------------------------------- */

/* The two words a fill takes from the generator, leaving its state as it was. */
static void fill_words(uint64_t *a, uint64_t *b) {
    uint64_t s[4];
    ft_rng_get_state(s);
    *a = ft_rng_next(), *b = ft_rng_next();
    ft_rng_set_state(s);
}

/* The Philox block of group g for a fill that took words a, b. */
static void block_of(uint32_t w[4], uint64_t g, uint64_t a, uint64_t b) {
    const uint32_t ctr[4] = {(uint32_t)g, (uint32_t)(g >> 32), (uint32_t)b, (uint32_t)(b >> 32)};
    const uint32_t key[2] = {(uint32_t)a, (uint32_t)(a >> 32)};
    ft_philox4x32_10(w, ctr, key);
}

/* Bit for bit, element by element: the vectorised block code against the scalar pieces, over
 * several blocks and a ragged tail; then the generator has moved by exactly two words. */
static void test_fills_follow_their_definition(void) {
    const int64_t n = 3 * 1024 + 517;
    float *z = malloc(n * sizeof *z), *u = malloc(n * sizeof *u);
    ft_manual_seed(2024);
    uint64_t a, b, s[4];
    fill_words(&a, &b);
    ft_rng_fill_normal(z, n);
    ft_rng_get_state(s);
    uint64_t after_fill = ft_rng_next();
    ft_manual_seed(2024);
    ft_rng_next(), ft_rng_next();
    CHECK(ft_rng_next() == after_fill, "a fill moves the generator by two words");
    int bad = 0;
    for (int64_t g = 0; 4 * g < n; g++) {
        uint32_t w[4];
        float pair[4];
        block_of(w, (uint64_t)g, a, b);
        ft_normal_pair_of_bits(w[0], w[1], pair);
        ft_normal_pair_of_bits(w[2], w[3], pair + 2);
        for (int k = 0; k < 4 && 4 * g + k < n; k++)
            if (memcmp(&z[4 * g + k], &pair[k], sizeof(float)) != 0 && bad++ < 5)
                CHECK(0, "normal %lld: %.9g, its definition gives %.9g", (long long)(4 * g + k), z[4 * g + k], pair[k]);
    }
    CHECK(bad == 0, "%d normals differ from their definition", bad);

    ft_manual_seed(77);
    fill_words(&a, &b);
    ft_rng_fill_uniform(u, n);
    bad = 0;
    for (int64_t g = 0; 4 * g < n; g++) {
        uint32_t w[4];
        block_of(w, (uint64_t)g, a, b);
        for (int k = 0; k < 4 && 4 * g + k < n; k++)
            if (u[4 * g + k] != (float)(w[k] >> 8) * 0x1.0p-24f && bad++ < 5)
                CHECK(0, "uniform %lld: %.9g, want %.9g", (long long)(4 * g + k), u[4 * g + k],
                      (float)(w[k] >> 8) * 0x1.0p-24f);
    }
    CHECK(bad == 0, "%d uniforms differ from their definition", bad);
    free(z);
    free(u);
}

/* A shorter fill is the prefix of a longer one from the same state; fills of 0 and 1 work. */
static void test_prefixes(void) {
    const int64_t n = 100003;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (int normal = 0; normal < 2; normal++) {
        void (*fill)(float *, int64_t) = normal ? ft_rng_fill_normal : ft_rng_fill_uniform;
        ft_manual_seed(5);
        fill(x, n);
        const int64_t sizes[] = {0, 1, 3, 4, 5, 1023, 1024, 1025, 4097, 99999};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            ft_manual_seed(5);
            memset(y, 0xff, n * sizeof *y);
            fill(y, sizes[i]);
            CHECK(memcmp(x, y, sizes[i] * sizeof *y) == 0, "%s fill of %lld is not a prefix of the fill of %lld",
                  normal ? "normal" : "uniform", (long long)sizes[i], (long long)n);
            uint32_t guard;
            memcpy(&guard, &y[sizes[i]], sizeof guard);
            CHECK(guard == 0xffffffffu, "a fill of %lld wrote past its end", (long long)sizes[i]);
        }
    }
    free(x);
    free(y);
}

/* The same numbers on 1, 2, 3 and 7 threads. */
static void test_thread_count_does_not_matter(void) {
    const int64_t n = (1 << 20) + 7;
    float *ref = malloc(n * sizeof *ref), *x = malloc(n * sizeof *x);
    int saved = ft_get_num_threads();
    for (int normal = 0; normal < 2; normal++) {
        void (*fill)(float *, int64_t) = normal ? ft_rng_fill_normal : ft_rng_fill_uniform;
        ft_set_num_threads(1);
        ft_manual_seed(31);
        fill(ref, n);
        const int threads[] = {2, 3, 7};
        for (int t = 0; t < 3; t++) {
            ft_set_num_threads(threads[t]);
            ft_manual_seed(31);
            fill(x, n);
            CHECK(memcmp(ref, x, n * sizeof *x) == 0, "%s fill on %d threads differs from 1 thread",
                  normal ? "normal" : "uniform", threads[t]);
        }
    }
    ft_set_num_threads(saved);
    free(ref);
    free(x);
}

/* ---- the float Box-Muller against double ------------------------------------------- */

/* The words a sweep tries: edges (0, all ones, powers of two and their neighbours, the
 * quadrant boundaries of the angle) and lcg draws. */
static uint32_t sweep_word(int i) {
    if (i < 33 * 3) {
        uint32_t p = i / 3 == 32 ? 0 : 1u << (i / 3);
        return p + (uint32_t)(i % 3) - 1u;
    }
    return (uint32_t)(lcg() * 4294967296.0);
}

/* z against sqrt(-2 ln u) (cos, sin)(2 pi b 2^-32) in double, with u the float the definition
 * rounds a to: both within 3 float ulps of the radius (3.6e-7 r); |z| never above 6.67. */
static void test_box_muller_accuracy(void) {
    double worst = 0, top = 0;
    int bad = 0;
    for (int i = 0; i < 1200; i++) {
        for (int j = 0; j < 1200; j++) {
            uint32_t a = sweep_word(i), b = sweep_word(j);
            float z[2];
            ft_normal_pair_of_bits(a, b, z);
            float uf = (float)(((double)(a >> 1) + 0.5) * 0x1.0p-31);
            double r = sqrt(-2.0 * log((double)uf)), theta = 6.283185307179586 * (double)b * 0x1.0p-32;
            double want[2] = {r * cos(theta), r * sin(theta)};
            for (int k = 0; k < 2; k++) {
                double err = fabs(z[k] - want[k]) / (r > 1e-30 ? r : 1e-30);
                if (err > worst) worst = err;
                if (fabs(z[k]) > top) top = fabs(z[k]);
                if (!(err <= 3.6e-7) && bad++ < 5)
                    CHECK(0, "a=%08x b=%08x z%d = %.9g, double gives %.9g (error %.3g r)", a, b, k, z[k], want[k], err);
            }
        }
    }
    CHECK(bad == 0, "%d Box-Muller values off", bad);
    CHECK(top <= 6.67, "|z| reached %.4f", top);
    printf("     float Box-Muller: worst error %.3g of the radius, largest |z| %.4f\n", worst, top);
}

/* ---- statistics ---------------------------------------------------------------------- */

/* How many standard errors a statistic may stray: two-sided p 5.7e-7 per check. */
#define SIGMAS 5.0

enum {
    MEAN = 1 << 0, VARIANCE = 1 << 1, SKEWNESS = 1 << 2, KURTOSIS = 1 << 3, TAIL3 = 1 << 4, TAIL4 = 1 << 5,
    CHI2 = 1 << 6, LAG1 = 1 << 7, LAG1_SQUARES = 1 << 8,
};
static const char *const stat_names[] = {"mean", "variance", "skewness", "kurtosis", "P(|z|>3)", "P(|z|>4)",
                                         "chi-square", "lag-1 correlation", "lag-1 correlation of squares"};

static double normal_cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

/* x with normal_cdf(x) = p, by bisection. */
static double normal_quantile(double p) {
    double lo = -10, hi = 10;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (normal_cdf(mid) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* One statistic against its expected value: sets bit in *failed when |got - want| > SIGMAS se. */
static void judge(int *failed, int bit, double got, double want, double se, bool report, const char *what) {
    if (fabs(got - want) > SIGMAS * se) {
        *failed |= bit;
        if (report) {
            int k = 0;
            while ((1 << k) != bit) k++;
            fprintf(stderr, "  %s: %s %.6g, expected %.6g +- %.3g\n", what, stat_names[k], got, want, SIGMAS * se);
        }
    }
}

/* The checks an N(0, 1) sample z[0..n) fails, as a mask of the bits above: the moments (their
 * standard errors for a normal sample: sqrt(1/n), sqrt(2/n), sqrt(6/n), sqrt(24/n)), the
 * fractions beyond 3 and 4 (binomial), a chi-square over 100 equiprobable bins, and the lag-1
 * correlations of z and of z^2 (standard errors 1/sqrt(n) and sqrt(3/n): the products of
 * neighbours overlap). report prints the failures. */
static int normal_failures(const float *z, int64_t n, bool report, const char *what) {
    enum { BINS = 100 };
    static double edges[BINS - 1];
    if (edges[0] == 0)
        for (int k = 0; k < BINS - 1; k++) edges[k] = normal_quantile((k + 1.0) / BINS);
    double s1 = 0, lag = 0, lag_sq = 0;
    int64_t tail3 = 0, tail4 = 0, counts[BINS] = {0};
    for (int64_t i = 0; i < n; i++) s1 += z[i];
    double mean = s1 / n, m2 = 0, m3 = 0, m4 = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = z[i], d = x - mean, d2 = d * d;
        m2 += d2, m3 += d2 * d, m4 += d2 * d2;
        tail3 += fabs(x) > 3, tail4 += fabs(x) > 4;
        if (i + 1 < n) lag += x * z[i + 1], lag_sq += x * x * z[i + 1] * z[i + 1];
        int lo = 0, hi = BINS - 1;   /* the bin: the first edge above x */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (x < edges[mid]) hi = mid;
            else lo = mid + 1;
        }
        counts[lo]++;
    }
    m2 /= n, m3 /= n, m4 /= n;
    double chi2 = 0, expect = (double)n / BINS;
    for (int k = 0; k < BINS; k++) chi2 += (counts[k] - expect) * (counts[k] - expect) / expect;
    double p3 = erfc(3 / sqrt(2.0)), p4 = erfc(4 / sqrt(2.0)), rn = sqrt((double)n);
    int failed = 0;
    judge(&failed, MEAN, mean, 0, 1 / rn, report, what);
    judge(&failed, VARIANCE, m2, 1, sqrt(2.0) / rn, report, what);
    judge(&failed, SKEWNESS, m3 / pow(m2, 1.5), 0, sqrt(6.0) / rn, report, what);
    judge(&failed, KURTOSIS, m4 / (m2 * m2) - 3, 0, sqrt(24.0) / rn, report, what);
    judge(&failed, TAIL3, (double)tail3 / n, p3, sqrt(p3 * (1 - p3)) / rn, report, what);
    judge(&failed, TAIL4, (double)tail4 / n, p4, sqrt(p4 * (1 - p4)) / rn, report, what);
    judge(&failed, CHI2, chi2, BINS - 1, sqrt(2.0 * (BINS - 1)), report, what);
    judge(&failed, LAG1, lag / (n - 1), 0, 1 / rn, report, what);
    judge(&failed, LAG1_SQUARES, (lag_sq / (n - 1) - 1) / 2, 0, sqrt(3.0) / rn, report, what);
    return failed;
}

#define SAMPLE (4 << 20)

static void test_normal_statistics(void) {
    float *z = malloc(SAMPLE * sizeof *z);
    for (uint64_t seed = 1; seed <= 3; seed++) {
        ft_manual_seed(seed);
        ft_rng_fill_normal(z, SAMPLE);
        char what[32];
        snprintf(what, sizeof what, "seed %llu", (unsigned long long)seed);
        int failed = normal_failures(z, SAMPLE, true, what);
        CHECK(failed == 0, "ft_rng_fill_normal, %s: %d check(s) failed (mask %#x)", what, __builtin_popcount(failed), failed);
    }
    /* two successive fills are independent of each other: their elementwise products */
    float *y = malloc(SAMPLE * sizeof *y);
    ft_manual_seed(9);
    ft_rng_fill_normal(z, SAMPLE);
    ft_rng_fill_normal(y, SAMPLE);
    double cross = 0;
    for (int64_t i = 0; i < SAMPLE; i++) cross += (double)z[i] * y[i];
    CHECK(fabs(cross / SAMPLE) <= SIGMAS / sqrt((double)SAMPLE), "successive fills correlate: %g", cross / SAMPLE);
    free(y);
    free(z);
}

/* Each statistic can fail: a stream biased the way it looks for breaks it. */
static void test_biased_streams_fail(void) {
    enum { CHUNK = 1 << 16 };   /* SAMPLE is a multiple */
    float *z = malloc(SAMPLE * sizeof *z), *u = malloc(12 * CHUNK * sizeof *u);
    float *biased = malloc(SAMPLE * sizeof *biased);
    ft_manual_seed(1);
    ft_rng_fill_normal(z, SAMPLE);
    struct {
        const char *name;
        int must_fail;
    } cases[] = {
        {"shifted by 0.004", MEAN},
        {"scaled by 1.01", VARIANCE},
        {"z + 0.005 (z^2 - 1)", SKEWNESS},
        {"sum of 12 uniforms - 6", KURTOSIS | TAIL4},
        {"clamped to +-3.9", TAIL4},
        {"3 in 1000 draws replaced by +-3.5", TAIL3},
        {"angle rounded to 1/64 turn", CHI2},
        {"each draw twice", LAG1},
        {"pairs (z, +-z)", LAG1_SQUARES},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int64_t i = 0; i < SAMPLE; i++) {
            float x = z[i], v = x;
            switch (c) {
                case 0: v = x + 0.004f; break;
                case 1: v = x * 1.01f; break;
                case 2: v = x + 0.005f * (x * x - 1); break;
                case 3: v = 0; break;
                case 4: v = x > 3.9f ? 3.9f : x < -3.9f ? -3.9f : x; break;
                case 5: v = i % 1000 < 3 ? (x < 0 ? -3.5f : 3.5f) : x; break;
                case 6: {   /* the radius from the pair, the angle coarsened */
                    float a = z[i & ~1LL], b = z[i | 1], r = sqrtf(a * a + b * b);
                    float th = roundf(atan2f(b, a) / 6.2831853f * 64) / 64 * 6.2831853f;
                    v = i & 1 ? r * sinf(th) : r * cosf(th);
                    break;
                }
                case 7: v = z[i & ~1LL]; break;
                case 8: v = i & 1 ? (z[i] < 0 ? -z[i - 1] : z[i - 1]) : x; break;
            }
            biased[i] = v;
        }
        if (c == 3) {
            ft_manual_seed(3);
            for (int64_t i = 0; i < SAMPLE; i += CHUNK) {
                ft_rng_fill_uniform(u, 12 * CHUNK);
                for (int64_t j = 0; j < CHUNK; j++) {
                    double s = -6;
                    for (int k = 0; k < 12; k++) s += u[12 * j + k];
                    biased[i + j] = (float)s;
                }
            }
        }
        int failed = normal_failures(biased, SAMPLE, false, cases[c].name);
        CHECK((failed & cases[c].must_fail) == cases[c].must_fail,
              "a stream %s passes the checks it should fail (failed mask %#x, want %#x)", cases[c].name, failed,
              cases[c].must_fail);
    }
    free(biased);
    free(u);
    free(z);
}

/* Uniform fills: in [0, 1) on a 2^-24 grid, mean 1/2 and variance 1/12 (standard errors
 * sqrt(1/12n) and sqrt(1/180n)), a chi-square over 256 bins, lag-1 correlation; and a stream
 * with one draw in 200 set to 0 fails the mean and the chi-square. */
static int uniform_failures(const float *u, int64_t n, bool report) {
    enum { BINS = 256 };
    int64_t counts[BINS] = {0}, off_grid = 0;
    double s1 = 0, s2 = 0, lag = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = u[i];
        s1 += x;
        off_grid += !(x >= 0 && x < 1) || x * 0x1.0p24 != floor(x * 0x1.0p24);
        counts[x >= 0 && x < 1 ? (int)(x * BINS) : 0]++;
        if (i + 1 < n) lag += (x - 0.5) * (u[i + 1] - 0.5);
    }
    double mean = s1 / n;
    for (int64_t i = 0; i < n; i++) s2 += (u[i] - mean) * (u[i] - mean);
    double chi2 = 0, expect = (double)n / BINS, rn = sqrt((double)n);
    for (int k = 0; k < BINS; k++) chi2 += (counts[k] - expect) * (counts[k] - expect) / expect;
    int failed = 0;
    judge(&failed, MEAN, mean, 0.5, sqrt(1 / 12.0) / rn, report, "uniform");
    judge(&failed, VARIANCE, s2 / n, 1 / 12.0, sqrt(1 / 180.0) / rn, report, "uniform");
    judge(&failed, CHI2, chi2, BINS - 1, sqrt(2.0 * (BINS - 1)), report, "uniform");
    judge(&failed, LAG1, lag / (n - 1) * 12, 0, 1 / rn, report, "uniform");
    if (off_grid) failed |= 1 << 30;
    return failed;
}

static void test_uniform_statistics(void) {
    float *u = malloc(SAMPLE * sizeof *u);
    ft_manual_seed(4);
    ft_rng_fill_uniform(u, SAMPLE);
    int failed = uniform_failures(u, SAMPLE, true);
    CHECK(failed == 0, "ft_rng_fill_uniform: checks failed (mask %#x)", failed);
    for (int64_t i = 0; i < SAMPLE; i += 200) u[i] = 0;
    failed = uniform_failures(u, SAMPLE, false);
    CHECK((failed & (MEAN | CHI2)) == (MEAN | CHI2), "a uniform stream with 0.5%% zeros passes (failed mask %#x)", failed);
    free(u);
}

static const check_test tests[] = {
    CHECK_TEST(test_philox_known_answers),   CHECK_TEST(test_fills_follow_their_definition),
    CHECK_TEST(test_prefixes),               CHECK_TEST(test_thread_count_does_not_matter),
    CHECK_TEST(test_box_muller_accuracy),    CHECK_TEST(test_normal_statistics),
    CHECK_TEST(test_biased_streams_fail),    CHECK_TEST(test_uniform_statistics),
};

int main(void) { return check_run("test_rng", tests, sizeof tests / sizeof tests[0]); }
