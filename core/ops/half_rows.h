/* Reading rows of a weight held in a storage dtype (bfloat16, float16, float64) as float32, for
 * the kernels that never materialise the whole weight in float32 (linear, embedding). */
#ifndef FT_HALF_ROWS_H
#define FT_HALF_ROWS_H

#include <stdint.h>

#include "ft/tensor.h"

/* Rows [row0, row0 + nrows) of the 2-D tensor w (any float dtype, any strides) into dst as a
 * row-major float32 [nrows, cols] block. Exact: every storage dtype widens to float32 without
 * rounding except float64, which rounds to nearest. Large blocks run on the OpenMP threads. */
void ft_rows_to_f32(const ft_tensor *w, int64_t row0, int64_t nrows, float *dst);
/* Row r alone, on the calling thread (for gathers that run their own parallel loop). */
void ft_row_to_f32(const ft_tensor *w, int64_t r, float *dst);
/* The block of rows [row0, row0 + nrows) and columns [col0, col0 + ncols) into dst as a
 * row-major float32 [nrows, ncols] block. */
void ft_block_to_f32(const ft_tensor *w, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols, float *dst);
/* n float32 values rounded to bfloat16 (nearest even, as ft_f32_to_bf16) into dst; large arrays
 * on the OpenMP threads. For the bfloat16 products' other operand. */
void ft_f32_to_bf16_n(const float *src, int64_t n, uint16_t *dst);

#endif
