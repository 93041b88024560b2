/* Losses, forward and backward: cross entropy over class indices and mean squared error.
 *
 * Cross entropy, per sample with logits x[C], target t, smoothing eps and
 * lse = log(sum_c exp(x_c)) taken with the max subtracted:
 *
 *     loss = (1 - eps) * (lse - x_t) + eps/C * sum_c (lse - x_c)
 *     dloss/dx_c = softmax(x)_c - (1 - eps) * [c == t] - eps/C
 *
 * Samples whose target is ignore_index contribute 0 and are left out of the mean's
 * denominator (PyTorch's formula, with and without label smoothing). */
#include <math.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "fast_exp.h"

/* ---- cross entropy ------------------------------------------------------------ */

/* Layout: logits [N, C, S] (S = product of the trailing dims), sample i = n*S + s. */
typedef struct {
    int64_t n, c, s;
} ce_geom;

/* saved[0] logits [N,C,S...] contiguous, saved[1] target contiguous, saved[2] lse [N*S].
 * node->i: [0] N [1] C [2] S [3] reduction [4] ignore_index [5] valid count. f[0] eps. */
static int cross_entropy_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    const ft_tensor *lg_t = nd->saved[0];
    int64_t n = nd->i[0], c = nd->i[1], s = nd->i[2], ignore = nd->i[4], count = nd->i[5];
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
    for (int64_t i = 0; i < n * s; i++) {
        int64_t base = (i / s) * c * s + i % s;
        const float *xr = x + base;
        float *gr = gx + base;
        int64_t t = tg[i];
        if (t == ignore) {
            for (int64_t k = 0; k < c; k++) gr[k * s] = 0.0f;
            continue;
        }
        float k_i = red == FT_REDUCE_NONE ? go[i] : scale, l = lse[i];
        if (s == 1) {   /* [N, C]: contiguous rows */
#pragma omp simd
            for (int64_t k = 0; k < c; k++) gr[k] = k_i * (exp_nonpos(xr[k] - l) - off);
        } else {
            for (int64_t k = 0; k < c; k++) gr[k * s] = k_i * (exp_nonpos(xr[k * s] - l) - off);
        }
        gr[t * s] -= k_i * (1.0f - eps);
    }
    ft_release(go_t);
    grad_inputs[0] = gx_t;
    return 0;
}

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

    ft_tensor *xc = ft_contiguous(logits);
    ft_tensor *lse_t = ft_empty(&m, 1, FT_FLOAT32);
    ft_tensor *per = reduction == FT_REDUCE_NONE ? ft_empty(target->shape, target->ndim, FT_FLOAT32)
                                                 : ft_empty(NULL, 0, FT_FLOAT32);
    if (!xc || !lse_t || !per) {
        ft_release(tc);
        ft_release(xc);
        ft_release(lse_t);
        ft_release(per);
        return NULL;
    }
    const float *x = ft_f32(xc);
    float *lse = ft_f32(lse_t), *out = ft_f32(per);
    float eps = (float)label_smoothing;
    int64_t c = g.c, s = g.s;
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t i = 0; i < m; i++) {
        const float *xr = x + (i / s) * c * s + i % s;
        float mx = -INFINITY, se = 0.0f, sx = 0.0f;
        if (s == 1) {   /* [N, C]: contiguous rows */
#pragma omp simd reduction(max : mx)
            for (int64_t k = 0; k < c; k++) mx = xr[k] > mx ? xr[k] : mx;
#pragma omp simd reduction(+ : se, sx)
            for (int64_t k = 0; k < c; k++) {
                se += exp_nonpos(xr[k] - mx);
                sx += xr[k];
            }
        } else {
            for (int64_t k = 0; k < c; k++) mx = xr[k * s] > mx ? xr[k * s] : mx;
            for (int64_t k = 0; k < c; k++) {
                se += exp_nonpos(xr[k * s] - mx);
                sx += xr[k * s];
            }
        }
        float l = mx + logf(se);
        lse[i] = l;
        float li = 0.0f;
        if (tg[i] != ignore_index)
            li = (1.0f - eps) * (l - xr[tg[i] * s]) + (eps > 0.0f ? eps * (l - sx / (float)c) : 0.0f);
        if (reduction == FT_REDUCE_NONE) out[i] = li;
        total += li;
    }
    if (reduction == FT_REDUCE_SUM) out[0] = (float)total;
    if (reduction == FT_REDUCE_MEAN) out[0] = (float)(total / (double)count);  /* 0/0: NaN, as PyTorch */

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
        int64_t v[6] = {g.n, g.c, g.s, reduction, ignore_index, count};
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
