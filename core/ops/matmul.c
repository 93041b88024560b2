/* Matrix products: matmul (torch.matmul semantics) and linear, forward and backward.
 * Every product is a cblas_sgemm call. An operand whose trailing matrix is row-major
 * or a transposed row-major matrix is passed as is with the matching transpose flag;
 * only other layouts are copied with ft_contiguous. A linear weight held in bfloat16,
 * float16 or float64 is widened one block at a time into a small float32 buffer (as
 * core/quant/linear.c does for quantised weights), so the whole weight never exists in float32.
 * Under the bfloat16 matmul precision (matmul_precision.c) a bfloat16 weight is read as it is
 * by oneDNN's bf16 kernels instead, the other operand rounded to bfloat16.
 * grouped_linear runs consecutive blocks of rows through the matrices of a [groups, out, in]
 * weight (a mixture of experts' fused expert weights), one product per group. */
#include <cblas.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ft/tensor.h"
#include "half_rows.h"
#include "matmul_precision.h"

static int expect_f32(const ft_tensor *a, const char *op) {
    if (a->dtype == FT_FLOAT32) return 0;
    ft_set_error("%s: expected a float32 tensor, got %s", op, ft_dtype_name(a->dtype));
    return -1;
}

/* An alias of a that records no autograd (views of it record nothing either). */
static ft_tensor *plain(const ft_tensor *a) { return ft_detach(a); }

static ft_tensor *plain_contiguous(const ft_tensor *a) {
    ft_tensor *d = ft_detach(a);
    if (!d) return NULL;
    ft_tensor *c = ft_contiguous(d);
    ft_release(d);
    return c;
}

/* A row-major [rows, cols] matrix as sgemm sees it: element (r, c) is at
 * p[r * ld + c] (NoTrans) or p[r + c * ld] (Trans). */
typedef struct {
    const float *p;
    CBLAS_TRANSPOSE trans;
    int ld;
} gemm_operand;

/* Describes the trailing matrix of t (ndim >= 2) without copying; false when its
 * strides fit neither layout. Strides of size-1 dims do not matter. */
static bool gemm_layout(const ft_tensor *t, CBLAS_TRANSPOSE *trans, int *ld) {
    int nd = t->ndim;
    int64_t rows = t->shape[nd - 2], cols = t->shape[nd - 1];
    int64_t sr = t->strides[nd - 2], sc = t->strides[nd - 1];
    int64_t minr = cols > 1 ? cols : 1, minc = rows > 1 ? rows : 1;
    if ((cols == 1 || sc == 1) && (rows == 1 || sr >= minr)) {
        int64_t lead = rows == 1 ? minr : sr;
        if (lead > INT_MAX) return false;   /* BLAS takes int strides: copy instead */
        *trans = CblasNoTrans;
        *ld = (int)lead;
        return true;
    }
    if ((rows == 1 || sr == 1) && (cols == 1 || sc >= minc)) {
        int64_t lead = cols == 1 ? minc : sc;
        if (lead > INT_MAX) return false;
        *trans = CblasTrans;
        *ld = (int)lead;
        return true;
    }
    return false;
}

/* t itself when gemm_layout accepts it, else a contiguous copy. */
static ft_tensor *gemm_ready(const ft_tensor *t) {
    CBLAS_TRANSPOSE tr;
    int ld;
    if (gemm_layout(t, &tr, &ld)) return ft_retain((ft_tensor *)t);
    return ft_contiguous(t);
}

/* C[M,N] = A[M,K] @ B[K,N] (+ C when beta is 1); zero-sized products handled here
 * because BLAS rejects them or leaves C untouched. */
static void gemm(int M, int N, int K, gemm_operand A, gemm_operand B, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (beta == 0.0f)
            for (int r = 0; r < M; r++) memset(C + (int64_t)r * ldc, 0, sizeof(float) * (size_t)N);
        return;
    }
    cblas_sgemm(CblasRowMajor, A.trans, B.trans, M, N, K, 1.0f, A.p, A.ld, B.p, B.ld, beta, C, ldc);
}

/* BLAS counts rows and columns in int: larger matrices are refused, not truncated. */
static int check_blas_dims(int64_t rows, int64_t inner, int64_t cols, const char *op) {
    if (rows <= INT_MAX && inner <= INT_MAX && cols <= INT_MAX) return 0;
    ft_set_error("%s: a [%lld x %lld] @ [%lld x %lld] product has a dimension above 2^31 - 1, "
                 "more than BLAS supports", op, (long long)rows, (long long)inner, (long long)inner,
                 (long long)cols);
    return -1;
}

/* out [batch..., n, m] = a [batchA..., n, k] @ b [batchB..., k, m] with the batch
 * dims broadcast; a, b have ndim >= 2 and matching k. No autograd. */
