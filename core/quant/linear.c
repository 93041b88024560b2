/* The linear layer over a quantised weight, forward and backward (for the input and bias).
 * The weight is dequantised a block of rows at a time into one small float32 buffer; each
 * block is one cblas_sgemm, or under the bfloat16 matmul precision (core/ops/matmul_precision.c)
 * the block is rounded to bfloat16 and multiplied on the bf16 kernels with the other operand
 * rounded once. The whole weight never exists in float32. */
#include <cblas.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "../ops/half_rows.h"
#include "../ops/matmul_precision.h"
#include "ft/autograd.h"
#include "ft/ops.h"
#include "ft/quant.h"

/* Floats of the dequantisation buffer (4 MiB), and at least TILE_MIN_ROWS rows while that
 * stays within TILE_MAX_FLOATS (16 MiB): a product with fewer output columns runs far below
 * its peak (a Mistral-7B down_proj, [4096, 14336], ran at 60 GFLOP/s with 18-row tiles, 144
 * with 256). */
#define TILE_FLOATS (1 << 20)
#define TILE_MAX_FLOATS (4 << 20)
#define TILE_MIN_ROWS 256

static int64_t tile_rows(const ft_qweight *q) {
    int64_t rows = ft_qweight_rows(q), cols = ft_qweight_cols(q) > 0 ? ft_qweight_cols(q) : 1;
    int64_t t = TILE_FLOATS / cols, most = TILE_MAX_FLOATS / cols;
    if (t < TILE_MIN_ROWS) t = TILE_MIN_ROWS < most ? TILE_MIN_ROWS : most;
    if (t < 1) t = 1;
    return t < rows ? t : rows;
}

/* What the tiles of one product use: the float32 dequantisation buffer and, on the bfloat16
 * path, the block and the other operand [M, n] rounded to bfloat16. Tensors, so that they
 * count in ft_live_bytes. */
typedef struct {
    ft_tensor *buf, *block_bf16, *other_bf16;
} tiles;

static void tiles_release(tiles *t) {
    ft_release(t->buf);
    ft_release(t->block_bf16);
    ft_release(t->other_bf16);
}

static int tiles_make(const ft_qweight *q, const float *other, int64_t M, int64_t n, tiles *t) {
    memset(t, 0, sizeof *t);
    int bf16 = ft_bf16_products("quant_linear");
    int64_t size = tile_rows(q) * ft_qweight_cols(q), other_size = M * n;
    if (bf16 < 0 || !(t->buf = ft_empty(&size, 1, FT_FLOAT32))) return -1;
    if (!bf16) return 0;
    t->block_bf16 = ft_empty(&size, 1, FT_BFLOAT16);
    t->other_bf16 = t->block_bf16 ? ft_empty(&other_size, 1, FT_BFLOAT16) : NULL;
    if (!t->other_bf16) {
        tiles_release(t);
        return -1;
    }
    ft_f32_to_bf16_n(other, other_size, ft_data(t->other_bf16));
    return 0;
}

/* Rows [r0, r0 + nr) of W dequantised into t->buf, and on the bfloat16 path rounded into
 * t->block_bf16. */
static void tiles_load(const ft_qweight *q, const tiles *t, int64_t r0, int64_t nr) {
    ft_dequantize_rows(q, r0, nr, ft_f32(t->buf));
    if (t->block_bf16) ft_f32_to_bf16_n(ft_f32(t->buf), nr * ft_qweight_cols(q), ft_data(t->block_bf16));
}

/* y [M, rows] (+)= x [M, cols] @ W^T, one block of W's rows at a time. */
static int forward_tiles(const ft_qweight *q, const float *x, int64_t M, float *y, float beta) {
    int64_t rows = ft_qweight_rows(q), cols = ft_qweight_cols(q), tile = tile_rows(q);
    tiles t;
    if (tiles_make(q, x, M, cols, &t) < 0) return -1;
    int rc = 0;
    for (int64_t r0 = 0; r0 < rows && rc >= 0; r0 += tile) {
        int64_t nr = rows - r0 < tile ? rows - r0 : tile;
        tiles_load(q, &t, r0, nr);
        rc = t.block_bf16 ? ft_bf16_product(M, nr, cols, ft_data(t.other_bf16), cols, ft_data(t.block_bf16), 1,
                                            cols, beta != 0.0f, y + r0, rows)
                          : 1;
        if (rc > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)nr, (int)cols, 1.0f, x, (int)cols,
                        ft_f32(t.buf), (int)cols, beta, y + r0, (int)rows);
    }
    tiles_release(&t);
    return rc < 0 ? -1 : 0;
}

/* dx [M, cols] = dy [M, rows] @ W, summed over blocks of W's rows. */
static int backward_tiles(const ft_qweight *q, const float *dy, int64_t M, float *dx) {
    int64_t rows = ft_qweight_rows(q), cols = ft_qweight_cols(q), tile = tile_rows(q);
    tiles t;
    if (tiles_make(q, dy, M, rows, &t) < 0) return -1;
    int rc = 0;
    for (int64_t r0 = 0; r0 < rows && rc >= 0; r0 += tile) {
        int64_t nr = rows - r0 < tile ? rows - r0 : tile;
        tiles_load(q, &t, r0, nr);
        rc = t.block_bf16 ? ft_bf16_product(M, cols, nr, (const uint16_t *)ft_data(t.other_bf16) + r0, rows,
                                            ft_data(t.block_bf16), cols, 1, r0 > 0, dx, cols)
                          : 1;
        if (rc > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)cols, (int)nr, 1.0f, dy + r0,
                        (int)rows, ft_f32(t.buf), (int)cols, r0 == 0 ? 0.0f : 1.0f, dx, (int)cols);
    }
    tiles_release(&t);
    return rc < 0 ? -1 : 0;
}

