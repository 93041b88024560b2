/* Losses, forward and backward: cross entropy over class indices and mean squared error.
 *
 * Cross entropy, per sample with logits x[C], target t, smoothing eps and
 * lse = log(sum_c exp(x_c)) taken with the max subtracted:
 *
 *     loss = (1 - eps) * (lse - x_t) + eps/C * sum_c (lse - x_c)
 *     dloss/dx_c = softmax(x)_c - (1 - eps) * [c == t] - eps/C
 *
 * Samples whose target is ignore_index contribute 0 and are left out of the mean's
 * denominator (PyTorch's formula, with and without label smoothing). Forward keeps only lse
 * per sample; backward recomputes the softmax from the logits and writes the one gradient. */
#include <math.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "fast_exp.h"

/* ---- cross entropy ------------------------------------------------------------ */

/* Where sample i = n*S + s and its class k live in the logits, in elements from ft_f32(x):
 * (i / S) * rs + (i % S) * ss + k * cs. Reading through strides lets a narrowed or
 * transposed [N, C] view (the shifted logits of a causal LM) be used without a copy. */
typedef struct {
    int64_t n, c, s;     /* samples N, classes C, S = product of the trailing dims */
    int64_t rs, ss, cs;  /* strides of a sample row, of a trailing position, of a class */
} ce_geom;

static inline const float *ce_row(const float *x, const ce_geom *g, int64_t i) {
    return x + (i / g->s) * g->rs + (i % g->s) * g->ss;
}

/* One stride that walks dims 2.. of t in order (size-1 dims skipped); false if none does. */
static bool trailing_stride(const ft_tensor *t, int64_t *stride) {
    bool set = false;
    int64_t next = 0;
    *stride = 1;
    for (int d = t->ndim - 1; d >= 2; d--) {
        if (t->shape[d] == 1) continue;
        if (set && t->strides[d] != next) return false;
        if (!set) *stride = t->strides[d];
        set = true;
        next = t->strides[d] * t->shape[d];
    }
    return true;
}

/* log(sum_c exp(x_c)) with the max subtracted, and sum_c x_c, of one sample. */
static void ce_row_stats(const float *xr, int64_t c, int64_t cs, float *lse, float *sum) {
    float mx = -INFINITY, se = 0.0f, sx = 0.0f;
    if (cs == 1) {   /* classes contiguous: the common [N, C] rows */
#pragma omp simd reduction(max : mx)
        for (int64_t k = 0; k < c; k++) mx = xr[k] > mx ? xr[k] : mx;
#pragma omp simd reduction(+ : se, sx)
        for (int64_t k = 0; k < c; k++) {
            se += exp_nonpos(xr[k] - mx);
            sx += xr[k];
        }
    } else {
        for (int64_t k = 0; k < c; k++) mx = xr[k * cs] > mx ? xr[k * cs] : mx;
        for (int64_t k = 0; k < c; k++) {
            se += exp_nonpos(xr[k * cs] - mx);
            sx += xr[k * cs];
        }
    }
    *lse = mx + logf(se);
    *sum = sx;
}

/* saved[0] the logits as read in forward (a view, or the contiguous copy of an N-d input
 * whose trailing dims no stride describes), saved[1] target contiguous, saved[2] lse [N*S].
 * node->i: [0] N [1] C [2] S [3] reduction [4] ignore_index [5] valid count [6] rs [7] ss
 * [8] cs. f[0] eps. The gradient is written once, contiguous, in the logits' shape. */
