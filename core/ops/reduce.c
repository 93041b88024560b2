/* Reductions: sum and mean over a list of dims, max over a dim and over everything,
 * argmax, softmax and log_softmax; forward kernels and their backward functions.
 *
 * Kernels work on a contiguous input seen as [outer, size, inner] around the
 * reduced dim (or run of adjacent reduced dims). */
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ft/tensor.h"

#define PAR_MIN 32768
/* Columns handled together when the reduced dim is not the last one. */
#define COL_BLOCK 256

static int expect_f32(const ft_tensor *a, const char *op) {
    if (a->dtype == FT_FLOAT32) return 0;
    ft_set_error("%s: expected a float32 tensor, got %s", op, ft_dtype_name(a->dtype));
    return -1;
}

/* A contiguous alias or copy of a that records no autograd. */
static ft_tensor *plain_contiguous(const ft_tensor *a) {
    ft_tensor *d = ft_detach(a);
    if (!d) return NULL;
    ft_tensor *c = ft_contiguous(d);
    ft_release(d);
    return c;
}

static int64_t prod(const int64_t *shape, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= shape[d];
    return p;
}

/* 0-based dim of a (0-dim tensors accept 0 and -1, as PyTorch). */
static int wrap_dim(const ft_tensor *a, int dim, const char *op) {
    if (a->ndim == 0) {
        if (dim == 0 || dim == -1) return 0;
        ft_set_error("%s: dim %d is out of range for a 0-dim tensor", op, dim);
        return -1;
    }
    return ft_wrap_dim(dim, a->ndim, op);
}

/* ---- sum and mean -------------------------------------------------------------- */

/* Sum of n contiguous values in LANES independent accumulators, so the loop
 * vectorises without reassociating floating-point adds behind the compiler's back. */
#define LANES 8
#define ROW_SUM(T, ACC)                                                            \
    static ACC row_sum_##T(const T *x, int64_t n) {                                \
        ACC acc[LANES] = {0};                                                      \
        int64_t r = 0;                                                             \
        for (; r + LANES <= n; r += LANES)                                         \
            for (int l = 0; l < LANES; l++) acc[l] += x[r + l];                    \
        for (; r < n; r++) acc[0] += x[r];                                         \
        ACC s = 0;                                                                 \
        for (int l = 0; l < LANES; l++) s += acc[l];                               \
        return s;                                                                  \
    }

ROW_SUM(float, double)
ROW_SUM(int64_t, int64_t)

/* out[o, i] = sum_r in[o, r, i], accumulated in double (float) or int64. */
#define REDUCE_RUN(T, ACC)                                                         \
    static void sum_run_##T(const T *in, T *out, int64_t outer, int64_t size, int64_t inner) { \
        if (inner == 1) {                                                          \
            if (outer == 1) {   /* one long row: split it between threads */       \
                const int64_t chunk = 4096, nchunk = (size + chunk - 1) / chunk;   \
                ACC acc = 0;                                                       \
                _Pragma("omp parallel for reduction(+ : acc) if (size > PAR_MIN)") \
                for (int64_t c = 0; c < nchunk; c++) {                             \
                    int64_t r0 = c * chunk;                                        \
                    acc += row_sum_##T(in + r0, size - r0 < chunk ? size - r0 : chunk); \
                }                                                                  \
                out[0] = (T)acc;                                                   \
                return;                                                            \
            }                                                                      \
            _Pragma("omp parallel for if (outer * size > PAR_MIN)")                \
            for (int64_t o = 0; o < outer; o++) out[o] = (T)row_sum_##T(in + o * size, size); \
            return;                                                                \
        }                                                                          \
        int64_t nblk = (inner + COL_BLOCK - 1) / COL_BLOCK;                        \
        _Pragma("omp parallel for if (outer * size * inner > PAR_MIN)")            \
        for (int64_t b = 0; b < outer * nblk; b++) {                               \
            int64_t o = b / nblk, i0 = (b % nblk) * COL_BLOCK;                     \
            int64_t w = inner - i0 < COL_BLOCK ? inner - i0 : COL_BLOCK;           \
            ACC acc[COL_BLOCK];                                                    \
            for (int64_t i = 0; i < w; i++) acc[i] = 0;                            \
            const T *base = in + o * size * inner + i0;                            \
            for (int64_t r = 0; r < size; r++) {                                   \
                const T *row = base + r * inner;                                   \
                for (int64_t i = 0; i < w; i++) acc[i] += row[i];                  \
            }                                                                      \
            for (int64_t i = 0; i < w; i++) out[o * inner + i0 + i] = (T)acc[i];   \
        }                                                                          \
    }