static ft_tensor *bmm(const ft_tensor *a_in, const ft_tensor *b_in) {
    int na = a_in->ndim, nb = b_in->ndim;
    int64_t n = a_in->shape[na - 2], k = a_in->shape[na - 1], m = b_in->shape[nb - 1];
    int64_t batch[FT_MAX_DIMS], oshape[FT_MAX_DIMS];
    int nbatch;
    if (ft_broadcast_shape(a_in->shape, na - 2, b_in->shape, nb - 2, batch, &nbatch, "matmul") < 0) {
        char sa[160], sb[160];
        ft_set_error("matmul: batch dims of %s and %s cannot broadcast",
                     ft_shape_str(a_in->shape, na, sa, sizeof sa), ft_shape_str(b_in->shape, nb, sb, sizeof sb));
        return NULL;
    }
    if (check_blas_dims(n, k, m, "matmul") < 0) return NULL;
    memcpy(oshape, batch, sizeof(int64_t) * (size_t)nbatch);
    oshape[nbatch] = n;
    oshape[nbatch + 1] = m;
    ft_tensor *out = ft_empty(oshape, nbatch + 2, FT_FLOAT32);
    ft_tensor *a = out ? gemm_ready(a_in) : NULL;
    ft_tensor *b = a ? gemm_ready(b_in) : NULL;
    if (!b) {
        ft_release(out);
        ft_release(a);
        return NULL;
    }
    gemm_operand A = {0}, B = {0};
    gemm_layout(a, &A.trans, &A.ld);
    gemm_layout(b, &B.trans, &B.ld);
    int64_t nmat = 1;
    for (int d = 0; d < nbatch; d++) nmat *= batch[d];
    float *C = ft_f32(out);

    /* b is one matrix and a's batch dims step like extra rows: one sgemm, as for
     * [B,T,k] @ [k,m]. */
    bool b_single = ft_numel(b) == k * m;
    bool a_rows = A.trans == CblasNoTrans;
    int64_t step = (int64_t)A.ld * n;   /* stride the next batch dim needs */
    for (int d = na - 3; d >= 0 && a_rows; d--) {
        a_rows = a->shape[d] == 1 || a->strides[d] == step;
        step *= a->shape[d];
    }
    if (b_single && a_rows && nmat * n <= INT_MAX) {   /* nmat * n <= numel(out): no overflow */
        A.p = ft_f32(a);
        B.p = ft_f32(b);
        gemm((int)(nmat * n), (int)m, (int)k, A, B, 0.0f, C, (int)m);
    } else {
        /* broadcast strides of the batch dims of a and b */
        int64_t sa[FT_MAX_DIMS], sb[FT_MAX_DIMS];
        for (int d = 0; d < nbatch; d++) {
            int da = d - (nbatch - (na - 2)), db = d - (nbatch - (nb - 2));
            sa[d] = (da < 0 || a->shape[da] == 1) ? 0 : a->strides[da];
            sb[d] = (db < 0 || b->shape[db] == 1) ? 0 : b->strides[db];
        }
        for (int64_t i = 0; i < nmat; i++) {
            int64_t rem = i, oa = 0, ob = 0;
            for (int d = nbatch - 1; d >= 0; d--) {
                int64_t idx = rem % batch[d];
                rem /= batch[d];
                oa += idx * sa[d];
                ob += idx * sb[d];
            }
            A.p = ft_f32(a) + oa;
            B.p = ft_f32(b) + ob;
            gemm((int)n, (int)m, (int)k, A, B, 0.0f, C + i * n * m, (int)m);
        }
    }
    ft_release(a);
    ft_release(b);
    return out;
}

/* A view of t with its last two dims swapped that records no autograd. */
static ft_tensor *plain_t(const ft_tensor *t) {
    ft_tensor *p = plain(t);
    ft_tensor *r = p ? ft_transpose(p, t->ndim - 2, t->ndim - 1) : NULL;
    ft_release(p);
    return r;
}

/* full summed over the batch dims that operand was broadcast along. */
static ft_tensor *sum_batch(ft_tensor *full, const ft_tensor *operand) {
    if (ft_same_shape(full, operand)) return ft_retain(full);
    return ft_sum_to_shape(full, operand->shape, operand->ndim);
}

/* node->i[0] = a was 1-D, i[1] = b was 1-D; saved[0] = a2, saved[1] = b2 (the
 * operands with their vector dims restored: a2 [..., n, k], b2 [..., k, m]). */
static int matmul_backward(ft_node *node, const ft_tensor *g, ft_tensor **gi) {
    bool a_vec = node->i[0], b_vec = node->i[1];
    const ft_tensor *a2 = node->saved[0], *b2 = node->saved[1];
    /* g2 [batch..., n, m]: put back the dims that the 1-D operands dropped */
    ft_tensor *g2 = ft_retain((ft_tensor *)g), *tmp;
    if (b_vec) { tmp = ft_unsqueeze(g2, g2->ndim); ft_release(g2); g2 = tmp; }
    if (g2 && a_vec) { tmp = ft_unsqueeze(g2, g2->ndim - 1); ft_release(g2); g2 = tmp; }
    if (!g2) return -1;
    int rc = 0;
    if (node->inputs[0]) {   /* dA = G @ B^T, summed over broadcast batch dims */
        const ft_tensor *a = node->inputs[0];
        ft_tensor *bt = plain_t(b2);
        ft_tensor *full = bt ? bmm(g2, bt) : NULL;
        ft_tensor *red = full ? sum_batch(full, a2) : NULL;
        gi[0] = red ? ft_reshape(red, a->shape, a->ndim) : NULL;
        ft_release(bt);
        ft_release(full);
        ft_release(red);
        if (!gi[0]) rc = -1;
    }
    if (rc == 0 && node->inputs[1]) {   /* dB = A^T @ G, summed over broadcast batch dims */
        const ft_tensor *b = node->inputs[1];
        ft_tensor *full = NULL;
        if (b2->ndim == 2 && a2->ndim > 2) {
            /* one product over all rows: [k, B*n] @ [B*n, m] */
            int64_t k = a2->shape[a2->ndim - 1], m = g2->shape[g2->ndim - 1];
            int64_t sa[2] = {-1, k}, sg[2] = {-1, m};
            ft_tensor *af = ft_reshape(a2, sa, 2);
            ft_tensor *gf = af ? ft_reshape(g2, sg, 2) : NULL;
            ft_tensor *aft = gf ? plain_t(af) : NULL;
            full = aft ? bmm(aft, gf) : NULL;
            ft_release(af);
            ft_release(gf);
            ft_release(aft);
        } else {
            ft_tensor *at = plain_t(a2);
            full = at ? bmm(at, g2) : NULL;
            ft_release(at);
        }
        ft_tensor *red = full ? sum_batch(full, b2) : NULL;
        gi[1] = red ? ft_reshape(red, b->shape, b->ndim) : NULL;
        ft_release(full);
        ft_release(red);
        if (!gi[1]) rc = -1;
    }
    ft_release(g2);
    return rc;
}

