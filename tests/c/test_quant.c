/* Quantisation (core/quant/qweight.c) against bitsandbytes' own scalar forms, kept here as the
 * reference: dQuantizeNF4's decision tree for the NF4 indices, dQuantize<0>'s binary search for
 * the 8-bit codes of the double-quantised absmaxes. The core computes both another way (a
 * count or a vectorised tree, a table and a few compares), so the values swept here sit on and
 * next to every threshold: the midpoints and their float32 neighbours. Then the dequantised rows
 * from any start against level * absmax, and the non-finite error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ft/quant.h"

/* ---- bitsandbytes' scalar forms ------------------------------------------------- */

static unsigned nf4_tree(float x) {
    if (x > 0.03979014977812767f) {
        if (x > 0.3893125355243683f) {
            if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
            return x > 0.5016634166240692f ? 13 : 12;
        }
        if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
        return x > 0.1202552504837513f ? 9 : 8;
    }
    if (x > -0.33967943489551544f) {
        if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
        return x > -0.23460740596055984f ? 5 : 4;
    }
    if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
    return x > -0.8480964004993439f ? 1 : 0;
}

static const float nf4_thresholds[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

static unsigned dquantize_search(const float code[256], float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f, val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) { lower_pivot = pivot; lower = val; pivot += i; }
        else { upper_pivot = pivot; upper = val; pivot -= i; }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) {
        float midpoint = (upper + val) * 0.5f;
        return x > midpoint ? (unsigned)upper_pivot : (unsigned)pivot;
    }
    float midpoint = (lower + val) * 0.5f;
    return x < midpoint ? (unsigned)lower_pivot : (unsigned)pivot;
}

/* ---- helpers -------------------------------------------------------------------- */

static ft_tensor *matrix(const float *w, int64_t rows, int64_t cols) {
    int64_t shape[2] = {rows, cols};
    return ft_from_data(w, shape, 2, FT_FLOAT32);
}

static uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float urand(void) { return (float)(2.0 * lcg() - 1.0); }

/* ---- NF4 indices ---------------------------------------------------------------- */

/* Rows of 64 whose absmax is 1 (one element is 1 or -1), so the core quantises the values
 * themselves: every threshold and 40 float32 neighbours on each side, +-0, the levels, tiny
 * values, random ones; and an all-zero row (NaN inside: index 0). */