static int cross_entropy_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    const ft_tensor *lg_t = nd->saved[0];
    ce_geom g = {nd->i[0], nd->i[1], nd->i[2], nd->i[6], nd->i[7], nd->i[8]};
    int64_t c = g.c, s = g.s, cs = g.cs, ignore = nd->i[4], count = nd->i[5];
    ft_reduction red = (ft_reduction)nd->i[3];
    float eps = (float)nd->f[0], off = eps / (float)c;
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    ft_tensor *gx_t = ft_empty(lg_t->shape, lg_t->ndim, FT_FLOAT32);
    if (!gx_t) {
        ft_release(go_t);
        return -1;
    }
    const float *x = ft_f32(lg_t), *lse = ft_f32(nd->saved[2]), *go = ft_f32(go_t);
    const int64_t *tg = ft_i64(nd->saved[1]);
    float *gx = ft_f32(gx_t);
    float scale = red == FT_REDUCE_NONE ? 0.0f
                : red == FT_REDUCE_SUM  ? go[0]
                                        : go[0] / (float)count;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < g.n * s; i++) {
        const float *xr = ce_row(x, &g, i);
        float *gr = gx + (i / s) * c * s + i % s;
        int64_t t = tg[i];
        if (t == ignore) {
            for (int64_t k = 0; k < c; k++) gr[k * s] = 0.0f;
            continue;
        }
        float k_i = red == FT_REDUCE_NONE ? go[i] : scale, l = lse[i];
        if (s == 1 && cs == 1) {   /* contiguous rows in and out */
#pragma omp simd
            for (int64_t k = 0; k < c; k++) gr[k] = k_i * (exp_nonpos(xr[k] - l) - off);
        } else {
            for (int64_t k = 0; k < c; k++) gr[k * s] = k_i * (exp_nonpos(xr[k * cs] - l) - off);
        }
        gr[t * s] -= k_i * (1.0f - eps);
    }
    ft_release(go_t);
    grad_inputs[0] = gx_t;
    return 0;
}

/* The forward keeps one float per sample (its lse) besides the loss: the logits are read in
 * place through their strides, and backward recomputes the softmax from them. */