ft_tensor *ft_matmul(const ft_tensor *a, const ft_tensor *b) {
    char sa[128], sb[128];
    if (expect_f32(a, "matmul") < 0 || expect_f32(b, "matmul") < 0) return NULL;
    if (a->ndim == 0 || b->ndim == 0) {
        ft_set_error("matmul: both arguments need at least 1 dimension, got %s and %s",
                     ft_shape_str(a->shape, a->ndim, sa, sizeof sa),
                     ft_shape_str(b->shape, b->ndim, sb, sizeof sb));
        return NULL;
    }
    int64_t ka = a->shape[a->ndim - 1];
    int64_t kb = b->ndim == 1 ? b->shape[0] : b->shape[b->ndim - 2];
    if (ka != kb) {
        ft_set_error("matmul: shapes %s and %s cannot be multiplied (%lld != %lld)",
                     ft_shape_str(a->shape, a->ndim, sa, sizeof sa),
                     ft_shape_str(b->shape, b->ndim, sb, sizeof sb), (long long)ka, (long long)kb);
        return NULL;
    }
    bool a_vec = a->ndim == 1, b_vec = b->ndim == 1;
    /* a2 [..., n, k] and b2 [..., k, m]: vectors become a row and a column */
    ft_tensor *ap = plain(a), *bp = plain(b);
    ft_tensor *a2 = ap ? (a_vec ? ft_unsqueeze(ap, 0) : ft_retain(ap)) : NULL;
    ft_tensor *b2 = bp ? (b_vec ? ft_unsqueeze(bp, 1) : ft_retain(bp)) : NULL;
    ft_release(ap);
    ft_release(bp);
    ft_tensor *out2 = (a2 && b2) ? bmm(a2, b2) : NULL;
    ft_tensor *out = NULL;
    if (out2) {
        /* drop the dims the vectors were given */
        int64_t shape[FT_MAX_DIMS];
        int nd = 0;
        for (int d = 0; d < out2->ndim - 2; d++) shape[nd++] = out2->shape[d];
        if (!a_vec) shape[nd++] = out2->shape[out2->ndim - 2];
        if (!b_vec) shape[nd++] = out2->shape[out2->ndim - 1];
        out = nd == out2->ndim ? ft_retain(out2) : ft_view(out2, shape, nd);
    }
    if (out && ft_grad_needed2(a, b)) {
        ft_node *node = ft_node_new("matmul", matmul_backward, out, 2, a, b);
        if (node) {
            node->i[0] = a_vec;
            node->i[1] = b_vec;
            node->saved[0] = ft_retain(a2);   /* both are detached aliases already */
            node->saved[1] = ft_retain(b2);
        }
    }
    ft_release(out2);
    ft_release(a2);
    ft_release(b2);
    return out;
}

/* ---- linear over a weight in a storage dtype ------------------------------------ */

/* Floats of the widening buffer (1 MiB), and the rows a block keeps when the weight has them:
 * wider rows are cut into column blocks too. sgemm runs near full speed on blocks of 256 rows
 * by 1024 columns; blocks of whole rows only (53 rows of a 4864-column weight in 1 MiB) ran
 * the forward of x [256, 4864] at about half the speed of the float32 weight. */
#define TILE_FLOATS (1 << 18)
#define TILE_MIN_ROWS 256

/* How a [rows, cols] weight is cut: blocks of at most br x bc, as equal as the sizes allow. */
typedef struct {
    int64_t rows, cols, br, bc;
} tiling;

static int64_t split_even(int64_t n, int64_t most) {
    if (n <= most) return n > 0 ? n : 1;
    int64_t parts = (n + most - 1) / most;
    return (n + parts - 1) / parts;
}

static tiling tiling_of(int64_t rows, int64_t cols) {
    tiling t = {rows, cols, 0, 0};
    int64_t c = cols > 0 ? cols : 1;
    /* whole rows when TILE_MIN_ROWS of them fit, else blocks of columns too */
    int64_t bc = c * TILE_MIN_ROWS <= TILE_FLOATS ? c : TILE_FLOATS / TILE_MIN_ROWS;
    t.bc = split_even(c, bc);
    t.br = split_even(rows, TILE_FLOATS / t.bc);
    return t;
}

/* The widening buffer of one block: a tensor, so that it counts in ft_live_bytes. */
static ft_tensor *tile_buffer(const tiling *t) {
    int64_t n = t->br * t->bc;
    return ft_empty(&n, 1, FT_FLOAT32);
}

/* y [M, out] (+)= x [M, in] @ W^T, one block of W at a time (its column blocks accumulate). */
static int tiled_forward(const ft_tensor *w, const float *x, int M, float *y, float beta) {
    tiling t = tiling_of(w->shape[0], w->shape[1]);
    ft_tensor *buf = tile_buffer(&t);
    if (!buf) return -1;
    for (int64_t r0 = 0; r0 < t.rows; r0 += t.br) {
        int64_t nr = t.rows - r0 < t.br ? t.rows - r0 : t.br;
        for (int64_t c0 = 0; c0 == 0 || c0 < t.cols; c0 += t.bc) {
            int64_t nc = t.cols - c0 < t.bc ? t.cols - c0 : t.bc;
            ft_block_to_f32(w, r0, nr, c0, nc, ft_f32(buf));
            gemm_operand A = {x + c0, CblasNoTrans, (int)(t.cols > 1 ? t.cols : 1)};
            gemm_operand B = {ft_f32(buf), CblasTrans, (int)(nc > 1 ? nc : 1)};
            gemm(M, (int)nr, (int)nc, A, B, c0 == 0 ? beta : 1.0f, y + r0, (int)t.rows);
        }
    }
    ft_release(buf);
    return 0;
}

