/* Batch normalisation, layer normalisation and RMS normalisation, forward and backward.
 *
 * Batch and layer norm normalise x to xhat = (x - mean) * invstd with invstd =
 * 1/sqrt(var + eps), var biased, then scale and shift. Statistics take two passes (mean, then squared
 * deviations) with vectorised float sums along rows; batch norm adds the rows up in
 * double. The backward of a normalisation whose statistics come from the same x is,
 * per group of m elements,
 *
 *     grad_x = w * invstd * (grad_y - sum(grad_y)/m - xhat * sum(grad_y * xhat)/m)
 *
 * and with fixed statistics (batch norm in eval mode) just w * invstd * grad_y. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"

/* A 1-D float32 parameter/buffer of n elements, or NULL. */
static int check_vec(const ft_tensor *t, const char *what, int64_t n, const ft_tensor *x,
                     const char *op) {
    if (!t) return 0;
    char ts[128], xs[128];
    if (t->dtype != FT_FLOAT32 || t->ndim != 1 || t->shape[0] != n) {
        ft_set_error("%s: %s %s %s does not match input %s with %lld channels", op, what,
                     ft_shape_str(t->shape, t->ndim, ts, sizeof ts), ft_dtype_name(t->dtype),
                     ft_shape_str(x->shape, x->ndim, xs, sizeof xs), (long long)n);
        return -1;
    }
    return 0;
}

/* ---- batch norm --------------------------------------------------------------- */

/* Values of a 1-D tensor with any stride into a dense float array (NULL -> fill). */
static void read_vec(const ft_tensor *t, int64_t n, float fill, float *out) {
    if (!t) {
        for (int64_t i = 0; i < n; i++) out[i] = fill;
        return;
    }
    const float *p = ft_f32(t);
    for (int64_t i = 0; i < n; i++) out[i] = p[i * t->strides[0]];
}

/* saved[0] x contiguous [N,C,S...], saved[1] weight or NULL, saved[2] stats [2,C] =
 * (mean, invstd) used by the forward. node->i: [0] N [1] C [2] S [3] training.
 * inputs: x, weight, bias. */
static int batch_norm_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    const ft_tensor *x_t = nd->saved[0];
    int64_t n = nd->i[0], c = nd->i[1], s = nd->i[2];
    bool training = nd->i[3] != 0;
    double m = (double)(n * s);
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    ft_tensor *gx_t = NULL, *gw_t = NULL, *gb_t = NULL;
    float *wv = malloc((size_t)c * 3 * sizeof(float));   /* weight, sum(go), sum(go*xhat) */
    if (!wv) {
        ft_set_error("batch_norm backward: out of memory");
        goto fail;
    }
    if (nd->inputs[0] && !(gx_t = ft_empty(x_t->shape, x_t->ndim, FT_FLOAT32))) goto fail;
    if (nd->inputs[1] && !(gw_t = ft_empty(&c, 1, FT_FLOAT32))) goto fail;
    if (nd->inputs[2] && !(gb_t = ft_empty(&c, 1, FT_FLOAT32))) goto fail;

    const float *x = ft_f32(x_t), *go = ft_f32(go_t);
    const float *mean = ft_f32(nd->saved[2]), *invstd = mean + c;
    float *sum_g = wv + c, *sum_gx = wv + 2 * c;
    read_vec(nd->saved[1], c, 1.0f, wv);

#pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < c; ch++) {
        double sg = 0.0, sgx = 0.0;
        float mu = mean[ch], is = invstd[ch];
        for (int64_t i = 0; i < n; i++) {
            const float *xp = x + (i * c + ch) * s, *gp = go + (i * c + ch) * s;
            float rg = 0.0f, rgx = 0.0f;
#pragma omp simd reduction(+ : rg, rgx)
            for (int64_t j = 0; j < s; j++) {
                rg += gp[j];
                rgx += gp[j] * (xp[j] - mu);
            }
            sg += rg;
            sgx += rgx;
        }
        sum_g[ch] = (float)sg;
        sum_gx[ch] = (float)(sgx * is);
    }
    if (gw_t) memcpy(ft_f32(gw_t), sum_gx, (size_t)c * sizeof(float));
    if (gb_t) memcpy(ft_f32(gb_t), sum_g, (size_t)c * sizeof(float));

    if (gx_t) {
        float *gx = ft_f32(gx_t);
#pragma omp parallel for schedule(static)
        for (int64_t pl = 0; pl < n * c; pl++) {
            int64_t ch = pl % c;
            const float *xp = x + pl * s, *gp = go + pl * s;
            float *out = gx + pl * s;
            float k = wv[ch] * invstd[ch], mu = mean[ch], is = invstd[ch];
            if (training) {
                float a = (float)(sum_g[ch] / m), b = (float)(sum_gx[ch] / m);
                for (int64_t j = 0; j < s; j++) out[j] = k * (gp[j] - a - (xp[j] - mu) * is * b);
            } else {
                for (int64_t j = 0; j < s; j++) out[j] = k * gp[j];
            }
        }
    }
    free(wv);
    ft_release(go_t);
    grad_inputs[0] = gx_t;
    grad_inputs[1] = gw_t;
    grad_inputs[2] = gb_t;
    return 0;