REDUCE_RUN(float, double)
REDUCE_RUN(int64_t, int64_t)

/* Parses dims into a bitmask of reduced dims; 0 dims means all. */
static int reduce_mask(const ft_tensor *a, const int *dims, int ndims, const char *op,
                       unsigned *mask) {
    *mask = 0;
    if (ndims == 0) {
        *mask = (1u << a->ndim) - 1;
        return 0;
    }
    for (int k = 0; k < ndims; k++) {
        int d = wrap_dim(a, dims[k], op);
        if (d < 0) return -1;
        if (a->ndim == 0) continue;
        if (*mask & (1u << d)) {
            ft_set_error("%s: dim %d appears multiple times in the list of dims", op, dims[k]);
            return -1;
        }
        *mask |= 1u << d;
    }
    return 0;
}

/* Sums contiguous x over the dims in mask, one run of adjacent dims at a time, from
 * the right. Returns a contiguous tensor of the keepdim shape. */
static ft_tensor *sum_dims(const ft_tensor *x, unsigned mask) {
    int nd = x->ndim;
    int64_t shape[FT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)nd);
    ft_tensor *cur = ft_retain((ft_tensor *)x);
    int d = nd - 1;
    while (cur && d >= 0) {
        if (!(mask & (1u << d))) { d--; continue; }
        int hi = d + 1;
        while (d >= 0 && (mask & (1u << d))) d--;
        int lo = d + 1;   /* reduce the run [lo, hi) */
        int64_t outer = prod(shape, 0, lo), size = prod(shape, lo, hi), inner = prod(shape, hi, nd);
        for (int k = lo; k < hi; k++) shape[k] = 1;
        ft_tensor *next = ft_empty(shape, nd, x->dtype);
        if (next) {
            if (outer * inner > 0) {
                if (x->dtype == FT_INT64) sum_run_int64_t(ft_i64(cur), ft_i64(next), outer, size, inner);
                else sum_run_float(ft_f32(cur), ft_f32(next), outer, size, inner);
            }
        }
        ft_release(cur);
        cur = next;
    }
    return cur;
}

/* node->i[0] = mask of reduced dims; node->f[0] = scale (1 for sum, 1/count for mean) */
static int sum_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    const ft_tensor *a = n->inputs[0];
    unsigned mask = (unsigned)n->i[0];
    int64_t kshape[FT_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) kshape[d] = (mask & (1u << d)) ? 1 : a->shape[d];
    ft_tensor *gk = ft_reshape(g, kshape, a->ndim);
    ft_tensor *ge = gk ? ft_expand(gk, a->shape, a->ndim) : NULL;
    ft_release(gk);
    if (!ge) return -1;
    gi[0] = ft_mul_scalar(ge, n->f[0]);   /* always fresh storage, never a view of g */
    ft_release(ge);
    return gi[0] ? 0 : -1;
}