/* dx [M, in] = dy [M, out] @ W, the row blocks of W summed into each column block of dx. */
static int tiled_backward_input(const ft_tensor *w, const float *dy, int M, float *dx) {
    tiling t = tiling_of(w->shape[0], w->shape[1]);
    if (t.rows == 0) {
        memset(dx, 0, sizeof(float) * (size_t)M * (size_t)t.cols);
        return 0;
    }
    ft_tensor *buf = tile_buffer(&t);
    if (!buf) return -1;
    for (int64_t r0 = 0; r0 < t.rows; r0 += t.br) {
        int64_t nr = t.rows - r0 < t.br ? t.rows - r0 : t.br;
        for (int64_t c0 = 0; c0 < t.cols; c0 += t.bc) {
            int64_t nc = t.cols - c0 < t.bc ? t.cols - c0 : t.bc;
            ft_block_to_f32(w, r0, nr, c0, nc, ft_f32(buf));
            gemm_operand A = {dy + r0, CblasNoTrans, (int)t.rows};
            gemm_operand B = {ft_f32(buf), CblasNoTrans, (int)nc};
            gemm(M, (int)nc, (int)nr, A, B, r0 == 0 ? 0.0f : 1.0f, dx + c0, (int)t.cols);
        }
    }
    ft_release(buf);
    return 0;
}

/* y [M, N] (+)= round_bf16(a [M, K]) @ b on the bfloat16 kernels, b a bfloat16 [K, N] matrix at
 * strides (sk, sn) from b's first element: 0, -1, or 1 when there is no kernel for it. */
static int bf16_product(int64_t M, int64_t N, int64_t K, const float *a, const ft_tensor *b, int64_t sk,
                        int64_t sn, bool accumulate, float *y) {
    int64_t n = M * K;
    ft_tensor *ab = ft_empty(&n, 1, FT_BFLOAT16);   /* a tensor, so that it counts in ft_live_bytes */
    if (!ab) return -1;
    ft_f32_to_bf16_n(a, n, ft_data(ab));
    int rc = ft_bf16_product(M, N, K, ft_data(ab), K, ft_data(b), sk, sn, accumulate, y, N);
    ft_release(ab);
    return rc;
}

/* Whether a product of M rows with the weight w [out, in] runs on the bfloat16 kernels. */
static bool bf16_ready(const ft_tensor *w, int M) {
    return w->dtype == FT_BFLOAT16 && M > 0 && w->shape[0] > 0 && w->shape[1] > 0 && ft_bf16_products("linear") == 1;
}

/* y [M, out] (+)= x [M, in] @ W^T for a bfloat16 W [out, in]: the bfloat16 kernels under that
 * precision, else (or where they have no kernel) the float32 tiles. */
static int half_forward(const ft_tensor *w, const float *x, int M, float *y, float beta) {
    int rc = 1;
    if (bf16_ready(w, M))
        rc = bf16_product(M, w->shape[0], w->shape[1], x, w, w->strides[1], w->strides[0], beta != 0.0f, y);
    return rc > 0 ? tiled_forward(w, x, M, y, beta) : rc;
}

/* dx [M, in] = dy [M, out] @ W, as half_forward chooses. */
static int half_backward_input(const ft_tensor *w, const float *dy, int M, float *dx) {
    int rc = 1;
    if (bf16_ready(w, M))
        rc = bf16_product(M, w->shape[1], w->shape[0], dy, w, w->strides[0], w->strides[1], false, dx);
    return rc > 0 ? tiled_backward_input(w, dy, M, dx) : rc;
}

static void keep_buffer(void *owner) { (void)owner; }   /* buf itself owns the memory */

/* dW [rows, cols] in dtype = G^T [rows, M] @ X [M, cols], computed in float32 a block at a time
 * and rounded once into the result: no float32 copy of the whole gradient either. */
static ft_tensor *tiled_backward_weight(int64_t rows, int64_t cols, ft_dtype dtype, const float *g,
                                        const float *x, int M) {
    tiling t = tiling_of(rows, cols);
    int64_t shape[2] = {rows, cols};
    ft_tensor *dw = ft_empty(shape, 2, dtype);
    ft_tensor *buf = dw ? tile_buffer(&t) : NULL;
    if (!buf) {
        ft_release(dw);
        return NULL;
    }
    int rc = 0;
    for (int64_t r0 = 0; r0 < rows && rc == 0; r0 += t.br) {
        int64_t nr = rows - r0 < t.br ? rows - r0 : t.br;
        for (int64_t c0 = 0; c0 < cols && rc == 0; c0 += t.bc) {
            int64_t nc = cols - c0 < t.bc ? cols - c0 : t.bc;
            gemm_operand A = {g + r0, CblasTrans, (int)rows};
            gemm_operand B = {x + c0, CblasNoTrans, (int)cols};
            gemm((int)nr, (int)nc, M, A, B, 0.0f, ft_f32(buf), (int)nc);
            int64_t bshape[2] = {nr, nc};
            ft_tensor *src = ft_from_external(ft_f32(buf), sizeof(float) * (size_t)(nr * nc), bshape, 2,
                                              FT_FLOAT32, keep_buffer, NULL);   /* a view of buf */
            ft_tensor *rows_v = src ? ft_narrow(dw, 0, r0, nr) : NULL;
            ft_tensor *dst = rows_v ? ft_narrow(rows_v, 1, c0, nc) : NULL;
            rc = dst ? ft_copy_(dst, src) : -1;   /* rounds to nearest even, as torch's .to() */
            ft_release(src);
            ft_release(rows_v);
            ft_release(dst);
        }
    }
    ft_release(buf);
    if (rc < 0) {
        ft_release(dw);
        return NULL;
    }
    return dw;
}

/* ---- linear -------------------------------------------------------------------- */

/* i[0..3] = out, in, M, the weight's dtype; saved[0] = x as contiguous [M, in] (when the weight
 * needs a gradient), saved[1] = weight [out, in] (when x does) */