fail:
    free(wv);
    ft_release(go_t);
    ft_release(gx_t);
    ft_release(gw_t);
    ft_release(gb_t);
    return -1;
}

ft_tensor *ft_batch_norm(const ft_tensor *x, ft_tensor *running_mean, ft_tensor *running_var,
                         const ft_tensor *weight, const ft_tensor *bias, bool training,
                         double momentum, double eps) {
    static const char *op = "batch_norm";
    if (!x) {
        ft_set_error("batch_norm: input is required");
        return NULL;
    }
    char xs[128];
    ft_shape_str(x->shape, x->ndim, xs, sizeof xs);
    if (x->dtype != FT_FLOAT32) {
        ft_set_error("batch_norm: expected float32 input, got %s", ft_dtype_name(x->dtype));
        return NULL;
    }
    if (x->ndim < 2) {
        ft_set_error("batch_norm: expected input [N,C] or [N,C,...], got %s", xs);
        return NULL;
    }
    int64_t n = x->shape[0], c = x->shape[1], s = 1;
    for (int d = 2; d < x->ndim; d++) s *= x->shape[d];
    if (check_vec(running_mean, "running_mean", c, x, op) < 0 ||
        check_vec(running_var, "running_var", c, x, op) < 0 ||
        check_vec(weight, "weight", c, x, op) < 0 || check_vec(bias, "bias", c, x, op) < 0)
        return NULL;
    if ((running_mean == NULL) != (running_var == NULL)) {
        ft_set_error("batch_norm: running_mean and running_var must be given together");
        return NULL;
    }
    if (!training && !running_mean) {
        ft_set_error("batch_norm: running_mean and running_var are required in eval mode");
        return NULL;
    }
    if (training && n * s <= 1) {
        ft_set_error("batch_norm: expected more than 1 value per channel when training, "
                     "got input %s", xs);
        return NULL;
    }
    if (eps < 0.0) {
        ft_set_error("batch_norm: eps must be >= 0, got %g", eps);
        return NULL;
    }

    int64_t sshape[2] = {2, c};
    ft_tensor *xc = ft_contiguous(x);
    ft_tensor *stats = ft_empty(sshape, 2, FT_FLOAT32);   /* mean, invstd */
    ft_tensor *y = ft_empty(x->shape, x->ndim, FT_FLOAT32);
    float *ab = malloc((size_t)c * 2 * sizeof(float));    /* per channel y = a*x + b */
    if (!xc || !stats || !y || !ab) {
        if (!ab) ft_set_error("batch_norm: out of memory");
        goto fail;
    }
    const float *xp = ft_f32(xc);
    float *mean = ft_f32(stats), *invstd = mean + c;

    if (training) {
        double m = (double)(n * s);
        float *rm = running_mean ? ft_f32(running_mean) : NULL;
        float *rv = running_var ? ft_f32(running_var) : NULL;
        int64_t rms = running_mean ? running_mean->strides[0] : 0;
        int64_t rvs = running_var ? running_var->strides[0] : 0;
#pragma omp parallel for schedule(static)
        for (int64_t ch = 0; ch < c; ch++) {
            /* two passes (mean, then squared deviations): float sums per row, double across */
            double sum = 0.0, sq = 0.0;
            for (int64_t i = 0; i < n; i++) {
                const float *p = xp + (i * c + ch) * s;
                float r = 0.0f;
#pragma omp simd reduction(+ : r)
                for (int64_t j = 0; j < s; j++) r += p[j];
                sum += r;
            }
            double mu = sum / m;
            float muf = (float)mu;
            for (int64_t i = 0; i < n; i++) {
                const float *p = xp + (i * c + ch) * s;
                float r = 0.0f;
#pragma omp simd reduction(+ : r)
                for (int64_t j = 0; j < s; j++) r += (p[j] - muf) * (p[j] - muf);
                sq += r;
            }
            double var = sq / m;
            mean[ch] = (float)mu;
            invstd[ch] = (float)(1.0 / sqrt(var + eps));
            /* running statistics: buffers, updated in place with the unbiased variance */
            if (rm) {
                rm[ch * rms] = (float)((1.0 - momentum) * rm[ch * rms] + momentum * mu);
                rv[ch * rvs] = (float)((1.0 - momentum) * rv[ch * rvs] + momentum * var * m / (m - 1.0));
            }
        }
    } else {
        const float *rm = ft_f32(running_mean), *rv = ft_f32(running_var);
        for (int64_t ch = 0; ch < c; ch++) {
            mean[ch] = rm[ch * running_mean->strides[0]];
            invstd[ch] = (float)(1.0 / sqrt((double)rv[ch * running_var->strides[0]] + eps));
        }
    }

    read_vec(weight, c, 1.0f, ab);
    read_vec(bias, c, 0.0f, ab + c);
    for (int64_t ch = 0; ch < c; ch++) {
        float a = ab[ch] * invstd[ch];
        ab[c + ch] -= mean[ch] * a;
        ab[ch] = a;
    }
    float *yp = ft_f32(y);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < n * c; pl++) {
        int64_t ch = pl % c;
        float a = ab[ch], b = ab[c + ch];
        const float *p = xp + pl * s;
        float *q = yp + pl * s;
        for (int64_t j = 0; j < s; j++) q[j] = a * p[j] + b;
    }
    free(ab);
    ab = NULL;

    if (ft_grad_needed3(x, weight, bias)) {
        /* running statistics are buffers: not inputs of the graph */
        ft_node *nd = ft_node_new("batch_norm", batch_norm_backward, y, 3, x, weight, bias);
        if (!nd) {
            ft_set_error("batch_norm: out of memory recording the graph");
            goto fail;
        }
        nd->saved[0] = ft_detach(xc);
        nd->saved[1] = weight ? ft_detach(weight) : NULL;
        nd->saved[2] = stats;
        stats = NULL;
        nd->i[0] = n;
        nd->i[1] = c;
        nd->i[2] = s;
        nd->i[3] = training;
    }
    ft_release(stats);
    ft_release(xc);
    return y;