static ft_tensor *reduce_sum(const ft_tensor *a, const int *dims, int ndims, bool keepdim,
                             bool mean) {
    const char *op = mean ? "mean" : "sum";
    if (mean && expect_f32(a, op) < 0) return NULL;
    unsigned mask;
    if (reduce_mask(a, dims, ndims, op, &mask) < 0) return NULL;
    int64_t count = 1, oshape[FT_MAX_DIMS];
    int ond = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (mask & (1u << d)) {
            count *= a->shape[d];
            if (keepdim) oshape[ond++] = 1;
        } else {
            oshape[ond++] = a->shape[d];
        }
    }
    ft_tensor *x = plain_contiguous(a);
    ft_tensor *s = x ? sum_dims(x, mask) : NULL;
    ft_release(x);
    if (!s) return NULL;
    double scale = mean ? 1.0 / (double)count : 1.0;   /* count 0 gives NaN, as PyTorch */
    if (mean) {
        float *p = ft_f32(s);
        int64_t n = ft_numel(s);
        float fs = count == 0 ? NAN : (float)scale;
        _Pragma("omp parallel for if (n > PAR_MIN)")
        for (int64_t i = 0; i < n; i++) p[i] *= fs;
    }
    ft_tensor *out = ft_view(s, oshape, ond);
    ft_release(s);
    if (out && a->dtype == FT_FLOAT32 && ft_grad_needed1(a)) {
        ft_node *node = ft_node_new(op, sum_backward, out, 1, a);
        if (node) {
            node->i[0] = mask;
            node->f[0] = scale;
        }
    }
    return out;
}

ft_tensor *ft_sum(const ft_tensor *a, const int *dims, int ndims, bool keepdim) {
    return reduce_sum(a, dims, ndims, keepdim, false);
}

ft_tensor *ft_mean(const ft_tensor *a, const int *dims, int ndims, bool keepdim) {
    return reduce_sum(a, dims, ndims, keepdim, true);
}

/* ---- max over a dim, argmax ---------------------------------------------------- */

/* values[o, i] = max_r in[o, r, i] and its first index; NaN wins, as in PyTorch. */
#define MAX_RUN(T)                                                                 \
    static void max_run_##T(const T *in, T *val, int64_t *idx, int64_t outer, int64_t size, \
                            int64_t inner) {                                       \
        int64_t nblk = (inner + COL_BLOCK - 1) / COL_BLOCK;                        \
        _Pragma("omp parallel for if (outer * size * inner > PAR_MIN)")            \
        for (int64_t b = 0; b < outer * nblk; b++) {                               \
            int64_t o = b / nblk, i0 = (b % nblk) * COL_BLOCK;                     \
            int64_t w = inner - i0 < COL_BLOCK ? inner - i0 : COL_BLOCK;           \
            const T *base = in + o * size * inner + i0;                            \
            T *bv = val + o * inner + i0;                                          \
            int64_t *bi = idx + o * inner + i0;                                    \
            for (int64_t i = 0; i < w; i++) { bv[i] = base[i]; bi[i] = 0; }        \
            for (int64_t r = 1; r < size; r++) {                                   \
                const T *row = base + r * inner;                                   \
                for (int64_t i = 0; i < w; i++) {                                  \
                    T v = row[i];                                                  \
                    if (v > bv[i] || (v != v && bv[i] == bv[i])) { bv[i] = v; bi[i] = r; } \
                }                                                                  \
            }                                                                      \
        }                                                                          \
    }

MAX_RUN(float)
MAX_RUN(int64_t)

/* node->i[0] = dim, saved[0] = indices (keepdim layout equals the output's) */
static int max_dim_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    const ft_tensor *a = n->inputs[0];
    int dim = (int)n->i[0];
    int64_t outer = prod(a->shape, 0, dim), size = a->ndim ? a->shape[dim] : 1;
    int64_t inner = prod(a->shape, dim + 1, a->ndim);
    ft_tensor *gc = ft_contiguous(g);
    ft_tensor *ic = gc ? ft_contiguous(n->saved[0]) : NULL;
    ft_tensor *out = ic ? ft_zeros(a->shape, a->ndim, FT_FLOAT32) : NULL;
    if (out) {
        const float *gp = ft_f32(gc);
        const int64_t *ip = ft_i64(ic);
        float *op = ft_f32(out);
        _Pragma("omp parallel for if (outer * inner > PAR_MIN)")
        for (int64_t o = 0; o < outer; o++)
            for (int64_t i = 0; i < inner; i++)
                op[(o * size + ip[o * inner + i]) * inner + i] = gp[o * inner + i];
    }
    ft_release(gc);
    ft_release(ic);
    gi[0] = out;
    return out ? 0 : -1;
}