static int linear_backward(ft_node *node, const ft_tensor *g, ft_tensor **gi) {
    const ft_tensor *x2 = node->saved[0], *w = node->saved[1];
    int64_t nout = node->i[0], nin = node->i[1], rows = node->i[2];
    ft_dtype wdtype = (ft_dtype)node->i[3];
    int64_t g2shape[2] = {rows, nout};
    ft_tensor *gc = ft_contiguous(g);
    ft_tensor *g2 = gc ? ft_reshape(gc, g2shape, 2) : NULL;   /* [M, out] */
    ft_release(gc);
    if (!g2) return -1;
    int M = (int)g2->shape[0];
    int rc = 0;
    if (wdtype != FT_FLOAT32) {   /* a weight in a storage dtype: through the tiles */
        if (node->inputs[0]) {
            const ft_tensor *x = node->inputs[0];
            ft_tensor *dx = ft_empty(x->shape, x->ndim, FT_FLOAT32);
            if (dx && half_backward_input(w, ft_f32(g2), M, ft_f32(dx)) < 0) {
                ft_release(dx);
                dx = NULL;
            }
            gi[0] = dx;
            if (!dx) rc = -1;
        }
        if (rc == 0 && node->inputs[1] &&
            !(gi[1] = tiled_backward_weight(nout, nin, wdtype, ft_f32(g2), ft_f32(x2), M)))
            rc = -1;
    } else if (node->inputs[0]) {   /* dx [M, in] = G [M, out] @ W [out, in] */
        const ft_tensor *x = node->inputs[0];
        ft_tensor *wr = gemm_ready(w);
        ft_tensor *dx = wr ? ft_empty(x->shape, x->ndim, FT_FLOAT32) : NULL;
        if (dx) {
            gemm_operand A = {ft_f32(g2), CblasNoTrans, (int)(nout > 1 ? nout : 1)}, B;
            B.p = ft_f32(wr);
            gemm_layout(wr, &B.trans, &B.ld);
            gemm(M, (int)nin, (int)nout, A, B, 0.0f, ft_f32(dx), (int)nin);
        }
        ft_release(wr);
        gi[0] = dx;
        if (!dx) rc = -1;
    }
    if (rc == 0 && node->inputs[1] && wdtype == FT_FLOAT32) {   /* dW [out, in] = G^T [out, M] @ X [M, in] */
        int64_t wshape[2] = {nout, nin};
        ft_tensor *dw = ft_empty(wshape, 2, FT_FLOAT32);
        if (dw) {
            gemm_operand A = {ft_f32(g2), CblasTrans, (int)(nout > 1 ? nout : 1)};
            gemm_operand B = {ft_f32(x2), CblasNoTrans, (int)(nin > 1 ? nin : 1)};
            gemm((int)nout, (int)nin, M, A, B, 0.0f, ft_f32(dw), (int)nin);
        }
        gi[1] = dw;
        if (!dw) rc = -1;
    }
    if (rc == 0 && node->inputs[2]) {   /* db [out] = column sums of G */
        int dim0 = 0;
        gi[2] = ft_sum(g2, &dim0, 1, false);
        if (!gi[2]) rc = -1;
    }
    ft_release(g2);
    return rc;
}

/* x or bias in a storage dtype: promoted (differentiably) to float32, then the linear. */
static ft_tensor *linear_promoted(const ft_tensor *x, const ft_tensor *weight, const ft_tensor *bias) {
    ft_tensor *xf = ft_promote_f32(x), *bf = bias ? ft_promote_f32(bias) : NULL;
    ft_tensor *y = xf && (bf || !bias) ? ft_linear(xf, weight, bf) : NULL;
    ft_release(xf);
    ft_release(bf);
    return y;
}


