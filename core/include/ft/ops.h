/* Differentiable operations. All dims are 0-based and may be negative (from the end).
 * Index tensors (int64) hold 0-based indices. Every function returns a new reference
 * or NULL with an error message naming the op and the offending shapes/dtypes. */
#ifndef FT_OPS_H
#define FT_OPS_H

#include "ft/tensor.h"

/* ---- storage dtypes ---------------------------------------------------------
 * bfloat16, float16 and float64 tensors hold values; ops compute in float32. The Lua bindings
 * pass every such argument of a computing op through ft_promote_f32 first (view, shape and
 * copy ops keep the dtype), so results and activations are float32 and gradients flow back
 * through the conversion in the input's dtype. ft_linear and ft_embedding read a half weight
 * directly, a block or a row at a time, without a float32 copy of the whole weight. */
/* t itself (a new reference) when float32 or int64, else its float32 conversion through the
 * differentiable ft_to_dtype. */
ft_tensor *ft_promote_f32(const ft_tensor *t);

/* ---- elementwise (core/ops/elementwise.c); binary ops broadcast ------------ */
ft_tensor *ft_add(const ft_tensor *a, const ft_tensor *b);
ft_tensor *ft_sub(const ft_tensor *a, const ft_tensor *b);
ft_tensor *ft_mul(const ft_tensor *a, const ft_tensor *b);
ft_tensor *ft_div(const ft_tensor *a, const ft_tensor *b);
ft_tensor *ft_pow(const ft_tensor *a, const ft_tensor *b);          /* a ^ b, both differentiable */
/* silu(gate) * up in one pass, the gated MLP's activation (Llama, Qwen2, Mistral, Mixtral):
 * no silu(gate) tensor in the forward, and backward keeps only gate and up. Broadcasts. */
ft_tensor *ft_silu_mul(const ft_tensor *gate, const ft_tensor *up);
ft_tensor *ft_add_scalar(const ft_tensor *a, double s);
ft_tensor *ft_mul_scalar(const ft_tensor *a, double s);
ft_tensor *ft_pow_scalar(const ft_tensor *a, double exponent);
ft_tensor *ft_rsub_scalar(const ft_tensor *a, double s);             /* s - a */
ft_tensor *ft_rdiv_scalar(const ft_tensor *a, double s);             /* s / a */
ft_tensor *ft_neg(const ft_tensor *a);
ft_tensor *ft_exp(const ft_tensor *a);
ft_tensor *ft_log(const ft_tensor *a);
ft_tensor *ft_sqrt(const ft_tensor *a);
ft_tensor *ft_abs(const ft_tensor *a);
ft_tensor *ft_tanh(const ft_tensor *a);
ft_tensor *ft_sigmoid(const ft_tensor *a);
ft_tensor *ft_relu(const ft_tensor *a);
ft_tensor *ft_gelu(const ft_tensor *a, bool tanh_approx);
ft_tensor *ft_silu(const ft_tensor *a);
ft_tensor *ft_clamp(const ft_tensor *a, double lo, double hi);       /* use +-INFINITY for none */
/* Comparisons give float32 0/1 (not differentiable). */
typedef enum { FT_EQ, FT_NE, FT_LT, FT_LE, FT_GT, FT_GE } ft_cmp;
ft_tensor *ft_compare(const ft_tensor *a, const ft_tensor *b, ft_cmp cmp);
/* mask: any dtype, nonzero = true; broadcasts against a. */
ft_tensor *ft_masked_fill(const ft_tensor *a, const ft_tensor *mask, double value);
ft_tensor *ft_where(const ft_tensor *cond, const ft_tensor *a, const ft_tensor *b);

/* ---- reductions (core/ops/reduce.c) ---------------------------------------- */
/* dims: list of dims to reduce; ndims == 0 reduces everything. */
ft_tensor *ft_sum(const ft_tensor *a, const int *dims, int ndims, bool keepdim);
ft_tensor *ft_mean(const ft_tensor *a, const int *dims, int ndims, bool keepdim);
/* max over one dim: values (differentiable) and 0-based int64 indices. */
int ft_max_dim(const ft_tensor *a, int dim, bool keepdim, ft_tensor **values, ft_tensor **indices);
ft_tensor *ft_max_all(const ft_tensor *a);
ft_tensor *ft_argmax(const ft_tensor *a, int dim, bool keepdim);     /* int64, 0-based */
/* A row of only -inf (nothing to attend to) gets zeros and a zero gradient, as the attention
 * kernel gives for a fully masked query, where torch gives NaN. */