static int max_dim_impl(const ft_tensor *a, int dim, bool keepdim, ft_tensor **values,
                        ft_tensor **indices, const char *op) {
    *values = NULL;
    *indices = NULL;
    int d = wrap_dim(a, dim, op);
    if (d < 0) return -1;
    int64_t size = a->ndim ? a->shape[d] : 1;
    if (size == 0) {
        char s[128];
        ft_set_error("%s: cannot reduce over dim %d of size 0 (input %s)", op, dim,
                     ft_shape_str(a->shape, a->ndim, s, sizeof s));
        return -1;
    }
    int64_t oshape[FT_MAX_DIMS];
    int ond = 0;
    for (int k = 0; k < a->ndim; k++) {
        if (k != d) oshape[ond++] = a->shape[k];
        else if (keepdim) oshape[ond++] = 1;
    }
    int64_t outer = prod(a->shape, 0, d), inner = a->ndim ? prod(a->shape, d + 1, a->ndim) : 1;
    ft_tensor *x = plain_contiguous(a);
    ft_tensor *v = x ? ft_empty(oshape, ond, a->dtype) : NULL;
    ft_tensor *ix = v ? ft_empty(oshape, ond, FT_INT64) : NULL;
    if (!ix) {
        ft_release(x);
        ft_release(v);
        return -1;
    }
    if (a->dtype == FT_INT64) max_run_int64_t(ft_i64(x), ft_i64(v), ft_i64(ix), outer, size, inner);
    else max_run_float(ft_f32(x), ft_f32(v), ft_i64(ix), outer, size, inner);
    ft_release(x);
    if (a->dtype == FT_FLOAT32 && ft_grad_needed1(a)) {
        ft_node *node = ft_node_new("max", max_dim_backward, v, 1, a);
        if (node) {
            node->i[0] = d;
            node->saved[0] = ft_detach(ix);
        }
    }
    *values = v;
    *indices = ix;
    return 0;
}

int ft_max_dim(const ft_tensor *a, int dim, bool keepdim, ft_tensor **values, ft_tensor **indices) {
    return max_dim_impl(a, dim, keepdim, values, indices, "max");
}

ft_tensor *ft_argmax(const ft_tensor *a, int dim, bool keepdim) {
    ft_tensor *v, *ix;
    bool prev = ft_set_grad_enabled(false);   /* the values are thrown away */
    int rc = max_dim_impl(a, dim, keepdim, &v, &ix, "argmax");
    ft_set_grad_enabled(prev);
    if (rc < 0) return NULL;
    ft_release(v);
    return ix;
}

/* ---- max over everything ------------------------------------------------------- */

/* saved[0] = contiguous input, f[0] = the max. The gradient is shared evenly by all
 * elements equal to the max (or all NaNs when the max is NaN), as PyTorch does. */
static int max_all_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    const ft_tensor *x = n->saved[0];
    const float *xp = ft_f32(x);
    float m = (float)n->f[0];
    bool nan = isnan(m);
    int64_t N = ft_numel(x), count = 0;
    for (int64_t i = 0; i < N; i++) count += nan ? (xp[i] != xp[i]) : (xp[i] == m);
    ft_tensor *out = ft_zeros(n->inputs[0]->shape, n->inputs[0]->ndim, FT_FLOAT32);
    if (!out) return -1;
    float share = (float)(ft_item(g) / (double)count);
    float *op = ft_f32(out);
    for (int64_t i = 0; i < N; i++)
        if (nan ? (xp[i] != xp[i]) : (xp[i] == m)) op[i] = share;
    gi[0] = out;
    return 0;
}