static void test_nf4_index_at_thresholds(void) {
    enum { ROWS = 64 };
    int64_t n = 0, cap = ROWS * 63;
    float *vals = malloc((size_t)cap * sizeof *vals);
    for (int k = 0; k < 15; k++) {
        float lo = nf4_thresholds[k], hi = nf4_thresholds[k];
        vals[n++] = nf4_thresholds[k];
        for (int s = 0; s < 40; s++) {
            lo = nextafterf(lo, -2.0f), hi = nextafterf(hi, 2.0f);
            vals[n++] = lo, vals[n++] = hi;
        }
    }
    static const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 1e-45f, -1e-45f, 1e-38f, -1e-38f, 0.5f, -0.5f};
    for (size_t k = 0; k < sizeof special / sizeof special[0]; k++) vals[n++] = special[k];
    for (int k = 0; k < 16; k++) vals[n++] = ft_nf4_levels[k];
    while (n < cap - 63) vals[n++] = urand();
    int64_t rows = (n + 62) / 63 + 1;
    float *w = calloc((size_t)(rows * 64), sizeof *w);
    for (int64_t i = 0; i < n; i++) w[(i / 63) * 64 + 1 + i % 63] = vals[i];
    for (int64_t r = 0; r + 1 < rows; r++) w[r * 64] = r & 1 ? -1.0f : 1.0f;   /* the last row stays 0 */
    ft_tensor *t = matrix(w, rows, 64);
    ft_qweight *q = ft_quantize(t, FT_QUANT_NF4_FP32);
    ft_tensor *codes = ft_qweight_codes(q), *scales = ft_qweight_scales(q);
    int bad = 0;
    for (int64_t i = 0; i < rows * 64 && bad < 5; i++) {
        float inv = i / 64 + 1 < rows ? 1.0f : INFINITY;   /* 1 / absmax */
        unsigned want = nf4_tree(w[i] * inv);
        if (ft_i64(codes)[i] != (int64_t)want) {
            bad++;
            CHECK(0, "NF4 index of %.9g (bits %08x): %lld, bitsandbytes' tree %u", (double)w[i], bits_of(w[i]),
                  (long long)ft_i64(codes)[i], want);
        }
    }
    for (int64_t r = 0; r < rows; r++)
        CHECK(ft_f32(scales)[r] == (r + 1 < rows ? 1.0f : 0.0f), "absmax of row %lld: %g", (long long)r,
              (double)ft_f32(scales)[r]);
    ft_release(codes), ft_release(scales), ft_qweight_release(q), ft_release(t);
    /* the same values in a last block shorter than 64 (quantised by the scalar loop) */
    for (int64_t c = 0; c < n && bad < 5; c += 32) {
        float part[33] = {1.0f};
        int64_t len = n - c < 32 ? n - c : 32;
        memcpy(part + 1, vals + c, (size_t)len * sizeof *part);
        t = matrix(part, 1, len + 1);
        q = ft_quantize(t, FT_QUANT_NF4_FP32);
        codes = ft_qweight_codes(q);
        for (int64_t i = 0; i <= len; i++) {
            if (ft_i64(codes)[i] != (int64_t)nf4_tree(part[i])) {
                bad++;
                CHECK(0, "NF4 index of %.9g in a short block: %lld, tree %u", (double)part[i],
                      (long long)ft_i64(codes)[i], nf4_tree(part[i]));
            }
        }
        ft_release(codes), ft_qweight_release(q), ft_release(t);
    }
    free(w), free(vals);
}

/* Random weights of several scales on a shape whose blocks cross rows and whose last block has
 * an odd length: x = w * (1 / absmax) through the tree, the absmax as max |w|. */
static void test_nf4_index_random(void) {
    const int64_t rows = 37, cols = 61, n = rows * cols;   /* 2257 = 35 * 64 + 17 */
    float *w = malloc((size_t)n * sizeof *w);
    for (int64_t i = 0; i < n; i++) w[i] = urand() * (float)pow(10.0, (double)((i / 64) % 7) - 3.0);
    ft_tensor *t = matrix(w, rows, cols);
    ft_qweight *q = ft_quantize(t, FT_QUANT_NF4_FP32);
    ft_tensor *codes = ft_qweight_codes(q), *scales = ft_qweight_scales(q);
    int bad = 0;
    for (int64_t b = 0; b * 64 < n; b++) {
        int64_t i0 = b * 64, i1 = i0 + 64 < n ? i0 + 64 : n;
        float m = 0.0f;
        for (int64_t i = i0; i < i1; i++) m = fmaxf(m, fabsf(w[i]));
        CHECK(bits_of(ft_f32(scales)[b]) == bits_of(m), "block %lld absmax %g, want %g", (long long)b,
              (double)ft_f32(scales)[b], (double)m);
        float inv = 1.0f / m;
        for (int64_t i = i0; i < i1 && bad < 5; i++) {
            float x = w[i] * inv;
            if (ft_i64(codes)[i] != (int64_t)nf4_tree(x)) {
                bad++;
                CHECK(0, "NF4 index of w[%lld] = %g: %lld, tree %u", (long long)i, (double)w[i],
                      (long long)ft_i64(codes)[i], nf4_tree(x));
            }
        }
    }
    ft_release(codes), ft_release(scales), ft_qweight_release(q), ft_release(t);
    free(w);
}

/* ---- the 8-bit codes of the absmaxes ---------------------------------------------- */