ft_tensor *ft_softmax(const ft_tensor *a, int dim);
ft_tensor *ft_log_softmax(const ft_tensor *a, int dim);

/* ---- matrix products (core/ops/matmul.c), cblas_sgemm ---------------------- */
/* 1-D/2-D/batched with broadcasting of the batch dims, as torch.matmul. */
ft_tensor *ft_matmul(const ft_tensor *a, const ft_tensor *b);
/* x [..., in], weight [out, in], bias [out] or NULL. A bfloat16 / float16 / float64 weight is
 * converted one block at a time (1 MiB of float32: whole rows, or 256 rows by ~1024 columns
 * when rows are longer) into a small buffer for each cblas_sgemm (forward and input gradient);
 * its own gradient, when it requires one, is computed in float32 a block at a time and rounded
 * once to its dtype. x and bias of those dtypes are promoted to float32. */
ft_tensor *ft_linear(const ft_tensor *x, const ft_tensor *weight, const ft_tensor *bias);
/* The matmul precision of products with a bfloat16 weight (ft_linear, ft_quant_linear):
 * "float32" (default; the weight widened to float32, float32 multiplies) or "bfloat16" (the
 * other operand, activations or output gradients, rounded to bfloat16 and multiplied on
 * oneDNN's bf16 kernels with float32 sums: about twice as fast on CPUs with AVX512-BF16, where
 * it exists; elsewhere it computes as float32). FT_MATMUL_PRECISION sets it at start. 0, or -1
 * with the error set for another name. */
int ft_set_matmul_precision(const char *name);
/* "float32", "bfloat16", or "invalid" (a bad FT_MATMUL_PRECISION: every linear fails). */
const char *ft_matmul_precision(void);
/* The oneDNN kernel bfloat16 products run on ("brg:avx512_core_bf16"), or NULL where there is
 * none (no oneDNN in this build, or only its reference kernels on this CPU). */
const char *ft_matmul_bf16_kernel(void);
/* result + scale * (x @ A^T) @ B^T, LoRA's delta added in one op (two small products, the
 * second accumulated into a copy of result): result [..., out], x [..., in], A [r, in],
 * B [out, r], all float32; differentiable in all four. */
ft_tensor *ft_lora_add(const ft_tensor *result, const ft_tensor *x, const ft_tensor *a, const ft_tensor *b,
                       double scale);
/* ft_lora_add for a caller that is done with result: when nothing else holds result or its
 * storage (refcounts 1, contiguous, no other operand there), the delta is added in its buffer,
 * which the output then shares (no copy); otherwise as ft_lora_add. The caller must not read
 * result's values afterwards; result's own gradient node is still run (and a node that read its
 * output would hold it, which rules the reuse out). */
ft_tensor *ft_lora_add_reusing(ft_tensor *result, const ft_tensor *x, const ft_tensor *a, const ft_tensor *b,
                               double scale);
/* y [N, out]: the first sizes[0] rows of x [N, in] times weight[0]^T, the next sizes[1] rows
 * times weight[1]^T, ... (weight [n_groups, out, in]; the sizes sum to N; a group may be
 * empty). One product per group; differentiable in x and weight; a bfloat16 / float16 /
 * float64 weight is widened in tiles as in ft_linear. */
ft_tensor *ft_grouped_linear(const ft_tensor *x, const ft_tensor *weight, const int64_t *sizes, int64_t n_groups);

/* ---- shape ops (core/ops/shape.c) ------------------------------------------ */
/* These keep the dtype: tensors of one dtype join in it; a mix with a float among them joins as
 * float32 (int64 alone stays int64). index_select and gather copy any dtype. */
ft_tensor *ft_cat(ft_tensor *const *ts, int n, int dim);
ft_tensor *ft_stack(ft_tensor *const *ts, int n, int dim);
/* Splits into pieces of `size` along dim (last may be smaller); *out is malloc'd array. */
int ft_split(const ft_tensor *a, int64_t size, int dim, ft_tensor ***out, int *n);
ft_tensor *ft_index_select(const ft_tensor *a, int dim, const ft_tensor *index);  /* index 1-D int64 */
/* base with src's slices added at index along dim: out[.., index[j], ..] += src[.., j, ..]
 * (repeated indices accumulate); src has base's shape except numel(index) along dim. float32;
 * differentiable in base (grad g) and src (grad index_select(g, dim, index)). */