ft_tensor *ft_max_all(const ft_tensor *a) {
    int64_t N = ft_numel(a);
    if (N == 0) {
        ft_set_error("max: cannot take the max of an empty tensor");
        return NULL;
    }
    ft_tensor *x = plain_contiguous(a);
    if (!x) return NULL;
    ft_tensor *out = ft_empty(NULL, 0, a->dtype);
    if (out && a->dtype == FT_INT64) {
        const int64_t *p = ft_i64(x);
        int64_t m = p[0];
        _Pragma("omp parallel for reduction(max : m) if (N > PAR_MIN)")
        for (int64_t i = 0; i < N; i++) m = p[i] > m ? p[i] : m;
        ft_i64(out)[0] = m;
    } else if (out) {
        const float *p = ft_f32(x);
        float m = p[0];
        bool nan = false;
        _Pragma("omp parallel for reduction(max : m) reduction(|| : nan) if (N > PAR_MIN)")
        for (int64_t i = 0; i < N; i++) {
            nan = nan || p[i] != p[i];
            m = p[i] > m ? p[i] : m;
        }
        ft_f32(out)[0] = nan ? NAN : m;
        if (ft_grad_needed1(a)) {
            ft_node *node = ft_node_new("max", max_all_backward, out, 1, a);
            if (node) {
                node->saved[0] = ft_detach(x);
                node->f[0] = ft_f32(out)[0];
            }
        }
    }
    ft_release(x);
    return out;
}

/* ---- softmax and log_softmax --------------------------------------------------- */

/* y[o, :, i] = softmax or log_softmax of x[o, :, i], with the max subtracted first. */
static void softmax_run(const float *x, float *y, int64_t outer, int64_t size, int64_t inner,
                        bool logsm) {
    if (inner == 1) {
        _Pragma("omp parallel for if (outer * size > PAR_MIN)")
        for (int64_t o = 0; o < outer; o++) {
            const float *xr = x + o * size;
            float *yr = y + o * size;
            float m = -INFINITY;
            for (int64_t r = 0; r < size; r++) m = xr[r] > m ? xr[r] : m;
            double s = 0;
            if (logsm) {
                for (int64_t r = 0; r < size; r++) s += expf(xr[r] - m);
                float lse = m + logf((float)s);
                for (int64_t r = 0; r < size; r++) yr[r] = xr[r] - lse;
            } else if (m == -INFINITY) {
                /* nothing to attend to (a fully masked row): zeros, as the attention kernel
                 * gives, not 0/0; a NaN stays NaN */
                for (int64_t r = 0; r < size; r++) yr[r] = xr[r] == -INFINITY ? 0.0f : xr[r];
            } else {
                for (int64_t r = 0; r < size; r++) {
                    yr[r] = expf(xr[r] - m);
                    s += yr[r];
                }
                float inv = (float)(1.0 / s);
                for (int64_t r = 0; r < size; r++) yr[r] *= inv;
            }
        }
        return;
    }
    int64_t nblk = (inner + COL_BLOCK - 1) / COL_BLOCK;
    _Pragma("omp parallel for if (outer * size * inner > PAR_MIN)")
    for (int64_t b = 0; b < outer * nblk; b++) {
        int64_t o = b / nblk, i0 = (b % nblk) * COL_BLOCK;
        int64_t w = inner - i0 < COL_BLOCK ? inner - i0 : COL_BLOCK;
        const float *xb = x + o * size * inner + i0;
        float *yb = y + o * size * inner + i0;
        float m[COL_BLOCK];
        double s[COL_BLOCK];
        for (int64_t i = 0; i < w; i++) { m[i] = -INFINITY; s[i] = 0; }
        for (int64_t r = 0; r < size; r++)
            for (int64_t i = 0; i < w; i++) m[i] = xb[r * inner + i] > m[i] ? xb[r * inner + i] : m[i];
        for (int64_t r = 0; r < size; r++)
            for (int64_t i = 0; i < w; i++) {
                float e = expf(xb[r * inner + i] - m[i]);
                if (!logsm) yb[r * inner + i] = e;
                s[i] += e;
            }
        for (int64_t i = 0; i < w; i++) s[i] = logsm ? m[i] + log(s[i]) : 1.0 / s[i];
        for (int64_t r = 0; r < size; r++)
            for (int64_t i = 0; i < w; i++) {
                if (logsm) yb[r * inner + i] = xb[r * inner + i] - (float)s[i];
                else yb[r * inner + i] *= (float)s[i];
            }
        if (!logsm)   /* fully masked columns: zeros, as above */
            for (int64_t i = 0; i < w; i++)
                if (m[i] == -INFINITY)
                    for (int64_t r = 0; r < size; r++)
                        yb[r * inner + i] = xb[r * inner + i] == -INFINITY ? 0.0f : xb[r * inner + i];
    }
}

