/* 2-D pooling, forward and backward: max, average and adaptive average.
 *
 * Every op works plane by plane (one (n, c) image channel at a time), so the planes are
 * spread over OpenMP threads and no two threads write the same element, forward or
 * backward. Output sizes, window clipping and divisors follow PyTorch's CPU kernels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"

typedef struct {
    int64_t planes, h, w;   /* input viewed as [planes, H, W], planes = N*C */
    int64_t oh, ow;
    int64_t kh, kw, sh, sw, ph, pw;
    bool count_include_pad;
} pool_geom;

/* PyTorch's pooling_output_shape (dilation 1). */
static int64_t pool_out_size(int64_t in, int64_t k, int64_t pad, int64_t stride, bool ceil_mode) {
    int64_t num = in + 2 * pad - (k - 1) - 1 + (ceil_mode ? stride - 1 : 0);
    /* floor division, num may be negative */
    int64_t q = num >= 0 ? num / stride : -((-num + stride - 1) / stride);
    int64_t out = q + 1;
    /* the last window must start inside the input or its left padding */
    if (ceil_mode && (out - 1) * stride >= in + pad) out--;
    return out;
}

/* Validates x [N,C,H,W] and the options; fills g. op names the error. */
static int pool_check(const ft_tensor *x, const ft_pool2d_opts *o, const char *op, pool_geom *g) {
    char xs[128];
    ft_shape_str(x->shape, x->ndim, xs, sizeof xs);
    if (x->dtype != FT_FLOAT32) {
        ft_set_error("%s: expected float32 input, got %s", op, ft_dtype_name(x->dtype));
        return -1;
    }
    if (x->ndim != 4) {
        ft_set_error("%s: expected input [N,C,H,W] or [C,H,W], got %s", op, xs);
        return -1;
    }
    int stride[2];
    for (int k = 0; k < 2; k++) {
        /* stride 0 means the default, the kernel size */
        stride[k] = o->stride[k] == 0 ? o->kernel[k] : o->stride[k];
        if (o->kernel[k] < 1 || stride[k] < 1 || o->padding[k] < 0) {
            ft_set_error("%s: kernel and stride must be >= 1 and padding >= 0, got kernel (%d,%d), "
                         "stride (%d,%d), padding (%d,%d)", op, o->kernel[0], o->kernel[1],
                         o->stride[0], o->stride[1], o->padding[0], o->padding[1]);
            return -1;
        }
        if (o->padding[k] > o->kernel[k] / 2) {
            ft_set_error("%s: padding should be at most half of the kernel size, got padding "
                         "(%d,%d) and kernel (%d,%d)", op, o->padding[0], o->padding[1],
                         o->kernel[0], o->kernel[1]);
            return -1;
        }
    }
    g->planes = x->shape[0] * x->shape[1];
    g->h = x->shape[2];
    g->w = x->shape[3];
    g->kh = o->kernel[0]; g->kw = o->kernel[1];
    g->sh = stride[0]; g->sw = stride[1];
    g->ph = o->padding[0]; g->pw = o->padding[1];
    g->count_include_pad = o->count_include_pad;
    g->oh = pool_out_size(g->h, g->kh, g->ph, g->sh, o->ceil_mode);
    g->ow = pool_out_size(g->w, g->kw, g->pw, g->sw, o->ceil_mode);
    if (g->oh < 1 || g->ow < 1) {
        ft_set_error("%s: input %s is too small for kernel (%d,%d) with padding (%d,%d): "
                     "output would be %lldx%lld", op, xs, o->kernel[0], o->kernel[1],
                     o->padding[0], o->padding[1], (long long)g->oh, (long long)g->ow);
        return -1;
    }
    return 0;
}

static void pool_to_node(const pool_geom *g, ft_node *nd) {
    int64_t v[11] = {g->planes, g->h, g->w, g->oh, g->ow, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw};
    memcpy(nd->i, v, sizeof v);
    nd->i[11] = g->count_include_pad;
}

