/* Matrix products with bfloat16 operands on oneDNN's bf16 dot-product kernels (AVX512-BF16
 * where the CPU has it), accumulating in float32. Only built with FT_HAVE_DNNL; matmul.c and
 * the quantised linears use it when the matmul precision is bfloat16. */
#ifndef FT_MATMUL_DNNL_H
#define FT_MATMUL_DNNL_H

#include <stdbool.h>
#include <stdint.h>

/* Return values: done, failed (ft_set_error says why), or a product oneDNN has no fast kernel
 * for (nothing written; the caller takes the float32 path). */
enum { MATMUL_DNNL_OK = 0, MATMUL_DNNL_ERROR = -1, MATMUL_DNNL_UNSUPPORTED = 1 };

/* y [M, N] (float32, rows ldy apart) = a [M, K] @ b, plus y's old values when accumulate. a is
 * bfloat16, rows lda apart; b is a bfloat16 [K, N] matrix whose element (k, n) is at
 * b[k * b_stride_k + n * b_stride_n] (a row-major weight [N, K] read transposed has strides
 * (1, K)). Each product of two bfloat16 values is exact in float32; sums are float32. */
int matmul_dnnl_bf16(int64_t M, int64_t N, int64_t K, const uint16_t *a, int64_t lda, const uint16_t *b,
                     int64_t b_stride_k, int64_t b_stride_n, bool accumulate, float *y, int64_t ldy);

/* The oneDNN implementation bfloat16 products run on here ("brg:avx512_core_bf16", ...), or
 * NULL when oneDNN has only its slow reference kernels for them on this CPU. */
const char *matmul_dnnl_bf16_kernel(void);

#endif