ft_tensor *ft_index_add(const ft_tensor *base, int dim, const ft_tensor *index, const ft_tensor *src);
ft_tensor *ft_gather(const ft_tensor *a, int dim, const ft_tensor *index);

/* ---- neural-network ops (core/ops/conv.c, pool.c, norm.c, loss.c, nn.c) ---- */
typedef struct { int stride[2], padding[2], dilation[2], groups; } ft_conv2d_opts;
/* x [N,C,H,W], w [O, C/groups, kH, kW], b [O] or NULL. */
ft_tensor *ft_conv2d(const ft_tensor *x, const ft_tensor *w, const ft_tensor *b, ft_conv2d_opts o);
/* The convolution path FT_CONV chose: "auto" (oneDNN where it is faster, the im2col lowering
 * elsewhere), "gemm", "dnnl", or "invalid" (a bad FT_CONV: every convolution fails). */
const char *ft_conv_path_name(void);
/* The instruction set of oneDNN's kernels on this CPU, or NULL in a build without oneDNN. */
const char *ft_conv_dnnl_isa(void);
typedef struct { int kernel[2], stride[2], padding[2]; bool ceil_mode; bool count_include_pad; } ft_pool2d_opts;
ft_tensor *ft_max_pool2d(const ft_tensor *x, ft_pool2d_opts o);
ft_tensor *ft_avg_pool2d(const ft_tensor *x, ft_pool2d_opts o);
ft_tensor *ft_adaptive_avg_pool2d(const ft_tensor *x, int out_h, int out_w);
/* x [N,C,...]; running stats (may be NULL) are updated in place in training mode
 * (unbiased variance, as PyTorch). weight/bias may be NULL. */
ft_tensor *ft_batch_norm(const ft_tensor *x, ft_tensor *running_mean, ft_tensor *running_var,
                         const ft_tensor *weight, const ft_tensor *bias, bool training,
                         double momentum, double eps);
/* Normalises over the trailing `nnorm` dims; weight/bias of that trailing shape or NULL. */
ft_tensor *ft_layer_norm(const ft_tensor *x, int nnorm, const ft_tensor *weight,
                         const ft_tensor *bias, double eps);
ft_tensor *ft_dropout(const ft_tensor *x, double p, bool training);   /* global RNG */
/* indices int64 (0-based) any shape, weight [num, dim] -> [..., dim] float32. A bfloat16 /
 * float16 / float64 weight's rows are converted as they are gathered; its gradient is summed in
 * float32 and rounded once to the weight's dtype. */
ft_tensor *ft_embedding(const ft_tensor *weight, const ft_tensor *indices);

typedef enum { FT_REDUCE_NONE, FT_REDUCE_MEAN, FT_REDUCE_SUM } ft_reduction;
/* logits [N,C] or [N,C,d1...], target int64 [N] / [N,d1...] 0-based. */
ft_tensor *ft_cross_entropy(const ft_tensor *logits, const ft_tensor *target,
                            ft_reduction reduction, int64_t ignore_index, double label_smoothing);
ft_tensor *ft_mse_loss(const ft_tensor *input, const ft_tensor *target, ft_reduction reduction);

/* ---- transformer ops (core/ops/attention.c, core/ops/rope.c, core/ops/norm.c) ---- */
/* RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * weight; weight [D] or NULL. */
ft_tensor *ft_rms_norm(const ft_tensor *x, const ft_tensor *weight, double eps);
/* Rotary position embedding with HuggingFace's rotate_half convention:
 * out = x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1) over the last dim.
 * x [..., T, D]; cos, sin [T, D] (broadcast over the leading dims of x). */
ft_tensor *ft_rope(const ft_tensor *x, const ft_tensor *cos, const ft_tensor *sin);
/* Scaled dot-product attention. q [B,Hq,T,D], k and v [B,Hkv,S,D] with Hq a multiple of
 * Hkv (grouped-query attention: query head h reads key/value head h / (Hq/Hkv)).
 * mask: NULL, a float32 additive mask or an int64 boolean mask (nonzero = may attend),
 * broadcastable to [B,Hq,T,S]. causal: query t attends keys s <= t + (S - T) (so a KV
 * cache of S - T earlier positions works). scale <= 0 means 1/sqrt(D). -> [B,Hq,T,D] */
ft_tensor *ft_scaled_dot_product_attention(const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                                           const ft_tensor *mask, bool causal, double scale);

#endif