static void pool_from_node(const ft_node *nd, pool_geom *g) {
    const int64_t *v = nd->i;
    g->planes = v[0]; g->h = v[1]; g->w = v[2]; g->oh = v[3]; g->ow = v[4];
    g->kh = v[5]; g->kw = v[6]; g->sh = v[7]; g->sw = v[8]; g->ph = v[9]; g->pw = v[10];
    g->count_include_pad = v[11] != 0;
}

/* [C,H,W] input: run op on a batch of one and drop the batch dim again. */
static ft_tensor *unbatched(const ft_tensor *x, ft_pool2d_opts o,
                            ft_tensor *(*op)(const ft_tensor *, ft_pool2d_opts)) {
    ft_tensor *xb = ft_unsqueeze(x, 0);
    if (!xb) return NULL;
    ft_tensor *yb = op(xb, o);
    ft_release(xb);
    if (!yb) return NULL;
    ft_tensor *y = ft_squeeze(yb, 0);
    ft_release(yb);
    return y;
}

/* Output columns ow in [*lo, *hi) read input column ow*stride + off inside [0, size). */
static void window_range(int64_t off, int64_t stride, int64_t size, int64_t n_out,
                         int64_t *lo, int64_t *hi) {
    int64_t a = off < 0 ? (-off + stride - 1) / stride : 0;
    int64_t b = size - off <= 0 ? 0 : (size - off + stride - 1) / stride;
    if (b > n_out) b = n_out;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

/* ---- max pool ----------------------------------------------------------------- */

/* saved[0]: int64 [N,C,oH,oW], flat index ih*W+iw of each window's max inside its plane. */
static int max_pool2d_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    pool_geom g;
    pool_from_node(nd, &g);
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    int64_t xshape[4] = {nd->i[12], nd->i[13], g.h, g.w};
    ft_tensor *gx_t = ft_zeros(xshape, 4, FT_FLOAT32);
    if (!gx_t) {
        ft_release(go_t);
        return -1;
    }
    const float *go = ft_f32(go_t);
    const int64_t *idx = ft_i64(nd->saved[0]);
    float *gx = ft_f32(gx_t);
    int64_t hw = g.h * g.w, ohw = g.oh * g.ow;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < g.planes; pl++) {
        float *gp = gx + pl * hw;
        const float *gop = go + pl * ohw;
        const int64_t *ip = idx + pl * ohw;
        for (int64_t i = 0; i < ohw; i++) gp[ip[i]] += gop[i];
    }
    ft_release(go_t);
    grad_inputs[0] = gx_t;
    return 0;
}