fail:
    free(ab);
    ft_release(xc);
    ft_release(stats);
    ft_release(y);
    return NULL;
}

/* ---- layer norm --------------------------------------------------------------- */

/* saved[0] x contiguous [R, D], saved[1] weight or NULL, saved[2] stats [R,2] = (mean,
 * invstd). node->i: [0] R [1] D. inputs: x, weight, bias. */
static int layer_norm_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    const ft_tensor *x_t = nd->saved[0];
    int64_t r = nd->i[0], d = nd->i[1];
    bool need_x = nd->inputs[0] != NULL, need_w = nd->inputs[1] != NULL,
         need_b = nd->inputs[2] != NULL;
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    ft_tensor *gx_t = NULL, *gw_t = NULL, *gb_t = NULL;
    int nt = omp_get_max_threads();
    /* per thread partial sums of grad_w and grad_b over rows; w (or ones) at the end */
    float *ws = calloc((size_t)(nt * 2 + 1) * (size_t)d, sizeof(float));
    if (!ws) {
        ft_set_error("layer_norm backward: out of memory");
        goto fail;
    }
    if (need_x && !(gx_t = ft_empty(x_t->shape, x_t->ndim, FT_FLOAT32))) goto fail;
    if (need_w) {
        if (!(gw_t = ft_empty(nd->inputs[1]->shape, nd->inputs[1]->ndim, FT_FLOAT32))) goto fail;
    }
    if (need_b) {
        if (!(gb_t = ft_empty(nd->inputs[2]->shape, nd->inputs[2]->ndim, FT_FLOAT32))) goto fail;
    }

    const float *x = ft_f32(x_t), *go = ft_f32(go_t), *st = ft_f32(nd->saved[2]);
    float *wv = ws + (size_t)nt * 2 * d;
    if (nd->saved[1]) {
        ft_tensor *wc = ft_contiguous(nd->saved[1]);
        if (!wc) goto fail;
        memcpy(wv, ft_f32(wc), (size_t)d * sizeof(float));
        ft_release(wc);
    } else {
        for (int64_t j = 0; j < d; j++) wv[j] = 1.0f;
    }
    float *gx = gx_t ? ft_f32(gx_t) : NULL;