ft_tensor *ft_cross_entropy(const ft_tensor *logits, const ft_tensor *target,
                            ft_reduction reduction, int64_t ignore_index, double label_smoothing) {
    if (!logits || !target) {
        ft_set_error("cross_entropy: logits and target are required");
        return NULL;
    }
    char ls[128], ts[128];
    ft_shape_str(logits->shape, logits->ndim, ls, sizeof ls);
    ft_shape_str(target->shape, target->ndim, ts, sizeof ts);
    if (logits->dtype != FT_FLOAT32) {
        ft_set_error("cross_entropy: expected float32 logits, got %s %s", ls,
                     ft_dtype_name(logits->dtype));
        return NULL;
    }
    if (target->dtype != FT_INT64) {
        ft_set_error("cross_entropy: expected int64 class indices as target, got %s %s", ts,
                     ft_dtype_name(target->dtype));
        return NULL;
    }
    if (logits->ndim < 1) {
        ft_set_error("cross_entropy: expected logits [N,C] or [N,C,d1,...] or [C], got %s", ls);
        return NULL;
    }
    if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0)) {
        ft_set_error("cross_entropy: label_smoothing must be in [0, 1], got %g", label_smoothing);
        return NULL;
    }
    if (reduction != FT_REDUCE_NONE && reduction != FT_REDUCE_MEAN && reduction != FT_REDUCE_SUM) {
        ft_set_error("cross_entropy: unknown reduction %d", (int)reduction);
        return NULL;
    }
    /* the target has the logits' shape without the class dim (dim 1, or dim 0 for [C]) */
    ce_geom g;
    int cdim = logits->ndim == 1 ? 0 : 1;
    int64_t expect[FT_MAX_DIMS];
    int ne = 0;
    g.n = logits->ndim == 1 ? 1 : logits->shape[0];
    g.c = logits->shape[cdim];
    g.s = 1;
    for (int d = 0; d < logits->ndim; d++) {
        if (d == cdim) continue;
        expect[ne++] = logits->shape[d];
        if (d > 1) g.s *= logits->shape[d];
    }
    bool match = target->ndim == ne;
    for (int d = 0; match && d < ne; d++) match = target->shape[d] == expect[d];
    if (!match) {
        char es[128];
        ft_set_error("cross_entropy: logits %s and target %s do not match (expected target %s)",
                     ls, ts, ft_shape_str(expect, ne, es, sizeof es));
        return NULL;
    }
    if (g.c < 1) {
        ft_set_error("cross_entropy: logits %s have no classes", ls);
        return NULL;
    }

    int64_t m = g.n * g.s, count = 0;
    ft_tensor *tc = ft_contiguous(target);
    if (!tc) return NULL;
    const int64_t *tg = ft_i64(tc);
    for (int64_t i = 0; i < m; i++) {
        if (tg[i] == ignore_index) continue;
        if (tg[i] < 0 || tg[i] >= g.c) {
            ft_set_error("cross_entropy: target %lld out of range for %lld classes",
                         (long long)tg[i], (long long)g.c);
            ft_release(tc);
            return NULL;
        }
        count++;
    }

    /* Read the logits where they are; copy only trailing dims that no one stride walks. */
    int64_t ss;
    ft_tensor *xc = trailing_stride(logits, &ss) ? ft_retain((ft_tensor *)logits) : ft_contiguous(logits);
    if (xc && xc != logits) ss = 1;
    if (xc) {
        g.rs = xc->ndim == 1 ? 0 : xc->strides[0];
        g.cs = xc->strides[cdim];
        g.ss = ss;
    }
    ft_tensor *lse_t = ft_empty(&m, 1, FT_FLOAT32);
    ft_tensor *per = reduction == FT_REDUCE_NONE ? ft_empty(target->shape, target->ndim, FT_FLOAT32)
                                                 : ft_empty(NULL, 0, FT_FLOAT32);
    /* per-sample losses, summed in order afterwards: the same rows give the same total
     * whatever the thread count or the ignored rows around them */
    ft_tensor *rows_t = reduction == FT_REDUCE_NONE ? ft_retain(per) : ft_empty(&m, 1, FT_FLOAT32);
    if (!xc || !lse_t || !per || !rows_t) {
        ft_release(tc);
        ft_release(xc);
        ft_release(lse_t);
        ft_release(per);
        ft_release(rows_t);
        return NULL;
    }
    const float *x = ft_f32(xc);
    float *lse = ft_f32(lse_t), *rows = ft_f32(rows_t);
    float eps = (float)label_smoothing;
    int64_t c = g.c, cs = g.cs;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; i++) {
        const float *xr = ce_row(x, &g, i);
        float l, sx;
        ce_row_stats(xr, c, cs, &l, &sx);
        lse[i] = l;
        float li = 0.0f;
        if (tg[i] != ignore_index)
            li = (1.0f - eps) * (l - xr[tg[i] * cs]) + (eps > 0.0f ? eps * (l - sx / (float)c) : 0.0f);
        rows[i] = li;
    }
    if (reduction != FT_REDUCE_NONE) {
        double total = 0.0;
        for (int64_t i = 0; i < m; i++) total += rows[i];
        float *out = ft_f32(per);
        out[0] = (float)(reduction == FT_REDUCE_SUM ? total : total / (double)count);  /* 0/0: NaN, as PyTorch */
    }
    ft_release(rows_t);

    if (ft_grad_needed1(logits)) {
        ft_node *nd = ft_node_new("cross_entropy", cross_entropy_backward, per, 1, logits);
        if (!nd) {
            ft_set_error("cross_entropy: out of memory recording the graph");
            ft_release(tc);
            ft_release(xc);
            ft_release(lse_t);
            ft_release(per);
            return NULL;
        }
        nd->saved[0] = ft_detach(xc);
        nd->saved[1] = ft_detach(tc);
        nd->saved[2] = lse_t;
        lse_t = NULL;
        int64_t v[9] = {g.n, g.c, g.s, reduction, ignore_index, count, g.rs, g.ss, g.cs};
        memcpy(nd->i, v, sizeof v);
        nd->f[0] = label_smoothing;
    }
    ft_release(tc);
    ft_release(xc);
    ft_release(lse_t);
    return per;
}

/* ---- mean squared error ------------------------------------------------------- */