ft_tensor *ft_max_pool2d(const ft_tensor *x, ft_pool2d_opts o) {
    if (x && x->ndim == 3) return unbatched(x, o, ft_max_pool2d);
    pool_geom g;
    if (!x || pool_check(x, &o, "max_pool2d", &g) < 0) return NULL;
    int64_t yshape[4] = {x->shape[0], x->shape[1], g.oh, g.ow};
    ft_tensor *xc = ft_contiguous(x);
    ft_tensor *y = ft_empty(yshape, 4, FT_FLOAT32);
    ft_tensor *idx_t = ft_empty(yshape, 4, FT_INT64);
    if (!xc || !y || !idx_t) {
        ft_release(xc);
        ft_release(y);
        ft_release(idx_t);
        return NULL;
    }
    const float *xp = ft_f32(xc);
    float *yp = ft_f32(y);
    int64_t *ip = ft_i64(idx_t);
    /* geometry in locals: the int64 index stores could otherwise alias it */
    const int64_t H = g.h, W = g.w, OH = g.oh, OW = g.ow, KH = g.kh, KW = g.kw;
    const int64_t SH = g.sh, SW = g.sw, PH = g.ph, PW = g.pw;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < g.planes; pl++) {
        const float *restrict xpl = xp + pl * H * W;
        float *restrict ypl = yp + pl * OH * OW;
        int64_t *restrict ipl = ip + pl * OH * OW;
        /* A whole output row at a time, visiting each window's elements in row-major
         * order (kernel row, then kernel column) so the first max wins; a NaN wins and
         * propagates. Branch-free selects over the row. */
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * SH - PH, h1 = h0 + KH;
            if (h0 < 0) h0 = 0;
            if (h1 > H) h1 = H;
            float *restrict yr = ypl + oh * OW;
            int64_t *restrict ir = ipl + oh * OW;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * SW - PW;
                yr[ow] = -INFINITY;
                ir[ow] = h0 * W + (w0 < 0 ? 0 : w0);
            }
            for (int64_t ih = h0; ih < h1; ih++) {
                for (int64_t kj = 0; kj < KW; kj++) {
                    int64_t off = kj - PW, lo, hi;
                    window_range(off, SW, W, OW, &lo, &hi);
                    const float *restrict src = xpl + ih * W;
                    int64_t base = ih * W + off;
                    for (int64_t ow = lo; ow < hi; ow++) {
                        float v = src[ow * SW + off], cur = yr[ow];
                        bool take = v > cur || v != v;
                        yr[ow] = take ? v : cur;
                        ir[ow] = take ? base + ow * SW : ir[ow];
                    }
                }
            }
        }
    }
    ft_release(xc);
    if (ft_grad_needed1(x)) {
        ft_node *nd = ft_node_new("max_pool2d", max_pool2d_backward, y, 1, x);
        if (!nd) {
            ft_set_error("max_pool2d: out of memory recording the graph");
            ft_release(idx_t);
            ft_release(y);
            return NULL;
        }
        pool_to_node(&g, nd);
        nd->i[12] = x->shape[0];
        nd->i[13] = x->shape[1];
        nd->saved[0] = idx_t;
    } else {
        ft_release(idx_t);
    }
    return y;
}

/* ---- average pool ------------------------------------------------------------- */

/* Window of output (oh, ow) clipped to the input, and its divisor; 0 for an empty window. */
static inline float avg_window(const pool_geom *g, int64_t oh, int64_t ow,
                               int64_t *h0, int64_t *h1, int64_t *w0, int64_t *w1) {
    int64_t a = oh * g->sh - g->ph, b = ow * g->sw - g->pw;
    int64_t ae = a + g->kh, be = b + g->kw;
    if (ae > g->h + g->ph) ae = g->h + g->ph;
    if (be > g->w + g->pw) be = g->w + g->pw;
    int64_t pool_size = (ae - a) * (be - b);   /* counts padding, not beyond it */
    if (a < 0) a = 0;
    if (b < 0) b = 0;
    if (ae > g->h) ae = g->h;
    if (be > g->w) be = g->w;
    *h0 = a; *h1 = ae; *w0 = b; *w1 = be;
    if (a >= ae || b >= be) return 0.0f;
    return (float)(g->count_include_pad ? pool_size : (ae - a) * (be - b));
}

static int avg_pool2d_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    pool_geom g;
    pool_from_node(nd, &g);
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    int64_t xshape[4] = {nd->i[12], nd->i[13], g.h, g.w};
    ft_tensor *gx_t = ft_zeros(xshape, 4, FT_FLOAT32);
    if (!gx_t) {
        ft_release(go_t);
        return -1;
    }
    const float *go = ft_f32(go_t);
    float *gx = ft_f32(gx_t);
    int64_t hw = g.h * g.w, ohw = g.oh * g.ow;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < g.planes; pl++) {
        float *gp = gx + pl * hw;
        const float *gop = go + pl * ohw;
        for (int64_t oh = 0; oh < g.oh; oh++) {
            for (int64_t ow = 0; ow < g.ow; ow++) {
                int64_t h0, h1, w0, w1;
                float div = avg_window(&g, oh, ow, &h0, &h1, &w0, &w1);
                if (div == 0.0f) continue;
                float v = gop[oh * g.ow + ow] / div;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) gp[ih * g.w + iw] += v;
            }
        }
    }
    ft_release(go_t);
    grad_inputs[0] = gx_t;
    return 0;
}