#pragma omp parallel
    {
        float *pw = ws + (size_t)omp_get_thread_num() * 2 * d, *pb = pw + d;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < r; i++) {
            const float *xp = x + i * d, *gp = go + i * d;
            float mu = st[2 * i], is = st[2 * i + 1];
            if (need_w || need_b) {
                for (int64_t j = 0; j < d; j++) {
                    pw[j] += gp[j] * (xp[j] - mu) * is;
                    pb[j] += gp[j];
                }
            }
            if (need_x) {
                float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
                for (int64_t j = 0; j < d; j++) {
                    float g = gp[j] * wv[j];
                    sg += g;
                    sgx += g * (xp[j] - mu);
                }
                float a = sg / (float)d, b = sgx * is / (float)d;
                float *out = gx + i * d;
                for (int64_t j = 0; j < d; j++)
                    out[j] = is * (gp[j] * wv[j] - a - (xp[j] - mu) * is * b);
            }
        }
    }
    if (gw_t || gb_t) {
        float *gw = gw_t ? ft_f32(gw_t) : NULL, *gb = gb_t ? ft_f32(gb_t) : NULL;
        for (int64_t j = 0; j < d; j++) {
            float sw = 0.0f, sb = 0.0f;
            for (int t = 0; t < nt; t++) {
                sw += ws[(size_t)t * 2 * d + j];
                sb += ws[(size_t)t * 2 * d + d + j];
            }
            if (gw) gw[j] = sw;
            if (gb) gb[j] = sb;
        }
    }
    free(ws);
    ft_release(go_t);
    grad_inputs[0] = gx_t;
    grad_inputs[1] = gw_t;
    grad_inputs[2] = gb_t;
    return 0;

fail:
    free(ws);
    ft_release(go_t);
    ft_release(gx_t);
    ft_release(gw_t);
    ft_release(gb_t);
    return -1;
}

/* weight/bias must have exactly the normalised trailing shape. */
static int check_trailing(const ft_tensor *t, const char *what, const ft_tensor *x, int nnorm) {
    if (!t) return 0;
    const int64_t *tail = x->shape + (x->ndim - nnorm);
    bool ok = t->dtype == FT_FLOAT32 && t->ndim == nnorm;
    for (int k = 0; ok && k < nnorm; k++) ok = t->shape[k] == tail[k];
    if (!ok) {
        char ts[128], ns[128], xs[128];
        ft_set_error("layer_norm: %s %s %s does not match normalized shape %s of input %s", what,
                     ft_shape_str(t->shape, t->ndim, ts, sizeof ts), ft_dtype_name(t->dtype),
                     ft_shape_str(tail, nnorm, ns, sizeof ns),
                     ft_shape_str(x->shape, x->ndim, xs, sizeof xs));
        return -1;
    }
    return 0;
}