/* Absmaxes 1 + d and 1 - d in pairs (d a multiple of 2^-23, so both exact and their mean exactly
 * 1), and d = 0.5 in every group of 256: then x = (absmax - 1) * (1 / 0.5) = 2 d exactly, and d is
 * chosen to put x on and next to every code and every midpoint of the dynamic map. Each block of
 * 64 weights holds its absmax once. */
static void test_absmax_codes_at_midpoints(void) {
    float code[256];
    ft_dynamic_map(code);
    int64_t cap = 2 * 256 * 2 * 9 + 4096, n = 0;
    double *d = malloc((size_t)cap * sizeof *d);
    for (int k = 0; k < 511; k++) {
        /* even k: code k / 2; odd k: the midpoint above code k / 2 */
        float target = k & 1 ? (code[k / 2] + code[k / 2 + 1]) * 0.5f : code[k / 2];
        if (!(fabsf(target) <= 1.0f)) continue;
        double base = nearbyint((double)target / 2.0 * 8388608.0);   /* d in units of 2^-23 */
        for (int s = -4; s <= 4; s++) {
            double dd = (base + s) / 8388608.0;
            if (fabs(dd) < 0.5) d[n++] = dd;
        }
    }
    /* groups of 256 absmaxes: d = +-0.5 first, then 254 of the others, in +- pairs */
    int64_t per_group = 127, groups = (n + per_group - 1) / per_group;
    int64_t nabs = groups * 256;
    float *absmax = malloc((size_t)nabs * sizeof *absmax);
    for (int64_t g = 0; g < groups; g++) {
        absmax[g * 256] = 1.5f, absmax[g * 256 + 1] = 0.5f;
        for (int64_t j = 0; j < per_group; j++) {
            int64_t k = g * per_group + j;
            double dd = k < n ? d[k] : 0.0;
            absmax[g * 256 + 2 + 2 * j] = (float)(1.0 + dd);
            absmax[g * 256 + 3 + 2 * j] = (float)(1.0 - dd);
        }
    }
    float *w = calloc((size_t)(nabs * 64), sizeof *w);
    for (int64_t b = 0; b < nabs; b++) w[b * 64 + b % 64] = b & 1 ? -absmax[b] : absmax[b];
    ft_tensor *t = matrix(w, nabs, 64);
    ft_qweight *q = ft_quantize(t, FT_QUANT_NF4);
    CHECK(ft_qweight_offset(q) == 1.0f, "offset %.9g, want 1", (double)ft_qweight_offset(q));
    ft_tensor *codes = ft_qweight_absmax_codes(q), *absmax2 = ft_qweight_absmax2(q);
    for (int64_t g = 0; g < groups; g++)
        CHECK(ft_f32(absmax2)[g] == 0.5f, "absmax2[%lld] = %g, want 0.5", (long long)g, (double)ft_f32(absmax2)[g]);
    int bad = 0;
    for (int64_t b = 0; b < nabs && bad < 5; b++) {
        float x = (absmax[b] - 1.0f) * 2.0f;
        unsigned want = dquantize_search(code, x);
        if (ft_i64(codes)[b] != (int64_t)want) {
            bad++;
            CHECK(0, "code of x = %.9g: %lld, bitsandbytes' search %u", (double)x, (long long)ft_i64(codes)[b], want);
        }
    }
    ft_release(codes), ft_release(absmax2), ft_qweight_release(q), ft_release(t);
    free(w), free(absmax), free(d);
}