ft_tensor *ft_avg_pool2d(const ft_tensor *x, ft_pool2d_opts o) {
    if (x && x->ndim == 3) return unbatched(x, o, ft_avg_pool2d);
    pool_geom g;
    if (!x || pool_check(x, &o, "avg_pool2d", &g) < 0) return NULL;
    int64_t yshape[4] = {x->shape[0], x->shape[1], g.oh, g.ow};
    ft_tensor *xc = ft_contiguous(x);
    ft_tensor *y = ft_empty(yshape, 4, FT_FLOAT32);
    if (!xc || !y) {
        ft_release(xc);
        ft_release(y);
        return NULL;
    }
    const float *xp = ft_f32(xc);
    float *yp = ft_f32(y);
    int64_t hw = g.h * g.w, ohw = g.oh * g.ow;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < g.planes; pl++) {
        const float *xpl = xp + pl * hw;
        float *ypl = yp + pl * ohw;
        for (int64_t oh = 0; oh < g.oh; oh++) {
            for (int64_t ow = 0; ow < g.ow; ow++) {
                int64_t h0, h1, w0, w1;
                float div = avg_window(&g, oh, ow, &h0, &h1, &w0, &w1);
                float s = 0.0f;
                for (int64_t ih = h0; ih < h1; ih++) {
                    const float *r = xpl + ih * g.w;
#pragma omp simd reduction(+ : s)
                    for (int64_t iw = w0; iw < w1; iw++) s += r[iw];
                }
                ypl[oh * g.ow + ow] = div == 0.0f ? 0.0f : s / div;
            }
        }
    }
    ft_release(xc);
    if (ft_grad_needed1(x)) {
        ft_node *nd = ft_node_new("avg_pool2d", avg_pool2d_backward, y, 1, x);
        if (!nd) {
            ft_set_error("avg_pool2d: out of memory recording the graph");
            ft_release(y);
            return NULL;
        }
        pool_to_node(&g, nd);
        nd->i[12] = x->shape[0];
        nd->i[13] = x->shape[1];
    }
    return y;
}

/* ---- adaptive average pool ---------------------------------------------------- */

/* Bin i of n over size: [floor(i*size/n), ceil((i+1)*size/n)), as PyTorch. */
static inline int64_t bin_start(int64_t i, int64_t n, int64_t size) {
    return (i / n) * size + ((i % n) * size) / n;
}
static inline int64_t bin_end(int64_t i, int64_t n, int64_t size) {
    return 1 + ((i + 1) * size - 1) / n;
}

/* node->i: [0] planes [1..2] H,W [3..4] oH,oW [5..6] N,C */
static int adaptive_avg_pool2d_backward(ft_node *nd, const ft_tensor *grad_output,
                                        ft_tensor **grad_inputs) {
    int64_t planes = nd->i[0], h = nd->i[1], w = nd->i[2], oh_n = nd->i[3], ow_n = nd->i[4];
    ft_tensor *go_t = ft_contiguous(grad_output);
    if (!go_t) return -1;
    int64_t xshape[4] = {nd->i[5], nd->i[6], h, w};
    ft_tensor *gx_t = ft_zeros(xshape, 4, FT_FLOAT32);
    if (!gx_t) {
        ft_release(go_t);
        return -1;
    }
    const float *go = ft_f32(go_t);
    float *gx = ft_f32(gx_t);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        float *gp = gx + pl * h * w;
        const float *gop = go + pl * oh_n * ow_n;
        for (int64_t oh = 0; oh < oh_n; oh++) {
            int64_t h0 = bin_start(oh, oh_n, h), h1 = bin_end(oh, oh_n, h);
            for (int64_t ow = 0; ow < ow_n; ow++) {
                int64_t w0 = bin_start(ow, ow_n, w), w1 = bin_end(ow, ow_n, w);
                float v = gop[oh * ow_n + ow] / (float)((h1 - h0) * (w1 - w0));
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) gp[ih * w + iw] += v;
            }
        }
    }
    ft_release(go_t);
    grad_inputs[0] = gx_t;
    return 0;
}