ft_tensor *ft_linear(const ft_tensor *x, const ft_tensor *weight, const ft_tensor *bias) {
    char sx[128], sw[128], sb[128];
    if (ft_is_storage_float(x) || ft_is_storage_float(bias)) return linear_promoted(x, weight, bias);
    if (ft_bf16_products("linear") < 0) return NULL;   /* a bad FT_MATMUL_PRECISION */
    bool tiled = ft_is_storage_float(weight);   /* bfloat16, float16, float64: widened tile by tile */
    if (expect_f32(x, "linear") < 0 || (!tiled && expect_f32(weight, "linear") < 0) ||
        (bias && expect_f32(bias, "linear") < 0))
        return NULL;
    if (weight->ndim != 2 || x->ndim == 0 || x->shape[x->ndim - 1] != weight->shape[1]) {
        ft_set_error("linear: input %s and weight %s do not match (expected input [..., in] "
                     "and weight [out, in])",
                     ft_shape_str(x->shape, x->ndim, sx, sizeof sx),
                     ft_shape_str(weight->shape, weight->ndim, sw, sizeof sw));
        return NULL;
    }
    int64_t nout = weight->shape[0], nin = weight->shape[1];
    if (bias && (bias->ndim != 1 || bias->shape[0] != nout)) {
        ft_set_error("linear: bias %s does not match weight %s (expected [%lld])",
                     ft_shape_str(bias->shape, bias->ndim, sb, sizeof sb),
                     ft_shape_str(weight->shape, weight->ndim, sw, sizeof sw), (long long)nout);
        return NULL;
    }
    int64_t oshape[FT_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    oshape[x->ndim - 1] = nout;
    int64_t M = 1;   /* rows of the flattened input */
    for (int d = 0; d < x->ndim - 1; d++) M *= x->shape[d];
    if (check_blas_dims(M, nin, nout, "linear") < 0) return NULL;
    ft_tensor *xc = plain_contiguous(x);                /* [M, in] */
    ft_tensor *wd = xc ? plain(weight) : NULL;
    ft_tensor *wr = wd ? (tiled ? ft_retain(wd) : gemm_ready(wd)) : NULL;
    ft_tensor *bc = (wr && bias) ? plain_contiguous(bias) : NULL;
    ft_tensor *out = (wr && (bc || !bias)) ? ft_empty(oshape, x->ndim, FT_FLOAT32) : NULL;
    if (out) {
        float *y = ft_f32(out);
        if (bc) {   /* start every row at the bias, then accumulate with beta = 1 */
            const float *bp = ft_f32(bc);
            for (int64_t r = 0; r < M; r++) memcpy(y + r * nout, bp, sizeof(float) * (size_t)nout);
        }
        if (tiled) {
            if (half_forward(wr, ft_f32(xc), (int)M, y, bc ? 1.0f : 0.0f) < 0) {
                ft_release(out);
                out = NULL;
            }
        } else {
            /* y [M, out] = x [M, in] @ W^T: W [out, in] is sgemm's B with the flag flipped */
            gemm_operand A = {ft_f32(xc), CblasNoTrans, (int)(nin > 1 ? nin : 1)}, B;
            B.p = ft_f32(wr);
            gemm_layout(wr, &B.trans, &B.ld);
            B.trans = B.trans == CblasNoTrans ? CblasTrans : CblasNoTrans;
            gemm((int)M, (int)nout, (int)nin, A, B, bc ? 1.0f : 0.0f, y, (int)(nout > 1 ? nout : 1));
        }
        if (out && ft_grad_needed3(x, weight, bias)) {
            ft_node *node = ft_node_new("linear", linear_backward, out, 3, x, weight, bias);
            if (node) {
                node->i[0] = nout;
                node->i[1] = nin;
                node->i[2] = M;
                node->i[3] = weight->dtype;
                if (node->inputs[1]) node->saved[0] = ft_retain(xc);   /* detached already */
                if (node->inputs[0]) node->saved[1] = ft_retain(wr);
            }
        }
    }
    ft_release(xc);
    ft_release(wd);
    ft_release(wr);
    ft_release(bc);
    return out;
}

/* ---- lora_add: result + scale * (x A^T) B^T --------------------------------------- */

/* i[0..3] = M, in, r, out; f[0] = scale; saved[0] = x [M, in] (for A's gradient), saved[1] =
 * low = x A^T [M, r] (for B's), saved[2] = A [r, in], saved[3] = B [out, r] */
static int lora_add_backward(ft_node *node, const ft_tensor *g, ft_tensor **gi) {
    int M = (int)node->i[0], nin = (int)node->i[1], r = (int)node->i[2], nout = (int)node->i[3];
    float scale = (float)node->f[0];
    const ft_tensor *x = node->saved[0], *low = node->saved[1], *a = node->saved[2], *b = node->saved[3];
    if (node->inputs[0] && !(gi[0] = ft_retain((ft_tensor *)g))) return -1;   /* d result = g */
    ft_tensor *gc = ft_contiguous(g);
    if (!gc) return -1;
    const float *gp = ft_f32(gc);
    int rc = 0;
    int64_t lshape[2] = {M, r};
    ft_tensor *glow = (node->inputs[1] || node->inputs[2]) ? ft_empty(lshape, 2, FT_FLOAT32) : NULL;
    if ((node->inputs[1] || node->inputs[2]) && !glow) rc = -1;
    if (glow && M > 0 && r > 0) {   /* g_low [M, r] = scale * g [M, out] @ B [out, r] */
        if (nout > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, r, nout, scale, gp, nout, ft_f32(b), r,
                        0.0f, ft_f32(glow), r);
        else
            memset(ft_f32(glow), 0, sizeof(float) * (size_t)M * (size_t)r);
    }
    if (rc == 0 && node->inputs[1]) {   /* dx [M, in] = g_low @ A */
        const ft_tensor *xin = node->inputs[1];
        bool empty = M == 0 || r == 0 || nin == 0;
        ft_tensor *dx = empty ? ft_zeros(xin->shape, xin->ndim, FT_FLOAT32) : ft_empty(xin->shape, xin->ndim, FT_FLOAT32);
        if (dx && !empty)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, nin, r, 1.0f, ft_f32(glow), r, ft_f32(a), nin,
                        0.0f, ft_f32(dx), nin);
        if (!(gi[1] = dx)) rc = -1;
    }
    if (rc == 0 && node->inputs[2]) {   /* dA [r, in] = g_low^T @ x */
        int64_t ashape[2] = {r, nin};
        ft_tensor *da = ft_zeros(ashape, 2, FT_FLOAT32);
        if (da && M > 0 && r > 0 && nin > 0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, nin, M, 1.0f, ft_f32(glow), r, ft_f32(x), nin,
                        0.0f, ft_f32(da), nin);
        if (!(gi[2] = da)) rc = -1;
    }
    if (rc == 0 && node->inputs[3]) {   /* dB [out, r] = scale * g^T @ low */
        int64_t bshape[2] = {nout, r};
        ft_tensor *db = ft_zeros(bshape, 2, FT_FLOAT32);
        if (db && M > 0 && r > 0 && nout > 0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nout, r, M, scale, gp, nout, ft_f32(low), r, 0.0f,
                        ft_f32(db), r);
        if (!(gi[3] = db)) rc = -1;
    }
    ft_release(glow);
    ft_release(gc);
    return rc;
}

/* Whether result's buffer may take the delta: the caller's is the only handle on it and on its
 * storage (so no node saved it and no view reads it), and no other operand lives there. */
static bool reusable(const ft_tensor *result, const ft_tensor *x, const ft_tensor *a, const ft_tensor *b, bool reuse) {
    const ft_storage *s = result->storage;
    return reuse && result->refcount == 1 && s->refcount == 1 && result->offset == 0 && ft_is_contiguous(result) &&
           x->storage != s && a->storage != s && b->storage != s;
}