/* softmax:     dx = y * (g - sum_r g * y)
 * log_softmax: dx = g - exp(y) * sum_r g */
static void softmax_backward_run(const float *g, const float *y, float *dx, int64_t outer,
                                 int64_t size, int64_t inner, bool logsm) {
    int64_t nblk = (inner + COL_BLOCK - 1) / COL_BLOCK;
    _Pragma("omp parallel for if (outer * size * inner > PAR_MIN)")
    for (int64_t b = 0; b < outer * nblk; b++) {
        int64_t o = b / nblk, i0 = (b % nblk) * COL_BLOCK;
        int64_t w = inner - i0 < COL_BLOCK ? inner - i0 : COL_BLOCK;
        int64_t base = o * size * inner + i0;
        double s[COL_BLOCK];
        for (int64_t i = 0; i < w; i++) s[i] = 0;
        for (int64_t r = 0; r < size; r++)
            for (int64_t i = 0; i < w; i++) {
                int64_t k = base + r * inner + i;
                s[i] += logsm ? g[k] : g[k] * y[k];
            }
        for (int64_t r = 0; r < size; r++)
            for (int64_t i = 0; i < w; i++) {
                int64_t k = base + r * inner + i;
                dx[k] = logsm ? g[k] - expf(y[k]) * (float)s[i] : y[k] * (g[k] - (float)s[i]);
            }
    }
}

/* node->i[0] = dim, i[1] = log; saved[0] = the output */
static int softmax_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    const ft_tensor *y = n->saved[0];
    int dim = (int)n->i[0];
    int64_t outer = prod(y->shape, 0, dim), size = y->ndim ? y->shape[dim] : 1;
    int64_t inner = y->ndim ? prod(y->shape, dim + 1, y->ndim) : 1;
    ft_tensor *gc = ft_contiguous(g);
    ft_tensor *out = gc ? ft_empty(y->shape, y->ndim, FT_FLOAT32) : NULL;
    if (out) softmax_backward_run(ft_f32(gc), ft_f32(y), ft_f32(out), outer, size, inner, n->i[1]);
    ft_release(gc);
    gi[0] = out;
    return out ? 0 : -1;
}

static ft_tensor *softmax_impl(const ft_tensor *a, int dim, bool logsm) {
    const char *op = logsm ? "log_softmax" : "softmax";
    if (expect_f32(a, op) < 0) return NULL;
    int d = wrap_dim(a, dim, op);
    if (d < 0) return NULL;
    int64_t outer = prod(a->shape, 0, d), size = a->ndim ? a->shape[d] : 1;
    int64_t inner = a->ndim ? prod(a->shape, d + 1, a->ndim) : 1;
    ft_tensor *x = plain_contiguous(a);
    ft_tensor *out = x ? ft_empty(a->shape, a->ndim, FT_FLOAT32) : NULL;
    if (out && outer * size * inner > 0)
        softmax_run(ft_f32(x), ft_f32(out), outer, size, inner, logsm);
    ft_release(x);
    if (out && ft_grad_needed1(a)) {
        ft_node *node = ft_node_new(op, softmax_backward, out, 1, a);
        if (node) {
            node->i[0] = d;
            node->i[1] = logsm;
            node->saved[0] = ft_detach(out);
        }
    }
    return out;
}

ft_tensor *ft_softmax(const ft_tensor *a, int dim) { return softmax_impl(a, dim, false); }
ft_tensor *ft_log_softmax(const ft_tensor *a, int dim) { return softmax_impl(a, dim, true); }
