/* Rows of a bfloat16 / float16 / float64 / float32 matrix widened to float32 (and float32
 * arrays rounded to bfloat16). bfloat16 is a shift; float16 uses the F16C instructions (every
 * AVX2 CPU, the build's baseline, has them: eight exact conversions per instruction, where the
 * compiler's _Float16 without -mf16c converts in software one element at a time). */
#include <immintrin.h>
#include <string.h>

#include "ft/half.h"
#include "half_rows.h"

/* Blocks of more elements than this are converted by all threads. */
#define PAR_MIN 65536

static void bf16_row(const uint16_t *src, int64_t stride, int64_t n, float *dst) {
    if (stride == 1) {
        uint32_t *d = (uint32_t *)dst;   /* the float's bits: the bfloat16 in the top half */
        for (int64_t j = 0; j < n; j++) d[j] = (uint32_t)src[j] << 16;
    } else {
        for (int64_t j = 0; j < n; j++) dst[j] = ft_bf16_to_f32(src[j * stride]);
    }
}

__attribute__((target("avx,f16c"))) static void f16_row(const uint16_t *src, int64_t stride, int64_t n,
                                                          float *dst) {
    int64_t j = 0;
    if (stride == 1)
        for (; j + 8 <= n; j += 8)
            _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + j))));
    for (; j < n; j++) dst[j] = _cvtsh_ss(src[j * stride]);
}

static void f64_row(const double *src, int64_t stride, int64_t n, float *dst) {
    for (int64_t j = 0; j < n; j++) dst[j] = (float)src[j * stride];
}

static void f32_row(const float *src, int64_t stride, int64_t n, float *dst) {
    if (stride == 1) memcpy(dst, src, sizeof(float) * (size_t)n);
    else
        for (int64_t j = 0; j < n; j++) dst[j] = src[j * stride];
}

/* cols elements of row r from column c0 on. */
static void row_part(const ft_tensor *w, int64_t r, int64_t c0, int64_t cols, float *dst) {
    const int64_t s1 = w->strides[1];
    const void *src = (const char *)w->storage->data +
                      (size_t)(w->offset + r * w->strides[0] + c0 * s1) * ft_dtype_size(w->dtype);
    switch (w->dtype) {
    case FT_BFLOAT16: bf16_row(src, s1, cols, dst); break;
    case FT_FLOAT16: f16_row(src, s1, cols, dst); break;
    case FT_FLOAT64: f64_row(src, s1, cols, dst); break;
    default: f32_row(src, s1, cols, dst); break;
    }
}

void ft_row_to_f32(const ft_tensor *w, int64_t r, float *dst) { row_part(w, r, 0, w->shape[1], dst); }

void ft_block_to_f32(const ft_tensor *w, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols, float *dst) {
    #pragma omp parallel for if (nrows * ncols > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < nrows; r++) row_part(w, row0 + r, col0, ncols, dst + r * ncols);
}

void ft_rows_to_f32(const ft_tensor *w, int64_t row0, int64_t nrows, float *dst) {
    ft_block_to_f32(w, row0, nrows, 0, w->shape[1], dst);
}

void ft_f32_to_bf16_n(const float *src, int64_t n, uint16_t *dst) {
    #pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) dst[i] = ft_f32_to_bf16(src[i]);
}