static ft_tensor *lora_add(const ft_tensor *result, const ft_tensor *x, const ft_tensor *a, const ft_tensor *b,
                           double scale, bool reuse) {
    char sr[128], sx[128], sa[128], sb[128];
    if (expect_f32(result, "lora_add") < 0 || expect_f32(x, "lora_add") < 0 || expect_f32(a, "lora_add") < 0 ||
        expect_f32(b, "lora_add") < 0)
        return NULL;
    bool ok = a->ndim == 2 && b->ndim == 2 && x->ndim >= 1 && result->ndim == x->ndim &&
              x->shape[x->ndim - 1] == a->shape[1] && b->shape[1] == a->shape[0] &&
              result->shape[result->ndim - 1] == b->shape[0];
    for (int d = 0; ok && d < x->ndim - 1; d++) ok = result->shape[d] == x->shape[d];
    if (!ok) {
        ft_set_error("lora_add: result %s, x %s, A %s and B %s do not match (expected result [..., out], "
                     "x [..., in], A [r, in], B [out, r])",
                     ft_shape_str(result->shape, result->ndim, sr, sizeof sr),
                     ft_shape_str(x->shape, x->ndim, sx, sizeof sx), ft_shape_str(a->shape, a->ndim, sa, sizeof sa),
                     ft_shape_str(b->shape, b->ndim, sb, sizeof sb));
        return NULL;
    }
    int64_t nin = a->shape[1], r = a->shape[0], nout = b->shape[0], M = 1;
    for (int d = 0; d < x->ndim - 1; d++) M *= x->shape[d];
    if (check_blas_dims(M, nin, r, "lora_add") < 0 || check_blas_dims(M, r, nout, "lora_add") < 0) return NULL;
    bool in_place = reusable(result, x, a, b, reuse);
    ft_tensor *xc = plain_contiguous(x), *ac = xc ? plain_contiguous(a) : NULL;
    ft_tensor *bc = ac ? plain_contiguous(b) : NULL, *rc = bc ? plain_contiguous(result) : NULL;
    int64_t lshape[2] = {M, r};
    ft_tensor *low = rc ? ft_empty(lshape, 2, FT_FLOAT32) : NULL;
    ft_tensor *out = !low ? NULL : in_place ? ft_detach(result) : ft_empty(result->shape, result->ndim, FT_FLOAT32);
    if (out) {
        float *y = ft_f32(out), *l = ft_f32(low);
        if (!in_place) memcpy(y, ft_f32(rc), sizeof(float) * (size_t)(M * nout));
        if (M > 0 && r > 0) {   /* low [M, r] = x [M, in] @ A^T, then y += scale * low @ B^T */
            if (nin > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)r, (int)nin, 1.0f, ft_f32(xc),
                            (int)nin, ft_f32(ac), (int)nin, 0.0f, l, (int)r);
            else
                memset(l, 0, sizeof(float) * (size_t)(M * r));
            if (nout > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)nout, (int)r, (float)scale, l,
                            (int)r, ft_f32(bc), (int)r, 1.0f, y, (int)nout);
        }
        if (ft_grad_needed(4, (const ft_tensor *const[]){result, x, a, b})) {
            ft_node *node = ft_node_new("lora_add", lora_add_backward, out, 4, result, x, a, b);
            if (node) {
                node->i[0] = M;
                node->i[1] = nin;
                node->i[2] = r;
                node->i[3] = nout;
                node->f[0] = scale;
                node->saved[0] = ft_retain(xc);
                node->saved[1] = ft_retain(low);
                node->saved[2] = ft_retain(ac);
                node->saved[3] = ft_retain(bc);
            }
        }
    }
    ft_release(xc);
    ft_release(ac);
    ft_release(bc);
    ft_release(rc);
    ft_release(low);
    return out;
}

ft_tensor *ft_lora_add(const ft_tensor *result, const ft_tensor *x, const ft_tensor *a, const ft_tensor *b,
                       double scale) {
    return lora_add(result, x, a, b, scale, false);
}

ft_tensor *ft_lora_add_reusing(ft_tensor *result, const ft_tensor *x, const ft_tensor *a, const ft_tensor *b,
                               double scale) {
    return lora_add(result, x, a, b, scale, true);
}

/* ---- grouped_linear: each block of rows through its own weight --------------------- */

/* The [out, in] weight of group e: a view of weight [E, out, in] that records no autograd. */
static ft_tensor *group_weight(const ft_tensor *weight, int64_t e) {
    ft_tensor *wd = plain(weight);
    ft_tensor *we = wd ? ft_select(wd, 0, e) : NULL;
    ft_release(wd);
    return we;
}

/* y rows [M, out] = x rows [M, in] @ W_e^T, W_e float32 or a storage float (widened in tiles). */
static int group_forward(const ft_tensor *we, const float *x, int M, float *y) {
    int64_t nout = we->shape[0], nin = we->shape[1];
    if (we->dtype != FT_FLOAT32) return half_forward(we, x, M, y, 0.0f);
    gemm_operand A = {x, CblasNoTrans, (int)(nin > 1 ? nin : 1)};
    gemm_operand B = {ft_f32(we), CblasTrans, (int)(nin > 1 ? nin : 1)};
    gemm(M, (int)nout, (int)nin, A, B, 0.0f, y, (int)(nout > 1 ? nout : 1));
    return 0;
}

/* i[0..2] = E, out, in; saved[0] = x [N, in] contiguous (for the weight's gradient), saved[1] =
 * weight (for x's), saved[2] = the int64 group sizes [E]. */