ft_tensor *ft_layer_norm(const ft_tensor *x, int nnorm, const ft_tensor *weight,
                         const ft_tensor *bias, double eps) {
    if (!x) {
        ft_set_error("layer_norm: input is required");
        return NULL;
    }
    char xs[128];
    ft_shape_str(x->shape, x->ndim, xs, sizeof xs);
    if (x->dtype != FT_FLOAT32) {
        ft_set_error("layer_norm: expected float32 input, got %s", ft_dtype_name(x->dtype));
        return NULL;
    }
    if (nnorm < 1 || nnorm > x->ndim) {
        ft_set_error("layer_norm: cannot normalise over the last %d dims of input %s", nnorm, xs);
        return NULL;
    }
    if (check_trailing(weight, "weight", x, nnorm) < 0 || check_trailing(bias, "bias", x, nnorm) < 0)
        return NULL;
    int64_t d = 1, r = 1;
    for (int k = 0; k < x->ndim; k++) {
        if (k < x->ndim - nnorm) r *= x->shape[k];
        else d *= x->shape[k];
    }
    if (d == 0 && r > 0) {
        ft_set_error("layer_norm: normalized shape of input %s is empty", xs);
        return NULL;
    }
    int64_t sshape[2] = {r, 2};
    ft_tensor *xc = ft_contiguous(x), *wc = weight ? ft_contiguous(weight) : NULL,
              *bc = bias ? ft_contiguous(bias) : NULL;
    ft_tensor *stats = ft_empty(sshape, 2, FT_FLOAT32);
    ft_tensor *y = ft_empty(x->shape, x->ndim, FT_FLOAT32);
    if (!xc || (weight && !wc) || (bias && !bc) || !stats || !y) goto fail;

    const float *xp = ft_f32(xc), *wp = wc ? ft_f32(wc) : NULL, *bp = bc ? ft_f32(bc) : NULL;
    float *yp = ft_f32(y), *st = ft_f32(stats);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < r; i++) {
        const float *p = xp + i * d;
        float *q = yp + i * d;
        float sum = 0.0f, sq = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < d; j++) sum += p[j];
        float m = sum / (float)d;
#pragma omp simd reduction(+ : sq)
        for (int64_t j = 0; j < d; j++) sq += (p[j] - m) * (p[j] - m);
        float is = (float)(1.0 / sqrt((double)sq / (double)d + eps));
        st[2 * i] = m;
        st[2 * i + 1] = is;
        for (int64_t j = 0; j < d; j++) {
            float v = (p[j] - m) * is;
            if (wp) v *= wp[j];
            if (bp) v += bp[j];
            q[j] = v;
        }
    }

    if (ft_grad_needed3(x, weight, bias)) {
        ft_node *nd = ft_node_new("layer_norm", layer_norm_backward, y, 3, x, weight, bias);
        if (!nd) {
            ft_set_error("layer_norm: out of memory recording the graph");
            goto fail;
        }
        nd->saved[0] = ft_detach(xc);
        nd->saved[1] = wc ? ft_detach(wc) : NULL;
        nd->saved[2] = stats;
        stats = NULL;
        nd->i[0] = r;
        nd->i[1] = d;
    }
    ft_release(stats);
    ft_release(xc);
    ft_release(wc);
    ft_release(bc);
    return y;

fail:
    ft_release(xc);
    ft_release(wc);
    ft_release(bc);
    ft_release(stats);
    ft_release(y);
    return NULL;
}

/* ---- rms norm ------------------------------------------------------------------ */

/* Over the last dim (D), per row: y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps).
 * Backward (m = D):
 *
 *     grad_x = rstd * (grad_y * w - x * rstd^2 * sum(grad_y * w * x) / m)
 *     grad_w = sum over rows of grad_y * x * rstd
 *
 * Sums of squares are accumulated in double: float32 rows of thousands of elements
 * then keep full precision at no visible cost (the loop is memory bound). */

/* saved[0] x contiguous [R, D], saved[1] weight (contiguous) or NULL, saved[2] rstd [R].
 * node->i: [0] R [1] D. inputs: x, weight. */
static int rms_norm_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    const ft_tensor *x_t = nd->saved[0];
    int64_t r = nd->i[0], d = nd->i[1];
    bool need_x = nd->inputs[0] != NULL, need_w = nd->inputs[1] != NULL;
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    ft_tensor *gx_t = NULL, *gw_t = NULL;
    int nt = omp_get_max_threads();
    float *ws = need_w ? calloc((size_t)nt * (size_t)d + 1, sizeof(float)) : NULL;  /* per thread grad_w */
    if (need_w && !ws) {
        ft_set_error("rms_norm backward: out of memory");
        goto fail;
    }
    if (need_x && !(gx_t = ft_empty(x_t->shape, x_t->ndim, FT_FLOAT32))) goto fail;
    if (need_w && !(gw_t = ft_empty(nd->inputs[1]->shape, nd->inputs[1]->ndim, FT_FLOAT32))) goto fail;

    const float *x = ft_f32(x_t), *go = ft_f32(go_t), *rstd = ft_f32(nd->saved[2]);
    const float *w = nd->saved[1] ? ft_f32(nd->saved[1]) : NULL;
    float *gx = gx_t ? ft_f32(gx_t) : NULL;