/* Random absmaxes (a general offset and absmax2), and an all-zero weight (0 * inf = NaN: code 0). */
static void test_absmax_codes_random(void) {
    const int64_t nabs = 3 * 256 + 77;
    float *w = calloc((size_t)(nabs * 64), sizeof *w), *absmax = malloc((size_t)nabs * sizeof *absmax);
    for (int64_t b = 0; b < nabs; b++) {
        absmax[b] = (float)(lcg() * lcg()) + 1e-3f;
        w[b * 64 + 63 - b % 64] = absmax[b];
    }
    ft_tensor *t = matrix(w, nabs, 64);
    ft_qweight *q = ft_quantize(t, FT_QUANT_NF4);
    float code[256];
    ft_dynamic_map(code);
    double sum = 0.0;
    for (int64_t b = 0; b < nabs; b++) sum += absmax[b];
    float offset = (float)(sum / (double)nabs);
    CHECK(ft_qweight_offset(q) == offset, "offset %.9g, want %.9g", (double)ft_qweight_offset(q), (double)offset);
    ft_tensor *codes = ft_qweight_absmax_codes(q);
    int bad = 0;
    for (int64_t g = 0; g * 256 < nabs; g++) {
        int64_t b0 = g * 256, b1 = b0 + 256 < nabs ? b0 + 256 : nabs;
        float m = 0.0f;
        for (int64_t b = b0; b < b1; b++) m = fmaxf(m, fabsf(absmax[b] - offset));
        float inv = 1.0f / m;
        for (int64_t b = b0; b < b1 && bad < 5; b++) {
            float x = (absmax[b] - offset) * inv;
            unsigned want = dquantize_search(code, x);
            if (ft_i64(codes)[b] != (int64_t)want) {
                bad++;
                CHECK(0, "code of absmax %lld (x = %.9g): %lld, search %u", (long long)b, (double)x,
                      (long long)ft_i64(codes)[b], want);
            }
        }
    }
    ft_release(codes), ft_qweight_release(q), ft_release(t);

    memset(w, 0, (size_t)(nabs * 64) * sizeof *w);
    t = matrix(w, nabs, 64);
    q = ft_quantize(t, FT_QUANT_NF4);
    codes = ft_qweight_absmax_codes(q);
    ft_tensor *deq = ft_dequantize(q);
    int64_t nonzero = 0;
    for (int64_t b = 0; b < nabs; b++) nonzero += ft_i64(codes)[b] != 0;
    for (int64_t i = 0; i < nabs * 64; i++) nonzero += ft_f32(deq)[i] != 0.0f;
    CHECK(nonzero == 0, "an all-zero weight: %lld nonzero codes or values", (long long)nonzero);
    ft_release(deq), ft_release(codes), ft_qweight_release(q), ft_release(t);
    free(w), free(absmax);
}

/* ---- dequantisation ----------------------------------------------------------------- */

/* ft_dequantize_rows from every start row, against level[index] * absmax (NF4) and
 * value * scale (int8), bit for bit: odd widths put block and byte edges mid-row. */
static void test_dequantize_rows(void) {
    static const int64_t shapes[][2] = {{37, 61}, {9, 64}, {5, 4103}, {40, 96}};
    static const ft_quant_kind kinds[] = {FT_QUANT_NF4, FT_QUANT_NF4_FP32, FT_QUANT_INT8};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
        float *w = malloc((size_t)n * sizeof *w);
        for (int64_t i = 0; i < n; i++) w[i] = urand() * 0.1f;
        ft_tensor *t = matrix(w, rows, cols);
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            ft_qweight *q = ft_quantize(t, kinds[k]);
            ft_tensor *codes = ft_qweight_codes(q), *scales = ft_qweight_scales(q);
            float *want = malloc((size_t)n * sizeof *want), *got = malloc((size_t)n * sizeof *got);
            for (int64_t i = 0; i < n; i++) {
                int64_t c = ft_i64(codes)[i];
                want[i] = kinds[k] == FT_QUANT_INT8 ? (float)c * ft_f32(scales)[i / cols]
                                                    : ft_nf4_levels[c] * ft_f32(scales)[i / 64];
            }
            int bad = 0;
            for (int64_t r0 = 0; r0 < rows && !bad; r0++) {
                int64_t nr = (r0 * 7) % (rows - r0) + 1;
                memset(got, 0xff, (size_t)n * sizeof *got);
                CHECK(ft_dequantize_rows(q, r0, nr, got) == 0, "dequantize_rows: %s", ft_last_error());
                for (int64_t i = 0; i < nr * cols && !bad; i++) {
                    if (bits_of(got[i]) != bits_of(want[r0 * cols + i])) {
                        bad = 1;
                        CHECK(0, "%s [%lld, %lld] rows from %lld: element %lld is %.9g, want %.9g",
                              ft_quant_kind_name(kinds[k]), (long long)rows, (long long)cols, (long long)r0,
                              (long long)i, (double)got[i], (double)want[r0 * cols + i]);
                    }
                }
                CHECK(nr * cols == n || bits_of(got[nr * cols]) == 0xffffffffu, "dequantize_rows wrote past its rows");
            }
            CHECK(ft_dequantize_rows(q, rows, 1, got) < 0, "rows past the end are refused");
            free(want), free(got);
            ft_release(codes), ft_release(scales), ft_qweight_release(q);
        }
        ft_release(t);
        free(w);
    }
}

