/* Dropout and embedding lookup, forward and backward. An embedding table may be held in
 * bfloat16, float16 or float64: its rows are widened to float32 as they are gathered. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ft/runtime.h"
#include "half_rows.h"

/* ---- dropout ------------------------------------------------------------------ */

/* saved[0]: the mask, 0 or 1/(1-p) per element, shaped like x. */
static int dropout_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    const ft_tensor *mask = nd->saved[0];
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    ft_tensor *gx_t = ft_empty(mask->shape, mask->ndim, FT_FLOAT32);
    if (!gx_t) {
        ft_release(go_t);
        return -1;
    }
    const float *go = ft_f32(go_t), *m = ft_f32(mask);
    float *gx = ft_f32(gx_t);
    int64_t n = ft_numel(mask);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) gx[i] = go[i] * m[i];
    ft_release(go_t);
    grad_inputs[0] = gx_t;
    return 0;
}

ft_tensor *ft_dropout(const ft_tensor *x, double p, bool training) {
    if (!x) {
        ft_set_error("dropout: input is required");
        return NULL;
    }
    if (x->dtype != FT_FLOAT32) {
        ft_set_error("dropout: expected float32 input, got %s", ft_dtype_name(x->dtype));
        return NULL;
    }
    if (!(p >= 0.0 && p <= 1.0)) {
        ft_set_error("dropout: probability must be in [0, 1], got %g", p);
        return NULL;
    }
    /* identity: the input itself, as PyTorch */
    if (!training || p == 0.0) return ft_retain((ft_tensor *)x);

    int64_t n = ft_numel(x);
    ft_tensor *xc = ft_contiguous(x);
    ft_tensor *mask = ft_empty(x->shape, x->ndim, FT_FLOAT32);
    ft_tensor *y = ft_empty(x->shape, x->ndim, FT_FLOAT32);
    if (!xc || !mask || !y) {
        ft_release(xc);
        ft_release(mask);
        ft_release(y);
        return NULL;
    }
    /* keep with probability 1-p: each 64-bit draw gives two 32-bit uniforms, drawn in
     * element order so a seed gives the same mask at any thread count */
    float *m = ft_f32(mask);
    float scale = p == 1.0 ? 0.0f : (float)(1.0 / (1.0 - p));
    uint64_t keep_below = (uint64_t)((1.0 - p) * 4294967296.0);  /* (1-p) * 2^32 */
    for (int64_t i = 0; i < n; i += 2) {
        uint64_t r = ft_rng_next();
        m[i] = (r & 0xffffffffu) < keep_below ? scale : 0.0f;
        if (i + 1 < n) m[i + 1] = (r >> 32) < keep_below ? scale : 0.0f;
    }
    const float *xp = ft_f32(xc);
    float *yp = ft_f32(y);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) yp[i] = xp[i] * m[i];
    ft_release(xc);

    if (ft_grad_needed1(x)) {
        ft_node *nd = ft_node_new("dropout", dropout_backward, y, 1, x);
        if (!nd) {
            ft_set_error("dropout: out of memory recording the graph");
            ft_release(mask);
            ft_release(y);
            return NULL;
        }
        nd->saved[0] = mask;
    } else {
        ft_release(mask);
    }
    return y;
}

/* ---- embedding ---------------------------------------------------------------- */

/* saved[0]: indices (contiguous int64). node->i: [0] rows [1] dim [2] the weight's dtype. The
 * gradient sums in float32 and is rounded once to the weight's dtype. */
static int embedding_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    int64_t rows = nd->i[0], dim = nd->i[1];
    ft_dtype wdtype = (ft_dtype)nd->i[2];
    const ft_tensor *idx_t = nd->saved[0];
    int64_t n = ft_numel(idx_t);
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    int64_t wshape[2] = {rows, dim};
    ft_tensor *gw_t = ft_zeros(wshape, 2, FT_FLOAT32);
    if (!gw_t) {
        ft_release(go_t);
        return -1;
    }
    const int64_t *idx = ft_i64(idx_t);
    const float *go = ft_f32(go_t);
    float *gw = ft_f32(gw_t);
    /* scatter-add: thread t owns the weight rows r with r % nthreads == t, so repeated
     * indices never race and the sums run in index order (deterministic) */
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        for (int64_t i = 0; i < n; i++) {
            int64_t r = idx[i];
            if (r % nt != t) continue;
            float *dst = gw + r * dim;
            const float *src = go + i * dim;
            for (int64_t j = 0; j < dim; j++) dst[j] += src[j];
        }
    }
    ft_release(go_t);
    if (wdtype != FT_FLOAT32) {
        ft_tensor *gw = ft_to_dtype(gw_t, wdtype);
        ft_release(gw_t);
        if (!gw) return -1;
        gw_t = gw;
    }
    grad_inputs[0] = gw_t;
    return 0;
}

ft_tensor *ft_embedding(const ft_tensor *weight, const ft_tensor *indices) {
    if (!weight || !indices) {
        ft_set_error("embedding: weight and indices are required");
        return NULL;
    }
    char ws[128], is[128];
    ft_shape_str(weight->shape, weight->ndim, ws, sizeof ws);
    ft_shape_str(indices->shape, indices->ndim, is, sizeof is);
    if (!ft_dtype_is_float(weight->dtype) || weight->ndim != 2) {
        ft_set_error("embedding: expected a float weight [num,dim] (float32, bfloat16, float16 or "
                     "float64), got %s %s", ws, ft_dtype_name(weight->dtype));
        return NULL;
    }
    if (indices->dtype != FT_INT64) {
        ft_set_error("embedding: expected int64 indices, got %s %s", is,
                     ft_dtype_name(indices->dtype));
        return NULL;
    }
    if (indices->ndim + 1 > FT_MAX_DIMS) {
        ft_set_error("embedding: indices %s have too many dims", is);
        return NULL;
    }
    int64_t rows = weight->shape[0], dim = weight->shape[1];
    ft_tensor *ic = ft_contiguous(indices);
    if (!ic) return NULL;
    const int64_t *idx = ft_i64(ic);
    int64_t n = ft_numel(ic);
    for (int64_t i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= rows) {
            ft_set_error("embedding: index %lld out of range for %lld rows", (long long)idx[i],
                         (long long)rows);
            ft_release(ic);
            return NULL;
        }
    }
    int64_t yshape[FT_MAX_DIMS];
    memcpy(yshape, indices->shape, (size_t)indices->ndim * sizeof(int64_t));
    yshape[indices->ndim] = dim;
    ft_tensor *y = ft_empty(yshape, indices->ndim + 1, FT_FLOAT32);
    if (!y) {
        ft_release(ic);
        return NULL;
    }
    /* rows are read in place through the weight's strides (no copy of a big table), widened to
     * float32 as they are copied */
    float *yp = ft_f32(y);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) ft_row_to_f32(weight, idx[i], yp + i * dim);
    if (ft_grad_needed1(weight)) {
        ft_node *nd = ft_node_new("embedding", embedding_backward, y, 1, weight);
        if (!nd) {
            ft_set_error("embedding: out of memory recording the graph");
            ft_release(ic);
            ft_release(y);
            return NULL;
        }
        nd->saved[0] = ft_detach(ic);
        nd->i[0] = rows;
        nd->i[1] = dim;
        nd->i[2] = weight->dtype;
    }
    ft_release(ic);
    return y;
}