/* saved[0] input, saved[1] target (both contiguous). node->i: [0] reduction. */
static int mse_loss_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    const ft_tensor *x_t = nd->saved[0], *t_t = nd->saved[1];
    ft_reduction red = (ft_reduction)nd->i[0];
    int64_t n = ft_numel(x_t);
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    ft_tensor *gx_t = ft_empty(x_t->shape, x_t->ndim, FT_FLOAT32);
    ft_tensor *gt_t = nd->inputs[1] ? ft_empty(t_t->shape, t_t->ndim, FT_FLOAT32) : NULL;
    if (!gx_t || (nd->inputs[1] && !gt_t)) {
        ft_release(go_t);
        ft_release(gx_t);
        ft_release(gt_t);
        return -1;
    }
    const float *x = ft_f32(x_t), *t = ft_f32(t_t), *go = ft_f32(go_t);
    float *gx = ft_f32(gx_t), *gt = gt_t ? ft_f32(gt_t) : NULL;
    float k = red == FT_REDUCE_NONE ? 2.0f
            : red == FT_REDUCE_SUM  ? 2.0f * go[0]
                                    : 2.0f * go[0] / (float)n;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = (red == FT_REDUCE_NONE ? k * go[i] : k) * (x[i] - t[i]);
        gx[i] = d;
        if (gt) gt[i] = -d;
    }
    ft_release(go_t);
    if (nd->inputs[0]) {
        grad_inputs[0] = gx_t;
    } else {
        ft_release(gx_t);
    }
    grad_inputs[1] = gt_t;
    return 0;
}

ft_tensor *ft_mse_loss(const ft_tensor *input, const ft_tensor *target, ft_reduction reduction) {
    if (!input || !target) {
        ft_set_error("mse_loss: input and target are required");
        return NULL;
    }
    char is[128], ts[128];
    ft_shape_str(input->shape, input->ndim, is, sizeof is);
    ft_shape_str(target->shape, target->ndim, ts, sizeof ts);
    if (input->dtype != FT_FLOAT32 || target->dtype != FT_FLOAT32) {
        ft_set_error("mse_loss: expected float32 input and target, got %s %s and %s %s", is,
                     ft_dtype_name(input->dtype), ts, ft_dtype_name(target->dtype));
        return NULL;
    }
    if (!ft_same_shape(input, target)) {
        ft_set_error("mse_loss: input %s and target %s must have the same shape "
                     "(no broadcasting)", is, ts);
        return NULL;
    }
    if (reduction != FT_REDUCE_NONE && reduction != FT_REDUCE_MEAN && reduction != FT_REDUCE_SUM) {
        ft_set_error("mse_loss: unknown reduction %d", (int)reduction);
        return NULL;
    }
    int64_t n = ft_numel(input);
    ft_tensor *xc = ft_contiguous(input), *tc = ft_contiguous(target);
    ft_tensor *out = reduction == FT_REDUCE_NONE ? ft_empty(input->shape, input->ndim, FT_FLOAT32)
                                                 : ft_empty(NULL, 0, FT_FLOAT32);
    if (!xc || !tc || !out) {
        ft_release(xc);
        ft_release(tc);
        ft_release(out);
        return NULL;
    }
    const float *x = ft_f32(xc), *t = ft_f32(tc);
    float *o = ft_f32(out);
    if (reduction == FT_REDUCE_NONE) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) o[i] = (x[i] - t[i]) * (x[i] - t[i]);
    } else {
        double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (int64_t i = 0; i < n; i++) total += (double)(x[i] - t[i]) * (x[i] - t[i]);
        o[0] = (float)(reduction == FT_REDUCE_SUM ? total : total / (double)n);
    }
    if (ft_grad_needed2(input, target)) {
        ft_node *nd = ft_node_new("mse_loss", mse_loss_backward, out, 2, input, target);
        if (!nd) {
            ft_set_error("mse_loss: out of memory recording the graph");
            ft_release(xc);
            ft_release(tc);
            ft_release(out);
            return NULL;
        }
        nd->saved[0] = ft_detach(xc);
        nd->saved[1] = ft_detach(tc);
        nd->i[0] = reduction;
    }
    ft_release(xc);
    ft_release(tc);
    return out;
}