ft_tensor *ft_adaptive_avg_pool2d(const ft_tensor *x, int out_h, int out_w) {
    if (!x) {
        ft_set_error("adaptive_avg_pool2d: input is required");
        return NULL;
    }
    char xs[128];
    ft_shape_str(x->shape, x->ndim, xs, sizeof xs);
    if (x->dtype != FT_FLOAT32) {
        ft_set_error("adaptive_avg_pool2d: expected float32 input, got %s", ft_dtype_name(x->dtype));
        return NULL;
    }
    if (x->ndim == 3) {
        ft_tensor *xb = ft_unsqueeze(x, 0);
        if (!xb) return NULL;
        ft_tensor *yb = ft_adaptive_avg_pool2d(xb, out_h, out_w);
        ft_release(xb);
        if (!yb) return NULL;
        ft_tensor *y = ft_squeeze(yb, 0);
        ft_release(yb);
        return y;
    }
    if (x->ndim != 4) {
        ft_set_error("adaptive_avg_pool2d: expected input [N,C,H,W] or [C,H,W], got %s", xs);
        return NULL;
    }
    if (out_h < 1 || out_w < 1) {
        ft_set_error("adaptive_avg_pool2d: output size must be >= 1, got %dx%d", out_h, out_w);
        return NULL;
    }
    int64_t h = x->shape[2], w = x->shape[3];
    if (h < 1 || w < 1) {
        ft_set_error("adaptive_avg_pool2d: input %s has an empty spatial size", xs);
        return NULL;
    }
    int64_t planes = x->shape[0] * x->shape[1], oh_n = out_h, ow_n = out_w;
    int64_t yshape[4] = {x->shape[0], x->shape[1], oh_n, ow_n};
    ft_tensor *xc = ft_contiguous(x);
    ft_tensor *y = ft_empty(yshape, 4, FT_FLOAT32);
    if (!xc || !y) {
        ft_release(xc);
        ft_release(y);
        return NULL;
    }
    const float *xp = ft_f32(xc);
    float *yp = ft_f32(y);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xpl = xp + pl * h * w;
        float *ypl = yp + pl * oh_n * ow_n;
        for (int64_t oh = 0; oh < oh_n; oh++) {
            int64_t h0 = bin_start(oh, oh_n, h), h1 = bin_end(oh, oh_n, h);
            for (int64_t ow = 0; ow < ow_n; ow++) {
                int64_t w0 = bin_start(ow, ow_n, w), w1 = bin_end(ow, ow_n, w);
                float s = 0.0f;
                for (int64_t ih = h0; ih < h1; ih++) {
                    const float *r = xpl + ih * w;
#pragma omp simd reduction(+ : s)
                    for (int64_t iw = w0; iw < w1; iw++) s += r[iw];
                }
                ypl[oh * ow_n + ow] = s / (float)((h1 - h0) * (w1 - w0));
            }
        }
    }
    ft_release(xc);
    if (ft_grad_needed1(x)) {
        ft_node *nd = ft_node_new("adaptive_avg_pool2d", adaptive_avg_pool2d_backward, y, 1, x);
        if (!nd) {
            ft_set_error("adaptive_avg_pool2d: out of memory recording the graph");
            ft_release(y);
            return NULL;
        }
        int64_t v[7] = {planes, h, w, oh_n, ow_n, x->shape[0], x->shape[1]};
        memcpy(nd->i, v, sizeof v);
    }
    return y;
}
