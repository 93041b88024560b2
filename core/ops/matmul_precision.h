/* The bfloat16 product path of linears over bfloat16 (or quantised) weights, for matmul.c and
 * core/quant/linear.c; which path runs is the matmul precision (ft_set_matmul_precision). */
#ifndef FT_MATMUL_PRECISION_H
#define FT_MATMUL_PRECISION_H

#include <stdbool.h>
#include <stdint.h>

/* Whether products with bfloat16 weights run in bfloat16 now: 1 yes (the precision is
 * "bfloat16" and this build and CPU have a fast kernel), 0 no, -1 with the error set (prefixed
 * by op) when FT_MATMUL_PRECISION holds a bad value. */
int ft_bf16_products(const char *op);

/* y [M, N] (float32, rows ldy apart) = a @ b (+ y when accumulate), a a bfloat16 [M, K] matrix
 * with rows lda apart, b a bfloat16 [K, N] matrix with element (k, n) at b[k * sk + n * sn].
 * 0, -1 with the error set, or 1 when this product has no bfloat16 kernel (nothing written:
 * take the float32 path). */
int ft_bf16_product(int64_t M, int64_t N, int64_t K, const uint16_t *a, int64_t lda, const uint16_t *b,
                    int64_t sk, int64_t sn, bool accumulate, float *y, int64_t ldy);

#endif