#pragma omp parallel
    {
        float *pw = ws ? ws + (size_t)omp_get_thread_num() * (size_t)d : NULL;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < r; i++) {
            const float *xp = x + i * d, *gp = go + i * d;
            float rs = rstd[i];
            if (pw) {
#pragma omp simd
                for (int64_t j = 0; j < d; j++) pw[j] += gp[j] * xp[j] * rs;
            }
            if (gx) {
                double dot = 0.0;
#pragma omp simd reduction(+ : dot)
                for (int64_t j = 0; j < d; j++) dot += (double)(gp[j] * (w ? w[j] : 1.0f)) * xp[j];
                float k = (float)(dot / (double)d) * rs * rs;
                float *out = gx + i * d;
#pragma omp simd
                for (int64_t j = 0; j < d; j++) out[j] = rs * (gp[j] * (w ? w[j] : 1.0f) - xp[j] * k);
            }
        }
    }
    if (gw_t) {
        float *gw = ft_f32(gw_t);
        for (int64_t j = 0; j < d; j++) {
            float s = 0.0f;
            for (int t = 0; t < nt; t++) s += ws[(size_t)t * (size_t)d + j];
            gw[j] = s;
        }
    }
    free(ws);
    ft_release(go_t);
    grad_inputs[0] = gx_t;
    grad_inputs[1] = gw_t;
    return 0;

fail:
    free(ws);
    ft_release(go_t);
    ft_release(gx_t);
    ft_release(gw_t);
    return -1;
}

ft_tensor *ft_rms_norm(const ft_tensor *x, const ft_tensor *weight, double eps) {
    if (!x) {
        ft_set_error("rms_norm: input is required");
        return NULL;
    }
    char xs[128];
    ft_shape_str(x->shape, x->ndim, xs, sizeof xs);
    if (x->dtype != FT_FLOAT32) {
        ft_set_error("rms_norm: expected float32 input, got %s", ft_dtype_name(x->dtype));
        return NULL;
    }
    if (x->ndim < 1) {
        ft_set_error("rms_norm: expected input [..., D], got a 0-dim tensor");
        return NULL;
    }
    int64_t d = x->shape[x->ndim - 1];
    if (check_vec(weight, "weight", d, x, "rms_norm") < 0) return NULL;
    if (eps < 0.0) {
        ft_set_error("rms_norm: eps must be >= 0, got %g", eps);
        return NULL;
    }
    int64_t n = ft_numel(x), r = d > 0 ? n / d : 0;
    ft_tensor *xc = ft_contiguous(x), *wc = weight ? ft_contiguous(weight) : NULL;
    ft_tensor *rstd = ft_empty(&r, 1, FT_FLOAT32);
    ft_tensor *y = ft_empty(x->shape, x->ndim, FT_FLOAT32);
    if (!xc || (weight && !wc) || !rstd || !y) goto fail;

    const float *xp = ft_f32(xc), *wp = wc ? ft_f32(wc) : NULL;
    float *yp = ft_f32(y), *rs = ft_f32(rstd);
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < r; i++) {
        const float *p = xp + i * d;
        float *q = yp + i * d;
        double sq = 0.0;
#pragma omp simd reduction(+ : sq)
        for (int64_t j = 0; j < d; j++) sq += (double)p[j] * p[j];
        float k = (float)(1.0 / sqrt(sq / (double)d + eps));
        rs[i] = k;
        if (wp) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) q[j] = p[j] * k * wp[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) q[j] = p[j] * k;
        }
    }

    if (ft_grad_needed2(x, weight)) {
        ft_node *nd = ft_node_new("rms_norm", rms_norm_backward, y, 2, x, weight);
        if (!nd) {
            ft_set_error("rms_norm: out of memory recording the graph");
            goto fail;
        }
        nd->saved[0] = ft_detach(xc);
        nd->saved[1] = wc ? ft_detach(wc) : NULL;
        nd->saved[2] = rstd;
        rstd = NULL;
        nd->i[0] = r;
        nd->i[1] = d;
    }
    ft_release(rstd);
    ft_release(xc);
    ft_release(wc);
    return y;

fail:
    ft_release(xc);
    ft_release(wc);
    ft_release(rstd);
    ft_release(y);
    return NULL;
}