/* ---- threads, errors ------------------------------------------------------------------ */

/* The same bytes on one thread and on several (blocks split across threads). */
static void test_thread_count_does_not_matter(void) {
    const int64_t rows = 300, cols = 1000, n = rows * cols;
    float *w = malloc((size_t)n * sizeof *w);
    for (int64_t i = 0; i < n; i++) w[i] = urand();
    ft_tensor *t = matrix(w, rows, cols);
    int threads = ft_get_num_threads();
    for (int k = 0; k < 3; k++) {
        ft_quant_kind kind = (ft_quant_kind)k;
        ft_set_num_threads(1);
        ft_qweight *a = ft_quantize(t, kind);
        ft_tensor *da = ft_dequantize(a);
        ft_set_num_threads(4);
        ft_qweight *b = ft_quantize(t, kind);
        ft_tensor *db = ft_dequantize(b);
        ft_tensor *ca = ft_qweight_codes(a), *cb = ft_qweight_codes(b);
        CHECK(memcmp(ft_i64(ca), ft_i64(cb), (size_t)n * sizeof(int64_t)) == 0, "%s codes differ by thread count",
              ft_quant_kind_name(kind));
        CHECK(memcmp(ft_f32(da), ft_f32(db), (size_t)n * sizeof(float)) == 0, "%s values differ by thread count",
              ft_quant_kind_name(kind));
        ft_release(ca), ft_release(cb), ft_release(da), ft_release(db);
        ft_qweight_release(a), ft_qweight_release(b);
    }
    ft_set_num_threads(threads);
    ft_release(t);
    free(w);
}

/* A non-finite value is refused with the first one's position, whichever block or row it is in. */
static void test_non_finite_refused(void) {
    const int64_t rows = 50, cols = 700, n = rows * cols;
    float *w = malloc((size_t)n * sizeof *w);
    for (int64_t i = 0; i < n; i++) w[i] = urand();
    w[31 * cols + 5] = INFINITY;
    w[40 * cols + 9] = NAN;
    ft_tensor *t = matrix(w, rows, cols);
    for (int k = 0; k < 3; k++) {
        ft_qweight *q = ft_quantize(t, (ft_quant_kind)k);
        CHECK(q == NULL, "%s: a weight holding inf is quantised", ft_quant_kind_name((ft_quant_kind)k));
        CHECK(q == NULL && strstr(ft_last_error(), "non-finite") && strstr(ft_last_error(), "[31, 5]"),
              "%s: error '%s'", ft_quant_kind_name((ft_quant_kind)k), ft_last_error());
        ft_qweight_release(q);
    }
    ft_release(t);
    free(w);
}

static const check_test tests[] = {
    CHECK_TEST(test_nf4_index_at_thresholds), CHECK_TEST(test_nf4_index_random),
    CHECK_TEST(test_absmax_codes_at_midpoints), CHECK_TEST(test_absmax_codes_random),
    CHECK_TEST(test_dequantize_rows),          CHECK_TEST(test_thread_count_does_not_matter),
    CHECK_TEST(test_non_finite_refused),
};

int main(void) { return check_run("test_quant", tests, sizeof tests / sizeof tests[0]); }
