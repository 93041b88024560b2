/* Quantised frozen weights (QLoRA's NF4, 8-bit absmax) and the linear layer over them.
 *
 * A quantised weight is an opaque, refcounted object made from a float32 [out, in] matrix:
 *
 *   FT_QUANT_NF4_FP32  bitsandbytes' NF4 (Dettmers et al. 2023, QLoRA): the row-major weight is
 *                  cut into blocks of 64 consecutive elements; each block is scaled by
 *                  1 / absmax(block) and each element becomes the 4-bit index of the NormalFloat
 *                  level nearest to it (bitsandbytes' decision tree over the midpoints between
 *                  levels, strict '>': a value on a midpoint takes the lower level). Two indices
 *                  per byte, the first element in the high nibble. The absmaxes are kept as
 *                  float32 (single quantisation: 4.5 bits per weight).
 *                  dequant(i) = level[index(i)] * absmax[i / 64]   (one float32 product)
 *   FT_QUANT_NF4   the same with QLoRA's double quantisation of the absmaxes (bitsandbytes
 *                  quantize_4bit, compress_statistics=True): offset = mean(absmax) in float32,
 *                  absmax - offset in blocks of 256 quantised to 8-bit codes of bitsandbytes'
 *                  signed dynamic map (create_dynamic_map, dQuantize's binary search) with a
 *                  float32 absmax2 per block; absmax = map[code] * absmax2[b / 256] + offset
 *                  (a float32 product, then a float32 sum); 0.5 + (1 + 4/256)/64 bytes per weight.
 *   FT_QUANT_INT8  one float32 scale per output row, scale = absmax(row) / 127, each element
 *                  rint(w / scale) clamped to [-127, 127] (round half to even); a zero row
 *                  has scale 0 and zero values.  dequant = q * scale
 *
 * The linear layer never holds the whole weight in float32: it dequantises a block of rows at a
 * time into a small buffer and runs cblas_sgemm on it. The weight is frozen: autograd reaches
 * the input and the bias, never the weight.
 *
 * Errors as everywhere in the core: NULL / -1 with ft_last_error(). */
#ifndef FT_QUANT_H
#define FT_QUANT_H

#include <stdint.h>

#include "ft/tensor.h"

typedef enum { FT_QUANT_NF4 = 0, FT_QUANT_INT8 = 1, FT_QUANT_NF4_FP32 = 2 } ft_quant_kind;

/* Elements per NF4 block (one absmax each). */
#define FT_NF4_BLOCK 64
/* Absmaxes per block of the double quantisation (one float32 absmax2 each). */
#define FT_NF4_BLOCK2 256

typedef struct ft_qweight ft_qweight;

/* The 16 NF4 levels, index 0..15 (bitsandbytes csrc/kernels.cu, nf4_dequantization_lut). */
extern const float ft_nf4_levels[16];

/* bitsandbytes' signed 8-bit dynamic map, create_dynamic_map(signed=True): 256 sorted float32
 * values from -0.99297 to 1, code[127] = 0. */
void ft_dynamic_map(float code[256]);

/* "nf4" / "int8" / "nf4_fp32"; NULL for an unknown kind. */
const char *ft_quant_kind_name(ft_quant_kind kind);
/* The kind a name means; -1 with an error naming the valid kinds otherwise. */
int ft_quant_kind_from_name(const char *name, ft_quant_kind *kind);

/* Quantises a 2-D float weight [out, in] (any strides, finite values; bfloat16, float16 and
 * float64 weights are converted to float32 first, exactly for the half dtypes). Returns a new
 * reference (release with ft_qweight_release), or NULL with an error. */
ft_qweight *ft_quantize(const ft_tensor *w, ft_quant_kind kind);
/* Takes one more reference; returns q. */
ft_qweight *ft_qweight_retain(ft_qweight *q);
/* Drops one reference (NULL is fine); the last one frees the weight. */
void ft_qweight_release(ft_qweight *q);

ft_quant_kind ft_qweight_kind(const ft_qweight *q);
/* Output rows (shape[0]) and input columns (shape[1]). */
int64_t ft_qweight_rows(const ft_qweight *q);
int64_t ft_qweight_cols(const ft_qweight *q);
/* Bytes the weight holds: packed values plus scales. */
int64_t ft_qweight_nbytes(const ft_qweight *q);

/* The whole weight dequantised as a new float32 [out, in] tensor. */
ft_tensor *ft_dequantize(const ft_qweight *q);
/* Rows [row0, row0 + nrows) dequantised into dst (nrows * cols floats, row-major).
 * Returns 0, or -1 with an error for a range outside the weight. */
int ft_dequantize_rows(const ft_qweight *q, int64_t row0, int64_t nrows, float *dst);
/* The stored 4-bit indices (NF4) or int8 values as a new int64 [out, in] tensor, and the
 * scales (NF4: [ceil(out * in / 64)] absmaxes, dequantised for FT_QUANT_NF4; int8: [out]
 * scales) as a new float32 tensor. */
ft_tensor *ft_qweight_codes(const ft_qweight *q);
ft_tensor *ft_qweight_scales(const ft_qweight *q);
/* FT_QUANT_NF4 only (NULL with an error otherwise): the 8-bit codes of the absmaxes as a new
 * int64 [ceil(out * in / 64)] tensor, and the float32 absmax per 256 of them. */
ft_tensor *ft_qweight_absmax_codes(const ft_qweight *q);
ft_tensor *ft_qweight_absmax2(const ft_qweight *q);
/* FT_QUANT_NF4: the float32 offset (mean absmax) added back; 0 for other kinds. */
float ft_qweight_offset(const ft_qweight *q);

/* y [..., out] = x [..., in] @ dequant(W)^T + bias (bias [out] or NULL). Records autograd for
 * x and bias (dx = dy @ dequant(W), also a block of rows at a time); none for W. */
ft_tensor *ft_quant_linear(const ft_tensor *x, const ft_qweight *q, const ft_tensor *bias);

#endif