static int grouped_linear_backward(ft_node *node, const ft_tensor *g, ft_tensor **gi) {
    int64_t E = node->i[0], nout = node->i[1], nin = node->i[2];
    const ft_tensor *x = node->saved[0], *w = node->saved[1];
    const int64_t *sizes = ft_i64(node->saved[2]);
    ft_tensor *gc = ft_contiguous(g);
    if (!gc) return -1;
    const float *gp = ft_f32(gc);
    int rc = 0;
    if (node->inputs[0]) {   /* dx rows of group e = g rows @ W_e */
        const ft_tensor *xin = node->inputs[0];
        ft_tensor *dx = ft_zeros(xin->shape, xin->ndim, FT_FLOAT32);
        int64_t row = 0;
        for (int64_t e = 0; dx && rc == 0 && e < E; row += sizes[e], e++) {
            if (sizes[e] == 0 || nout == 0) continue;
            ft_tensor *we = group_weight(w, e);
            if (!we) rc = -1;
            else if (we->dtype != FT_FLOAT32)
                rc = half_backward_input(we, gp + row * nout, (int)sizes[e], ft_f32(dx) + row * nin);
            else {
                gemm_operand A = {gp + row * nout, CblasNoTrans, (int)nout};
                gemm_operand B = {ft_f32(we), CblasNoTrans, (int)(nin > 1 ? nin : 1)};
                gemm((int)sizes[e], (int)nin, (int)nout, A, B, 0.0f, ft_f32(dx) + row * nin, (int)(nin > 1 ? nin : 1));
            }
            ft_release(we);
        }
        if (!dx || rc < 0) {
            ft_release(dx);
            ft_release(gc);
            return -1;
        }
        gi[0] = dx;
    }
    if (node->inputs[1]) {   /* dW_e = g rows^T @ x rows; zero for a group without rows */
        const ft_tensor *win = node->inputs[1];
        ft_tensor *dw = ft_zeros(win->shape, win->ndim, win->dtype);
        int64_t row = 0;
        for (int64_t e = 0; dw && rc == 0 && e < E; row += sizes[e], e++) {
            if (sizes[e] == 0) continue;
            ft_tensor *slot = ft_select(dw, 0, e);
            if (!slot) rc = -1;
            else if (win->dtype != FT_FLOAT32) {   /* rounded once into the weight's dtype */
                ft_tensor *part = tiled_backward_weight(nout, nin, win->dtype, gp + row * nout,
                                                        ft_f32(x) + row * nin, (int)sizes[e]);
                rc = part ? ft_copy_(slot, part) : -1;
                ft_release(part);
            } else {
                gemm_operand A = {gp + row * nout, CblasTrans, (int)(nout > 1 ? nout : 1)};
                gemm_operand B = {ft_f32(x) + row * nin, CblasNoTrans, (int)(nin > 1 ? nin : 1)};
                gemm((int)nout, (int)nin, (int)sizes[e], A, B, 0.0f, ft_f32(slot), (int)(nin > 1 ? nin : 1));
            }
            ft_release(slot);
        }
        if (!dw || rc < 0) {
            ft_release(dw);
            ft_release(gc);
            return -1;
        }
        gi[1] = dw;
    }
    ft_release(gc);
    return 0;
}

ft_tensor *ft_grouped_linear(const ft_tensor *x, const ft_tensor *weight, const int64_t *sizes, int64_t n_groups) {
    char sx[128], sw[128];
    if (ft_is_storage_float(x)) {
        ft_tensor *xf = ft_promote_f32(x);
        ft_tensor *y = xf ? ft_grouped_linear(xf, weight, sizes, n_groups) : NULL;
        ft_release(xf);
        return y;
    }
    if (expect_f32(x, "grouped_linear") < 0) return NULL;
    if (weight->dtype != FT_FLOAT32 && !ft_is_storage_float(weight)) {
        ft_set_error("grouped_linear: expected a float weight, got %s", ft_dtype_name(weight->dtype));
        return NULL;
    }
    if (x->ndim != 2 || weight->ndim != 3 || x->shape[1] != weight->shape[2] || weight->shape[0] != n_groups) {
        ft_set_error("grouped_linear: input %s and weight %s do not match %lld group sizes (expected input "
                     "[N, in] and weight [groups, out, in])",
                     ft_shape_str(x->shape, x->ndim, sx, sizeof sx),
                     ft_shape_str(weight->shape, weight->ndim, sw, sizeof sw), (long long)n_groups);
        return NULL;
    }
    int64_t N = x->shape[0], nout = weight->shape[1], nin = weight->shape[2], total = 0;
    for (int64_t e = 0; e < n_groups; e++) {
        if (sizes[e] < 0 || sizes[e] > N - total) {
            ft_set_error("grouped_linear: group sizes must be >= 0 and sum to the %lld input rows "
                         "(group %lld has %lld, %lld rows before it)", (long long)N, (long long)e + 1,
                         (long long)sizes[e], (long long)total);
            return NULL;
        }
        total += sizes[e];
    }
    if (total != N) {
        ft_set_error("grouped_linear: group sizes sum to %lld, the input has %lld rows", (long long)total, (long long)N);
        return NULL;
    }
    if (check_blas_dims(N, nin, nout, "grouped_linear") < 0) return NULL;
    ft_tensor *xc = plain_contiguous(x);
    int64_t oshape[2] = {N, nout};
    ft_tensor *out = xc ? ft_zeros(oshape, 2, FT_FLOAT32) : NULL;
    int rc = out ? 0 : -1;
    int64_t row = 0;
    for (int64_t e = 0; rc == 0 && e < n_groups; row += sizes[e], e++) {
        if (sizes[e] == 0) continue;
        ft_tensor *we = group_weight(weight, e);
        rc = we ? group_forward(we, ft_f32(xc) + row * nin, (int)sizes[e], ft_f32(out) + row * nout) : -1;
        ft_release(we);
    }
    if (rc == 0 && ft_grad_needed2(x, weight)) {
        ft_node *node = ft_node_new("grouped_linear", grouped_linear_backward, out, 2, x, weight);
        int64_t sshape = n_groups;
        ft_tensor *kept = node ? ft_empty(&sshape, 1, FT_INT64) : NULL;
        if (kept) {
            memcpy(ft_i64(kept), sizes, sizeof(int64_t) * (size_t)n_groups);
            node->i[0] = n_groups;
            node->i[1] = nout;
            node->i[2] = nin;
            if (node->inputs[1]) node->saved[0] = ft_retain(xc);
            if (node->inputs[0]) node->saved[1] = plain(weight);
            node->saved[2] = kept;
        } else
            rc = -1;
    }
    ft_release(xc);
    if (rc < 0) {
        ft_release(out);
        return NULL;
    }
    return out;
}