static void release_qweight(void *ctx) { ft_qweight_release(ctx); }

/* ctx = the weight (one reference); i[0] = M, the rows of the flattened input. */
static int quant_linear_backward(ft_node *node, const ft_tensor *g, ft_tensor **gi) {
    const ft_qweight *q = node->ctx;
    int64_t rows = ft_qweight_rows(q), M = node->i[0];
    int64_t g2shape[2] = {M, rows};
    ft_tensor *gc = ft_contiguous(g);
    ft_tensor *g2 = gc ? ft_reshape(gc, g2shape, 2) : NULL;   /* [M, out] */
    ft_release(gc);
    if (!g2) return -1;
    int rc = 0;
    if (node->inputs[0]) {
        const ft_tensor *x = node->inputs[0];
        ft_tensor *dx = ft_empty(x->shape, x->ndim, FT_FLOAT32);
        if (dx && M > 0 && backward_tiles(q, ft_f32(g2), M, ft_f32(dx)) < 0) {
            ft_release(dx);
            dx = NULL;
        }
        gi[0] = dx;
        if (!dx) rc = -1;
    }
    if (rc == 0 && node->inputs[1]) {   /* db [out] = column sums of G */
        int dim0 = 0;
        gi[1] = ft_sum(g2, &dim0, 1, false);
        if (!gi[1]) rc = -1;
    }
    ft_release(g2);
    return rc;
}

/* x or bias in a storage dtype (a bfloat16 model's bias): promoted (differentiably) to float32. */
static ft_tensor *quant_linear_promoted(const ft_tensor *x, const ft_qweight *q, const ft_tensor *bias) {
    ft_tensor *xf = ft_promote_f32(x), *bf = bias ? ft_promote_f32(bias) : NULL;
    ft_tensor *y = xf && (bf || !bias) ? ft_quant_linear(xf, q, bf) : NULL;
    ft_release(xf);
    ft_release(bf);
    return y;
}


ft_tensor *ft_quant_linear(const ft_tensor *x, const ft_qweight *q, const ft_tensor *bias) {
    char sx[128], sb[128];
    int64_t nout = ft_qweight_rows(q), nin = ft_qweight_cols(q);
    if (ft_is_storage_float(x) || ft_is_storage_float(bias)) return quant_linear_promoted(x, q, bias);
    if (x->dtype != FT_FLOAT32 || (bias && bias->dtype != FT_FLOAT32)) {
        ft_set_error("quant_linear: expected float32 input and bias, got %s and %s", ft_dtype_name(x->dtype),
                     bias ? ft_dtype_name(bias->dtype) : "none");
        return NULL;
    }
    if (x->ndim == 0 || x->shape[x->ndim - 1] != nin) {
        ft_set_error("quant_linear: input %s does not match the %s weight [%lld, %lld] (expected input [..., %lld])",
                     ft_shape_str(x->shape, x->ndim, sx, sizeof sx), ft_quant_kind_name(ft_qweight_kind(q)),
                     (long long)nout, (long long)nin, (long long)nin);
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != nout)) {
        ft_set_error("quant_linear: bias %s does not match the weight [%lld, %lld] (expected [%lld])",
                     ft_shape_str(bias->shape, bias->ndim, sb, sizeof sb), (long long)nout, (long long)nin,
                     (long long)nout);
        return NULL;
    }
    int64_t M = 1;   /* rows of the flattened input */
    for (int d = 0; d < x->ndim - 1; d++) M *= x->shape[d];
    if (M > INT_MAX || nin > INT_MAX || nout > INT_MAX) {
        ft_set_error("quant_linear: a [%lld x %lld] @ [%lld x %lld] product has a dimension above 2^31 - 1, "
                     "more than BLAS supports", (long long)M, (long long)nin, (long long)nin, (long long)nout);
        return NULL;
    }
    int64_t oshape[FT_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    oshape[x->ndim - 1] = nout;
    ft_tensor *xd = ft_detach(x);
    ft_tensor *xc = xd ? ft_contiguous(xd) : NULL;
    ft_release(xd);
    ft_tensor *bd = (xc && bias) ? ft_detach(bias) : NULL;
    ft_tensor *bc = bd ? ft_contiguous(bd) : NULL;
    ft_release(bd);
    ft_tensor *out = (xc && (bc || !bias)) ? ft_empty(oshape, x->ndim, FT_FLOAT32) : NULL;
    if (out && M > 0) {
        float *y = ft_f32(out);
        if (bc) {   /* start every row at the bias, then accumulate with beta = 1 */
            for (int64_t r = 0; r < M; r++) memcpy(y + r * nout, ft_f32(bc), sizeof(float) * (size_t)nout);
        }
        if (forward_tiles(q, ft_f32(xc), M, y, bc ? 1.0f : 0.0f) < 0) {
            ft_release(out);
            out = NULL;
        }
    }
    if (out && ft_grad_needed2(x, bias)) {
        ft_node *node = ft_node_new("quant_linear", quant_linear_backward, out, 2, x, bias);
        if (node) {
            node->i[0] = M;
            node->ctx = ft_qweight_retain((ft_qweight *)q);
            node->free_ctx = release_qweight;
        }
    }
    ft_release(xc);
    ft_release(bc);
    return out;
}
